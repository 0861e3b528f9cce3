"""An LLM judge for answers, through any OpenAI-compatible endpoint, with our own rule-based prompt.

The paper evaluates with a GPT-4o judge at temperature 0. The rules it follows (REFERENCE.md §1) are
written out in :data:`JUDGE_PROMPT` in our own words: a more specific form of the ground truth is
correct; extra correct detail is fine; a contradiction or a missing critical part is wrong; numbers may
be in other units; a person's name needs first and last name; yes/no must match; matching any
candidate answer suffices. The judge replies with one word, ``CORRECT`` or ``INCORRECT``.

An answer that already matches exactly (the reward's scorer) is correct without asking the judge:
the rules accept every exact match, and this saves calls. The requests go through the official ``openai``
SDK (:class:`~mmsearch_env.search.openai_chat.ChatEndpoint`: ``pip install 'mmsearch-env[openai]'``),
``concurrency`` at a time; a request still failing after the SDK's retries raises
:class:`~agents.openai_policy.EndpointError` (its text never contains the key).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agents.openai_policy import api_key_or_default, parse_endpoint_spec, resolve_concurrency
from mmsearch_env.reward import exact_match
from mmsearch_env.search.openai_chat import ChatEndpoint, GenerationSettings

__all__ = ["JUDGE_PROMPT", "JUDGE_SETTINGS", "JudgeItem", "LLMJudge", "parse_verdict"]

# Greedy, as the paper's GPT-4o judge; one word needs few tokens (16 leaves room for "Correct." variants).
JUDGE_SETTINGS = GenerationSettings(max_tokens=16, temperature=0.0, timeout=60.0)

JUDGE_PROMPT = """You grade answers to questions about images. Decide whether the model's answer is correct \
given the ground truth, following these rules:
1. An answer that is a more specific form of the ground truth is correct (e.g. a city district for a city \
is wrong, but "Golden Retriever" for "retriever" is correct).
2. Extra details are fine as long as they are correct and do not contradict the ground truth.
3. An answer that contradicts the ground truth, or leaves out a critical part of it, is incorrect.
4. Numbers may be given in other units or formats if the value is the same (e.g. "1.5 km" for "1500 m").
5. A person's name must include both the first and the last name to be correct.
6. For yes/no questions the yes or no must match the ground truth.
7. If the answer matches any of the candidate answers under these rules, it is correct.
8. An empty answer, "unknown", or a refusal is incorrect.

Question: {question}
Ground truth: {ground_truth}
Candidate answers: {candidates}
Model's answer: {answer}

Reply with exactly one word: CORRECT or INCORRECT."""

_VERDICT_RE = re.compile(r"\b(INCORRECT|CORRECT)\b", re.IGNORECASE)


def parse_verdict(text: str) -> bool | None:
    """The judge's last ``CORRECT`` / ``INCORRECT`` word as a bool; ``None`` when there is none.

    >>> parse_verdict("INCORRECT"), parse_verdict("Reasoning... so: correct."), parse_verdict("maybe")
    (False, True, None)
    """
    found = _VERDICT_RE.findall(text or "")
    return None if not found else found[-1].upper() == "CORRECT"


@dataclass(frozen=True)
class JudgeItem:
    """One answer to grade."""

    question: str
    answer: str | None
    ground_truth: str
    candidate_answers: tuple[str, ...] = ()


class LLMJudge:
    """Grades answers with a chat model behind an OpenAI-compatible endpoint (temperature 0).

    Args:
        model: the judge model's name.
        base_url: the API root (``.../v1``), optionally with a settings query (``?timeout=30``).
        api_key: default ``OPENAI_API_KEY`` (environment or secrets file); ``""``: send no key.
        settings: generation and request settings (default :data:`JUDGE_SETTINGS`: greedy,
            ``max_tokens=16``, ``timeout=60`` s, the SDK's 2 retries, 8 requests in flight).
        max_tokens, temperature, top_p, stop, timeout, max_retries, concurrency: override one field.
        max_concurrency: the former name of ``concurrency``.

    ``usage`` accumulates the judge's prompt and completion tokens; ``calls`` counts requests;
    ``cut`` counts replies that ended at ``max_tokens`` (``finish_reason == "length"``).
    """

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key: str | None = None,
        settings: GenerationSettings | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        concurrency: int | None = None,
        max_concurrency: int | None = None,
    ):
        self.model = model
        self.endpoint = ChatEndpoint(
            model,
            base_url,
            api_key=api_key_or_default(api_key),
            settings=settings or JUDGE_SETTINGS,
            overrides={
                "max_tokens": max_tokens,
                "temperature": temperature,
                "top_p": top_p,
                "stop": stop,
                "timeout": timeout,
                "max_retries": max_retries,
                "concurrency": resolve_concurrency(concurrency, max_concurrency),
            },
            what="the judge endpoint",
        )
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0}
        self.calls = 0
        self.cut = 0

    @classmethod
    def from_spec(cls, spec: str, **kwargs: Any) -> LLMJudge:
        """``"openai:MODEL@BASE_URL[?SETTINGS]"`` (or ``"MODEL@BASE_URL"``) → a judge."""
        model, base_url = parse_endpoint_spec(spec.removeprefix("openai:"))
        return cls(model, base_url, **kwargs)

    @property
    def name(self) -> str:
        return f"judge:{self.model}"

    @staticmethod
    def prompt(item: JudgeItem) -> str:
        """The judge's prompt for one item (:data:`JUDGE_PROMPT` filled in)."""
        return JUDGE_PROMPT.format(
            question=item.question,
            ground_truth=item.ground_truth,
            candidates="; ".join(item.candidate_answers) or "(none)",
            answer=item.answer if item.answer is not None else "(no answer)",
        )

    def judge_batch(self, items: Sequence[JudgeItem]) -> list[bool | None]:
        """One verdict per item: True (correct), False, or None (the judge's reply had no verdict)."""
        verdicts: list[bool | None] = [None] * len(items)
        ask = []
        for k, item in enumerate(items):
            if exact_match(item.answer, item.ground_truth, item.candidate_answers):
                verdicts[k] = True
            elif not (item.answer or "").strip():
                verdicts[k] = False  # rule 8, no call needed
            else:
                ask.append(k)
        if ask:
            replies = self.endpoint.create_many([[{"role": "user", "content": self.prompt(items[k])}] for k in ask])
            for k, reply in zip(ask, replies, strict=True):
                verdicts[k] = parse_verdict(reply.text)
                self.calls += 1
                self.cut += reply.finish_reason == "length"
                for key in self.usage:
                    self.usage[key] += getattr(reply, key) or 0
        return verdicts

    def close(self) -> None:
        self.endpoint.close()
