"""The search cache: content keys, JSON (never pickle) values, modes, crash safety, Redis, exact replay."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import gymnasium as gym
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from search_servers import free_port, redis_server

import mmsearch_env  # noqa: F401  (registers MMSearch-v0)
from agents.scripted import OraclePolicy
from mmsearch_env.errors import ConfigError, SearchBackendError, SearchTransientError
from mmsearch_env.search import (
    ImageSearchRequest,
    SearchBackendBase,
    SearchResponse,
    SearchResult,
    TextSearchRequest,
    make_search,
)
from mmsearch_env.search.cache import CachedSearch, RedisStore, SQLiteStore, cache_key, public_options
from mmsearch_env.search.codec import normalize_query, response_from_json, response_to_json
from mmsearch_env.search.faults import FaultySearch
from mmsearch_env.search.resilience import ResilientSearch


class Counting(SearchBackendBase):
    """Wraps a backend and counts the calls that reach it (and can charge a price)."""

    def __init__(self, inner, price: float = 0.0):
        self.inner = inner
        self.name = inner.name
        self.calls = 0
        self.price = price

    def image_search(self, request):
        self.calls += 1
        response = self.inner.image_search(request)
        return SearchResponse(response.tool, response.results, response.error, cost_usd=self.price)

    def text_search(self, request):
        self.calls += 1
        response = self.inner.text_search(request)
        return SearchResponse(response.tool, response.results, response.error, cost_usd=self.price)


@pytest.fixture(scope="module")
def sample():
    return make_search("sample")


def _image(color=(200, 10, 10), size=(32, 24)) -> Image.Image:
    return Image.new("RGB", size, color)


def test_json_codec_round_trips_thumbnails_and_summaries():
    thumb = Image.new("RGBA", (7, 5), (1, 2, 3, 4))
    response = SearchResponse(
        "image_search",
        (SearchResult("t1", "http://a", thumbnail=thumb), SearchResult("t2", "http://b", summary="s")),
        cost_usd=0.5,
    )
    document = json.loads(json.dumps(response_to_json(response)))  # JSON all the way
    back = response_from_json(document)
    assert back == response and back.cost_usd == 0.5
    assert back.results[0].thumbnail.tobytes() == thumb.tobytes() and back.results[0].thumbnail.mode == "RGBA"
    with pytest.raises(SearchBackendError, match="format version"):
        response_from_json({**document, "v": 99})
    with pytest.raises(SearchBackendError, match="undecodable thumbnail"):
        response_from_json({**document, "results": [{"title": "x", "url": "y", "thumbnail": "not base64!"}]})


def test_keys_follow_content_not_identity():
    a, b = _image(), _image()  # equal pixels, different objects and metadata
    b.info["comment"] = "ignored"

    def key(req, **kw):
        tool = "image_search" if isinstance(req, ImageSearchRequest) else "text_search"
        return cache_key(tool, req, backend="x", **kw)[0]

    assert key(ImageSearchRequest(a)) == key(ImageSearchRequest(b, image_url="http://other", example_id="q9"))
    assert key(ImageSearchRequest(a)) != key(ImageSearchRequest(_image(color=(200, 10, 11))))
    assert key(TextSearchRequest("Flag  of FRANCE ")) == key(TextSearchRequest("flag of france"))
    assert key(TextSearchRequest("flag of france")) != key(TextSearchRequest("flag of spain"))
    # the question matters only for question-aware (summarising) backends
    q1, q2 = TextSearchRequest("x", question="who?"), TextSearchRequest("x", question="when?")
    assert key(q1) == key(q2) and key(q1, question_aware=True) != key(q2, question_aware=True)
    # options are part of the key, secrets are not
    opts = lambda o: cache_key("text_search", TextSearchRequest("x"), backend="serp", options=o)[0]  # noqa: E731
    assert opts({"num": 5, "api_key": "a"}) == opts({"num": 5, "api_key": "b"}) == opts({"num": 5})
    assert opts({"num": 5}) != opts({"num": 10})
    assert (
        cache_key("text_search", TextSearchRequest("x"), backend="a")[0]
        != cache_key("text_search", TextSearchRequest("x"), backend="b")[0]
    )
    assert public_options({"SERPAPI_KEY": 1, "Bearer_Token": 2, "keep": [{"password": 3, "n": 4}]}) == {
        "keep": [{"n": 4}]
    }


def test_read_through_record_and_strict_replay(tmp_path, sample):
    path = tmp_path / "c.sqlite"
    backend = Counting(sample, price=0.015)
    cached = CachedSearch(backend, path)
    request = TextSearchRequest("capital of Arvenia")
    first = cached.text_search(request)
    second = cached.text_search(TextSearchRequest("  CAPITAL of arvenia"))
    assert backend.calls == 1 and first.ok and not first.cached and first.cost_usd == 0.015
    assert second == first and second.cached and second.cost_usd == 0.0
    assert cached.stats.as_dict() == {"hits": 1, "misses": 1, "stores": 1, "backend_calls": 1, "hit_ratio": 0.5}

    recorder = CachedSearch(backend, path, mode="record")
    recorder.text_search(request)
    assert backend.calls == 2  # record always calls the backend

    replay = CachedSearch(None, path, mode="replay", backend_name=sample.name)
    assert replay.text_search(request) == first
    missing = TextSearchRequest("never asked")
    key = replay.key("text_search", missing)
    with pytest.raises(SearchBackendError, match=re.escape(key)) as caught:
        replay.text_search(missing)
    assert '"query":"never asked"' in str(caught.value) and "strict replay" in str(caught.value)
    strict = CachedSearch(backend, path, mode="replay")
    with pytest.raises(SearchBackendError, match="strict replay"):
        strict.text_search(missing)
    assert backend.calls == 2  # a replay miss never reaches the backend
    for store in (cached, recorder, replay, strict):
        store.store.close()


def test_failures_are_not_cached_and_bad_config_is_explained(tmp_path):
    class Flaky(SearchBackendBase):
        name = "flaky"
        calls = 0

        def text_search(self, request):
            self.calls += 1
            if self.calls == 1:
                return SearchResponse("text_search", error="HTTP 500")
            return SearchResponse("text_search", (SearchResult("ok", "http://ok", summary="fine"),))

    flaky = Flaky()
    cached = CachedSearch(flaky, tmp_path / "f.sqlite")
    assert not cached.text_search(TextSearchRequest("q")).ok
    assert cached.text_search(TextSearchRequest("q")).ok and flaky.calls == 2
    assert cached.text_search(TextSearchRequest("q")).cached and flaky.calls == 2
    with pytest.raises(ConfigError, match="mode must be one of"):
        CachedSearch(flaky, tmp_path / "x.sqlite", mode="replay-ish")
    with pytest.raises(ConfigError, match="can only replay"):
        CachedSearch(None, tmp_path / "x.sqlite")
    with pytest.raises(ConfigError, match="does not exist"):
        SQLiteStore(tmp_path / "no" / "such" / "dir.sqlite")


def test_corrupt_entry_is_a_miss_not_a_crash(tmp_path, sample):
    path = tmp_path / "c.sqlite"
    backend = Counting(sample)
    cached = CachedSearch(backend, path)
    request = TextSearchRequest("capital of Arvenia")
    cached.store.put(cached.key("text_search", request), b"{not json")
    first = cached.text_search(request)  # the corrupt entry is ignored: a miss, then a fresh store
    second = cached.text_search(request)
    assert first.ok and not first.cached and second.cached and second == first
    assert backend.calls == 1 and cached.stats.hits == 1 and cached.stats.misses == 1


_WRITER = textwrap.dedent(
    """
    import sys
    from mmsearch_env.search.cache import SQLiteStore
    store = SQLiteStore(sys.argv[1])
    i = 0
    while True:  # runs until the parent kills it
        store.put(f"key-{i}", (f"value-{i}" * 50).encode())
        print(i, flush=True)
        i += 1
    """
)


def test_sigkill_mid_run_loses_nothing_committed(tmp_path):
    path = tmp_path / "crash.sqlite"
    process = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    committed = -1
    deadline = time.monotonic() + 60
    try:
        while committed < 200 and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            committed = int(line)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    assert committed >= 200, "the writer did not get going"
    store = SQLiteStore(path)
    try:
        for i in range(committed + 1):  # everything it reported as committed is there, intact
            assert store.get(f"key-{i}") == (f"value-{i}" * 50).encode(), i
        assert len(store) >= committed + 1
        store.put("after", b"ok")  # the file is writable again (WAL recovered)
        assert store.get("after") == b"ok"
    finally:
        store.close()


def test_redis_store_shares_entries_between_processes_worth_of_wrappers(sample):
    with redis_server() as url:
        backend = Counting(sample)
        writer = CachedSearch(backend, url)
        request = ImageSearchRequest(image=next(iter(sample.pages)).images[0])
        first = writer.image_search(request)
        other = CachedSearch(None, RedisStore(url), mode="replay", backend_name=sample.name)
        again = other.image_search(request)
        assert backend.calls == 1 and again.cached and again == first
        assert [r.thumbnail.tobytes() for r in again.results] == [r.thumbnail.tobytes() for r in first.results]
        assert len(writer.store) == 1
        expiring = RedisStore(url, prefix="ttl:", ttl_s=0.2)
        expiring.put("k", b"v")
        assert expiring.get("k") == b"v"
        time.sleep(0.4)
        assert expiring.get("k") is None
        for closer in (writer, other, other.store, expiring):
            closer.close()
    dead = CachedSearch(Counting(sample), RedisStore(f"redis://127.0.0.1:{free_port()}/0"))
    with pytest.raises(SearchTransientError, match="Redis search cache is unreachable"):
        dead.text_search(TextSearchRequest("x"))


def _run_all(env) -> list:
    """Every sample question once with the oracle plan; a comparable transcript of each step."""
    base = env.unwrapped
    policy = OraclePolicy(base.examples)
    transcript = []
    for index in range(len(base.examples)):
        observation, info = env.reset(options={"index": index})
        while True:
            observation, reward, terminated, truncated, info = env.step(policy.act(observation, info))
            messages = [
                (m["role"], [b.get("text") or (b["image"].size, b["image"].tobytes()) for b in m["content"]])
                for m in observation["messages"]
            ]
            transcript.append((messages, reward, terminated, truncated, info))
            if terminated or truncated:
                break
    return transcript


def test_recorded_run_replays_with_zero_backend_calls_and_identical_observations(tmp_path, sample):
    path = str(tmp_path / "run.sqlite")
    recording_backend = Counting(sample)
    env = gym.make(
        "MMSearch-v0", dataset="sample", split=None, search=CachedSearch(recording_backend, path, mode="record")
    )
    recorded = _run_all(env)
    env.close()
    assert recording_backend.calls > 60  # the oracle searches in 3/4 of the 64 episodes

    replay_backend = Counting(sample)
    env = gym.make(
        "MMSearch-v0", dataset="sample", split=None, search=CachedSearch(replay_backend, path, mode="replay")
    )
    replayed = _run_all(env)
    env.close()
    assert replay_backend.calls == 0
    assert len(replayed) == len(recorded)
    for (m1, r1, t1, u1, i1), (m2, r2, t2, u2, i2) in zip(recorded, replayed, strict=True):
        assert m1 == m2 and r1 == r2 and t1 == t2 and u1 == u2 and i1 == i2
    assert sum(step[1] for step in recorded) > 50  # the oracle solves the sample through the cache


def test_cached_by_name_through_gym_make(tmp_path):
    path = str(tmp_path / "named.sqlite")
    options = {"backend": "sample", "cache": path, "mode": "read-through"}
    env = gym.make("MMSearch-v0", dataset="sample", search="cached", search_options=options)
    env.reset(seed=0, options={"example_id": "sample-arvenia-image"})
    _, _, _, _, info = env.step("<reason>Unknown flag.</reason><search><img></search>")
    assert info["image_searches"] == 1 and info["search_failures"] == 0
    assert env.unwrapped.search.stats.stores == 1
    assert json.loads(env.spec.to_json())["kwargs"]["search_options"] == options  # JSON-able config
    env.close()
    replay = gym.make(
        "MMSearch-v0",
        dataset="sample",
        search="cached",
        search_options={"backend": None, "cache": path, "mode": "replay", "backend_name": "sample"},
    )
    replay.reset(seed=0, options={"example_id": "sample-arvenia-image"})
    _, _, _, _, info = replay.step("<reason>Unknown flag.</reason><search><img></search>")
    assert info["search_failures"] == 0 and replay.unwrapped.search.stats.hits == 1
    replay.close()


def test_lookup_json_serves_hits_without_decoding(tmp_path, sample):
    cached = CachedSearch(Counting(sample), tmp_path / "j.sqlite")
    request = ImageSearchRequest(image=sample.pages[0].images[0])
    assert cached.lookup_json("image_search", request) is None and cached.stats.misses == 0
    response = cached.image_search(request)
    document = cached.lookup_json("image_search", request)
    assert document["cached"] is True and document["cost_usd"] == 0.0 and cached.stats.hits == 1
    assert response_from_json(document) == response
    assert cached.lookup_json("text_search", TextSearchRequest("nothing")) is None
    recorder = CachedSearch(Counting(sample), cached.store, mode="record")
    assert recorder.lookup_json("image_search", request) is None  # record mode always refetches
    cached.close()


@given(st.text(max_size=40))
def test_query_normalisation_is_idempotent(text):
    once = normalize_query(text)
    assert normalize_query(once) == once and "  " not in once and once == once.strip()


def test_async_only_backends_work_behind_every_wrapper(tmp_path):
    class AsyncOnly:
        name = "async-only"

        async def atext_search(self, request):
            return SearchResponse("text_search", (SearchResult("a", "http://a", summary=request.query),))

        async def aimage_search(self, request):
            return SearchResponse("image_search")

    stack = CachedSearch(
        ResilientSearch(FaultySearch(AsyncOnly(), empty_rate=0.0)), tmp_path / "a.sqlite", options={"v": 1}
    )
    assert stack.text_search(TextSearchRequest("hello")).results[0].summary == "hello"
    assert stack.text_search(TextSearchRequest("HELLO")).cached


_CONCURRENT_WRITER = textwrap.dedent(
    """
    import sys
    from mmsearch_env.search.cache import SQLiteStore
    store = SQLiteStore(sys.argv[1])
    for i in range(150):
        store.put(f"{sys.argv[2]}-{i}", sys.argv[2].encode())
    store.close()
    """
)


def test_processes_share_one_sqlite_file(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    SQLiteStore(path).close()  # create the WAL database once
    writers = [
        subprocess.Popen([sys.executable, "-c", _CONCURRENT_WRITER, path, f"w{n}"], cwd=os.getcwd()) for n in range(3)
    ]
    assert [w.wait(timeout=60) for w in writers] == [0, 0, 0]
    store = SQLiteStore(path)
    assert len(store) == 450 and store.get("w2-149") == b"w2"
    store.close()
