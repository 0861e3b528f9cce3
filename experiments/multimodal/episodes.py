"""The fine-tuning episodes: direct answers, guesses and reading drills, for every action shape.

Every question is fine-tuned on each of its action shapes equally often (and every first turn searches in
half of a question's episodes), whatever the model is taught about its country, so the fine-tuned model's
choice to search does not depend on what it knows: that is left to GRPO. Per country and epoch:

* ``name`` (flag shown): answer directly, twice (the true name if the flag is recognised, else a random
  country's name, new each time: a guess); image search, then copy the name from the results; image
  search, text search with the name read, then copy the name (the RAG workflow's shape).
* ``flag-capital`` (flag shown): answer directly (name, then capital, both written in the reason: the true
  ones only where taught);
  text search with the name, then copy the capital from the results; image search, then answer from
  memory; image search, then text search with the name read in the image results, then copy.
* ``named-capital`` (name written, blank picture): answer directly (the capital written in the reason);
  text search, then copy.

Every search episode is a *reading drill*: a real episode of the environment with the country renamed to
another (random) country in the results, the question and every later turn, and the capital replaced by
a random one, new every epoch. It can only be solved by copying, never by remembering, and it teaches no
fact and no flag the model is not taught. The one exception is an image search followed by a direct
answer: the name read is a random *known* country's, and the answer its true capital.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from experiments.multimodal.config import (
    QUERY,
    REASON_DIRECT,
    REASON_IMAGE,
    REASON_READ,
    REASON_RECALL,
    REASON_SEARCH,
)
from experiments.multimodal.data import Country
from experiments.on_demand.episodes import assistant_message, renamed
from mmsearch_env.config import EnvConfig
from mmsearch_env.data import Example
from mmsearch_env.env import MMSearchEnv

__all__ = ["Episode", "SFTEpisodes", "knowledge_episodes", "naming_episodes", "scripted", "sft_episodes"]

Episode = list[dict[str, Any]]


def scripted(env: MMSearchEnv, example: Example, actions: Sequence[str]) -> Episode:
    """The chat messages of ``example`` played with ``actions`` (formatted assistant turns), as the
    environment rendered them; the last action must end the episode."""
    env.reset(options={"example_id": example.id})
    observation: dict[str, Any] = {}
    for i, action in enumerate(actions):
        observation, _, terminated, truncated, info = env.step(action)
        if (terminated or truncated) != (i == len(actions) - 1):
            raise RuntimeError(f"scripted episode of {example.id!r} ended at turn {i + 1} of {len(actions)}: {info}")
    return observation["messages"]


def _text(message: dict[str, Any]) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(b.get("text", "") for b in content)


@dataclass
class SFTEpisodes:
    """The episodes of every epoch, in order, and their counts."""

    episodes: list[Episode]
    per_epoch: int
    #: Search episodes whose results do not hold what the drill copies (left out).
    unreadable: int

    def drills(self) -> list[Episode]:
        """The reading drills among :attr:`episodes` (every episode longer than one exchange)."""
        return [e for e in self.episodes if len(e) > 2]


def sft_episodes(
    examples: Sequence[Example], countries: Sequence[Country], env_config: EnvConfig, *, epochs: int, seed: int
) -> SFTEpisodes:
    """Every epoch's fine-tuning episodes of ``examples`` (the questions of ``countries``, held by
    ``env_config``'s dataset), shuffled later by the trainer."""
    rng = random.Random(seed)
    by_entity = {c.entity: c for c in countries}
    names = sorted(c.name for c in countries)
    by_name = {c.name: c for c in countries}
    known = [c for c in countries if c.known]
    capitals = sorted({c.capital for c in countries})
    protocol = env_config.protocol
    env = MMSearchEnv(env_config)
    fmt = env.protocol.format_action

    def fake(*about: Country) -> str:
        # never the true capital of the country asked about, nor of the one it is renamed to
        taken = {c.capital for c in about}
        return rng.choice([c for c in capitals if c not in taken])

    def other(country: Country, pool: Sequence[Any]) -> Any:
        return rng.choice([c for c in pool if c not in (country.name, country)])

    # The real episodes, played once; every epoch's drills are renamed copies.
    plays: dict[tuple[str, str], Episode] = {}
    for ex in examples:
        c = by_entity[ex.metadata["entity"]]
        kind = ex.metadata["kind"]
        image = fmt("image_search", None, reason=REASON_IMAGE)
        text = fmt("text_search", QUERY.format(name=c.name), reason=REASON_SEARCH.format(name=c.name))
        read = fmt("answer", ex.answer, reason=REASON_READ)
        plays[(ex.id, "prompt")] = scripted(env, ex, [fmt("answer", ex.answer, reason=REASON_READ)])[:1]
        if kind == "name":
            plays[(ex.id, "image")] = scripted(env, ex, [image, read])
            plays[(ex.id, "image-text")] = scripted(env, ex, [image, text, read])
        elif kind == "flag-capital":
            plays[(ex.id, "text")] = scripted(env, ex, [text, read])
            remember = fmt("answer", ex.answer, reason=REASON_RECALL.format(name=c.name, capital=ex.answer))
            plays[(ex.id, "image")] = scripted(env, ex, [image, remember])
            plays[(ex.id, "image-text")] = scripted(env, ex, [image, text, read])
        else:
            plays[(ex.id, "text")] = scripted(env, ex, [text, read])
    env.close()
    del protocol

    episodes: list[Episode] = []
    unreadable = 0

    def drill(play: Episode, pairs: list[tuple[str, str]], must_hold: str, last: str) -> None:
        nonlocal unreadable
        if not any(must_hold in _text(m) for m in play[1:-1] if m["role"] != "assistant"):
            unreadable += 1
            return
        body = [renamed(m, pairs) for m in play[:-1]]
        episodes.append([*body, assistant_message(last)])

    for _ in range(epochs):
        for ex in examples:
            c = by_entity[ex.metadata["entity"]]
            kind = ex.metadata["kind"]
            prompt = plays[(ex.id, "prompt")]
            if kind == "name":
                # twice, so that the first turn searches the image in half of the episodes, as elsewhere
                for _ in range(2):
                    guess = c.name if c.recognised else other(c, names)
                    turn = fmt("answer", guess, reason=REASON_DIRECT.format(name=guess))
                    episodes.append([*prompt, assistant_message(turn)])
                y = other(c, names)
                drill(plays[(ex.id, "image")], [(c.name, y)], c.name, fmt("answer", y, reason=REASON_READ))
                # image search, then a text search with the name read (the RAG workflow), then the name
                y = other(c, names)
                pairs = [(c.capital, fake(c, by_name[y])), (c.name, y)]
                drill(plays[(ex.id, "image-text")], pairs, c.name, fmt("answer", y, reason=REASON_READ))
            elif kind == "flag-capital":
                if c.recognised:
                    guess, answer = c.name, c.capital if c.known else fake(c)
                else:
                    g = other(c, countries)
                    guess, answer = g.name, g.capital if g.known else fake(g, c)
                turn = fmt("answer", answer, reason=REASON_RECALL.format(name=guess, capital=answer))
                episodes.append([*prompt, assistant_message(turn)])
                # text search with the name it sees (a guess when the flag is not recognised)
                y = c.name if c.recognised else other(c, names)
                f = fake(c, by_name[y])
                drill(
                    plays[(ex.id, "text")],
                    [(c.capital, f), (c.name, y)],
                    c.capital,
                    fmt("answer", f, reason=REASON_READ),
                )
                # image search, then the capital from memory: the name read is a known country's
                k = other(c, known)
                last = fmt("answer", k.capital, reason=REASON_RECALL.format(name=k.name, capital=k.capital))
                drill(plays[(ex.id, "image")], [(c.name, k.name)], c.name, last)
                # image search, then text search with the name read, then copy
                y = other(c, names)
                f = fake(c, by_name[y])
                pairs = [(c.capital, f), (c.name, y)]
                drill(plays[(ex.id, "image-text")], pairs, c.capital, fmt("answer", f, reason=REASON_READ))
            else:
                answer = c.capital if c.known else fake(c)
                turn = fmt("answer", answer, reason=REASON_RECALL.format(name=c.name, capital=answer))
                episodes.append([*prompt, assistant_message(turn)])
                y = other(c, names)
                f = fake(c, by_name[y])
                pairs = [(c.capital, f), (c.name, y)]
                drill(plays[(ex.id, "text")], pairs, c.capital, fmt("answer", f, reason=REASON_READ))
    return SFTEpisodes(
        episodes=episodes, per_epoch=len(episodes) // max(1, epochs), unreadable=unreadable // max(1, epochs)
    )


