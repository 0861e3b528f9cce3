"""Scale checks: fuzzed actions through both protocols, and a chaos backend over many episodes.

The chaos run (1,000 episodes) is fast enough for every run; the 100k-action fuzz per protocol carries
the ``slow`` marker (``pytest -m slow``) and the default run does it at 3,000 actions.
"""

from __future__ import annotations

import asyncio
import json
import random

import gymnasium as gym
import pytest
from test_search_boundary import CASES, Bad

import mmsearch_env  # noqa: F401  (registers MMSearch-v0)
from mmsearch_env.errors import SearchRateLimitedError, SearchTransientError
from mmsearch_env.records import EpisodeRecord
from mmsearch_env.search import SearchBackendBase, SearchResponse, SearchResult

#: The rewards the env can give with default weights (the env's Rewards section).
SIX_REWARDS = {1.0, 0.91, 0.9, 0.81, 0.1, 0.0}

R = "<reason>r</reason>"
# Pieces of hostile and ordinary turns: protocol tags of both protocols, chat tokens, broken JSON,
# invalid Unicode, controls; a turn is a random concatenation that often ends with an action.
FRAGMENTS = [
    "<reason>", "</reason>", R, "<answer>", "</answer>", "<search>", "</search>", "<img>", "<text_search>",
    "</text_search>", "<information>", "</information>", "<tool_call>", "</tool_call>", "<think>", "[INST]",
    '{"name": "text_search", "arguments": {"query": "x"}}', '{"name": "image_search", "arguments": {}}',
    '{"name": "text_search", "arguments": {"query": ', '{"name": ', "[" * 50, "{" * 50, "<|im_end|>",
    "<|im_start|>assistant\n", "<start_of_turn>", "Velmont", "Arvenia", "Paris", " ", "\n", "\ud83d", "\udc00",
    "\x00", "\x7f", "\u200b", "&lt;", "<<answer>answer>", "</answer></answer>",
]  # fmt: skip
ENDINGS = [
    "", "<answer>Velmont</answer>", "<answer> the VELMONT. </answer>\n", "<answer>Paris</answer>",
    "<answer></answer>", "<search><img></search>", "<text_search>capital of Arvenia</text_search>",
    "<text_search></text_search>", '<tool_call>{"name": "text_search", "arguments": {"query": "capital"}}</tool_call>',
    '<tool_call>{"name": "image_search", "arguments": {}}</tool_call>', "<tool_call>{}</tool_call>",
    '<tool_call>{"name": "image_search"</tool_call>', "</answer>",
]  # fmt: skip


def fuzzed_turn(rng: random.Random) -> str:
    head = rng.choice(["", R, R + "\n", "<reason>", "</reason>"])
    body = "".join(
        rng.choice(FRAGMENTS) if rng.random() < 0.8 else "".join(chr(rng.randrange(0x110000)) for _ in range(3))
        for _ in range(rng.randrange(6))
    )
    return head + body + rng.choice(ENDINGS)


def run_fuzz(protocol: str, actions: int, seed: int) -> dict[float, int]:
    rng = random.Random(seed)
    env = gym.make("MMSearch-v0", dataset="sample", search="sample", protocol=protocol)
    rewards: dict[float, int] = {}
    done_actions = episode = 0
    while done_actions < actions:
        env.reset(seed=episode)
        episode += 1
        while True:
            _, reward, terminated, truncated, info = env.step(fuzzed_turn(rng))
            done_actions += 1
            assert isinstance(info["format_ok"], bool)
            if terminated or truncated:
                assert reward in SIX_REWARDS, reward
                rewards[reward] = rewards.get(reward, 0) + 1
                break
            assert reward == 0.0
    env.close()
    return rewards


@pytest.mark.parametrize("protocol", ["tags", "tool_calls"])
@pytest.mark.parametrize("actions", [3_000, pytest.param(100_000, marks=pytest.mark.slow)])
def test_fuzzed_actions_never_raise_and_score_one_of_six_values(protocol, actions):
    rewards = run_fuzz(protocol, actions, seed=actions)
    assert set(rewards) <= SIX_REWARDS
    assert {0.0, 0.1} <= set(rewards)  # malformed and well-formed-but-wrong both occur
    assert rewards.get(1.0, 0) + rewards.get(0.9, 0) + rewards.get(0.91, 0) > 0  # and some correct answers


# -- chaos backend ---------------------------------------------------------------------------------------


class ChaosSearch(SearchBackendBase):
    """Each call misbehaves in one of the boundary table's ways, raises a typed failure, or answers well."""

    name = "chaos"

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.kinds: dict[str, int] = {}

    def _answer(self, tool: str) -> SearchResponse:
        roll = self.rng.random()
        if roll < 0.15:
            self.kinds["good"] = self.kinds.get("good", 0) + 1
            result = SearchResult(title="Velmont - capital", url="https://x.invalid/", summary="Velmont is the capital")
            return SearchResponse(tool, (result,), cost_usd=0.001)
        if roll < 0.2:
            self.kinds["transient"] = self.kinds.get("transient", 0) + 1
            raise SearchTransientError("upstream 503")
        if roll < 0.25:
            self.kinds["rate limited"] = self.kinds.get("rate limited", 0) + 1
            raise SearchRateLimitedError("429", 1.5)
        name, make, _ = self.rng.choice(CASES)
        self.kinds[name] = self.kinds.get(name, 0) + 1
        return Bad(make).image_search(None) if tool == "image_search" else Bad(make).text_search(None)

    def image_search(self, request):
        return self._answer("image_search")

    def text_search(self, request):
        return self._answer("text_search")


POLICY_TURNS = [
    "<reason>r</reason><search><img></search>",
    "<reason>r</reason><text_search>capital of Arvenia</text_search>",
    "<reason>r</reason><answer>Velmont</answer>",
    "<reason>r</reason><answer>Paris</answer>",
]


def run_chaos(episodes: int, seed: int) -> tuple[ChaosSearch, dict[float, int]]:
    rng = random.Random(seed)
    backend = ChaosSearch(seed)
    # every other episode with a search timeout: the guarded call path is a different one
    envs = [
        gym.make("MMSearch-v0", dataset="sample", search=backend, max_turns=4, search_timeout=timeout)
        for timeout in (None, 30.0)
    ]
    rewards: dict[float, int] = {}
    for episode in range(episodes):
        env = envs[episode % 2]
        env.reset(seed=episode)
        use_async = episode % 3 == 0  # a third of the episodes through astep
        while True:
            action = rng.choice(POLICY_TURNS)
            if use_async:
                _, reward, terminated, truncated, info = asyncio.run(env.unwrapped.astep(action))
            else:
                _, reward, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
        assert reward in SIX_REWARDS
        rewards[reward] = rewards.get(reward, 0) + 1
        record = env.unwrapped.episode_record()
        line = record.to_json()
        line.encode("utf-8")  # strict UTF-8, strict JSON (to_json refuses NaN)
        assert EpisodeRecord.from_dict(json.loads(line)).example_id == record.example_id
    for env in envs:
        env.close()
    return backend, rewards


def test_chaos_backend_never_crashes_an_episode_or_its_record():
    episodes = 1_000
    backend, rewards = run_chaos(episodes, seed=episodes)
    assert sum(rewards.values()) == episodes
    # every misbehaviour of the boundary table, and the typed failures, occurred
    assert {name for name, _, _ in CASES} <= set(backend.kinds), set(backend.kinds)
    assert {"good", "transient", "rate limited"} <= set(backend.kinds)
    assert sum(backend.kinds.values()) > episodes // 2
