"""The `mmsearch demo` command: the README's first command, run in-process and as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mmsearch_env.cli import main


def test_demo_oracle_solves_sample_and_no_search_cannot(tmp_path, capsys):
    out = tmp_path / "demo.json"
    assert main(["demo", "--dataset", "sample", "--split", "all", "--quiet", "--json", str(out)]) == 0
    rows = {row["policy"]: row for row in json.loads(out.read_text())}
    plan, blind = rows["oracle-plan"], rows["oracle-no-search"]
    assert plan["accuracy"] == 1.0 and plan["format_rate"] == 1.0
    assert plan["search_ratio_episodes"] == 0.75  # every label but "none" searches
    assert plan["search_ratio_calls"] == (16 * 1 + 16 * 2 + 16 * 1) / (64 * 2)
    assert blind["accuracy"] == 0.25 and blind["search_ratio_episodes"] == 0.0
    assert blind["accuracy_by_search_need"] == {"image": 0.0, "image+text": 0.0, "none": 1.0, "text": 0.0}
    printed = capsys.readouterr().out
    assert "oracle-plan" in printed and "search%ep" in printed


def test_demo_tool_calls_protocol_and_split(tmp_path):
    out = tmp_path / "demo.json"
    assert (
        main(
            [
                "demo",
                "--dataset",
                "sample",
                "--quiet",
                "--protocol",
                "tool_calls",
                "--split",
                "test",
                "--episodes",
                "8",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    rows = json.loads(out.read_text())
    assert rows[0]["episodes"] == 8 and rows[0]["accuracy"] == 1.0


def test_console_script_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "mmsearch_env.cli", "demo", "--quiet", "--episodes", "4"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "MMSearch-v0 demo" in result.stdout


def test_bad_arguments_exit_with_usage():
    with pytest.raises(SystemExit) as excinfo:
        main(["demo", "--split", "nope"])
    assert excinfo.value.code == 2


def test_quickstart_example_runs():
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = root / "examples" / "quickstart.py"
    env = {**os.environ, "PYTHONPATH": str(root)}  # this checkout's package, not an installed one
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=False, env=env)
    assert result.returncode == 0, result.stderr
    assert "reward: 0.91" in result.stdout
    assert "oracle-plan: accuracy 1.00, search ratio 0.82" in result.stdout