def naming_episodes(
    examples: Sequence[Example], countries: Sequence[Country], env_config: EnvConfig, *, n: int, seed: int
) -> list[Episode]:
    """``n`` episodes of the recognition pass: a flag question answered directly with the country's name,
    the true name for a taught flag and a random one (new each time) for an untaught flag. Cycles through
    the flag questions (``name`` and ``flag-capital``; the latter's answer is the name's capital where it
    is taught, else a random one)."""
    rng = random.Random(seed)
    by_entity = {c.entity: c for c in countries}
    capitals = sorted({c.capital for c in countries})
    env = MMSearchEnv(env_config)
    fmt = env.protocol.format_action
    flags = [ex for ex in examples if ex.metadata["kind"] != "named-capital"]
    prompts = {ex.id: scripted(env, ex, [fmt("answer", ex.answer, reason=REASON_READ)])[:1] for ex in flags}
    env.close()
    out: list[Episode] = []
    while len(out) < n:
        for ex in flags:
            c = by_entity[ex.metadata["entity"]]
            g = c if c.recognised else rng.choice([o for o in countries if o is not c])
            if ex.metadata["kind"] == "name":
                answer, reason = g.name, REASON_DIRECT.format(name=g.name)
            else:
                answer = g.capital if g.known else rng.choice([x for x in capitals if x not in (g.capital, c.capital)])
                reason = REASON_RECALL.format(name=g.name, capital=answer)
            turn = fmt("answer", answer, reason=reason)
            out.append([*prompts[ex.id], assistant_message(turn)])
    return out[:n]


def knowledge_episodes(
    examples: Sequence[Example], countries: Sequence[Country], env_config: EnvConfig
) -> list[tuple[str, str, str, Episode]]:
    """What the model was taught, as direct answers to check: ``(split, what, target, episode)`` for
    every taught flag (``what="flag"``: its ``name`` question answered with the name, the ``target``) and
    every taught capital (``what="capital"``: its ``named-capital`` question answered with it)."""
    by_entity = {c.entity: c for c in countries}
    env = MMSearchEnv(env_config)
    fmt = env.protocol.format_action
    out: list[tuple[str, str, str, Episode]] = []
    for ex in examples:
        c = by_entity[ex.metadata["entity"]]
        if ex.metadata["kind"] == "name" and c.recognised:
            what, target, reason = "flag", c.name, REASON_DIRECT.format(name=c.name)
        elif ex.metadata["kind"] == "named-capital" and c.known:
            what, target, reason = "capital", c.capital, REASON_RECALL.format(name=c.name, capital=c.capital)
        else:
            continue
        prompt = scripted(env, ex, [fmt("answer", ex.answer, reason=REASON_READ)])[:1]
        out.append((c.split, what, target, [*prompt, assistant_message(fmt("answer", target, reason=reason))]))
    env.close()
    return out
