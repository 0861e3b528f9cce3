"""agents.metrics: every number the reports, progress bars and trainer logs show, computed in one place."""

from __future__ import annotations

import math
import re
from dataclasses import fields

import pytest

from agents.metrics import (
    EpisodeSummary,
    Outcome,
    RunningMetrics,
    accuracy_by,
    failure_counts,
    outcome,
    policy_metrics,
    search_utility,
    summarize,
    training_metrics,
)
from mmsearch_env.errors import ConfigError
from mmsearch_env.records import EpisodeRecord, SearchRecord
from mmsearch_env.reward import RewardBreakdown


def o(correct=True, image=0, text=0, *, fmt=True, reward=None, failures=0, end="answer", turns=1, cat=None, need=None):
    if reward is None:
        reward = (0.91 if image + text else 1.0) if correct else 0.1
    return Outcome(correct, fmt, reward, image, text, failures, end, turns, cat, need)


def record(index, correct, image=0, text=0, *, failures=0, cost=0.0, usage=None, latency=0.5, need="image"):
    tools = ["image_search"] * image + ["text_search"] * text
    return EpisodeRecord(
        example_id=f"q{index}",
        question="?",
        ground_truth="x",
        index=index,
        searches=[SearchRecord(t, ok=k >= failures, cost_usd=cost) for k, t in enumerate(tools)],
        end_reason="answer",
        reward=0.91 if correct and tools else 1.0 if correct else 0.1,
        reward_parts={"accuracy": float(correct), "format": 1.0, "answer": "x"},
        category="c",
        search_need=need,
        usage=usage,
        latency_s=latency,
    )


# -- summarize: (episodes, max searches per episode) -> the summary's numbers ---------------------------------
SUMMARY_CASES = [
    # (id, episodes, max_searches, expected (accuracy, mean_reward, format_rate, ratio_episodes, ratio_calls))
    ("nothing", [], 2, (0.0, 0.0, 0.0, 0.0, 0.0)),
    ("one direct answer", [o()], 2, (1.0, 1.0, 1.0, 0.0, 0.0)),
    ("half searched, a quarter of the calls", [o(image=1), o(False)], 2, (0.5, 0.505, 1.0, 0.5, 0.25)),
    ("every search used", [o(image=1, text=1)] * 3, 2, (1.0, 0.91, 1.0, 1.0, 1.0)),
    ("two searches count once for def. 1", [o(text=2), o(), o(), o()], 2, (1.0, 0.9775, 1.0, 0.25, 0.25)),
    ("no search allowed: calls ratio is 0", [o(image=1)], 0, (1.0, 0.91, 1.0, 1.0, 0.0)),
    (
        "bad format counts apart from accuracy",
        [o(fmt=False), o(False, fmt=False, reward=0.0)],
        2,
        (0.5, 0.5, 0.0, 0, 0),
    ),
]


@pytest.mark.parametrize(
    ("episodes", "max_searches", "expected"), [c[1:] for c in SUMMARY_CASES], ids=[c[0] for c in SUMMARY_CASES]
)
def test_summarize(episodes, max_searches, expected):
    s = summarize(episodes, max_searches)
    got = (s.accuracy, s.mean_reward, s.format_rate, s.search_ratio_episodes, s.search_ratio_calls)
    assert got == pytest.approx(expected)
    assert s.episodes == len(episodes)
    assert s.image_searches == sum(e.image_searches for e in episodes)
    assert s.text_searches == sum(e.text_searches for e in episodes)


def test_running_metrics_equal_the_batch_summary_at_every_step():
    episodes = [o(image=1), o(False), o(text=2, failures=1), o(fmt=False), o(False, image=1, text=1)]
    live = RunningMetrics(max_searches_per_episode=2)
    for n, episode in enumerate(episodes, start=1):
        live.update(episode)
        assert live.summary() == summarize(episodes[:n], 2)
    assert live.postfix() == {"acc": "0.60", "search": "0.60"}
    assert live.summary().search_failures == 1
    assert RunningMetrics().postfix() == {"acc": "0.00", "search": "0.00"}  # before the first episode


# -- what the metrics read: every kind of episode gives the same outcome ------------------------------------------
def test_a_record_an_info_and_a_reward_breakdown_read_the_same():
    rec = record(0, True, image=1, text=1, failures=1)
    rec.turns = ["t1", "t2", "t3"]
    info = {
        "correct": True,
        "format_ok": True,
        "image_searches": 1,
        "text_searches": 1,
        "search_failures": 1,
        "end_reason": "answer",
        "turn": 3,
        "reward_parts": {"reward": 0.91},
    }
    breakdown = RewardBreakdown(0.91, 1.0, 1.0, 0.9, "x", 1, 1, "I>T>A")
    from_record, from_info, from_reward = outcome(rec), outcome(info), Outcome.from_reward(breakdown, info)
    facts = ("correct", "format_ok", "reward", "image_searches", "text_searches", "search_failures", "turns")
    for name in facts:
        assert getattr(from_record, name) == getattr(from_info, name) == getattr(from_reward, name), name
    assert from_record.search_need == "image" and from_info.search_need is None  # only records know labels
    assert outcome(from_reward) is from_reward
    with pytest.raises(ConfigError, match=re.escape("got list")):
        outcome([1, 2])


# -- groups, failures, the trainer's log ----------------------------------------------------------------------
GROUP_CASES = [
    (
        "by need",
        "search_need",
        [o(need="image"), o(False, need="image"), o(need="none")],
        {"image": (0.5, 2), "none": (1.0, 1)},
    ),
    ("missing label", "category", [o(cat="flag"), o(False)], {"-": (0.0, 1), "flag": (1.0, 1)}),
    ("nothing", "category", [], {}),
]


