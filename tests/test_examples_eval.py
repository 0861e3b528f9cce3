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


def test_custom_policy_example(tmp_path):
    out = tmp_path / "custom"
    stdout = run_example("custom_policy.py", "--limit", "6", "--out", str(out))
    rows = {row["policy"]: row for row in json.loads((out / "report.json").read_text())["rows"]}
    assert set(rows) == {"on-demand-rules", "rag"}
    assert rows["on-demand-rules"]["search_ratio_calls"] < rows["rag"]["search_ratio_calls"] == 1.0
    lines = (out / "trajectories.jsonl").read_text().splitlines()
    assert len(lines) == 12 and "on-demand-rules: accuracy" in stdout
