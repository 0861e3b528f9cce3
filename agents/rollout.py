"""Run policies over MMSearch-v0 episodes and summarise what they did."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym
from tqdm.auto import tqdm

__all__ = ["EpisodeSummary", "TextPolicy", "run_episodes", "summarize"]


class TextPolicy(Protocol):
    """Anything that writes the next assistant turn from the observation and info."""

    name: str

    def act(self, observation: dict[str, Any], info: dict[str, Any]) -> str: ...


def run_episodes(
    env: gym.Env,
    policy: TextPolicy,
    indices: Iterable[int],
    *,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """One episode per dataset index; returns each episode's terminal ``info``.

    The progress bar shows live accuracy and search ratio.
    """
    indices = list(indices)
    finals: list[dict[str, Any]] = []
    bar = tqdm(indices, desc=policy.name, disable=not progress, leave=False)
    for index in bar:
        observation, info = env.reset(options={"index": index})
        while True:
            observation, _, terminated, truncated, info = env.step(policy.act(observation, info))
            if terminated or truncated:
                break
        finals.append(info)
        partial = summarize(finals, env.unwrapped.max_searches_per_episode)
        bar.set_postfix(acc=f"{partial.accuracy:.2f}", search=f"{partial.search_ratio_episodes:.2f}", refresh=False)
    return finals


@dataclass(frozen=True)
class EpisodeSummary:
    """Aggregates over finished episodes.

    Attributes:
        search_ratio_episodes: share of episodes that made at least one search (paper, def. 1).
        search_ratio_calls: searches made over the most an episode may make, summed (paper, def. 2).
    """

    episodes: int
    accuracy: float
    mean_reward: float
    format_rate: float
    search_ratio_episodes: float
    search_ratio_calls: float
    image_searches: int
    text_searches: int
    search_failures: int

    def as_row(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarize(finals: Sequence[dict[str, Any]], max_searches_per_episode: int) -> EpisodeSummary:
    """Summarise terminal infos (as returned by :func:`run_episodes`)."""
    n = len(finals)
    if n == 0:
        return EpisodeSummary(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, 0)
    searches = [f["image_searches"] + f["text_searches"] for f in finals]
    return EpisodeSummary(
        episodes=n,
        accuracy=sum(bool(f["correct"]) for f in finals) / n,
        mean_reward=sum(f["reward_parts"]["reward"] for f in finals) / n,
        format_rate=sum(bool(f["format_ok"]) for f in finals) / n,
        search_ratio_episodes=sum(s > 0 for s in searches) / n,
        search_ratio_calls=sum(searches) / (n * max_searches_per_episode) if max_searches_per_episode else 0.0,
        image_searches=sum(f["image_searches"] for f in finals),
        text_searches=sum(f["text_searches"] for f in finals),
        search_failures=sum(f["search_failures"] for f in finals),
    )
