"""The evaluation examples run end to end with tiny budgets and write what they promise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # quiet: no warning our settings cause, and no progress-bar carriage returns in a captured log
    assert "Warning" not in done.stderr and "\r" not in done.stderr + done.stdout, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("name", ["evaluate_policies.py", "custom_policy.py"])
def test_docstring_starts_with_the_command(name):
    source = (ROOT / "examples" / name).read_text()
    assert source.startswith(f'"""python examples/{name} ')
    assert len(source.splitlines()) < 150


def test_evaluate_policies_example(tmp_path):
    out = tmp_path / "eval"
    stdout = run_example("evaluate_policies.py", "--policies", "direct,oracle", "--limit", "4", "--out", str(out))
    report = json.loads((out / "report.json").read_text())
    assert [row["policy"] for row in report["rows"]] == ["direct", "oracle-plan"]
    assert report["config"]["episodes"] == 4 and report["rows"][1]["search_utility"]["wasted"] == 0
    assert (out / "accuracy_vs_search.png").stat().st_size > 1000
    assert "most accurate: oracle-plan" in stdout
    assert "No model in this run: every row is a plumbing check" in stdout  # what the numbers mean
    assert f"report_md: {out / 'report.md'}" in stdout and f"trajectories_no_search: {out}" in stdout


def test_custom_policy_example(tmp_path):
    out = tmp_path / "custom"
    stdout = run_example("custom_policy.py", "--limit", "6", "--out", str(out))
    rows = {row["policy"]: row for row in json.loads((out / "report.json").read_text())["rows"]}
    assert set(rows) == {"on-demand-rules", "rag"}
    assert rows["on-demand-rules"]["search_ratio_calls"] < rows["rag"]["search_ratio_calls"] == 1.0
    lines = (out / "trajectories.jsonl").read_text().splitlines()
    assert len(lines) == 12 and "on-demand-rules: accuracy" in stdout
    assert "low accuracy for both is expected" in stdout and f"report_md: {out / 'report.md'}" in stdout


@pytest.mark.parametrize(
    ("name", "folder"), [("evaluate_policies.py", "runs/eval"), ("custom_policy.py", "runs/custom_policy")]
)
def test_outputs_default_under_the_ignored_runs_folder(name, folder):
    source = (ROOT / "examples" / name).read_text()
    assert f'default="{folder}"' in source and f"--out {folder}" in source.splitlines()[0]
    assert "runs/" in (ROOT / ".gitignore").read_text().splitlines()
