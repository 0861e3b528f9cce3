"""The tiny offline VLM: builds once (cached), tokenizes the protocols sensibly, runs with images."""

from __future__ import annotations

import gymnasium as gym
import pytest
from _train_deps import require_train_extra

import mmsearch_env  # noqa: F401

require_train_extra()

from agents.tiny_vlm import PROTOCOL_TOKENS, build_tiny_vlm, load_tiny_vlm, tiny_vlm_path  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    return load_tiny_vlm(build_tiny_vlm())


def test_build_is_cached_by_config():
    path = build_tiny_vlm()
    assert path == tiny_vlm_path()
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_vlm() == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rebuilt


def test_model_is_tiny_qwen_vl_and_processor_has_no_video_part(tiny):
    model, processor = tiny
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert model.config.text_config.hidden_size == 64 and model.config.text_config.num_hidden_layers == 2
    assert processor.video_processor is None
    assert type(processor.image_processor).__name__ == "TinyImageProcessor"


def test_protocol_strings_are_single_tokens(tiny):
    _, processor = tiny
    tok = processor.tokenizer
    for tag in PROTOCOL_TOKENS:
        assert tok.tokenize(tag) == [tag], tag
    text = "<reason>I do not know.</reason><search><img></search>"
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text  # byte-level BPE round-trips any text
    assert tok.decode(tok.encode("日本語 ünïcödé", add_special_tokens=False)) == "日本語 ünïcödé"


@pytest.mark.parametrize("protocol", ["tags", "tool_calls"])
def test_generates_from_an_observation_with_thumbnails(tiny, protocol):
    model, processor = tiny
    env = gym.make("MMSearch-v0", dataset="sample", protocol=protocol)
    obs, _ = env.reset(options={"example_id": "sample-arvenia-image-text"})
    obs, *_ = env.step(env.unwrapped.protocol.format_action("image_search"))
    n_images = sum(b["type"] == "image" for m in obs["messages"] for b in m["content"])
    assert n_images > 1  # the question's image and result thumbnails
    inputs = processor.apply_chat_template(
        obs["messages"],
        tools=env.unwrapped.protocol.tool_schemas() or None,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    assert inputs["image_grid_thw"].shape[0] == n_images
    image_tokens = int((inputs["input_ids"] == processor.image_token_id).sum())
    assert image_tokens == int(inputs["image_grid_thw"].prod(-1).sum()) // 4  # merge 2x2 patches per token
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert inputs["input_ids"].shape[1] < out.shape[1] <= inputs["input_ids"].shape[1] + 5