@pytest.mark.parametrize(("key", "episodes", "expected"), [c[1:] for c in GROUP_CASES], ids=[c[0] for c in GROUP_CASES])
def test_accuracy_by(key, episodes, expected):
    got = accuracy_by(episodes, key)
    assert {k: (v["accuracy"], v["n"]) for k, v in got.items()} == expected
    assert list(got) == sorted(got)


def test_accuracy_by_rejects_an_unknown_key():
    with pytest.raises(ConfigError, match=re.escape("['category', 'search_need'], got 'policy'")):
        accuracy_by([o()], "policy")


def test_failure_counts():
    episodes = [o(failures=2), o(False, end="malformed"), o(False, end="text_search_limit"), o(False, end="max_turns")]
    assert failure_counts(episodes) == {"search_errors": 2, "malformed": 1, "truncated": 1}


def test_training_metrics_from_reward_breakdowns():
    scored = [
        (RewardBreakdown(0.91, 1.0, 1.0, 0.9, "a", 1, 0, "I>A"), {"turn": 2, "search_failures": 0}),
        (RewardBreakdown(0.1, 0.0, 1.0, 1.0, "b", 0, 1, "T>A"), {"turn": 2, "search_failures": 1}),
        (RewardBreakdown(0.0, 0.0, 0.0, 1.0, None, 0, 0, "?"), {"turn": 1, "end_reason": "malformed"}),
        (RewardBreakdown(1.0, 1.0, 1.0, 1.0, "d", 0, 0, "A"), {"turn": 1}),
    ]
    got = training_metrics(Outcome.from_reward(b, i) for b, i in scored)
    assert got == pytest.approx(
        {
            "accuracy": 0.5,
            "format": 0.75,
            "search_ratio": 0.5,
            "image_search_ratio": 0.25,
            "text_search_ratio": 0.25,
            "searches": 0.5,
            "tool_failures": 0.25,
            "turns": 1.5,
        }
    )
    assert training_metrics([]) == {}


# -- the evaluation report's row and search utility ----------------------------------------------------------
def test_policy_metrics_row():
    records = [
        record(0, True, image=1, text=1, cost=0.01, usage={"prompt_tokens": 10, "completion_tokens": 3}, latency=1.0),
        record(1, False, image=1, failures=1, need="text"),
        record(2, True, latency=0.1),
        record(3, False, latency=0.2),
    ]
    row = policy_metrics(records, max_searches_per_episode=2, judged=[True, True, None, False])
    summary = summarize(records, 2)
    assert {k: row[k] for k in ("accuracy", "search_ratio_episodes", "search_ratio_calls")} == {
        "accuracy": summary.accuracy,
        "search_ratio_episodes": summary.search_ratio_episodes,
        "search_ratio_calls": summary.search_ratio_calls,
    }
    assert (row["search_ratio_episodes"], row["search_ratio_calls"]) == (0.5, 3 / 8)
    assert row["failures"] == {"search_errors": 1, "malformed": 0, "truncated": 0}
    assert (row["judge_accuracy"], row["judge_unparsed"]) == (0.5, 1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (10, 3)
    assert row["search_cost_usd"] == pytest.approx(0.02)  # summed over the searches (2 of 0.01)
    assert row["mean_latency_s"] == pytest.approx(0.45) and row["p95_latency_s"] == 1.0
    assert row["accuracy_by_search_need"] == {"image": {"accuracy": 2 / 3, "n": 3}, "text": {"accuracy": 0.0, "n": 1}}
    assert "search_failures" not in row  # reported once, as failures["search_errors"]
    empty = policy_metrics([], 2)
    assert empty["episodes"] == 0 and empty["prompt_tokens"] is None and not math.isnan(empty["mean_latency_s"])
    with pytest.raises(ConfigError, match="one verdict per record"):
        policy_metrics(records, 2, judged=[True])


UTILITY_CASES = [
    # (id, main, no_search, forced, expected (needed, wasted, missed, searched))
    ("needed: searched, right, wrong without", [(True, 1)], [False], [True], (1, 0, 0, 1)),
    ("wasted: right without search anyway", [(True, 1)], [True], [True], (0, 1, 0, 1)),
    ("wasted even when the search run was wrong", [(False, 1)], [True], [True], (0, 1, 0, 1)),
    ("missed: no search, wrong, forced right", [(False, 0)], [False], [True], (0, 0, 1, 0)),
    ("not missed when forcing does not help", [(False, 0)], [False], [False], (0, 0, 0, 0)),
    ("no forced run: missed is unknown", [(False, 0)], [False], None, (0, 0, None, 0)),
]


@pytest.mark.parametrize(
    ("main", "no_search", "forced", "expected"), [c[1:] for c in UTILITY_CASES], ids=[c[0] for c in UTILITY_CASES]
)
def test_search_utility(main, no_search, forced, expected):
    u = search_utility(
        [record(i, ok, image=n) for i, (ok, n) in enumerate(main)],
        [record(i, ok) for i, ok in enumerate(no_search)],
        None if forced is None else [record(i, ok, image=1) for i, ok in enumerate(forced)],
    )
    assert (u["needed"], u["wasted"], u["missed"], u["searched_episodes"]) == expected
    assert u["accuracy_no_search"] == sum(no_search) / len(no_search)


def test_search_utility_matches_runs_by_index():
    main = [record(5, True, image=1), record(9, True, image=1)]
    no_search = [record(9, True), record(5, False)]  # another order, same questions
    assert (search_utility(main, no_search)["needed"], search_utility(main, no_search)["wasted"]) == (1, 1)


def test_episode_summary_row_is_json_ready():
    row = summarize([o(image=1)], 2).as_row()
    assert list(row) == [f.name for f in fields(EpisodeSummary)]
    assert row["search_ratio_calls"] == 0.5
