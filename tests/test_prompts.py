"""Instruction templates: defaults per protocol, user files, and checked placeholders."""

from __future__ import annotations

import json
import re

import gymnasium as gym
import pytest

import mmsearch_env  # noqa: F401
from mmsearch_env.errors import ConfigError
from mmsearch_env.prompts import PromptTemplates, load_prompts
from mmsearch_env.protocol import TagsProtocol, ToolCallsProtocol


def test_defaults_mention_every_action_and_limit():
    tags = load_prompts(TagsProtocol()).instruction
    for needle in ("<reason>", "<search><img></search>", "<text_search>", "<answer>", "{max_turns}", "{question}"):
        assert needle in tags
    calls = load_prompts(ToolCallsProtocol()).instruction
    assert "image_search" in calls and "text_search" in calls and "<answer>" in calls


def test_user_file_overrides_some_keys(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"instruction": "Q: {question} (turns: {max_turns})", "system": "Be brief."}))
    env = gym.make("MMSearch-v0", dataset="sample", search="sample", prompts=str(path), max_turns=2)
    obs, _ = env.reset(options={"example_id": "sample-arvenia-image"})
    assert obs["messages"][0] == {"role": "system", "content": [{"type": "text", "text": "Be brief."}]}
    assert obs["messages"][1]["content"][1]["text"] == "Q: Which country's flag is shown in the image? (turns: 2)"
    obs, *_ = env.step("<reason>r</reason><search><img></search>")
    assert "Reverse image search" in obs["messages"][-1]["content"][0]["text"]  # untouched keys keep defaults


def test_toml_file(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('no_results = "Nothing found."\n', encoding="utf-8")
    assert load_prompts(TagsProtocol(), path).no_results == "Nothing found."


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"instrution": "x"}, "unknown template 'instrution'. Did you mean 'instruction'?"),
        ({"instruction": "{question} {answer}"}, "template 'instruction' uses unknown placeholder(s) ['answer']"),
        ({"followup": "{question"}, "template 'followup' is not a valid format string"),
        ({"no_results": 3}, "template 'no_results' must be a string, got int"),
        ({"image_result_item": "{title:d}"}, "template 'image_result_item' cannot be filled"),
        ({"followup": "{0} {question} {next_step}"}, "template 'followup' uses unknown placeholder(s) ['0']"),
        (["not", "an", "object"], "must hold one object mapping template names to strings"),
    ],
)
def test_bad_prompt_files(tmp_path, content, message):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_prompts(TagsProtocol(), path)


def test_broken_json_and_missing_file(tmp_path):
    path = tmp_path / "p.json"
    path.write_text("{oops")
    with pytest.raises(ConfigError, match="is not valid json"):
        load_prompts(TagsProtocol(), path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_prompts(TagsProtocol(), tmp_path / "none.json")


def test_prompt_templates_object():
    base = load_prompts(TagsProtocol())
    custom = PromptTemplates(**{**base.__dict__, "no_results": "nada"})
    assert load_prompts(TagsProtocol(), custom).no_results == "nada"


def test_image_position_puts_the_question_image_after_the_instruction(tmp_path):
    env = gym.make("MMSearch-v0", dataset="sample", image_position="last")
    obs, _ = env.reset(seed=0)
    assert [b["type"] for b in obs["messages"][0]["content"]] == ["text", "image"]
    default, _ = gym.make("MMSearch-v0", dataset="sample").reset(seed=0)
    assert [b["type"] for b in default["messages"][0]["content"]] == ["image", "text"]
    env = gym.make("MMSearch-v0", dataset="sample", image_position="none", max_image_searches=1)
    obs, info = env.reset(seed=0)
    assert [b["type"] for b in obs["messages"][0]["content"]] == ["text"]
    obs, *_ = env.step("<search><img></search>")  # image search still searches the question's image
    assert any(b["type"] == "image" for b in obs["messages"][-1]["content"])
    with pytest.raises(
        ConfigError, match=re.escape("image_position must be one of ['first', 'last', 'none'], got 'middle'")
    ):
        gym.make("MMSearch-v0", dataset="sample", image_position="middle")
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"image_position": "last"}))  # it used to be a template key: say where it went
    with pytest.raises(ConfigError, match=re.escape("image_position is an environment argument, not a template")):
        gym.make("MMSearch-v0", dataset="sample", prompts=str(path))
