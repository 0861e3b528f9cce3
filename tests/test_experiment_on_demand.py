"""experiments/on_demand: the config presets, the command line, the report, and --quick end to end
(every stage runs and every metric is produced)."""

from __future__ import annotations

import doctest
import json
import math
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The experiments are not part of the installed package: they are importable from the repository root.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _train_deps import require_train_extra  # noqa: E402

from experiments.on_demand import config as on_demand_config  # noqa: E402
from experiments.on_demand import data as on_demand_data  # noqa: E402
from experiments.on_demand.config import ARMS, PROMPTS, OnDemandConfig  # noqa: E402
from experiments.on_demand.report import markdown  # noqa: E402
from experiments.on_demand.run import RESULTS, claim_work_folder, what_it_means  # noqa: E402
from mmsearch_env.errors import ConfigError  # noqa: E402


def _rate(value) -> bool:
    return isinstance(value, float) and 0.0 <= value <= 1.0


# -- config presets and command line (fast) ----------------------------------------------------------


def test_presets_validate_and_quick_shrinks_only_the_work():
    full, quick = OnDemandConfig.full(), OnDemandConfig.quick(seed=3)
    assert full == OnDemandConfig() and full.seed == 0 and not full.is_quick
    assert quick.is_quick and quick.seed == 3
    assert (quick.max_train_questions, quick.max_test_questions, quick.grpo_steps) == (24, 12, 2)
    # the same pipeline: the environment, model and learning rates are the full run's
    same = {"env", "hidden_size", "num_layers", "vocab_size", "sft_lr", "grpo_lr", "curate_ratio", "known_fraction"}
    assert {f.name for f in fields(OnDemandConfig) if getattr(full, f.name) == getattr(quick, f.name)} >= same
    assert full.env.image_position == quick.env.image_position == "none"
    assert (full.env.max_turns, full.env.max_image_searches, full.env.max_text_searches) == (2, 0, 1)
    # the settings round-trip through JSON (what a work folder's settings.json holds)
    assert OnDemandConfig.from_dict(json.loads(json.dumps(quick.to_dict()))) == quick
    assert set(ARMS) == {"on-demand", "no-penalty", "unbalanced"}


