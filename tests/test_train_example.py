"""examples/train_grpo.py end to end with tiny budgets: the files it writes, and resuming a run."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch_guard  # noqa: F401  (skips the module without the training extra)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_grpo.py"
TINY = [
    "--preset", "cpu", "--warm_start_epochs", "1", "--per_device_train_batch_size", "4", "--num_generations", "2",
    "--max_turn_tokens", "24", "--max_completion_length", "512", "--report_to", "none", "--logging_steps", "1",
]  # fmt: skip


def load_example():
    spec = importlib.util.spec_from_file_location("train_grpo_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_example_trains_evaluates_plots_and_resumes(tmp_path):
    example = load_example()
    out = tmp_path / "run"
    report = example.main([*TINY, "--output_dir", str(out), "--max_steps", "2", "--save_steps", "1",
                           "--eval_episodes", "2", "--eval_splits", "validation"])  # fmt: skip
    for name in ("adapter_config.json", "adapter_model.safetensors", "metrics.jsonl", "metrics.csv", "metrics.png"):
        assert (out / name).is_file(), name
    assert (out / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert {"reward", "mmsearch/accuracy", "mmsearch/format", "mmsearch/image_search_ratio"} <= set(rows[0])
    assert report["eval"]["validation"]["before"]["episodes"] == report["eval"]["validation"]["after"]["episodes"] == 2
    assert json.loads((out / "eval.json").read_text())["adapter"] == str(out)
    assert (out / "warm_start" / "config.json").is_file() and (out / "checkpoint-2").is_dir()
    # interrupted runs resume from the latest checkpoint (and reuse the warm-start)
    example.main([*TINY, "--output_dir", str(out), "--max_steps", "3", "--save_steps", "1",
                  "--resume_from_checkpoint", "true", "--eval_episodes", "0"])  # fmt: skip
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3


def test_help_lists_every_config_field(capsys):
    from dataclasses import fields

    from agents.grpo import MMSearchGRPOConfig

    example = load_example()
    with pytest.raises(SystemExit) as stop:
        example.parse_args(["--help"])
    assert stop.value.code == 0
    shown = capsys.readouterr().out
    # generated from the dataclass: a field added later appears without touching the example
    missing = [f.name for f in fields(MMSearchGRPOConfig) if f.init and f"--{f.name}" not in shown]
    assert missing == []
    assert "--preset" in shown and "--eval_episodes" in shown


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus", "1"], "unrecognized arguments: --bogus 1"),  # unknown flag
        (["--max_step", "3"], "unrecognized arguments: --max_step 3"),  # no prefix matching
        (["--preset", "gpx"], "invalid choice: 'gpx'"),  # preset names are checked
        (["--preset", "gpu"], "use_vllm (the gpu preset) needs a real model"),  # a config check is a usage error
    ],
)
def test_bad_flags_print_a_usage_line_and_exit_2(capsys, argv, message):
    example = load_example()
    with pytest.raises(SystemExit) as stop:
        example.parse_args(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert err.startswith("usage: train_grpo.py [--preset {cpu,gpu}]") and message in err
    assert len(err.splitlines()) == 2  # one usage line, one error line: no traceback, no 200-flag usage


def test_preset_values_are_defaults_that_flags_override():
    example = load_example()
    script_args, config = example.parse_args(["--max_steps", "7", "--eval_episodes", "3"])
    assert (config.max_steps, config.warm_start_epochs, config.dataset) == (7, 20, "sample")
    assert script_args.eval_episodes == 3 and script_args.preset == "cpu"


def test_flags_given_with_the_presets_own_value_survive_a_refit():
    from agents.grpo.config import fit_preset

    example = load_example()
    _, config = example.parse_args(["--model_path", "/m", "--dataset", "sample", "--warm-start-epochs=20"])
    assert {"dataset", "model_path", "warm_start_epochs"} <= set(config.preset_keep)
    changes = fit_preset(config, 270_000_000)
    assert (config.dataset, config.warm_start_epochs) == ("sample", 20)  # named on the command line
    assert set(changes) == {"learning_rate", "warm_start_lr"}  # the preset values nobody asked for


@pytest.mark.slow
def test_example_output_reads_well_in_a_log_file(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(EXAMPLE.parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    argv = [*TINY, "--warm_start_epochs", "2", "--output_dir", str(out), "--max_steps", "2",
            "--eval_episodes", "2", "--eval_splits", "test"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), *argv], capture_output=True, text=True, timeout=600, check=False, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert "\r" not in log and "Warning" not in log  # no bars, no warnings from our settings
    assert "GRPO step 2/2 · reward" in log and "{'loss'" not in log  # a readable line, not TRL's dict
    assert "warm-start step 1/" in log and "ETA" in log
    assert "Expected with the CPU preset's tiny VLM" in done.stdout  # what the numbers mean
    assert f"metrics: {out / 'metrics.csv'}" in done.stdout


def test_the_main_job_is_the_experiment_and_checks_its_own_flags(capsys):
    example = load_example()
    for argv in ([], ["--seed", "1"], ["--preset", "experiment"], ["--preset=experiment", "--scale", "short"]):
        assert example.wants_experiment(argv), argv
    for argv in (["--preset", "cpu", "--seed", "1"], ["--max_steps", "3", "--preset=gpu"]):
        assert not example.wants_experiment(argv), argv
    with pytest.raises(SystemExit) as stop:
        example.run_experiment(["--max_steps", "3"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "unrecognized arguments: --max_steps 3 (training flags need --preset cpu" in err
    with pytest.raises(SystemExit) as stop:
        example.run_experiment(["--scale", "huge"])
    assert stop.value.code == 2 and "invalid choice: 'huge'" in capsys.readouterr().err


@pytest.mark.slow
def test_the_main_job_prints_before_and_after_grpo_and_the_plot(tmp_path):
    out = tmp_path / "mm"
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--scale", "quick", "--output_dir", str(out)],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line[:28].strip(): line[28:].split() for line in done.stdout.splitlines() if "GRPO (" in line[:28]}
    assert set(rows) == {"before GRPO (fine-tuned)", "after GRPO (on-demand)"}, done.stdout[-2000:]
    for cells in rows.values():  # accuracy, searches / question and the four search rates, each measured
        assert len(cells) == 6 and all(c.endswith("%") for i, c in enumerate(cells) if i != 1), cells
    assert f"plot:    {out / 'curves.png'}" in done.stdout
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
