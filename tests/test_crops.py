"""Region image search (``image_crops=True``): both protocols, what the tool turn shows, what info
says, malformed boxes as values, and the paper's env left alone when the option is off."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from mmsearch_env.env import MMSearchEnv
from mmsearch_env.errors import ConfigError
from mmsearch_env.protocol import get_protocol
from mmsearch_env.regions import parse_box

R = "<reason>r</reason>"
CALL = '<tool_call>{"name": "image_search", "arguments": %s}</tool_call>'


def make(protocol="tags", **kwargs):
    return MMSearchEnv(dataset="sample", search="sample", protocol=protocol, image_crops=True, **kwargs)


CROP_TURNS = {
    "tags": (f"{R}<search><img>0,0,0.5,0.5</search>", f"{R}<search><img>[0, 0, 0.5, 0.5]</search>"),
    "tool_calls": (CALL % '{"box": [0, 0, 0.5, 0.5]}', CALL % '{"box": "0,0,0.5,0.5"}'),
}


@pytest.mark.parametrize("protocol", ["tags", "tool_calls"])
@pytest.mark.parametrize("which", [0, 1])
def test_a_box_searches_that_region_and_the_tool_turn_shows_it(protocol, which):
    env = make(protocol)
    obs, info = env.reset(seed=0)
    width, height = info["image_size"]
    assert info["image_regions"] == [] and obs["image"].size == (width, height)
    assert (
        "box" in obs["messages"][0]["content"][-1]["text"]
        and f"{width}x{height}" in obs["messages"][0]["content"][-1]["text"]
    )
    obs, reward, terminated, truncated, info = env.step(CROP_TURNS[protocol][which])
    region = [0, 0, (width + 1) // 2, (height + 1) // 2]
    assert (info["action"], info["format_ok"], terminated) == ("image_search", True, False)
    assert info["image_regions"] == [region]
    blocks = obs["messages"][-1]["content"]
    assert blocks[0]["type"] == "text" and f"region {','.join(map(str, region))}" in blocks[0]["text"]
    assert blocks[1]["type"] == "image"  # the region searched, before the results
    expected = np.asarray(env.example.image.crop(tuple(region)))
    shown = np.asarray(blocks[1]["image"])
    assert shown.shape[:2] == expected.shape[:2] and (shown == expected).all()
    obs, reward, terminated, truncated, info = env.step(f"{R}<answer>{env.example.answer}</answer>")
    assert (reward, info["image_regions"]) == (0.91, [region])


@pytest.mark.parametrize("protocol", ["tags", "tool_calls"])
def test_no_box_still_searches_the_whole_image(protocol):
    env = make(protocol)
    env.reset(seed=0)
    turn = f"{R}<search><img></search>" if protocol == "tags" else CALL % "{}"
    _, _, _, _, info = env.step(turn)
    assert info["image_regions"] == [None]


MALFORMED = [
    ("tags", f"{R}<search><img>1,2,3</search>", "got 3"),
    ("tags", f"{R}<search><img>nan,0,1,1</search>", "not a decimal number"),
    ("tags", f"{R}<search><img>0.5,0,0.1,1</search>", "reversed or empty"),
    ("tags", f"{R}<search><img>9000,9000,9100,9100</search>", "at least 8 pixels"),
    ("tags", f"{R}<search><img><answer>x</answer></search>", "four numbers only"),
    ("tags", f"{R}<search>0,0,1,1</search>", "<search><img>x1,y1,x2,y2</search>"),
    ("tool_calls", CALL % '{"box": [0, 0, 1]}', "got 3"),
    ("tool_calls", CALL % '{"box": [0, 0, NaN, 1]}', "finite"),
    ("tool_calls", CALL % '{"box": {"x": 1}}', "got dict"),
]


@pytest.mark.parametrize(("protocol", "turn", "reason"), MALFORMED)
def test_a_malformed_box_ends_the_episode_with_a_reason(protocol, turn, reason):
    env = make(protocol)
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(turn)
    assert (reward, terminated, truncated, info["end_reason"]) == (0.0, True, False, "malformed")
    assert reason in info["action_error"] and "x1,y1,x2,y2" in info["action_error"]
    assert info["image_regions"] == [] and info["image_searches"] == 0


def test_without_the_option_a_box_is_not_read():
    env = MMSearchEnv(dataset="sample", search="sample")
    env.reset(seed=0)
    _, _, terminated, _, info = env.step(f"{R}<search><img>0,0,1,1</search>")
    assert terminated and info["end_reason"] == "malformed" and "image_regions" not in info
    calls = MMSearchEnv(dataset="sample", search="sample", protocol="tool_calls")
    calls.reset(seed=0)
    _, _, terminated, _, info = calls.step(CALL % '{"box": "garbage"}')
    assert not terminated and info["action"] == "image_search" and "image_regions" not in info


def test_a_region_request_names_no_url_and_no_question_id():
    """Backends that search by URL or by question id (caches of released datasets) cannot mistake a
    region for the whole image: the request carries only the region's pixels."""
    seen = []
    env = make()
    inner = env.search.image_search

    def spy(request):
        seen.append(request)
        return inner(request)

    env.search.image_search = spy
    env.reset(seed=0)
    env.step(f"{R}<search><img>0,0,0.5,0.5</search>")
    assert seen[0].example_id is None and seen[0].image_url is None
    width, height = env.example.image.size
    assert seen[0].image.size == ((width + 1) // 2, (height + 1) // 2)


def test_format_action_writes_boxes_that_parse_back():
    box = parse_box("0.1,0.2,0.3,0.4")
    for name in ("tags", "tool_calls"):
        protocol = get_protocol(name, crops=True)
        action = protocol.parse(protocol.format_action("image_search", reason="r", box=box))
        assert (action.kind, action.box, action.well_formed) == ("image_search", box, True)
        with pytest.raises(ConfigError, match="crops=True"):
            get_protocol(name).format_action("image_search", box=box)
    assert get_protocol("tags", crops=True) != get_protocol("tags")
    assert "box" in str(get_protocol("tool_calls", crops=True).tool_schemas()[0])


CONFIGS = [
    {"image_crops": True},
    {"image_crops": True, "protocol": "tool_calls"},
    {"image_crops": True, "question_scenes": "screenshot", "max_image_searches": 3, "format_image_searches": 3},
    {"max_turns": 5, "max_text_searches": 3, "format_text_searches": 3, "penalty_mode": "per_call"},
    {"question_scenes": "screenshot", "scene_seed": 4, "protocol": "tool_calls", "image_position": "last"},
]


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_check_env_is_clean_for_every_configuration(kwargs):
    env = gym.make("MMSearch-v0", dataset="sample", search="sample", **kwargs).unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env)
    env.action_space.seed(0)
    env.reset(seed=1)
    for _ in range(6):  # sampled actions (boxes included) are members and step cleanly
        turn = env.action_space.sample()
        assert env.action_space.contains(turn)
        obs, _, terminated, truncated, _ = env.step(turn)
        assert env.observation_space.contains(obs)
        if terminated or truncated:
            env.reset()
