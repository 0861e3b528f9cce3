"""GRPO for text-only LLMs and presets that fit the model: checks before loading, a dataset without
images, tool results as text, a tiny-model preset refitted to a real model's size, and a short run."""

from __future__ import annotations

import json
import logging
import re

import pytest
import torch_guard  # noqa: F401  (skips the module without the training extra)
from model_servers import tiny_llm

from agents.grpo import cpu_preset
from agents.grpo.config import fit_preset, preset_settings
from agents.grpo.data import make_train_dataset
from agents.grpo.tool_env import env_factory
from agents.grpo.trainer import describe_run, train
from agents.tiny_vlm import build_tiny_vlm
from mmsearch_env.errors import ConfigError

FAST = {"report_to": [], "metrics_plot": False, "save_steps": 1000}


@pytest.fixture(scope="module")
def llm_path(tmp_path_factory):
    return tiny_llm(tmp_path_factory.mktemp("tiny-llm"), build_tiny_vlm())


def test_a_tiny_model_preset_is_refitted_to_a_real_models_size_and_says_so(tmp_path, llm_path, caplog):
    config = cpu_preset(str(tmp_path), model_path=str(llm_path), text_only=True, warm_start_lr=0.01, **FAST)
    with caplog.at_level(logging.INFO, logger="agents.grpo.trainer"):
        info = describe_run(config)
    tiny = preset_settings("cpu")
    assert info.num_parameters and not info.is_vlm
    assert (config.learning_rate, config.warm_start_epochs, config.dataset) == (2e-5, 2, "corpus")
    assert config.warm_start_lr == 0.01  # a value the user set is kept
    assert tiny["learning_rate"] == 1e-3 and tiny["warm_start_epochs"] == 20  # what it would have trained with
    assert "learning_rate 0.001 -> 2e-05" in caplog.text and "text-only" in caplog.text
    assert fit_preset(config, info.num_parameters) == {}  # refitted once
    # the tiny model keeps the preset as it is
    tiny_config = cpu_preset(str(tmp_path / "tiny"), **FAST)
    describe_run(tiny_config)
    assert (tiny_config.learning_rate, tiny_config.warm_start_epochs) == (1e-3, 20)


def test_text_only_mode_is_checked_before_loading(tmp_path, llm_path):
    with pytest.raises(ConfigError, match=re.escape("text_only=True needs model_path")):
        cpu_preset(str(tmp_path), text_only=True, **FAST)
    # a text-only LLM on the vision-language path: the error names the text-only mode
    with pytest.raises(ConfigError, match=re.escape("text_only=True (--text_only true)")):
        describe_run(cpu_preset(str(tmp_path), model_path=str(llm_path), **FAST))
    with pytest.raises(ConfigError, match=re.escape("is a vision-language model; train it with images")):
        describe_run(cpu_preset(str(tmp_path), model_path=str(build_tiny_vlm()), text_only=True, **FAST))


def test_text_only_data_has_no_images_and_tools_answer_in_text(tmp_path, llm_path):
    config = cpu_preset(str(tmp_path), model_path=str(llm_path), text_only=True, **FAST)
    assert config.image_position == "none"
    dataset = make_train_dataset(config.env_kwargs(), limit=2, seed=0)
    assert "images" not in dataset.column_names  # nothing for TRL to look for pixel_values in
    blocks = dataset[0]["prompt"][0]["content"]
    assert [b["type"] for b in blocks] == ["text"] and "not shown to you" in blocks[0]["text"]
    tool_env = env_factory(config.env_kwargs())()
    tool_env.reset(dataset[0]["example_id"])
    result = tool_env.search()
    assert isinstance(result, str) and "title:" in result  # titles, no thumbnails


def test_a_text_only_model_trains_with_a_format_warm_start(tmp_path, llm_path):
    config = cpu_preset(
        str(tmp_path / "run"),
        model_path=str(llm_path),
        text_only=True,
        max_steps=1,
        max_train_questions=2,
        per_device_train_batch_size=2,
        num_generations=2,
        max_turn_tokens=8,
        max_completion_length=48,
        warm_start_epochs=1,
        **FAST,
    )
    out = train(config)
    assert (out / "adapter_config.json").is_file()
    base = (out / "base_model.txt").read_text().strip()
    assert base.endswith("warm_start")  # the adapter applies to the warm-started model
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("reward" in row for row in history)
