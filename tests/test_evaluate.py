"""The evaluation harness: metrics, search utility, judge, report files, CLI, policy resolution."""

from __future__ import annotations

import json
import re
import sys

import pytest
from broken_rows import questions_with_one_broken_image
from fake_openai import FakeOpenAI
from PIL import Image

from agents.baselines import RAGWorkflowPolicy
from agents.cli import main
from agents.evaluate import evaluate, policy_metrics, resolve_policy, search_utility
from agents.judge import JudgeItem, LLMJudge, parse_verdict
from agents.openai_policy import EndpointError, OpenAIPolicy
from agents.policy import PolicyBase
from agents.rollout import read_trajectories
from agents.scripted import PLANS
from mmsearch_env.config import EnvConfig
from mmsearch_env.data import load_dataset
from mmsearch_env.errors import ConfigError
from mmsearch_env.records import EpisodeRecord, SearchRecord


def rec(index, correct, image=0, text=0, *, end="answer", failures=0, cost=0.0, category="c", need="image", usage=None):
    """A trajectory record: ``image`` / ``text`` searches (the first ``failures`` of them failed)."""
    tools = ["image_search"] * image + ["text_search"] * text
    searches = [SearchRecord(tool, ok=k >= failures, cost_usd=cost if k == 0 else 0.0) for k, tool in enumerate(tools)]
    return EpisodeRecord(
        example_id=f"q{index}",
        question="?",
        ground_truth="x",
        index=index,
        searches=searches,
        end_reason=end,
        reward=1.0 if correct else 0.1,
        reward_parts={"accuracy": float(correct), "format": float(end == "answer"), "answer": "x"},
        category=category,
        search_need=need,
        usage=usage,
        latency_s=0.5,
    )


def test_policy_metrics_names_both_search_ratios():
    records = [
        rec(0, True, 1, 1, cost=0.01, usage={"prompt_tokens": 10, "completion_tokens": 3}),
        rec(1, False, 1, 0, failures=1, need="text", category="d"),
        rec(2, True),
        rec(3, False, end="malformed"),
        rec(4, False, 0, 2, end="text_search_limit"),
    ]
    row = policy_metrics(records, max_searches_per_episode=2, judged=[True, True, True, None, False])
    assert row["search_ratio_episodes"] == 3 / 5  # episodes that searched
    assert row["search_ratio_calls"] == 5 / 10  # searches / (episodes x max allowed)
    assert row["image_searches"] == 2 and row["text_searches"] == 3
    assert row["failures"] == {"search_errors": 1, "malformed": 1, "truncated": 1}
    assert row["accuracy"] == 2 / 5 and row["judge_accuracy"] == 3 / 5 and row["judge_unparsed"] == 1
    assert row["accuracy_by_search_need"] == {"image": {"accuracy": 0.5, "n": 4}, "text": {"accuracy": 0.0, "n": 1}}
    assert row["accuracy_by_category"]["d"] == {"accuracy": 0.0, "n": 1}
    assert (row["prompt_tokens"], row["completion_tokens"]) == (10, 3)
    assert row["search_cost_usd"] == pytest.approx(0.01)


def test_search_utility_counts():
    main = [rec(0, True, 1), rec(1, True, 1), rec(2, False), rec(3, False), rec(4, True)]
    no_search = [rec(0, False), rec(1, True), rec(2, False), rec(3, False), rec(4, True)]
    forced = [rec(0, True, 1), rec(1, True, 1), rec(2, True, 1), rec(3, False, 1), rec(4, True, 1)]
    u = search_utility(main, no_search, forced)
    assert (u["needed"], u["wasted"], u["missed"]) == (1, 1, 1)  # 0 needed it, 1 did not, 2 should have
    assert u["searched_episodes"] == 2 and u["accuracy_no_search"] == 0.4 and u["accuracy_forced_search"] == 0.8
    assert search_utility(main, no_search)["missed"] is None


