"""The GRPO reward: the env's own score of each rollout's turns, with its parts logged."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agents.grpo.processing import assistant_header_ids, end_of_turn_id
from agents.grpo.tool_env import MMSearchToolEnv
from agents.metrics import Outcome, training_metrics
from mmsearch_env.errors import ConfigError
from mmsearch_env.reward import RewardBreakdown

__all__ = ["EnvReward", "split_turns"]


def split_turns(completion_ids: Sequence[int], header_ids: Sequence[int], end_ids: Sequence[int]) -> list[list[int]]:
    """The model's turns inside a multi-turn completion, as token-id lists.

    A completion is ``turn₁ <end> tool-result <header> turn₂ <end> …`` where ``<header>`` is the
    chat template's assistant header (e.g. ``<|im_start|>assistant\\n``) and ``<end>`` an end-of-turn
    token. Tool-result text cannot contain the header: the env escapes chat-template tokens.

    >>> split_turns([5, 6, 2, 9, 9, 1, 7, 8, 5, 2], header_ids=[1, 7], end_ids=[2])
    [[5, 6], [8, 5]]
    """
    turns: list[list[int]] = []
    ends = set(end_ids)
    n, h = len(completion_ids), len(header_ids)
    i = 0
    start: int | None = 0
    while i < n:
        if start is not None:
            if completion_ids[i] in ends:
                turns.append(list(completion_ids[start:i]))
                start = None
            i += 1
        elif h and list(completion_ids[i : i + h]) == list(header_ids):
            start = i + h
            i += h
        else:
            i += 1
    if start is not None:
        turns.append(list(completion_ids[start:]))  # cut by the length limit: an unfinished turn
    return turns


class EnvReward:
    """The env's reward for each rollout (TRL reward function), with its parts logged as metrics.

    Needs ``environments=`` (TRL passes the rollouts' :class:`MMSearchToolEnv`) and
    ``completion_ids=``. Logged per step: ``mmsearch/accuracy``, ``mmsearch/format``,
    ``mmsearch/search_ratio`` (episodes that searched), ``mmsearch/image_search_ratio``,
    ``mmsearch/text_search_ratio``, ``mmsearch/searches``, ``mmsearch/tool_failures``, ``mmsearch/turns``.
    A class rather than a function because it holds the tokenizer's header and end ids.
    """

    __name__ = "mmsearch_reward"

    def __init__(self, tokenizer: Any) -> None:
        self.header_ids = assistant_header_ids(tokenizer)
        self.end_ids = [end_of_turn_id(tokenizer)]
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in self.end_ids:
            self.end_ids.append(tokenizer.eos_token_id)
        self.tokenizer = tokenizer
        self.last: list[tuple[RewardBreakdown, dict[str, Any]]] = []

    def turns(self, completion_ids: Sequence[int]) -> list[str]:
        """The model's turns of one completion, as text."""
        pieces = split_turns(completion_ids, self.header_ids, self.end_ids)
        return [self.tokenizer.decode(p, skip_special_tokens=True) for p in pieces]

    def __call__(
        self,
        prompts: Any = None,
        completions: Any = None,
        completion_ids: Sequence[Sequence[int]] | None = None,
        environments: Sequence[MMSearchToolEnv] | None = None,
        log_metric: Any = None,
        **kwargs: Any,
    ) -> list[float]:
        if environments is None or completion_ids is None:
            raise ConfigError("EnvReward needs GRPOTrainer(environment_factory=...): it scores through the env")
        self.last = [
            env.episode.score_turns(self.turns(ids)) for ids, env in zip(completion_ids, environments, strict=True)
        ]
        if log_metric is not None:
            # the same metrics code as evaluation (agents.metrics), so a training curve and a report agree
            for name, value in training_metrics(Outcome.from_reward(b, i) for b, i in self.last).items():
                log_metric(f"mmsearch/{name}", value)
        return [b.reward for b, _ in self.last]
