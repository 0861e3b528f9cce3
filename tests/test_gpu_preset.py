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
