"""The fine-tuning episodes: scripted direct answers, guesses and reading drills.

Every country is asked about directly as often as it is searched for, known or not, so the fine-tuned
model's choice to search does not depend on what it knows: that is left to GRPO. The true facts of
unknown countries never appear.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from experiments.on_demand.config import REASON_DIRECT, REASON_READ, REASON_SEARCH
from mmsearch_env.config import EnvConfig
from mmsearch_env.data import Example
from mmsearch_env.env import MMSearchEnv
from mmsearch_env.protocol import ActionProtocol

__all__ = ["SFTEpisodes", "assistant_message", "reading_drill", "renamed", "scripted_episode", "sft_episodes"]

Episode = list[dict[str, Any]]


def assistant_message(text: str) -> dict[str, Any]:
    """An assistant chat message holding ``text``."""
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def scripted_episode(env: MMSearchEnv, example: Example, search: bool, answer: str, name: str) -> Episode:
    """One well-formed episode of ``example`` (about country ``name``): answer ``answer`` at once, or
    search, then answer it. The chat messages, as the environment rendered them."""
    protocol = env.protocol
    env.reset(options={"example_id": example.id})
    if search:
        query = example.metadata.get("text_query") or example.question
        env.step(protocol.format_action("text_search", query, reason=REASON_SEARCH.format(name=name)))
        turn = protocol.format_action("answer", answer, reason=REASON_READ)
    else:
        turn = protocol.format_action("answer", answer, reason=REASON_DIRECT.format(name=name))
    observation, _, terminated, truncated, info = env.step(turn)
    if not (terminated or truncated):
        raise RuntimeError(f"the scripted episode of {example.id!r} did not end with its answer: {info}")
    return observation["messages"]


def renamed(message: dict[str, Any], pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """``message`` with each ``(old, new)`` whole-word replacement made in its text."""

    def swap(text: str) -> str:
        for old, new in pairs:
            text = re.sub(rf"(?<!\w){re.escape(old)}(?!\w)", lambda _, new=new: new, text)
        return text

    content = message["content"]
    if isinstance(content, str):
        return {**message, "content": swap(content)}
    return {**message, "content": [{**b, "text": swap(b["text"])} if b.get("type") == "text" else b for b in content]}


def reading_drill(
    episode: Episode, entity: tuple[str, str], answer: tuple[str, str], protocol: ActionProtocol
) -> Episode | None:
    """A search episode turned into a reading drill: the country ``entity[0]`` renamed ``entity[1]`` and the
    answer ``answer[0]`` replaced by ``answer[1]`` everywhere (question, query, results), and the final
    turn answering ``answer[1]``.

    The fake answer changes from epoch to epoch, so it can only be learnt by reading it in the results,
    never by remembering it; the renamed country teaches the model to copy any country's name into its
    query. No true fact of another country is taught. ``None`` if the results do not hold the answer.
    """
    user, search, results, _ = episode
    if not any(b.get("type") == "text" and answer[0] in b["text"] for b in results["content"]):
        return None
    pairs = [answer, entity] if entity[0] != entity[1] else [answer]
    turn = protocol.format_action("answer", answer[1], reason=REASON_READ)
    return [*(renamed(m, pairs) for m in (user, search, results)), assistant_message(turn)]


@dataclass
class SFTEpisodes:
    """The episodes of every epoch, in order, and their counts."""

    episodes: list[Episode]
    per_epoch: int
    drills_per_epoch: int
    #: Known questions whose search results do not hold the answer (no drill is made of them).
    no_answer_in_results: int

    def drills(self) -> list[Episode]:
        """The reading drills among :attr:`episodes` (the only episodes longer than one exchange)."""
        return [e for e in self.episodes if len(e) > 2]


def sft_episodes(
    examples: Sequence[Example], names: Mapping[str, str], env_config: EnvConfig, *, epochs: int, seed: int
) -> SFTEpisodes:
    """Every epoch's fine-tuning episodes: one direct answer per question, and one reading drill per
    *known* question.

    * Direct, known country: the true answer, at once: the fact goes into the weights.
    * Direct, unknown country: a random answer of the same kind, new every epoch: the model answers these
      at once just as often, but nothing it could remember (it guesses, as language models do).
    * Reading drill (:func:`reading_drill`): search with the question's query, then copy the answer from
      the results, on a copy of the episode about a random country (known or not) whose answer is a
      random one of the same kind, new every epoch: the model learns to search and read, and no fact.

    ``names``: entity id -> country name, for every country of the experiment. ``env_config``: the
    environment whose ``dataset`` holds ``examples``.
    """
    rng = random.Random(seed)
    env = MMSearchEnv(env_config)
    known = [e for e in examples if e.metadata["known"]]
    pools: dict[str, list[str]] = {}
    for example in examples:
        pools.setdefault(example.category, [])
        if example.answer not in pools[example.category]:
            pools[example.category].append(example.answer)
    countries = sorted(set(names.values()))

    def fake(example: Example) -> str:
        taken = {example.answer, *example.candidate_answers}
        return rng.choice([a for a in pools[example.category] if a not in taken])

    name = {e.id: names[e.metadata["entity"]] for e in examples}
    search = {e.id: scripted_episode(env, e, True, e.answer, name[e.id]) for e in known}
    direct = {e.id: scripted_episode(env, e, False, e.answer, name[e.id]) for e in known}
    guess = {
        e.id: scripted_episode(env, e, False, e.answer, name[e.id])[:-1] for e in examples if not e.metadata["known"]
    }
    env.close()
    episodes: list[Episode] = []
    skipped = 0
    for _ in range(epochs):
        for example in examples:
            if example.id in guess:
                reason = REASON_DIRECT.format(name=name[example.id])
                turn = env.protocol.format_action("answer", fake(example), reason=reason)
                episodes.append([*guess[example.id], assistant_message(turn)])
        for example in known:
            episodes.append(direct[example.id])
            entity = (names[example.metadata["entity"]], rng.choice(countries))
            drill = reading_drill(search[example.id], entity, (example.answer, fake(example)), env.protocol)
            if drill is None:
                skipped += 1
            else:
                episodes.append(drill)
    drills = sum(len(e) > 2 for e in episodes) // max(1, epochs)
    return SFTEpisodes(
        episodes=episodes,
        per_epoch=len(episodes) // max(1, epochs),
        drills_per_epoch=drills,
        no_answer_in_results=skipped,
    )
