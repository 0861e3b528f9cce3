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


def test_corpus_tokenizer_texts_split_corpus_names_into_few_pieces(tmp_path):
    from agents.tiny_vlm import TinyVLMConfig, _training_corpus
    from mmsearch_env.errors import ConfigError

    # the option is part of the cache key, but the default keeps the key earlier builds were saved under
    assert TinyVLMConfig().key() == TinyVLMConfig(tokenizer_texts="sample").key()
    assert TinyVLMConfig(tokenizer_texts="corpus").key() != TinyVLMConfig().key()
    texts = _training_corpus("corpus")
    assert any("The capital of Paraguay is Asunción." in t for t in texts)
    assert len(texts) > 10 * len(_training_corpus("sample"))
    with pytest.raises(ConfigError, match="tokenizer_texts must be 'sample' or 'corpus', got 'web'"):
        _training_corpus("web")
    config = TinyVLMConfig(tokenizer_texts="corpus", vocab_size=2048, hidden_size=32, intermediate_size=64)
    _, processor = load_tiny_vlm(build_tiny_vlm(tmp_path / "vlm", config=config))
    sample_tok = load_tiny_vlm()[1].tokenizer
    phrase = " The international calling code of Paraguay is +595."
    assert len(processor.tokenizer.tokenize(phrase)) <= 0.6 * len(sample_tok.tokenize(phrase))  # 15 vs 28 pieces
