"""Model folders are checked from their small files, before any weight is loaded, with the fix in the error."""

from __future__ import annotations

import json
import re

import pytest
from _train_deps import require_train_extra

require_train_extra()

from agents.evaluate import resolve_policy  # noqa: E402
from agents.hf_policy import HFPolicy  # noqa: E402
from agents.model_check import check_model_folder, inspect_model_folder  # noqa: E402
from agents.tiny_vlm import build_tiny_vlm  # noqa: E402
from mmsearch_env.errors import ConfigError  # noqa: E402


def folder(tmp_path, config, tokenizer_config=None):
    """A model folder with configs only: no weights at all, so only a check before loading can pass it."""
    (tmp_path / "config.json").write_text(json.dumps(config))
    if tokenizer_config is not None:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return tmp_path


TEMPLATE = {"chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"}


@pytest.mark.parametrize(
    ("config", "tokenizer_config", "kwargs", "message"),
    [
        # a family transformers has never heard of: upgrade, or pick a known one
        ({"model_type": "qwen9_omni"}, TEMPLATE, {}, "architecture this transformers"),
        # a base LLM without a chat template: give it one, and how
        ({"model_type": "gemma3_text"}, {}, {}, "has no chat template"),
        # a text-only LLM where a VLM is needed (GRPO's image path): the text-only mode
        ({"model_type": "gemma3_text"}, TEMPLATE, {"vlm": True}, "text_only=True"),
        # a known config class that cannot generate text (an image classifier)
        ({"model_type": "vit"}, TEMPLATE, {}, "is not a causal language model"),
    ],
)
def test_unsupported_models_fail_before_loading_with_the_fix(tmp_path, config, tokenizer_config, kwargs, message):
    path = folder(tmp_path, config, tokenizer_config)
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_model_folder(path, **kwargs)
    if not kwargs:  # the policy checks first: never a transformers error about missing weights
        with pytest.raises(ConfigError, match=re.escape(message)):
            HFPolicy(path)


def test_a_chat_model_passes_and_its_parameters_are_counted_from_the_headers(tmp_path):
    vlm = build_tiny_vlm()
    info = check_model_folder(vlm, vlm=True)
    assert info.is_vlm and info.has_chat_template and info.model_type
    import torch
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(vlm, dtype=torch.float32)
    assert inspect_model_folder(vlm).num_parameters == model.num_parameters()
    assert inspect_model_folder(folder(tmp_path, {"model_type": "llama"})).num_parameters is None  # no weights


def test_a_text_only_model_in_an_env_that_shows_the_image_names_the_text_only_mode(tmp_path):
    path = folder(tmp_path, {"model_type": "gemma3_text"}, TEMPLATE)
    with pytest.raises(ConfigError, match=re.escape("--image-position none")):
        resolve_policy(f"hf:{path}", text_only=False)