def test_evaluate_writes_table_plot_and_trajectories(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(
        "agents.evaluate.write_viewer",
        lambda src, dst: (calls.append((str(src), str(dst))), dst.write_text("<html></html>")),
    )
    indices = list(range(0, 64, 3))  # every search need appears
    report = evaluate(["oracle", "direct"], dataset="sample", split=None, indices=indices, out=tmp_path, progress=False)
    oracle, direct = report.row("oracle-plan"), report.row("direct")
    assert oracle["episodes"] == 22 and oracle["accuracy"] == 1.0
    need_search = sum(load_dataset("sample", None)[i].search_need != "none" for i in indices)
    assert 0 < need_search < 22
    assert oracle["search_utility"]["needed"] == need_search  # every search it makes is needed...
    assert oracle["search_utility"]["wasted"] == 0  # ...and none is wasted
    assert direct["search_utility"]["missed"] > 0  # forced search would have helped direct answer
    plan_lengths = sum(len(PLANS[load_dataset("sample", None)[i].search_need]) for i in indices)
    assert direct["search_ratio_episodes"] == 0 and oracle["search_ratio_calls"] == plan_lengths / (22 * 2)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert [r["policy"] for r in saved["rows"]] == ["oracle-plan", "direct"]
    markdown = (tmp_path / "report.md").read_text()
    assert "| oracle-plan | 100.0 |" in markdown and "## Search utility" in markdown
    # no model in the run: the report says so instead of reading like a results table
    assert markdown.startswith("# MMSearch-v0 plumbing check (no model evaluated):")
    assert "**Plumbing checks, not baselines:** oracle-plan, direct use no model" in markdown
    assert oracle["model_free"] and direct["model_free"]
    assert report.paths["trajectories_no_search"] == str(tmp_path / "trajectories.no_search.jsonl")
    assert report.paths["trajectories_forced_search"] == str(tmp_path / "trajectories.forced_search.jsonl")
    with Image.open(tmp_path / "accuracy_vs_search.png") as png:
        assert png.format == "PNG" and png.width > 300
    assert calls == [(str(tmp_path / "trajectories.jsonl"), str(tmp_path / "viewer.html"))]
    for name in ("trajectories.jsonl", "trajectories.no_search.jsonl", "trajectories.forced_search.jsonl"):
        assert len((tmp_path / name).read_text().splitlines()) == 44
    # The search-disabled run told the policy it could not search: the oracle answered at once.
    no_search = [json.loads(x) for x in (tmp_path / "trajectories.no_search.jsonl").read_text().splitlines()]
    assert all(r["turns"] and len(r["turns"]) == 1 for r in no_search)


def test_judge_through_an_openai_compatible_endpoint(tmp_path):
    with FakeOpenAI() as fake:
        judge = LLMJudge.from_spec(f"openai:judge-model@{fake.base_url}")
        verdicts = judge.judge_batch(
            [
                JudgeItem("Capital?", "Velmont", "Velmont"),  # exact: no call
                JudgeItem("Capital?", "the city of Velmont", "Velmont"),  # judge: contains it
                JudgeItem("Capital?", "Sarogh", "Velmont"),
                JudgeItem("Capital?", "", "Velmont"),  # empty: wrong, no call
            ]
        )
        assert verdicts == [True, True, False, False]
        assert judge.calls == len(fake.requests) == 2
        assert (
            fake.requests[0]["temperature"] == 0.0
            and "first and the last name" in fake.requests[0]["messages"][0]["content"]
        )
        assert judge.usage["prompt_tokens"] > 0
        # End to end: the scripted model answers "Arvenia - country profile"-style titles trimmed, the judge grades.
        policy = OpenAIPolicy("fake-vlm", fake.base_url)
        report = evaluate(
            [policy], split=None, limit=8, out=tmp_path, judge=judge, progress=False, search_utility_runs=False
        )
        row = report.row("openai:fake-vlm")
        assert row["judge_accuracy"] >= row["accuracy"] and row["prompt_tokens"] > 0
        assert row["search_utility"] is None and "judge-model" in (tmp_path / "report.json").read_text()


def test_judge_settings_cut_replies_and_errors():
    item = JudgeItem("Capital?", "Sarogh", "Velmont")
    with FakeOpenAI() as fake:
        # max_tokens=1: "INCORRECT" is cut to "INCO", which holds no verdict; the cut is counted
        judge = LLMJudge.from_spec(f"openai:judge-model@{fake.base_url}?max_tokens=1", concurrency=2)
        assert judge.judge_batch([item]) == [None] and judge.cut == 1
        assert fake.requests[0]["max_tokens"] == 1 and judge.endpoint.settings.concurrency == 2
        assert LLMJudge("judge-model", fake.base_url).endpoint.settings.max_tokens == 16  # JUDGE_SETTINGS
        fake.fail_next = [401]
        with pytest.raises(EndpointError, match=re.escape("the judge endpoint")) as info:
            LLMJudge("judge-model", fake.base_url, api_key="judge-key-12345678").judge_batch([item])
        assert info.value.status == 401 and "judge-key-12345678" not in str(info.value)


def test_parse_verdict():
    assert [parse_verdict(t) for t in ("CORRECT", "incorrect.", "Correct? No: INCORRECT", "")] == [
        True,
        False,
        False,
        None,
    ]


def test_resolve_policy_names_and_errors(monkeypatch):
    assert resolve_policy("random:7").name == "random-7"
    with pytest.raises(ConfigError, match="Did you mean 'rag'"):
        resolve_policy("rga")
    with pytest.raises(ConfigError, match="MODEL@BASE_URL"):
        resolve_policy("openai:gpt-4o")
    monkeypatch.setitem(sys.modules, "torch", None)  # the train extra is not installed
    with pytest.raises(ConfigError, match=re.escape("pip install 'mmsearch-env[train]'")):
        resolve_policy("hf:/models/tiny")
    monkeypatch.delitem(sys.modules, "torch")
    built = []

    class HFPolicy:
        def __init__(self, model_path, protocol="tags", adapter=None, temperature=0.0, seed=None):
            built.append((model_path, adapter, protocol, temperature, seed))
            self.name = f"hf:{model_path}"

        def act_batch(self, observations, infos):
            return []

    monkeypatch.setattr("agents.resolve.HFPolicy", HFPolicy)
    resolve_policy("hf:/models/tiny@/adapters/lora", protocol="tool_calls")
    resolve_policy("hf:/models/tiny", temperature=1.0, seed=3)
    assert built == [
        ("/models/tiny", "/adapters/lora", "tool_calls", 0.0, None),
        ("/models/tiny", None, "tags", 1.0, 3),
    ]
    with pytest.raises(ConfigError, match="temperature must be >= 0"):
        resolve_policy("hf:/models/tiny", temperature=-1)
    with pytest.raises(ConfigError, match="policy names must be unique"):
        evaluate(["rag", "rag"], dataset="sample", split="test", out=None, progress=False)


def test_cli_eval(tmp_path, capsys):
    code = main(
        [
            "eval",
            "--policy",
            "oracle",
            "--policy",
            "rag",
            "--dataset",
            "sample",
            "--split",
            "test",
            "--limit",
            "4",
            "--out",
            str(tmp_path),
            "--quiet",
            "--search-utility",
            "off",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "| rag |" in out and "report_json:" in out
    assert json.loads((tmp_path / "report.json").read_text())["config"]["episodes"] == 4
    assert main(["eval", "--policy", "orcale", "--out", str(tmp_path)]) == 2
    assert "Did you mean 'oracle'" in capsys.readouterr().err


def test_cli_eval_takes_every_env_setting(tmp_path):
    args = ["eval", "--policy", "oracle", "--dataset", "sample", "--limit", "8", "--out", str(tmp_path), "--quiet"]
    flags = ["--max-text-searches", "0", "--search-penalty", "0.2", "--protocol", "tool_calls", "--no-plot"]
    assert main([*args, *flags, "--search-utility", "off"]) == 0
    saved = json.loads((tmp_path / "report.json").read_text())["config"]
    assert (saved["split"], saved["protocol"], saved["max_searches_per_episode"]) == ("test", "tool_calls", 1)
    records = read_trajectories(tmp_path / "trajectories.jsonl")
    assert len(records) == 8 and all(r.text_searches == 0 and r.split == "test" for r in records)
    searched = [r for r in records if r.correct and r.num_searches]
    assert searched and [r.reward for r in searched] == pytest.approx([0.9 * 0.8 + 0.1] * len(searched))  # penalty 0.2
    assert main([*args, "--max-turns", "0"]) == 2  # a bad setting is a usage error, not a traceback


def test_evaluate_takes_an_env_config():
    config = EnvConfig(dataset="sample", max_turns=1)
    report = evaluate("oracle", split="test", env_config=config, limit=4, progress=False)
    row = report.row("oracle-plan")
    assert row["episodes"] == 4 and row["search_ratio_episodes"] == 0  # one turn: no search is possible
    assert report.config["max_turns"] == 1 and report.config["max_searches_per_episode"] == 0
    assert row["search_utility"]["missed"] is None  # no forced-search run without room for a search


def test_missing_matplotlib_keeps_the_tables(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.warns(UserWarning, match=r"no plot written: .*pip install 'mmsearch-env\[eval\]'"):
        report = evaluate(
            ["direct"], dataset="sample", split="test", limit=2, out=tmp_path, progress=False, search_utility_runs=False
        )
    assert "plot" not in report.paths and (tmp_path / "report.md").is_file()
    assert not (tmp_path / "accuracy_vs_search.png").exists()


def test_search_disabled_kwargs_drop_the_backends_options():
    import gymnasium as gym

    from agents.evaluate import search_disabled_kwargs

    kwargs = {"dataset": "sample", "search": "sample", "search_options": {"max_results": 2}, "max_text_searches": 2}
    off = search_disabled_kwargs(kwargs)
    assert off == EnvConfig(dataset="sample", search="disabled", max_image_searches=0, max_text_searches=0).to_dict()
    assert kwargs["search_options"] == {"max_results": 2}  # the caller's dict is left alone
    env = gym.make("MMSearch-v0", **off)  # options of the real backend would not fit the disabled one
    assert env.unwrapped.max_searches_per_episode == 0
    env.close()


def test_the_disabled_backend_ignores_search_options():
    import gymnasium as gym

    env = gym.make("MMSearch-v0", dataset="sample", search="disabled", search_options={"max_results": 2})
    env.reset(seed=0)
    _, _, _, _, info = env.step("<reason>x</reason><text_search>q</text_search>")
    assert info["search_failures"] == 1 and "disabled" in info["search_error"]
    env.close()


def test_a_bad_row_is_skipped_and_listed_in_the_report(tmp_path, capsys):
    questions_with_one_broken_image(tmp_path, 6, 2)
    out = tmp_path / "eval"
    code = main(["eval", "--policy", "direct", "--dataset", str(tmp_path / "questions.jsonl"), "--split", "all",
                 "--search", "sample", "--out", str(out), "--quiet", "--no-plot"])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    (row,) = report["rows"]
    assert row["episodes"] == 5 and [s["example_id"] for s in row["skipped"]] == ["q2"]
    markdown = (out / "report.md").read_text()
    assert "## Skipped episodes (1)" in markdown and "| direct | 2 | q2 | DatasetError" in markdown
    assert (out / "trajectories.skipped.jsonl").is_file()
    capsys.readouterr()
    code = main(["eval", "--policy", "direct", "--dataset", str(tmp_path / "questions.jsonl"), "--split", "all",
                 "--search", "sample", "--out", str(tmp_path / "e2"), "--quiet", "--no-plot", "--on-error", "stop"])  # fmt: skip
    assert code == 2 and "q2.png" in capsys.readouterr().err


def test_a_report_with_a_model_is_an_evaluation_with_the_scripts_labelled():
    class Model(PolicyBase):  # stands for any model policy: it has no model_free flag
        name = "my-model"

        def act(self, observation, info):
            return "<reason>x</reason><answer>unknown</answer>"

    report = evaluate(
        [Model(), "rag", RAGWorkflowPolicy(Model())], dataset="sample", split="test", limit=2, progress=False
    )
    markdown = report.to_markdown()
    assert markdown.startswith("# MMSearch-v0 evaluation:")
    assert "**Plumbing checks, not baselines:** rag use no model" in markdown  # rag[my-model] has one
    assert [r["model_free"] for r in report.rows] == [False, True, False]
