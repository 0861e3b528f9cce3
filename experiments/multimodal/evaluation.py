"""Evaluation: the policies, greedy episodes on held-out countries, and the metrics of each finding.

Every question has one right action shape, given what the model was taught about its country
(:func:`ideal_shape`): answer (``A``), image search then answer (``I``), text search then answer
(``T``), or image search, text search, answer (``IT``). The metrics (:func:`metrics`) are the rates the
findings need: image search on recognised / unrecognised flags, text search on known / unknown capitals,
the image → text chain where both are needed, accuracy, searches per question, and the share of
questions answered with their right shape.

What was taught is not always what was learned. The paper calls a question search-free when the model
answers it without searching; :func:`measured_knowledge` reads that off the direct policy (answer turn
forced), and :func:`metrics` then also gives the search rates by *measured* knowledge: the flags the
model names, the capitals it gives.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agents.baselines import ForcedSearchPolicy
from agents.hf_policy import HFPolicy
from agents.rollout import rollout
from experiments.multimodal.config import PHRASING, QUERY, REASON_IMAGE, REASON_SEARCH, UNSURE, MultimodalConfig
from experiments.on_demand.evaluation import model_policy
from mmsearch_env.config import EnvConfig
from mmsearch_env.records import EpisodeRecord

__all__ = [
    "RAGPolicy",
    "decision_tokens",
    "direct_policy",
    "ideal_shape",
    "measured_knowledge",
    "metrics",
    "model_policy",
    "named_country",
    "rag_policy",
    "run_policy",
    "search_tokens",
    "shape",
]

_LETTERS = {"image_search": "I", "text_search": "T"}


def _first_token(tokenizer: Any, text: str) -> int:
    return tokenizer.encode(text, add_special_tokens=False)[0]


def decision_tokens(tokenizer: Any) -> dict[str, int]:
    """The tokens that choose a search where the policy decides: ``image`` (the image-search reason's
    first token, in the place of the flag's name) and ``search`` (:data:`UNSURE`, in the place of the
    capital after ``"{name}: "``). Any other token there answers from memory."""
    out = {"image": _first_token(tokenizer, REASON_IMAGE), "search": _first_token(tokenizer, UNSURE)}
    if tokenizer.convert_ids_to_tokens(out["search"]) != UNSURE or out["image"] == out["search"]:
        raise RuntimeError(f"{UNSURE!r} must be one token of its own and differ from the image reason's, got {out}")
    return out


def search_tokens(tokenizer: Any) -> list[int]:
    """Every token that starts a search where the policy decides: the two :func:`decision_tokens` and
    both search tags. Banning them forces the answer turn (the knowledge measure)."""
    tokens = decision_tokens(tokenizer)
    return [tokens["image"], tokens["search"], *tokenizer.convert_tokens_to_ids(["<search>", "<text_search>"])]


def direct_policy(model_dir: Path, config: MultimodalConfig) -> HFPolicy:
    """The knowledge measure: the model with its answer turn forced. Greedy, with the tokens that start
    the image-search reason, the text-search decision and both search tags banned, so it names a country
    (or copies the named one) and answers it from memory in its first turn."""
    policy = model_policy(model_dir, config)
    policy.model.generation_config.bad_words_ids = [[t] for t in search_tokens(policy.tokenizer)]
    policy.name = "direct (answer turn forced)"
    return policy


def top_title(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """The first result's title in the last tool turn, as the experiment's compact prompts show it
    (``1. <thumbnail>{title}</information>``)."""
    if not messages:
        return None
    content = messages[-1]["content"]
    text = content if isinstance(content, str) else "".join(b.get("text", "") for b in content)
    found = re.search(r"1\. ([^<\n]+)", text)
    return found.group(1).strip() if found else None


_NAMED = re.compile(re.escape(PHRASING["named-capital"]).replace(re.escape("{name}"), "(.+)"))


def named_country(question: str) -> str | None:
    """The country a ``named-capital`` question names, else None.

    >>> named_country("What is the capital of Peru?"), named_country(PHRASING["flag-capital"])
    ('Peru', None)
    """
    found = _NAMED.fullmatch(question.strip())
    return found.group(1) if found and question.strip() not in PHRASING.values() else None


class RAGPolicy(ForcedSearchPolicy):
    """The RAG workflow in the experiment's own turn format: image search first, then a text search for
    the capital of the country the question names or, when it names none, of the top image result (the
    query and reason the model itself writes, :data:`QUERY`), then ``inner`` answers."""

    label = "rag"

    def _forced(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> str | None:
        turn = int(info.get("turn", 0))
        if turn == 0 and info.get("can_image_search", True):
            return self.protocol.format_action("image_search", reason=REASON_IMAGE)
        if turn == 1 and info.get("can_text_search", True):
            question = str(observation.get("question", ""))
            name = named_country(question) or top_title(observation.get("messages", [])) or question
            return self.protocol.format_action(
                "text_search", QUERY.format(name=name)[:200], reason=REASON_SEARCH.format(name=name)
            )
        return None


def rag_policy(sft_dir: Path, config: MultimodalConfig) -> RAGPolicy:
    """The RAG workflow: image search, then text search, then the fine-tuned model answers."""
    return RAGPolicy(model_policy(sft_dir, config), protocol=config.env.protocol)


def run_policy(policy: Any, dataset: Path, env_config: EnvConfig) -> list[EpisodeRecord]:
    """One greedy episode per question of ``dataset``, in dataset order."""
    env = env_config.replace(dataset=str(dataset), split=None)
    result = rollout(policy, env_config=env, concurrency=64, progress=False, batch_wait_s=0.05)
    return sorted(result.records, key=lambda r: r.index)


def shape(record: EpisodeRecord) -> str:
    """The searches of an episode, in order: ``A`` (none), ``I``, ``T``, ``IT``, ``TI``..."""
    letters = "".join(_LETTERS.get(a.kind, "") for a in record.actions)
    return letters or "A"


def ideal_shape(kind: str, recognised: bool, known: bool) -> str:
    """The right action shape of a question, given what the model was taught.

    >>> [ideal_shape("flag-capital", r, k) for r in (True, False) for k in (True, False)]
    ['A', 'T', 'I', 'IT']
    """
    if kind == "name":
        return "A" if recognised else "I"
    if kind == "named-capital":
        return "A" if known else "T"
    return ("" if recognised else "I") + ("" if known else "T") or "A"


def _rate(values: Sequence[bool]) -> float | None:
    return sum(values) / len(values) if values else None


def measured_knowledge(
    direct: Sequence[EpisodeRecord], questions: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, bool]]:
    """What the model knows of each country, measured: entity -> ``names_flag`` (the direct policy
    answered its ``name`` question) and ``gives_capital`` (it answered its ``named-capital`` question).
    ``direct``: the episodes of :func:`direct_policy` on the held-out questions."""
    out: dict[str, dict[str, bool]] = {}
    fields = {"name": "names_flag", "named-capital": "gives_capital"}
    for record in direct:
        q = questions[record.example_id]
        if q["kind"] in fields:
            out.setdefault(q["entity"], {})[fields[q["kind"]]] = bool(record.correct)
    return out


def metrics(
    records: Sequence[EpisodeRecord],
    questions: Mapping[str, Mapping[str, Any]],
    measured: Mapping[str, Mapping[str, bool]] | None = None,
) -> dict[str, Any]:
    """The findings' rates on ``records``; ``questions``: example id -> its metadata (``kind``,
    ``recognised``, ``known``, ``entity``); ``measured``: :func:`measured_knowledge`. A rate without
    questions is ``None``.

    * ``image_search_recognised`` / ``_unrecognised``: share of the flag questions (``name``,
      ``flag-capital``) that used image search, by whether the flag was taught;
    * ``text_search_known`` / ``_unknown``: share of the capital questions (``flag-capital``,
      ``named-capital``) that used text search, by whether the capital was taught;
    * ``chain``: share of ``flag-capital`` questions with neither taught that searched image, then text;
    * ``accuracy`` (all, and per kind), ``searches`` per question, ``right_shape``: share answered with
      the right action shape; ``n``;
    * with ``measured``: ``image_search_named`` / ``_unnamed`` (flag questions, by whether the direct
      policy names the flag) and ``text_search_given`` / ``_not_given`` (capital questions, by whether
      it gives the named country's capital).
    """
    rows = [(r, questions[r.example_id]) for r in records]
    flags = [(r, q) for r, q in rows if q["kind"] != "named-capital"]
    facts = [(r, q) for r, q in rows if q["kind"] != "name"]
    shapes = {r.example_id: shape(r) for r, _ in rows}
    out: dict[str, Any] = {
        "n": len(rows),
        "accuracy": _rate([r.correct for r, _ in rows]),
        "searches": sum(len(r.searches) for r, _ in rows) / max(1, len(rows)),
        "search_ratio": _rate([shapes[r.example_id] != "A" for r, _ in rows]),
        "right_shape": _rate(
            [shapes[r.example_id] == ideal_shape(q["kind"], q["recognised"], q["known"]) for r, q in rows]
        ),
        "image_search_recognised": _rate([("I" in shapes[r.example_id]) for r, q in flags if q["recognised"]]),
        "image_search_unrecognised": _rate([("I" in shapes[r.example_id]) for r, q in flags if not q["recognised"]]),
        "text_search_known": _rate([("T" in shapes[r.example_id]) for r, q in facts if q["known"]]),
        "text_search_unknown": _rate([("T" in shapes[r.example_id]) for r, q in facts if not q["known"]]),
        "chain": _rate(
            [
                shapes[r.example_id] == "IT"
                for r, q in rows
                if q["kind"] == "flag-capital" and not q["recognised"] and not q["known"]
            ]
        ),
        "format": _rate([r.format_ok for r, _ in rows]),
    }
    if measured is not None:
        for key, letter, what, (yes, no), group in (
            ("image_search", "I", "names_flag", ("named", "unnamed"), flags),
            ("text_search", "T", "gives_capital", ("given", "not_given"), facts),
        ):
            for suffix, want in ((yes, True), (no, False)):
                out[f"{key}_{suffix}"] = _rate(
                    [
                        letter in shapes[r.example_id]
                        for r, q in group
                        if measured.get(q["entity"], {}).get(what) is want
                    ]
                )
    for kind in ("name", "flag-capital", "named-capital"):
        out[f"accuracy_{kind}"] = _rate([r.correct for r, q in rows if q["kind"] == kind])
    # knowledge: the taught flags named, the taught capitals of named countries given
    out["accuracy_name_recognised"] = _rate([r.correct for r, q in rows if q["kind"] == "name" and q["recognised"]])
    out["accuracy_named_known"] = _rate([r.correct for r, q in rows if q["kind"] == "named-capital" and q["known"]])
    return out