def test_the_experiments_doctests_pass():
    # the experiments are outside the doctest paths of setup.cfg
    for module in (on_demand_config, on_demand_data):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"grpo_steps": 150, "eval_every": 20}, "eval_every (20) must divide grpo_steps (150)"),  # no final checkpoint
        ({"grpo_batch": 20}, "grpo_batch (20) must be a multiple of grpo_generations (8)"),  # TRL's groups
        ({"known_fraction": 0.0}, "known_fraction must be in (0, 1], got 0.0"),  # nothing would be known
        ({"max_test_questions": 1}, "max_test_questions must be None or an int >= 2"),  # no known/unknown mix
        ({"sft_epochs": 0}, "sft_epochs must be an int >= 1, got 0"),
        ({"env": {"max_turns": 1}}, "need max_turns >= 2 and max_text_searches >= 1, got 1 and 2"),  # no search turn
        ({"grpo_stpes": 3}, "unknown OnDemandConfig setting 'grpo_stpes'. Did you mean 'grpo_steps'?"),
    ],
)
def test_bad_settings_are_refused_with_the_value_and_the_fix(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        OnDemandConfig.quick(**overrides)


def test_help_works_as_a_module_and_as_a_file():
    for command in (["-m", "experiments.on_demand.run"], [str(ROOT / "experiments" / "on_demand" / "run.py")]):
        # from another folder, without PYTHONPATH: the file must find its package by itself
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        cwd = ROOT if command[0] == "-m" else ROOT.parent
        done = subprocess.run(
            [sys.executable, *command, "--help"], cwd=cwd, env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        assert "--quick" in done.stdout and "--seed" in done.stdout and "--out" in done.stdout


def test_the_committed_results_render_to_their_markdown():
    for stem in ("on_demand_search", "on_demand_search_seed1"):
        results = json.loads((RESULTS / f"{stem}.json").read_text())
        assert markdown(results) == (RESULTS / f"{stem}.md").read_text()


def test_the_full_preset_is_the_configuration_of_the_committed_results():
    for stem, seed in (("on_demand_search", 0), ("on_demand_search_seed1", 1)):
        results = json.loads((RESULTS / f"{stem}.json").read_text())
        recorded = dict(results["settings"])
        recorded.update(recorded.pop("model", {}))  # an earlier layout kept the model sizes apart
        preset = OnDemandConfig.full(seed=seed).to_dict()
        assert recorded == {key: preset[key] for key in recorded}
        env = OnDemandConfig.full().env
        assert {k: results["env"][k] for k in ("max_turns", "max_text_searches", "search_options")} == {
            "max_turns": env.max_turns,
            "max_text_searches": env.max_text_searches,
            "search_options": env.search_options,
        }
        # an earlier layout kept image_position among the prompt templates
        prompts = dict(results["env"]["prompts"])
        assert prompts.pop("image_position", results["env"].get("image_position")) == env.image_position
        assert prompts == PROMPTS


def test_a_folder_of_another_run_is_not_reused(tmp_path):
    (tmp_path / "settings.json").write_text(json.dumps(OnDemandConfig.quick(seed=1).to_dict()))
    with pytest.raises(ConfigError, match="holds a run with other settings"):
        claim_work_folder(tmp_path, OnDemandConfig.quick(seed=0))
    assert json.loads((tmp_path / "settings.json").read_text())["seed"] == 1  # left as it was
    assert claim_work_folder(tmp_path, OnDemandConfig.quick(seed=1))["seed"] == 1  # the same run: reused


def test_each_arm_trains_in_the_experiments_environment_with_its_own_penalty(tmp_path):
    require_train_extra()
    from experiments.on_demand.training import grpo_config

    config = OnDemandConfig.quick()
    env = config.env.replace(prompts=str(tmp_path / "prompts.json"))
    for name, arm in ARMS.items():
        grpo = grpo_config(name, tmp_path / "data.parquet", arm, tmp_path / "sft", tmp_path / name, env, config)
        assert grpo.env_config() == env.replace(
            dataset=str(tmp_path / "data.parquet"), split=None, search_penalty=arm.search_penalty
        )
        assert grpo.image_position == "none" and grpo.search_options == {"max_results": 1, "summary_sentences": 2}
        assert (grpo.max_steps, grpo.save_steps, grpo.learning_rate) == (2, 1, config.grpo_lr)
        assert grpo.max_tool_calling_iterations == 1  # one search turn, then the answer


# -- the whole experiment, quick (slow) ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_quick_experiment_runs_every_stage_and_reports_every_metric(tmp_path):
    require_train_extra()
    from experiments.on_demand.run import main

    out = tmp_path / "run"
    assert main(["--quick", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    cfg = results["settings"]
    assert results["quick"] is True
    assert results["questions"] == {"train": 24, "test": 12, "train_known": 12, "test_known": 6}
    assert results["env"]["image_position"] == "none"
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
    assert "`python -m experiments.on_demand.run --quick`" in md
    assert "| GRPO on-demand |" in md and "search, known" in md
    for name in ("curves.png", "summary.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_quick_run_says_its_numbers_are_not_results(tmp_path):
    results = {
        "quick": True,
        "questions": {"train": 24, "test": 12},
        "settings": {"grpo_steps": 2},
        "curation": {"fallback_to_all": ["balanced"]},
    }
    note = what_it_means(results, tmp_path)
    assert note.startswith("--quick checks the pipeline, it measures nothing: 24 training / 12 test questions")
    assert "near 0% and flat curves are expected" in note and "the arms trained on all of them" in note
    assert f"Work folder: {tmp_path}" in note
    full = what_it_means({**results, "quick": False}, tmp_path)
    assert "expected" not in full and "experiments/on_demand/results/" in full
