"""The concurrent rollout engine: the trajectory file contract, resume, batching, overlapping searches."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
import time

import gymnasium as gym
import pytest
from broken_rows import questions_with_one_broken_image

import mmsearch_env
from agents.baselines import RAGWorkflowPolicy
from agents.policy import PartialBatchError, PolicyBase
from agents.rollout import EnvPool, arollout, make_env_pool, read_trajectories, rollout, run_episodes
from agents.scripted import OraclePolicy
from mmsearch_env.config import EnvConfig
from mmsearch_env.data import load_dataset
from mmsearch_env.errors import ConfigError, DatasetError
from mmsearch_env.records import EpisodeRecord
from mmsearch_env.search import SearchBackendBase, SearchResponse, SearchResult
from mmsearch_env.search.openai_chat import EndpointError

EXAMPLES = load_dataset("sample", None)
ALL = {"dataset": "sample", "split": None}


def oracle():
    return OraclePolicy(EXAMPLES)


def test_trajectory_lines_follow_the_contract(tmp_path):
    path = tmp_path / "run" / "traj.jsonl"
    result = rollout(oracle(), range(8), env_config=ALL, concurrency=4, out=path, progress=False)
    records = read_trajectories(path)
    assert len(records) == 8 and result.new_episodes == 8
    assert all(isinstance(r, EpisodeRecord) for r in records + result.records)
    assert sorted(records, key=lambda r: r.index) == result.records  # what was returned is what was written
    assert sorted(r.index for r in records) == list(range(8))
    for record in records:
        assert record.policy == "oracle-plan" and record.split is None
        assert record.example_id == EXAMPLES[record.index].id
        assert record.reward == record.info["reward_parts"]["reward"] == record.reward_parts["reward"]
        assert record.version == 2 and record.correct
        assert record.usage is None and record.latency_s > 0
        image = path.parent / "images" / record.image
        assert hashlib.sha256(image.read_bytes()).hexdigest() + ".png" == record.image
        for search in record.searches:
            for result_ in search.results:
                if search.tool == "image_search":
                    assert (path.parent / "images" / result_.thumbnail).is_file()
                else:
                    assert result_.thumbnail is None
    assert any(r.image_searches for r in records)
    for line in path.read_text().splitlines():  # every line is JSON with the versioned layout
        assert json.loads(line)["version"] == 2


class Flaky(PolicyBase):
    """The oracle, but its policy call number ``crash_at`` raises (an interrupted run)."""

    name = "oracle-plan"

    def __init__(self, crash_at=None):
        self.inner, self.crash_at, self.calls = oracle(), crash_at, 0

    def act_batch(self, observations, infos):
        self.calls += 1
        if self.calls == self.crash_at:
            raise RuntimeError("killed")
        return self.inner.act_batch(observations, infos)


def test_interrupted_run_resumes_without_losing_or_repeating_episodes(tmp_path):
    path = tmp_path / "traj.jsonl"
    with pytest.raises(RuntimeError, match="killed"):
        rollout(Flaky(crash_at=4), range(12), env_config=ALL, concurrency=2, out=path, progress=False)
    saved = read_trajectories(path)
    assert 0 < len(saved) < 12
    before = path.read_bytes()
    with path.open("ab") as handle:  # a crash in the middle of writing a line
        handle.write(b'{"policy": "oracle-plan", "index": 11, "tur')
    resumed = Flaky()
    with pytest.warns(UserWarning, match="truncated last line"):
        result = rollout(resumed, range(12), env_config=ALL, concurrency=2, out=path, progress=False)
    records = read_trajectories(path)
    assert sorted(r.index for r in records) == list(range(12))
    assert path.read_bytes().startswith(before)  # finished lines untouched
    assert result.new_episodes == 12 - len(saved) and len(result.records) == 12
    # A complete rerun does nothing.
    again = rollout(Flaky(), range(12), env_config=ALL, concurrency=2, out=path, progress=False)
    assert again.new_episodes == 0 and again.policy_calls == 0
    assert [r.correct for r in again.records] == [True] * 12


GOOD = {"example_id": "q1", "question": "Which country?", "ground_truth": "France"}


def test_reader_rejects_a_corrupt_middle_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(GOOD) + '\nnot json\n{"b": 2}\n')
    with pytest.raises(DatasetError, match=r"t.jsonl:2: not a JSON trajectory line"):
        read_trajectories(path)
    path.write_text(json.dumps(GOOD) + '\n{"b": ')
    with pytest.warns(UserWarning, match="truncated"):
        assert read_trajectories(path) == [EpisodeRecord(**GOOD)]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"question": "?", "ground_truth": "x"}, "t.jsonl:2: required field 'example_id' is missing"),
        ({**GOOD, "reward": "high"}, "t.jsonl:2: field 'reward' must be a number, got 'high'"),
        ({**GOOD, "searches": {"tool": "x"}}, "t.jsonl:2: field 'searches' must be a list, got {'tool': 'x'}"),
        ({**GOOD, "index": True}, "t.jsonl:2: field 'index' must be an integer, got True"),
        ({**GOOD, "searches": [3]}, "t.jsonl:2: field 'searches[0]' must be a JSON object (SearchRecord), got 3"),
        ({**GOOD, "version": 9}, "t.jsonl:2: episode record version 9 is not supported"),
        ([1, 2], "t.jsonl:2: an episode record must be a JSON object, got list"),
    ],
    ids=["missing id", "reward text", "searches object", "index bool", "search not object", "future", "not object"],
)
def test_reader_names_the_line_and_the_field(tmp_path, line, message):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(line) + "\n" + json.dumps(GOOD) + "\n")
    with pytest.raises(DatasetError, match=re.escape(message)):
        read_trajectories(path)


def test_version_1_lines_are_upgraded(tmp_path):
    path = tmp_path / "old.jsonl"
    old = {**GOOD, "reward": {"reward": 0.91, "accuracy": 1.0, "format": 1.0}, "reward_total": 0.91, "index": 3}
    path.write_text(json.dumps(old) + "\n")
    (record,) = read_trajectories(path)
    assert (record.reward, record.correct, record.format_ok, record.index, record.version) == (0.91, True, True, 3, 2)


class Recording(PolicyBase):
    def __init__(self, inner):
        self.inner, self.name, self.batches = inner, inner.name, []
        self.last_usage = None

    def act_batch(self, observations, infos):
        self.batches.append(len(observations))
        self.last_usage = [{"prompt_tokens": 10, "completion_tokens": 2} for _ in observations]
        return self.inner.act_batch(observations, infos)


def test_one_policy_call_serves_every_waiting_episode_and_results_match_sequential():
    policy = Recording(oracle())
    result = rollout(policy, range(16), env_config=ALL, concurrency=16, progress=False)
    assert policy.batches[0] == 16  # all 16 first turns in one call
    assert sum(policy.batches) == sum(len(r.turns) for r in result.records)
    for record in result.records:
        turns = len(record.turns)
        assert record.usage == {"prompt_tokens": 10 * turns, "completion_tokens": 2 * turns}
    env = gym.make("MMSearch-v0", **ALL)
    finals = run_episodes(env, oracle(), range(16), progress=False)
    assert [r.reward_parts for r in result.records] == [f["reward_parts"] for f in finals]


class Slow(SearchBackendBase):
    """Sleeps per call and counts how many calls overlapped (sync or async flavour)."""

    name = "slow"

    def __init__(self, delay_s, asynchronous):
        self.delay_s, self.asynchronous = delay_s, asynchronous
        self.in_flight = self.max_in_flight = self.calls = 0
        self.lock = threading.Lock()

    def _enter(self):
        with self.lock:
            self.calls += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _exit(self):
        with self.lock:
            self.in_flight -= 1

    def _response(self, tool):
        results = [SearchResult(f"Flag of Arvenia {i}", f"https://x.invalid/{i}", summary="Velmont.") for i in range(2)]
        return SearchResponse(tool, tuple(results))

    def image_search(self, request):
        if self.asynchronous:
            return super().image_search(request)
        self._enter()
        time.sleep(self.delay_s)
        self._exit()
        return self._response("image_search")

    def text_search(self, request):
        if self.asynchronous:
            return super().text_search(request)
        self._enter()
        time.sleep(self.delay_s)
        self._exit()
        return self._response("text_search")


class AsyncSlow(Slow):
    async def aimage_search(self, request):
        self._enter()
        await asyncio.sleep(self.delay_s)
        self._exit()
        return self._response("image_search")

    async def atext_search(self, request):
        self._enter()
        await asyncio.sleep(self.delay_s)
        self._exit()
        return self._response("text_search")


@pytest.mark.parametrize("backend_cls", [Slow, AsyncSlow], ids=["threads", "asyncio"])
def test_searches_of_different_episodes_overlap(backend_cls):
    backend = backend_cls(0.05, asynchronous=backend_cls is AsyncSlow)
    result = rollout(
        RAGWorkflowPolicy(), range(16), env_config={**ALL, "search": backend}, concurrency=16, progress=False
    )
    assert backend.calls == 32  # image + text search per episode
    assert backend.max_in_flight >= 8  # many episodes' searches ran at the same time
    assert all(r.image_searches == 1 for r in result.records)


def test_policy_sees_the_allowed_searches_in_info():
    env = gym.make("MMSearch-v0", dataset="sample", split=None, max_text_searches=0)
    _, info = env.reset(options={"index": 0})
    assert info["can_image_search"] and not info["can_text_search"]
    _, _, _, _, info = env.step("<reason>x</reason><search><img></search>")  # turn 2 of 3: no image search left
    assert not info["can_image_search"] and not info["can_text_search"]
    env2 = gym.make("MMSearch-v0", dataset="sample", split=None, max_turns=1)
    _, info2 = env2.reset(options={"index": 0})
    assert not info2["can_image_search"]  # the only turn is the last: answer only


class WrongCount(PolicyBase):
    name = "wrong"

    def act_batch(self, observations, infos):
        return []


def test_wrong_number_of_turns_is_a_clear_error():
    with pytest.raises(ConfigError, match="returned 0 turns for a batch of 2"):
        rollout(WrongCount(), range(2), env_config=ALL, concurrency=2, progress=False)
    with pytest.raises(ConfigError, match=r"index must be an int in \[0, 64\)"):
        rollout(oracle(), [64], env_config=ALL, progress=False)


def test_a_line_for_another_question_is_not_resumed(tmp_path):
    path = tmp_path / "t.jsonl"
    rollout(oracle(), [0, 1], env_config=ALL, out=path, progress=False)
    first, second = path.read_text().splitlines()
    stale = {**json.loads(first), "example_id": "from-another-dataset"}
    path.write_text(json.dumps(stale) + "\n" + second + "\n")
    result = rollout(oracle(), [0, 1], env_config=ALL, out=path, progress=False)
    assert result.new_episodes == 1 and result.records[0].example_id == EXAMPLES[0].id


def test_progress_bar_shows_live_accuracy_and_search_ratio(capsys):
    rollout(oracle(), range(4), env_config=ALL, concurrency=2, progress=True, desc="oracle run")
    err = capsys.readouterr().err
    assert "oracle run" in err and "acc=1.00" in err and "search=" in err


def test_arollout_runs_on_the_callers_event_loop():
    async def main():
        backend = AsyncSlow(0.01, asynchronous=True)
        result = await arollout(RAGWorkflowPolicy(), range(4), env_config={**ALL, "search": backend}, progress=False)
        return result, backend

    result, backend = asyncio.run(main())
    assert len(result.records) == 4 and backend.calls == 8


def test_rollout_works_inside_a_running_event_loop():
    async def notebook_cell():
        return rollout(oracle(), range(3), env_config=ALL, progress=False)

    assert [r.index for r in asyncio.run(notebook_cell()).records] == [0, 1, 2]


class Closing(SearchBackendBase):
    """Counts ``close`` calls (a backend a pool is handed, or one it builds by name)."""

    name = "closing"

    def __init__(self):
        self.closed = 0

    def image_search(self, request):
        return SearchResponse("image_search", ())

    def text_search(self, request):
        return SearchResponse("text_search", ())

    def close(self):
        self.closed += 1


def test_env_pool_shares_one_dataset_and_backend_and_closes_it_once(monkeypatch):
    built = []
    monkeypatch.setitem(mmsearch_env.search.SEARCH_BACKENDS, "closing", lambda: built.append(Closing()) or built[-1])
    with make_env_pool(EnvConfig(dataset="sample", split="test", search="closing"), size=3) as pool:
        assert isinstance(pool, EnvPool) and len(pool) == 3 and len(built) == 1
        assert all(env.unwrapped.search is built[0] for env in pool)
        assert all(env.unwrapped.examples[5] is pool.examples[5] for env in pool)  # loaded once
        with pool.variant(max_text_searches=0) as strict:  # same questions and backend, other limits
            assert strict.search is built[0] and strict[0].unwrapped.max_searches_per_episode == 1
        with pool.search_disabled(size=1) as off:
            assert off.examples is pool.examples and off.max_searches_per_episode == 0
        assert built[0].closed == 0  # variants never close the backend they were handed
        result = rollout(oracle(), range(4), envs=pool, progress=False)
        assert result.new_episodes == 4 and result.records[0].split == "test"  # the pool's split
    assert built[0].closed == 1  # closed once, by the env that built it, when the pool closed
    with pytest.raises(ConfigError, match="same questions"):
        make_env_pool({"dataset": "sample"}).variant(split="train")
    with pytest.raises(ConfigError, match="concurrency must be an int >= 1"):
        make_env_pool({"dataset": "sample"}, size=0)


def test_a_backend_object_in_the_config_belongs_to_the_caller():
    backend = Closing()
    rollout(oracle(), range(2), env_config={**ALL, "search": backend}, concurrency=2, progress=False)
    assert backend.closed == 0


def test_env_kwargs_is_the_deprecated_name_of_env_config():
    with pytest.warns(DeprecationWarning, match="env_config="):
        result = rollout(oracle(), range(2), env_kwargs=ALL, concurrency=2, progress=False)
    assert len(result.records) == 2
    with pytest.raises(ConfigError, match="not both"):
        rollout(oracle(), range(2), env_config=ALL, env_kwargs=ALL, progress=False)


# -- one bad episode does not end a long run -----------------------------------------------------------
def _questions_with_one_broken_image(tmp_path, n=30, broken=7):
    path = questions_with_one_broken_image(tmp_path, n, broken)
    return {"dataset": str(path), "split": None, "search": "sample"}


def test_a_bad_row_is_skipped_recorded_and_retried_on_resume(tmp_path):
    config = _questions_with_one_broken_image(tmp_path)
    out = tmp_path / "run" / "traj.jsonl"
    policy = OraclePolicy(load_dataset(config["dataset"], None), use_search=False)
    result = rollout(policy, env_config=config, concurrency=4, out=out, progress=False)
    assert len(result.records) == 29 and 7 not in {r.index for r in result.records}
    (skip,) = result.skipped
    assert (skip.index, skip.example_id, skip.policy) == (7, "q7", policy.name)
    assert "DatasetError" in skip.error and "q7.png" in skip.error
    listed = [json.loads(line) for line in (out.parent / "traj.skipped.jsonl").read_text().splitlines()]
    assert listed == [skip.to_dict()]
    again = rollout(policy, env_config=config, concurrency=4, out=out, progress=False)
    assert again.new_episodes == 1 and len(again.records) == 29 and [s.index for s in again.skipped] == [7]
    assert len(read_trajectories(out)) == 29  # nothing written twice


def test_on_error_stop_names_the_episode(tmp_path):
    config = _questions_with_one_broken_image(tmp_path, n=10, broken=3)
    policy = OraclePolicy(load_dataset(config["dataset"], None), use_search=False)
    with pytest.raises(DatasetError) as caught:
        rollout(policy, env_config=config, concurrency=2, on_error="stop", progress=False)
    assert "q3.png" in str(caught.value)
    if hasattr(caught.value, "__notes__"):
        assert "while playing episode 3 (q3)" in caught.value.__notes__[0]
    with pytest.raises(ConfigError, match=re.escape("on_error must be one of ['skip', 'stop'], got 'ignore'")):
        rollout(policy, env_config=config, on_error="ignore", progress=False)


class _FlakyEndpoint(PolicyBase):
    """A model server that fails for one question (after its own retries) and answers the others."""

    name = "flaky"

    def act(self, observation, info):
        if info["example_id"] == "sample-arvenia-text":
            raise EndpointError("HTTP 503 after 2 retries")
        return "<reason>x</reason><answer>x</answer>"


def test_a_failed_model_request_skips_only_its_episode():
    result = rollout(_FlakyEndpoint(), range(6), env_config=ALL, concurrency=3, progress=False)
    assert [(s.index, s.example_id) for s in result.skipped] == [(2, "sample-arvenia-text")]
    assert "EndpointError: HTTP 503 after 2 retries" in result.skipped[0].error
    assert sorted(r.index for r in result.records) == [0, 1, 3, 4, 5]


def test_a_policy_name_means_what_it_means_to_evaluate():
    # the same strings evaluate() and `mmsearch eval --policy` take; "oracle" needs the env's examples
    by_name = rollout("oracle", range(4), env_config={"dataset": "sample", "split": "test"}, progress=False)
    with make_env_pool({"dataset": "sample", "split": "test"}, 2) as pool:
        by_object = rollout(OraclePolicy(pool.examples), range(4), envs=pool, progress=False)
    assert [r.policy for r in by_name.records] == ["oracle-plan"] * 4
    assert [r.reward for r in by_name.records] == [r.reward for r in by_object.records]
    with pytest.raises(ConfigError, match="Did you mean 'oracle'"):
        rollout("oracel", range(1), env_config={"dataset": "sample"}, progress=False)


class _WrapsAFlakyModel(PolicyBase):
    """A wrapper whose inner model failed on part of a sub-batch: it cannot say which episode failed."""

    name = "wrapper"

    def __init__(self):
        self.batches = []

    def act_batch(self, observations, infos):
        self.batches.append(len(observations))
        if len(observations) > 1:
            raise PartialBatchError(["<answer>x</answer>", RuntimeError("inner request failed")])
        return ["<answer>x</answer>"]


def test_a_partial_failure_that_names_no_episode_is_retried_one_by_one():
    policy = _WrapsAFlakyModel()
    result = rollout(policy, range(3), env_config={"dataset": "sample"}, concurrency=3, progress=False)
    assert len(result.records) == 3 and result.skipped == []  # the run went on: each episode asked alone
    assert policy.batches[0] == 3 and policy.batches[-3:] == [1, 1, 1]


def test_finish_reasons_are_recorded_per_turn_and_old_lines_upgrade():
    record = EpisodeRecord.from_dict({"example_id": "q", "question": "?", "ground_truth": "x", "turns": ["a", "b"]})
    assert record.finish_reasons == [None, None] and record.truncated_replies == 0
    line = {"example_id": "q", "question": "?", "ground_truth": "x", "turns": ["a"], "finish_reasons": [3]}
    with pytest.raises(DatasetError, match=re.escape("field 'finish_reasons[0]' must be a string")):
        EpisodeRecord.from_dict(line)
    cut = EpisodeRecord(example_id="q", question="?", ground_truth="x", turns=["a"], finish_reasons=["length"])
    assert EpisodeRecord.from_json(cut.to_json()).truncated_replies == 1
