"""Baseline policies: direct answer, the paper's RAG workflow, random, and forced search.

The paper's baselines are *workflows* around a model: "direct answer" never searches, "RAG workflow"
always runs image search → text search → answer. Here each workflow writes its own search turns and
gets the answer from an ``answerer``: any :class:`~agents.policy.Policy` (a Hugging Face or OpenAI
model), or, when none is given, :class:`ExtractiveReader` — a model-free reader that answers with the
name the search results mention most, so ``mmsearch eval --policy rag`` runs offline with no model.
A model-free "direct answer" has read nothing and answers ``"unknown"``. Without a model these are
plumbing checks (``model_free`` is true; evaluation reports label them), not baselines: the reader
cannot see the image, so its numbers say the pipeline works, not what a floor for a model is.

Every policy writes turns through the environment's protocol (``get_protocol(...).format_action``),
so they work with ``protocol="tags"`` and ``"tool_calls"`` alike, and respect the limits the rollout
env puts in ``info`` (``can_image_search`` / ``can_text_search``): with search disabled they answer.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from agents.policy import PolicyBase
from mmsearch_env.protocol import ActionProtocol, get_protocol
from mmsearch_env.reward import normalize_answer

__all__ = [
    "DirectAnswerPolicy",
    "ExtractiveReader",
    "ForcedSearchPolicy",
    "RAGWorkflowPolicy",
    "RandomPolicy",
    "search_results",
]

_TITLE_RE = re.compile(r"^\s*\d+\.\s*title:\s*(.+?)\s*$", re.MULTILINE)
_SUMMARY_RE = re.compile(r"^\s*\d+\.\s*\(link:[^)]*\)\s*(.+?)\s*$", re.MULTILINE)
_CANDIDATE_RE = re.compile(r"\b[A-Z][\w'’-]*(?:\s+(?:of\s+|de\s+|the\s+)?[A-Z][\w'’-]*)*|\b\d[\d,.]*\b")
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+")
#: Capitalised words that start sentences or titles without naming anything.
_NOT_NAMES = frozenset(
    [
        "a",
        "an",
        "the",
        "this",
        "that",
        "these",
        "it",
        "its",
        "is",
        "in",
        "on",
        "of",
        "flag",
        "page",
        "pages",
        "wiki",
        "wikipedia",
        "image",
        "images",
        "photo",
        "what",
        "which",
        "who",
        "where",
        "when",
        "how",
        "why",
        "question",
        "answer",
        "search",
        "results",
        "title",
        "link",
    ]
)


def search_results(messages: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """``(tool, text)`` for every result the conversation returned, in order.

    ``tool`` is ``"image_search"`` (the text is a result's title) or ``"text_search"`` (a summary).
    Reads the default result templates (``"N. title: ..."`` and ``"N. (link: URL) ..."``).
    """
    found: list[tuple[str, str]] = []
    for message in messages[1:]:
        if message.get("role") not in ("user", "tool"):
            continue
        text = "".join(b.get("text", "") for b in message.get("content", []) if b.get("type") == "text")
        found.extend(("image_search", t) for t in _TITLE_RE.findall(text))
        found.extend(("text_search", t) for t in _SUMMARY_RE.findall(text))
    return found


def _last_query(messages: Sequence[Mapping[str, Any]], protocol: ActionProtocol) -> str:
    for message in reversed(messages):
        if message.get("role") == "assistant":
            text = "".join(b.get("text", "") for b in message.get("content", []) if b.get("type") == "text")
            action = protocol.parse(text)
            if action.kind == "text_search":
                return action.content or ""
    return ""


class ExtractiveReader:
    """A model-free answerer: the name or number the search results tie closest to the question.

    Each result is split into sentences; every capitalised phrase or number in a sentence is a
    candidate, weighted by ``(1 + question words in that sentence) / rank``. Candidates made only of
    question words are dropped, and those typed into the last text query count a quarter (the answer
    is usually a fact *about* what was searched for). Returns ``"unknown"`` when nothing was read. It
    is a baseline, not a model: it cannot see the image and knows nothing.
    """

    def __call__(self, observation: Mapping[str, Any], info: Mapping[str, Any], protocol: ActionProtocol) -> str:
        messages = observation.get("messages", [])
        question_words = set(normalize_answer(str(observation.get("question", ""))).split())
        content_words = {w for w in question_words - _NOT_NAMES if len(w) > 2}
        query_words = set(normalize_answer(_last_query(messages, protocol)).split())
        scores: Counter[str] = Counter()
        first_seen: dict[str, int] = {}
        display: dict[str, str] = {}  # normalised candidate -> how it was first written
        ranks: Counter[str] = Counter()
        for tool, text in search_results(messages):
            ranks[tool] += 1
            for sentence in _SENTENCE_RE.split(text):
                sentence_words = set(normalize_answer(sentence).split())
                overlap = len(content_words & sentence_words)
                for match in _CANDIDATE_RE.finditer(sentence):
                    name = match.group(0).strip()
                    words = [w for w in normalize_answer(name).split() if w not in _NOT_NAMES]
                    if not words or set(words) <= question_words:
                        continue
                    key = " ".join(words)
                    weight = (1.0 + overlap) / ranks[tool]
                    if set(words) <= query_words:
                        weight *= 0.25
                    scores[key] += weight
                    first_seen.setdefault(key, len(first_seen))
                    display.setdefault(key, " ".join(w for w in name.split() if normalize_answer(w) in words))
        if not scores:
            return "unknown"
        best = max(scores, key=lambda k: (scores[k], -first_seen[k]))
        return display.get(best) or best


def _usage_of(policy: Any, n: int) -> list[dict[str, int] | None]:
    """The policy's ``last_usage`` for its last batch of ``n``, or ``None`` each when it has none."""
    usage = getattr(policy, "last_usage", None)
    return list(usage) if isinstance(usage, list) and len(usage) == n else [None] * n


class _Workflow(PolicyBase):
    """Shared plumbing: a protocol, an answerer (policy or reader), usage bookkeeping."""

    label = "workflow"

    def __init__(self, answerer: Any | None = None, *, protocol: str | ActionProtocol = "tags"):
        self.protocol = get_protocol(protocol)
        self.answerer = answerer
        self.reader = ExtractiveReader()
        self.last_usage: list[dict[str, int] | None] | None = None

    @property
    def model_free(self) -> bool:
        """True without an answerer (or with a model-free one): a plumbing check, not a baseline."""
        return self.answerer is None or bool(getattr(self.answerer, "model_free", False))

    @property
    def name(self) -> str:
        inner = getattr(self.answerer, "name", None)
        return f"{self.label}[{inner}]" if inner else self.label

    def _answers(
        self, observations: Sequence[Mapping[str, Any]], infos: Sequence[Mapping[str, Any]]
    ) -> tuple[list[str], list[dict[str, int] | None]]:
        """Answer turns for the batch and their token usage: from the answerer (forced to answer) or the reader."""
        if self.answerer is None:
            turns = [
                self.protocol.format_action("answer", self.reader(o, i, self.protocol), reason="From what I read.")
                for o, i in zip(observations, infos, strict=True)
            ]
            return turns, [None] * len(turns)
        turns = list(self.answerer.act_batch(observations, infos))
        usage = _usage_of(self.answerer, len(turns))
        out = []
        for turn, observation, info in zip(turns, observations, infos, strict=True):
            if self.protocol.parse(turn).kind == "answer":
                out.append(turn)
            else:  # the workflow allows no search here: keep the model's answer attempt out of it
                answer = self.reader(observation, info, self.protocol)
                out.append(self.protocol.format_action("answer", answer, reason="No search allowed now."))
        return out, usage


class DirectAnswerPolicy(_Workflow):
    """Answers in the first turn and never searches (the paper's "direct answer").

    Args:
        answerer: the model that writes the answer; a turn of it that is not an answer is replaced by
            the reader's answer. ``None``: model-free, answers ``"unknown"`` (nothing was read).
        protocol: the environment's protocol.
    """

    label = "direct"

    def act_batch(self, observations: Sequence[Mapping[str, Any]], infos: Sequence[Mapping[str, Any]]) -> list[str]:
        turns, self.last_usage = self._answers(observations, infos)
        return turns


class ForcedSearchPolicy(_Workflow):
    """Runs the RAG search plan (image search, then text search) whenever allowed, then lets ``inner`` answer.

    The text query is the top image-search title followed by the question. Used for the "forced
    search" rerun of the search-utility metrics and, with a reader as the inner step, as the RAG
    workflow. Searches the limits forbid (``info["can_*"]``) are skipped.

    Args:
        inner: the policy that writes the turns after the forced searches (its answer is kept as
            written, even if it asks for another search). ``None``: the model-free reader answers.
        protocol: the environment's protocol.
    """

    label = "forced-search"

    def __init__(self, inner: Any | None = None, *, protocol: str | ActionProtocol = "tags"):
        super().__init__(inner, protocol=protocol)

    def _forced(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> str | None:
        if int(info.get("turn", 0)) == 0 and info.get("can_image_search", True):
            return self.protocol.format_action("image_search", reason="First find what the image shows.")
        if info.get("text_searches", 0) == 0 and info.get("can_text_search", True) and int(info.get("turn", 0)) <= 1:
            titles = [t for tool, t in search_results(observation.get("messages", [])) if tool == "image_search"]
            query = " ".join(([titles[0]] if titles else []) + [str(observation.get("question", ""))]).strip()
            return self.protocol.format_action("text_search", query[:200], reason="Now look the fact up.")
        return None

    def act_batch(self, observations: Sequence[Mapping[str, Any]], infos: Sequence[Mapping[str, Any]]) -> list[str]:
        turns: list[str | None] = [self._forced(o, i) for o, i in zip(observations, infos, strict=True)]
        usage: list[dict[str, int] | None] = [None] * len(turns)
        rest = [k for k, t in enumerate(turns) if t is None]
        if rest:
            sub_obs = [observations[k] for k in rest]
            sub_info = [infos[k] for k in rest]
            if self.answerer is None:
                answers, sub_usage = self._answers(sub_obs, sub_info)
            else:
                answers = list(self.answerer.act_batch(sub_obs, sub_info))
                sub_usage = _usage_of(self.answerer, len(answers))
            for k, turn, used in zip(rest, answers, sub_usage, strict=True):
                turns[k], usage[k] = turn, used
        self.last_usage = usage
        return [t or "" for t in turns]


class RAGWorkflowPolicy(ForcedSearchPolicy):
    """The paper's RAG workflow: image search → text search → answer, always (when the limits allow).

    Args:
        answerer: the model that writes the final answer (its non-answer turns are replaced by the
            reader's answer, since the workflow allows no third search). ``None``: model-free reader.
        protocol: the environment's protocol.
    """

    label = "rag"

    def act_batch(self, observations: Sequence[Mapping[str, Any]], infos: Sequence[Mapping[str, Any]]) -> list[str]:
        turns: list[str | None] = [self._forced(o, i) for o, i in zip(observations, infos, strict=True)]
        usage: list[dict[str, int] | None] = [None] * len(turns)
        rest = [k for k, t in enumerate(turns) if t is None]
        if rest:
            answers, sub_usage = self._answers([observations[k] for k in rest], [infos[k] for k in rest])
            for k, turn, used in zip(rest, answers, sub_usage, strict=True):
                turns[k], usage[k] = turn, used
        self.last_usage = usage
        return [t or "" for t in turns]


class RandomPolicy(PolicyBase):
    """Picks uniformly among the actions allowed this turn (image search, text search, answer).

    Queries are the question; answers come from :class:`ExtractiveReader`. The choice depends only on
    ``(seed, example id, turn)``, so results do not depend on batching or concurrency.
    """

    model_free = True

    def __init__(self, seed: int = 0, *, protocol: str | ActionProtocol = "tags"):
        self.seed = int(seed)
        self.protocol = get_protocol(protocol)
        self.reader = ExtractiveReader()
        self.name = "random" if self.seed == 0 else f"random-{self.seed}"

    def act(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> str:
        options = ["answer"]
        if info.get("can_image_search", True):
            options.append("image_search")
        if info.get("can_text_search", True):
            options.append("text_search")
        key = zlib.crc32(str(info.get("example_id", "")).encode("utf-8"))
        rng = np.random.default_rng([self.seed, key, int(info.get("turn", 0))])
        kind = options[int(rng.integers(len(options)))]
        if kind == "answer":
            return self.protocol.format_action("answer", self.reader(observation, info, self.protocol), reason="Guess.")
        if kind == "text_search":
            return self.protocol.format_action("text_search", str(observation.get("question", "")), reason="Look up.")
        return self.protocol.format_action("image_search", reason="Look at similar images.")
