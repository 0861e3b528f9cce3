"""benchmarks/on_demand_search.py --quick end to end: every stage runs and every metric is produced."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch_guard  # noqa: F401  (skips the module without the training extra)

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "on_demand_search.py"


def load_script():
    spec = importlib.util.spec_from_file_location("on_demand_search", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _rate(value) -> bool:
    return isinstance(value, float) and 0.0 <= value <= 1.0


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_quick_experiment_runs_every_stage_and_reports_every_metric(tmp_path):
    script = load_script()
    out = tmp_path / "run"
    assert script.main(["--quick", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    cfg = results["settings"]
    assert results["quick"] is True
    assert results["questions"] == {"train": 24, "test": 12, "train_known": 12, "test_known": 6}
    # fine-tuning (per epoch: a direct answer per question, a reading drill per known one) lowered its loss
    sft = results["sft"]
    assert sft["episodes"] == cfg["sft_epochs"] * (36 + 18) - sft["no_answer_in_results"]
    assert sft["drills_per_epoch"] * cfg["sft_epochs"] == 18 * cfg["sft_epochs"] - sft["no_answer_in_results"]
    # the reading pass ran to its step limit (nothing reads after 4 steps), checked every 2 steps
    assert sft["reading_steps"] == cfg["reading_steps"] == 4
    assert [c["step"] for c in sft["reading_checks"]] == [2, 4]
    for accuracy in [*sft["reading_checks"], sft["after_sft"]["reading"]]:
        assert _rate(accuracy["query"]) and _rate(accuracy["answer"])
    assert sft["last_loss"] < sft["first_loss"] and sft["reading_last_loss"] < sft["reading_first_loss"]
    # curation labelled every training question with the model
    counts = results["curation"]["counts"]
    assert sum(counts.values()) == 24 and set(counts) <= {"search_free", "search_required", "dropped"}
    assert (out / "curate" / "labels.jsonl").is_file() and (out / "curate" / "report.md").is_file()
    # baselines and every arm measured on the 12 test questions, known and unknown apart
    assert set(results["baselines"]) == {"direct answer", "RAG workflow", "fine-tuned, before GRPO"}
    assert results["baselines"]["direct answer"]["all"]["search_ratio_episodes"] == 0.0
    assert results["baselines"]["RAG workflow"]["all"]["search_ratio_episodes"] == 1.0
    assert set(results["arms"]) == {"on-demand", "no-penalty", "unbalanced"}
    assert results["arms"]["no-penalty"]["search_penalty"] == 0.0
    for arm in results["arms"].values():
        assert [p["step"] for p in arm["curve"]] == list(range(0, cfg["grpo_steps"] + 1, cfg["eval_every"]))
        for point in arm["curve"]:
            test = point["test"]
            assert test["all"]["n"] == 12 and test["known"]["n"] == 6 and test["unknown"]["n"] == 6
            for group in test.values():
                for key in (
                    "accuracy",
                    "search_ratio_episodes",
                    "search_ratio_calls",
                    "format_rate",
                    "search_probability",
                ):
                    assert _rate(group[key]), (key, group)
        assert point["train_reward"] is not None and math.isfinite(point["train_reward"])
    # the report and both plots
    md = (out / "results.md").read_text()
    assert "| GRPO on-demand |" in md and "search, known" in md
    for name in ("curves.png", "summary.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_folder_of_another_run_is_not_reused(tmp_path):
    script = load_script()
    (tmp_path / "settings.json").write_text(json.dumps({**script.settings(True), "seed": 1}))
    with pytest.raises(SystemExit, match="holds a run with other settings"):
        script.run(tmp_path, quick=True, write_results=False, seed=0)
    assert json.loads((tmp_path / "settings.json").read_text())["seed"] == 1  # left as it was
