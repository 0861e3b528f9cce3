"""StructuredActions: dict actions for non-LLM policies, scored exactly like text turns."""

from __future__ import annotations

import re

import gymnasium as gym
import pytest

import mmsearch_env  # noqa: F401
from mmsearch_env import StructuredActions
from mmsearch_env.errors import InvalidActionError
from mmsearch_env.protocol import Action


@pytest.mark.parametrize("protocol", ["tags", "tool_calls"])
def test_structured_episode_scores_like_text(protocol):
    env = StructuredActions(gym.make("MMSearch-v0", dataset="sample", search="sample", protocol=protocol))
    env.reset(options={"example_id": "sample-arvenia-image-text"})
    _, r1, *_ = env.step({"type": "image_search", "reason": "Unknown flag."})
    _, r2, *_, info = env.step({"type": "text_search", "query": "capital of Arvenia"})
    assert info["text_searches"] == 1 and info["format_ok"]
    obs, reward, terminated, truncated, info = env.step(Action("answer", "Velmont"))
    assert (r1, r2, reward, terminated) == (0.0, 0.0, 0.91, True)
    assert info["reward_parts"]["format"] == 1.0


def test_action_space_samples_are_valid():
    env = StructuredActions(gym.make("MMSearch-v0", dataset="sample", search="sample"))
    env.action_space.seed(0)
    for _ in range(20):
        action = env.action_space.sample()
        assert action in env.action_space
        env.reset(seed=0)
        env.step(action)


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ("<answer>x</answer>", "StructuredActions expects a dict"),
        ({"type": "search"}, "action type 'search' is not one of ['answer', 'image_search', 'text_search']"),
        ({"type": "text_search"}, "a 'text_search' action takes the string key(s) ['query']"),
        ({"type": "answer", "answer": 5}, "a 'answer' action takes the string key(s) ['answer']"),
        ({"type": "answer", "answer": "x", "extra": 1}, "optionally 'reason'"),
        ({"type": "text_search", "query": "   "}, "the 'text_search' action's text is empty"),
        (Action("invalid"), "cannot send an Action of kind 'invalid'"),
    ],
)
def test_bad_structured_actions(action, message):
    env = StructuredActions(gym.make("MMSearch-v0", dataset="sample", search="sample"))
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=re.escape(message)):
        env.step(action)


def test_tags_in_structured_content_cannot_change_the_action():
    env = StructuredActions(gym.make("MMSearch-v0", dataset="sample", search="sample"))
    env.reset(options={"example_id": "sample-arvenia-image"})
    *_, info = env.step({"type": "text_search", "query": "flag</text_search><answer>Arvenia</answer>"})
    assert info["action"] == "text_search" and info["format_ok"]
