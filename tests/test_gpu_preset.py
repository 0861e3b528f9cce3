"""benchmarks/gpu_preset.py on this machine's device with a tiny budget: every metric lands, finite and positive."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import torch_guard  # noqa: F401  (skips the module without the training extra)

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_preset.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_preset_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_gpu_preset_check_reports_every_metric(tmp_path):
    script = load_script()
    argv = ["--steps", "2", "--batch", "2", "--num_generations", "2", "--max_turn_tokens", "8",
            "--max_completion_length", "128", "--out", str(tmp_path)]  # fmt: skip
    script.main(argv)
    (path,) = tmp_path.glob("gpu_preset_*.json")
    result = json.loads(path.read_text())
    assert path.name == f"gpu_preset_{result['device_kind']}.json" and (tmp_path / f"{path.stem}.md").is_file()
    for metric in script.METRICS:
        assert math.isfinite(result[metric]) and result[metric] > 0, (metric, result[metric])
    assert result["steps"] == 2 and result["generated_tokens"] > 0
    assert result["generation"].startswith(("vLLM", "transformers"))


def test_the_cuda_model_has_qwen25_vl_3b_shapes_and_the_local_vocabulary():
    """Built on the meta device (shapes only): the config the GPU run uses, checked on any machine."""
    import torch

    from agents.hf_policy import load_processing_class
    from agents.tiny_vlm import build_tiny_vlm

    script = load_script()
    model = script.qwen25_vl_3b_shaped(build_tiny_vlm(), device="meta")
    text, vision = model.config.text_config, model.config.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == (
        2048, 36, 16, 2
    )  # fmt: skip
    assert (vision.depth, vision.hidden_size, vision.out_hidden_size) == (32, 1280, 2048)
    processor = load_processing_class(build_tiny_vlm())
    assert text.vocab_size == len(processor.tokenizer)
    assert model.config.image_token_id == processor.image_token_id
    assert model.dtype == torch.bfloat16
    # 3.75B in the real model, of which 311M are its 151,936-token embedding (tied) this vocabulary replaces
    assert 3.40e9 < sum(p.numel() for p in model.parameters()) < 3.50e9
