"""An LLM judge for answers, through any OpenAI-compatible endpoint, with our own rule-based prompt.

The paper evaluates with a GPT-4o judge at temperature 0. The rules it follows (REFERENCE.md §1) are
written out in :data:`JUDGE_PROMPT` in our own words: a more specific form of the ground truth is
correct; extra correct detail is fine; a contradiction or a missing critical part is wrong; numbers may
be in other units; a person's name needs first and last name; yes/no must match; matching any
candidate answer suffices. The judge replies with one word, ``CORRECT`` or ``INCORRECT``.

An answer that already matches exactly (the reward's scorer) is correct without asking the judge:
the rules accept every exact match, and this saves calls.
"""

from __future__ import annotations

import concurrent.futures
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agents.openai_policy import OpenAIChatClient, parse_endpoint_spec, reply_text, reply_usage
from mmsearch_env.reward import exact_match

__all__ = ["JUDGE_PROMPT", "JudgeItem", "LLMJudge", "parse_verdict"]

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
        base_url: the API root (``.../v1``).
        api_key: default ``$OPENAI_API_KEY``.
        max_concurrency: requests in flight at once.
        timeout, max_retries: per request (see :class:`agents.openai_policy.OpenAIChatClient`).

    ``usage`` accumulates the judge's prompt and completion tokens; ``calls`` counts requests.
    """

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key: str | None = None,
        max_concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 3,
    ):
        self.model = model
        self.max_concurrency = max(1, int(max_concurrency))
        self.client = OpenAIChatClient(
            base_url, api_key=api_key, timeout=timeout, max_retries=max_retries, pool_size=self.max_concurrency
        )
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0}
        self.calls = 0

    @classmethod
    def from_spec(cls, spec: str, **kwargs: Any) -> LLMJudge:
        """``"openai:MODEL@BASE_URL"`` (or ``"MODEL@BASE_URL"``) → a judge."""
        model, base_url = parse_endpoint_spec(spec.removeprefix("openai:"))
        return cls(model, base_url, **kwargs)

    @property
    def name(self) -> str:
        return f"judge:{self.model}"

    def _ask(self, item: JudgeItem) -> tuple[bool | None, dict[str, int] | None]:
        prompt = JUDGE_PROMPT.format(
            question=item.question,
            ground_truth=item.ground_truth,
            candidates="; ".join(item.candidate_answers) or "(none)",
            answer=item.answer if item.answer is not None else "(no answer)",
        )
        body = self.client.create(
            {
                "model": self.model,
                "messages": [{"role": "user", "content": prompt}],
                "temperature": 0.0,
                "max_tokens": 16,
            }
        )
        return parse_verdict(reply_text(body)), reply_usage(body)

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
            with concurrent.futures.ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(ask))) as pool:
                answers = list(pool.map(self._ask, [items[k] for k in ask]))
            for k, (verdict, usage) in zip(ask, answers, strict=True):
                verdicts[k] = verdict
                self.calls += 1
                if usage:
                    for key in self.usage:
                        self.usage[key] += usage[key]
        return verdicts

    def close(self) -> None:
        self.client.close()
