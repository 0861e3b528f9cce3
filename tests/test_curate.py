"""Search-balanced curation end to end on the embedded sample: rollouts, labels, balance, parquet, report."""

from __future__ import annotations

import importlib.util
import json
import re
from collections import defaultdict

import gymnasium as gym
import pytest
from broken_rows import questions_with_one_broken_image
from fake_openai import FakeOpenAI

import mmsearch_env  # noqa: F401
from agents.cli import main
from agents.curate import balance, curate, label_question
from agents.metrics import Outcome
from agents.rollout import read_trajectories
from mmsearch_env.data import load_dataset
from mmsearch_env.errors import ConfigError, DatasetError


def lines(path):
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def test_oracle_labels_the_sample_test_split_exactly(tmp_path):
    # The sample test split: 4 countries x 4 questions, one per search need. The oracle answers the
    # "none" questions from the image (search-free) and every other one only after its searches, which
    # retrieve the answer (search-required, typed by the plan it followed): 4 free, 12 required, 0 dropped.
    result = curate("oracle", "sample", "test", out=tmp_path, rollouts=2, concurrency=4, progress=False)
    report = result.report
    assert report["all"]["labels"] == {"search_free": 4, "search_required": 12, "dropped": 0}
    assert report["all"]["search_types"] == {"none": 4, "image": 4, "text": 4, "image+text": 4}
    assert report["all"]["by_category"] == {
        "country-fact": {"search_free": 0, "search_required": 8, "dropped": 0},
        "flag": {"search_free": 4, "search_required": 4, "dropped": 0},
    }
    assert report["agreement"] == {
        "questions": 16,
        "same_label": 16,
        "table": {
            "search_free": {"search_free": 4, "search_required": 0, "dropped": 0},
            "search_required": {"search_free": 0, "search_required": 12, "dropped": 0},
        },
    }
    for row in result.labels:  # the label is the question's own search need
        assert row["search_type"] == row["search_need"], row
        assert (row["correct_no_search"], row["correct_search"]) == ((2, 2) if row["search_need"] == "none" else (0, 2))
    # ratio 0.68 with 4 free: 4 * 0.68 / 0.32 = 8.5 -> 9 required; 9 + 4 = 13 questions
    selection = report["selection"]
    assert (selection["search_required"], selection["search_free"], selection["total"]) == (9, 4, 13)
    assert "search-free is the scarce label" in selection["note"]
    # round-robin over categories: required come from country-fact (8) and flag (4) -> 5 + 4
    assert report["curated"]["by_category"]["country-fact"]["search_required"] == 5
    assert report["curated"]["by_category"]["flag"] == {"search_free": 4, "search_required": 4, "dropped": 0}

    curated = load_dataset(str(tmp_path / "curated.parquet"))
    assert len(curated) == 13 and sorted(e.id for e in curated) == sorted(
        r["id"] for r in result.labels if r["index"] in result.selected
    )
    assert sum(e.metadata["curation_label"] == "search_free" for e in curated) == 4
    env = gym.make("MMSearch-v0", dataset=str(tmp_path / "curated.parquet"))
    obs, info = env.reset(options={"index": 0})
    assert obs["image"].size[0] > 0 and info["example_id"] == curated[0].id
    env.close()

    assert json.loads((tmp_path / "report.json").read_text())["all"]["labels"]["search_required"] == 12
    md = (tmp_path / "report.md").read_text()
    assert "| **total** | **4** | **12** | **0** |" in md and "kept 9 search-required + 4 search-free = 13" in md
    assert (tmp_path / "label_counts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert lines(tmp_path / "labels.jsonl") == 16
    for mode in ("no_search", "search"):
        for k in range(2):
            assert lines(tmp_path / "rollouts" / f"{mode}.r{k}.jsonl") == 16


def test_random_policy_labels_follow_the_rollout_files_and_resume(tmp_path):
    kwargs = {"out": tmp_path, "rollouts": 3, "concurrency": 4, "progress": False}
    # The random baseline never answers right without search (it answers "unknown" from the image):
    # no search-free question, so a subset at a ratio is impossible — the labels and report still land.
    with pytest.raises(DatasetError, match=re.escape("no search-free question: a subset at ratio 0.68 is impossible")):
        curate("random:7", "sample", "validation", **kwargs)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["config"]["policy"] == ["random-7", "random-8", "random-9"]  # seed + k per rollout
    # recompute every label from the rollout files themselves
    correct = {"no_search": defaultdict(int), "search": defaultdict(int)}
    for mode in correct:
        for k in range(3):
            for record in read_trajectories(tmp_path / "rollouts" / f"{mode}.r{k}.jsonl"):
                correct[mode][record.example_id] += record.correct
    labels = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert len(labels) == 8
    for row in labels:
        free, searched = correct["no_search"][row["id"]], correct["search"][row["id"]]
        expected = "search_free" if free else "search_required" if searched else "dropped"
        assert (row["label"], row["correct_no_search"], row["correct_search"]) == (expected, free, searched)
    assert report["all"]["labels"]["search_free"] == 0
    required = report["all"]["labels"]["search_required"]
    assert required > 0  # the sample is built so that searching finds the answers

    # resume: a rerun in the same folder runs no episode again; keep-all writes the required questions
    sizes = {p.name: lines(p) for p in (tmp_path / "rollouts").glob("*.jsonl")}
    result = curate("random:7", "sample", "validation", on_shortfall="keep-all", **kwargs)
    assert {p.name: lines(p) for p in (tmp_path / "rollouts").glob("*.jsonl")} == sizes
    assert len(result.selected) == required and "keep-all" in result.report["selection"]["note"]
    assert len(load_dataset(str(tmp_path / "curated.parquet"))) == required


def test_balance_by_hand():
    cats = defaultdict(lambda: "c")
    labels = {i: "search_required" for i in range(20)} | {i: "search_free" for i in range(20, 30)}
    chosen, note = balance(labels, cats, ratio=0.68)
    # 10 free -> 10 * 17/8 = 21.25 -> 21 required wanted, only 20: required is the scarce label;
    # 20 * 0.32 / 0.68 = 9.41 -> 9 free
    assert (note["search_required"], note["search_free"], note["total"]) == (20, 9, 29)
    assert "search-required is the scarce label" in note["note"] and len(chosen) == 29
    _, capped = balance(labels, cats, ratio=0.5, max_size=10)
    assert (capped["search_required"], capped["search_free"]) == (5, 5)
    again, _ = balance(labels, cats, ratio=0.68, seed=0)
    assert again == chosen  # seeded
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        balance(labels, cats, ratio=1.0)
    with pytest.raises(ConfigError, match="on_shortfall must be one of"):
        balance(labels, cats, on_shortfall="pad")


def outcome(correct, image=0, text=0):
    return Outcome(correct=correct, format_ok=True, reward=float(correct), image_searches=image, text_searches=text)


def test_label_question_search_type():
    right = outcome(True)
    assert label_question([outcome(False)], [])["label"] == "dropped"
    assert label_question([right], [])["label"] == "search_free"
    row = label_question([outcome(False)], [outcome(True, image=1), outcome(True, text=1), outcome(False, 1, 1)])
    assert row["label"] == "search_required" and row["search_type"] == "image"  # a tie goes to the cheaper kind
    both = label_question([outcome(False)], [outcome(True, 1, 2)] * 2 + [outcome(True, text=1)])
    assert both["search_type"] == "image+text" and both["correct_search_by_type"] == {"image+text": 2, "text": 1}
    assert label_question([outcome(False)], [right])["search_type"] == "unknown"


def test_cli_curate(tmp_path, capsys):
    args = ["curate", "--policy", "oracle", "--dataset", "sample", "--split", "validation", "--rollouts", "1"]
    code = main([*args, "--ratio", "0.5", "--out", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "kept 2 search-required + 2 search-free = 4" in out  # 2 free, 6 required -> 2 + 2 at 50%
    assert re.search(r"curated: .*curated\.parquet", out)
    assert main(["curate", "--policy", "oracle", "--ratio", "1.5", "--out", str(tmp_path / "x"), "--quiet"]) == 2


def test_cli_curate_takes_every_env_setting(tmp_path, capsys):
    # One turn: no search is possible, so only the questions answerable from the image survive (2 of 8).
    args = ["curate", "--policy", "oracle", "--dataset", "sample", "--split", "validation", "--rollouts", "1"]
    code = main([*args, "--max-turns", "1", "--on-shortfall", "keep-all", "--out", str(tmp_path), "--quiet"])
    assert code == 0, capsys.readouterr().err
    labels = json.loads((tmp_path / "report.json").read_text())["all"]["labels"]
    assert labels == {"search_free": 2, "search_required": 0, "dropped": 6}
    records = read_trajectories(tmp_path / "rollouts" / "search.r0.jsonl")
    assert len(records) == 8 and all(len(r.turns) == 1 and r.split == "validation" for r in records)


def test_model_policy_spec_samples_at_the_curation_temperature(tmp_path, monkeypatch):
    # A model behind an OpenAI-compatible server (local, real HTTP): spec strings default to greedy
    # decoding; curation sets temperature 1.0 so that the K rollouts can differ.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeOpenAI() as fake:
        result = curate(
            f"openai:fake-vlm@{fake.base_url}",
            "sample",
            "validation",
            out=tmp_path,
            rollouts=2,
            progress=False,
            on_shortfall="keep-all",
            concurrency=2,
        )
        assert fake.requests and {r["temperature"] for r in fake.requests} == {1.0}
    # the scripted model image-searches first and answers with the top title: with search disabled it
    # cannot search (the episode ends), with search it answers the flag questions
    assert result.report["all"]["labels"]["search_free"] == 0
    assert result.report["all"]["labels"]["search_required"] > 0


def test_a_question_with_a_skipped_rollout_is_listed_not_labelled(tmp_path):
    questions_with_one_broken_image(tmp_path, 4, 1, search_need="none")
    result = curate(
        "oracle", str(tmp_path / "questions.jsonl"), None, out=tmp_path / "c", rollouts=1,
        env_config={"search": "sample"}, plot=False, progress=False, on_shortfall="keep-all",
    )  # fmt: skip
    assert [row["id"] for row in result.labels] == ["q0", "q2", "q3"]
    assert [s["example_id"] for s in result.report["skipped"]] == ["q1"]
    assert "1 question(s) skipped" in (tmp_path / "c" / "report.md").read_text()


def test_a_core_install_is_told_the_extra_before_any_rollout(tmp_path, monkeypatch, capsys):
    # as on a core install: pyarrow cannot be found
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real_find_spec(name, *a)
    )
    out = tmp_path / "cur"
    assert main(["curate", "--policy", "oracle", "--dataset", "sample", "--split", "test", "--out", str(out)]) == 2
    assert "pip install 'mmsearch-env[data]'" in capsys.readouterr().err
    assert not (out / "rollouts").exists()  # nothing ran
