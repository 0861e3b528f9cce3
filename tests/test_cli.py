"""The `mmsearch` command line: the demo (the README's first command, in-process and as a subprocess), the
subcommands' wiring, the entry point, and the layering (the env package never imports agents)."""

from __future__ import annotations

import ast
import configparser
import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from env_flags import ENV_FLAG_VALUES

from agents.cli import build_parser, main
from mmsearch_env.config import EnvConfig, env_config_from_args
from mmsearch_env.search.service import serve_main


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
        [sys.executable, "-m", "agents.cli", "demo", "--quiet", "--episodes", "4"],
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


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--episode", "2"],  # --episodes
        ["eval", "--policy", "rag", "--limi", "2"],  # --limit
        ["eval", "--policy", "rag", "--max-turn", "2"],  # --max-turns
        ["curate", "--policy", "oracle", "--rollout", "2"],  # --rollouts
    ],
)
def test_flag_prefixes_are_not_accepted(argv, capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(argv)
    assert excinfo.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


def test_quickstart_example_runs():
    root = Path(__file__).resolve().parents[1]
    script = root / "examples" / "quickstart.py"
    env = {**os.environ, "PYTHONPATH": str(root)}  # this checkout's package, not an installed one
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=False, env=env)
    assert result.returncode == 0, result.stderr
    assert "reward: 0.91" in result.stdout
    assert "oracle-plan: accuracy 1.00, search ratio 0.82" in result.stdout


#: A value for every EnvConfig field a command line can set (a new field must be added here).


@pytest.mark.parametrize("command", ["eval", "curate"])
def test_every_env_setting_is_a_flag_of_eval_and_curate(command):
    names = [f.name for f in fields(EnvConfig) if f.name != "render_mode"]
    argv = [command, "--policy", "oracle"]
    for name in names:
        argv += ["--" + name.replace("_", "-"), ENV_FLAG_VALUES[name][0]]
    config = env_config_from_args(build_parser().parse_args(argv))
    assert {name: getattr(config, name) for name in names} == {name: ENV_FLAG_VALUES[name][1] for name in names}


def test_view_calls_the_viewer_with_its_signature(tmp_path, monkeypatch, capsys):
    calls = []

    def write_viewer(trajectories, out, *, images_dir=None, max_episodes=None):
        calls.append((trajectories, out, images_dir, max_episodes))
        Path(out).write_text("<html></html>")
        return Path(out)

    monkeypatch.setattr("agents.cli.write_viewer", write_viewer)
    out = tmp_path / "v.html"
    assert main(["view", "t.jsonl", "--out", str(out), "--images", "imgs", "--max-episodes", "3"]) == 0
    assert calls == [("t.jsonl", str(out), "imgs", 3)] and f"wrote {out}" in capsys.readouterr().out


def test_serve_uses_the_service_arguments():
    args = build_parser().parse_args(["serve", "--backend", "sample", "--cache", "none"])
    assert args.func is serve_main and args.backend == "sample"


def test_the_env_package_never_imports_agents():
    root = Path(__file__).resolve().parents[1] / "mmsearch_env"
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n == "agents" or n.startswith("agents.") for n in names), path


def test_the_console_script_is_agents_cli():
    config = configparser.ConfigParser()
    config.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    scripts = config["options.entry_points"]["console_scripts"].split()
    assert scripts == ["mmsearch", "=", "agents.cli:main"]


def test_the_command_line_imports_no_heavy_dependency():
    code = (
        "import sys, agents.cli; "
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'redis', 'torch', 'transformers', 'matplotlib') "
        "if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]"  # `mmsearch --help` stays fast; optional extras load on use
