"""Retries with backoff, the circuit breaker, token buckets (in-process and Redis), timeouts and budgets."""

from __future__ import annotations

import logging
import threading
import time
import warnings

import gymnasium as gym
import pytest
from search_servers import redis_server

import mmsearch_env  # noqa: F401
from mmsearch_env.errors import ConfigError, SearchBackendError, SearchRateLimitedError, SearchTransientError
from mmsearch_env.search import SearchBackendBase, SearchResponse, SearchResult, TextSearchRequest, make_search
from mmsearch_env.search.faults import FaultySearch
from mmsearch_env.search.resilience import (
    CircuitOpenError,
    RedisTokenBucket,
    ResetSearchEpisodes,
    ResilientSearch,
    SearchBudgetWarning,
    TokenBucket,
)

QUERY = TextSearchRequest("capital of Arvenia", example_id="q1")


class FakeClock:
    """A clock whose sleep advances time instantly and records the waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Scripted(SearchBackendBase):
    """Raises the scripted exceptions in order, then answers; charges ``price_per_call`` per answer."""

    name = "scripted"

    def __init__(self, script=(), price_per_call: float = 0.0):
        self.script = list(script)
        self.price_per_call = price_per_call
        self.calls = 0
        self.lock = threading.Lock()

    def text_search(self, request):
        with self.lock:
            self.calls += 1
            step = self.script.pop(0) if self.script else None
        if isinstance(step, BaseException):
            raise step
        return SearchResponse(
            "text_search", (SearchResult("r", "http://r", summary="s"),), cost_usd=self.price_per_call
        )


def _resilient(backend, clock, **options):
    return ResilientSearch(backend, clock=clock, sleep=clock.sleep, **options)


def test_transient_failures_are_retried_with_exponential_backoff_and_jitter():
    clock = FakeClock()
    backend = Scripted([SearchTransientError("reset"), SearchTransientError("503"), SearchTransientError("503")])
    search = _resilient(backend, clock, max_attempts=4, base_delay_s=1.0, max_delay_s=3.0)
    assert search.text_search(QUERY).ok and backend.calls == 4
    assert search.stats["attempts"] == 4 and search.stats["retries"] == 3
    # equal jitter: each wait is in [d/2, d] for d = 1, 2, then the 3 s cap
    for wait, full in zip(clock.sleeps, (1.0, 2.0, 3.0), strict=True):
        assert full / 2 <= wait <= full
    assert len(set(clock.sleeps)) == 3
    # seeded: the same config waits the same
    again = FakeClock()
    retry = [SearchTransientError("x")] * 3
    _resilient(Scripted(retry), again, base_delay_s=1.0, max_delay_s=3.0).text_search(QUERY)
    assert again.sleeps == clock.sleeps


def test_retry_after_is_honoured_and_capped():
    clock = FakeClock()
    backend = Scripted([SearchRateLimitedError("429", retry_after=7.0), SearchRateLimitedError("429", retry_after=1e6)])
    search = _resilient(backend, clock, max_retry_after_s=60.0)
    assert search.text_search(QUERY).ok
    assert clock.sleeps == [7.0, 60.0]


def test_gives_up_after_max_attempts_and_never_retries_permanent_errors():
    clock = FakeClock()
    backend = Scripted([SearchTransientError("boom")] * 10)
    search = _resilient(backend, clock, max_attempts=3)
    with pytest.raises(SearchTransientError, match=r"failed after 3 attempt\(s\); last error: boom"):
        search.text_search(QUERY)
    assert backend.calls == 3 and len(clock.sleeps) == 2 and search.stats["failures"] == 1
    permanent = Scripted([SearchBackendError("HTTP 403 invalid key")])
    with pytest.raises(SearchBackendError, match="403"):
        _resilient(permanent, clock).text_search(QUERY)
    assert permanent.calls == 1


def test_circuit_breaker_opens_probes_and_closes():
    clock = FakeClock()
    backend = Scripted([SearchTransientError("down")] * 4)
    search = _resilient(backend, clock, max_attempts=1, breaker_threshold=3, breaker_cooldown_s=10.0)
    for _ in range(3):
        with pytest.raises(SearchTransientError):
            search.text_search(QUERY)
    assert search.breaker.state == "open"
    with pytest.raises(CircuitOpenError, match="circuit open"):
        search.text_search(QUERY)
    assert backend.calls == 3  # fails fast, backend untouched
    clock.now += 10.0
    assert search.breaker.state == "half-open"
    with pytest.raises(SearchTransientError):  # the probe fails: open again for a full cooldown
        search.text_search(QUERY)
    assert backend.calls == 4 and search.breaker.state == "open"
    clock.now += 10.0
    assert search.text_search(QUERY).ok and search.breaker.state == "closed" and backend.calls == 5


def test_a_probe_that_ends_without_a_verdict_frees_the_half_open_slot():
    clock = FakeClock()
    backend = Scripted([SearchTransientError("down"), SearchBackendError("HTTP 400"), ValueError("bug")])
    search = _resilient(backend, clock, max_attempts=1, breaker_threshold=1, breaker_cooldown_s=5.0)
    with pytest.raises(SearchTransientError):
        search.text_search(QUERY)
    clock.now += 5.0
    with pytest.raises(SearchBackendError, match="400"):  # probe 1: permanent error, no verdict
        search.text_search(QUERY)
    with pytest.raises(ValueError, match="bug"):  # probe 2 is allowed: the slot was released
        search.text_search(QUERY)
    assert search.text_search(QUERY).ok and search.breaker.state == "closed" and backend.calls == 4


def test_rate_limited_calls_do_not_trip_the_breaker():
    clock = FakeClock()
    backend = Scripted([SearchRateLimitedError("429", retry_after=1.0)] * 5)
    search = _resilient(backend, clock, max_attempts=6, breaker_threshold=2)
    assert search.text_search(QUERY).ok and search.breaker.state == "closed"


def test_token_bucket_paces_calls():
    clock = FakeClock()
    bucket = TokenBucket(2.0, burst=2, clock=clock, sleep=clock.sleep)
    for _ in range(6):
        bucket.acquire()
    assert clock.sleeps and sum(clock.sleeps) == pytest.approx(2.0)  # 2 free, then 4 at 2/s
    search = _resilient(Scripted(), clock, rate_per_s=4.0, burst=1)
    start = clock.now
    for _ in range(5):
        search.text_search(QUERY)
    assert clock.now - start == pytest.approx(1.0)


def test_redis_token_bucket_is_shared_across_clients():
    with redis_server() as url:
        a = RedisTokenBucket(url, rate_per_s=5.0, burst=2, key="shared")
        b = RedisTokenBucket(url, rate_per_s=5.0, burst=2, key="shared")
        other = RedisTokenBucket(url, rate_per_s=5.0, burst=2, key="elsewhere")
        assert a.try_acquire() == 0.0 and b.try_acquire() == 0.0  # the burst of 2, shared
        wait = a.try_acquire()
        assert 0.0 < wait <= 0.2 + 1e-6  # one token every 0.2 s
        assert b.try_acquire() > 0.0 and other.try_acquire() == 0.0
        time.sleep(0.25)
        assert b.try_acquire() == 0.0
        search = ResilientSearch(Scripted(), rate_per_s=1000.0, burst=5, redis_url=url, limiter_key="svc")
        assert all(search.text_search(QUERY).ok for _ in range(5))
        for closer in (a, b, other, search):
            closer.close()


def test_per_call_timeout_turns_a_hang_into_a_retryable_failure():
    release = threading.Event()

    class Hanging(SearchBackendBase):
        name = "hanging"
        calls = 0

        def text_search(self, request):
            self.calls += 1
            release.wait(5)
            return SearchResponse("text_search")

    backend = Hanging()
    clock = FakeClock()
    search = _resilient(backend, clock, timeout_s=0.05, max_attempts=2)
    try:
        with pytest.raises(SearchTransientError, match=r"timed out after 0.05 s"):
            search.text_search(QUERY)
        assert backend.calls == 2
    finally:
        release.set()


def test_run_budget_refuses_further_calls_and_warns_once(caplog):
    clock = FakeClock()
    backend = Scripted(price_per_call=0.01)
    search = _resilient(backend, clock, budget_usd=0.025)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        assert search.text_search(QUERY).ok and search.text_search(QUERY).ok
        for _ in range(3):
            with pytest.raises(SearchBackendError, match=r"budget of \$0.0250 per run is spent"):
                search.text_search(QUERY)
    assert backend.calls == 2 and search.spent_usd == pytest.approx(0.02)
    budget_warnings = [w for w in caught if issubclass(w.category, SearchBudgetWarning)]
    assert len(budget_warnings) == 1 and "shown once" in str(budget_warnings[0].message)
    assert sum("budget" in r.getMessage() for r in caplog.records) == 1
    # free backends are never refused
    free = _resilient(Scripted(price_per_call=0.0), clock, budget_usd=0.0)
    assert free.text_search(QUERY).ok


def test_budget_holds_under_concurrency():
    backend = Scripted(price_per_call=0.01)
    search = ResilientSearch(backend, budget_usd=0.03)
    outcomes: list[bool] = []

    def call() -> None:
        try:
            outcomes.append(search.text_search(QUERY).ok)
        except SearchBackendError:
            outcomes.append(False)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SearchBudgetWarning)
        threads = [threading.Thread(target=call) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert backend.calls == 3 and sum(outcomes) == 3 and len(outcomes) == 12


def test_episode_budget_and_its_reset_through_the_env_wrapper():
    clock = FakeClock()
    paid = FaultySearch(make_search("sample"))  # a pass-through (no faults) to attach a price to
    paid.price_per_call = 0.01

    class Charging(SearchBackendBase):
        name = "charging"
        price_per_call = 0.01

        def image_search(self, request):
            response = paid.image_search(request)
            return SearchResponse(response.tool, response.results, cost_usd=0.01)

        def text_search(self, request):
            response = paid.text_search(request)
            return SearchResponse(response.tool, response.results, cost_usd=0.01)

    search = _resilient(Charging(), clock, episode_budget_usd=0.01)
    env = ResetSearchEpisodes(gym.make("MMSearch-v0", dataset="sample", split=None, search=search, max_turns=3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):  # the second episode of the same question gets a fresh episode budget
            env.reset(options={"example_id": "sample-arvenia-image-text"})
            _, _, _, _, info = env.step("<reason>Unknown.</reason><search><img></search>")
            assert info["search_failures"] == 0 and info["search_cost_usd"] == pytest.approx(0.01)
            obs, _, terminated, _, info = env.step("<reason>More.</reason><text_search>arvenia capital</text_search>")
            assert not terminated and info["search_failures"] == 1  # over the episode budget: a tool error
            assert "per episode is spent" in info["search_error"]
            assert info["search_cost_usd"] == pytest.approx(0.01)
    assert sum(issubclass(w.category, SearchBudgetWarning) for w in caught) == 1
    assert search.spent_usd == pytest.approx(0.02)
    env.close()


def test_after_retries_give_up_the_env_gets_a_tool_error_and_goes_on():
    clock = FakeClock()
    faulty = FaultySearch(make_search("sample"), error_rate=1.0)
    env = gym.make("MMSearch-v0", dataset="sample", search=_resilient(faulty, clock, max_attempts=3))
    env.reset(seed=0, options={"example_id": "sample-arvenia-image"})
    obs, reward, terminated, truncated, info = env.step("<reason>Unknown flag.</reason><search><img></search>")
    assert not terminated and not truncated and info["search_failures"] == 1
    assert "failed after 3 attempt(s)" in info["search_error"] and faulty.injected["error"] == 3
    assert len(clock.sleeps) == 2
    _, reward, terminated, _, info = env.step("<reason>Guess.</reason><answer>Arvenia</answer>")
    assert terminated and info["end_reason"] == "answer"
    env.close()


def test_by_name_with_nested_faults_recovers():
    options = {
        "backend": "faults",
        "backend_options": {"backend": "sample", "error_rate": 0.5, "seed": 1},
        "max_attempts": 8,
        "base_delay_s": 0.001,
        "max_delay_s": 0.002,
    }
    env = gym.make("MMSearch-v0", dataset="sample", split=None, search="resilient", search_options=options)
    for example_id in ("sample-arvenia-image", "sample-arvenia-text", "sample-arvenia-image-text"):
        env.reset(options={"example_id": example_id})
        action = "<search><img></search>" if "image" in example_id else "<text_search>arvenia</text_search>"
        _, _, _, _, info = env.step("<reason>Search.</reason>" + action)
        assert info["search_failures"] == 0
    assert env.unwrapped.search.stats["retries"] > 0  # faults happened and were absorbed
    env.close()


def test_config_errors_are_explained():
    with pytest.raises(ConfigError, match="unknown resilience option"):
        ResilientSearch(Scripted(), max_attempt=3)
    with pytest.raises(ConfigError, match="max_attempts must be an int >= 1"):
        ResilientSearch(Scripted(), max_attempts=0)
    with pytest.raises(ConfigError, match="set rate_per_s too"):
        ResilientSearch(Scripted(), redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(ConfigError, match="budget_usd must be a number of dollars"):
        ResilientSearch(Scripted(), budget_usd=-1)
