"""The fault-injection wrapper: seeded, each fault kind as specified, and the env survives all of them."""

from __future__ import annotations

from collections import Counter

import gymnasium as gym
import pytest

import mmsearch_env  # noqa: F401
from mmsearch_env.errors import ConfigError, SearchBackendError, SearchRateLimitedError, SearchTransientError
from mmsearch_env.search import ImageSearchRequest, TextSearchRequest, make_search
from mmsearch_env.search.faults import FaultConfig, FaultySearch


@pytest.fixture(scope="module")
def sample():
    return make_search("sample")


QUERY = TextSearchRequest("capital of Arvenia")


def _outcome(backend, request=QUERY) -> str:
    try:
        response = backend.text_search(request)
    except SearchRateLimitedError as exc:
        return f"429:{exc.retry_after}"
    except SearchTransientError:
        return "transient"
    except SearchBackendError:
        return "permanent"
    return f"ok:{len(response.results)}"


def test_same_seed_same_faults_and_rates_are_honoured(sample):
    rates = {"error_rate": 0.2, "rate_limit_rate": 0.1, "empty_rate": 0.1, "truncated_rate": 0.1}
    a = FaultySearch(sample, seed=7, **rates)
    b = FaultySearch(sample, seed=7, **rates)
    c = FaultySearch(sample, seed=8, **rates)
    run_a = [_outcome(a) for _ in range(400)]
    assert run_a == [_outcome(b) for _ in range(400)]
    assert run_a != [_outcome(c) for _ in range(400)]
    counts = a.injected
    assert 60 <= counts["error"] <= 100 and 25 <= counts["rate_limit"] <= 55  # 80 and 40 expected
    assert 25 <= counts["empty"] <= 55 and 25 <= counts["truncated"] <= 55
    assert Counter(run_a)["transient"] == counts["error"] and Counter(run_a)["429:1.0"] == counts["rate_limit"]
    assert Counter(run_a)["ok:0"] == counts["empty"]


def test_each_fault_kind(sample):
    slept: list[float] = []
    full = sample.text_search(QUERY)
    assert len(full.results) >= 2

    def only(kind: str, **extra):
        return FaultySearch(sample, sleep=slept.append, **{f"{kind}_rate": 1.0}, **extra)

    with pytest.raises(SearchTransientError, match="timed out"):
        only("timeout", timeout_s=3.0).text_search(QUERY)
    assert slept == [3.0]
    with pytest.raises(SearchTransientError, match="503"):
        only("error").image_search(ImageSearchRequest(image=sample.pages[0].images[0]))
    with pytest.raises(SearchBackendError, match="400") as caught:
        only("permanent_error").text_search(QUERY)
    assert not isinstance(caught.value, SearchTransientError)
    with pytest.raises(SearchRateLimitedError) as limited:
        only("rate_limit", retry_after_s=12.5).text_search(QUERY)
    assert limited.value.retry_after == 12.5
    empty = only("empty").text_search(QUERY)
    assert empty.ok and empty.results == ()
    cut = only("truncated").text_search(QUERY)
    assert cut.ok and 1 <= len(cut.results) <= len(full.results)
    assert all(len(c.summary) == len(f.summary) // 2 for c, f in zip(cut.results, full.results, strict=False))
    slow = FaultySearch(sample, latency_rate=1.0, latency_s=0.25, sleep=slept.append)
    assert slow.text_search(QUERY) == full and slept[-1] == 0.25 and slow.injected["latency"] == 1


def test_config_errors_say_what_to_fix(sample):
    with pytest.raises(ConfigError, match=r"error_rate must be a probability in \[0, 1\], got 1.5"):
        FaultySearch(sample, error_rate=1.5)
    with pytest.raises(ConfigError, match=r"add up to 1\.2 > 1"):
        FaultySearch(sample, error_rate=0.6, empty_rate=0.6)
    with pytest.raises(ConfigError, match="unknown fault option"):
        FaultySearch(sample, eror_rate=0.1)
    with pytest.raises(ConfigError, match="not both"):
        FaultySearch(sample, FaultConfig(), error_rate=0.1)


def test_env_episode_goes_on_after_injected_faults():
    env = gym.make(
        "MMSearch-v0",
        dataset="sample",
        search="faults",
        search_options={"backend": "sample", "error_rate": 1.0, "seed": 3},
    )
    env.reset(seed=0, options={"example_id": "sample-arvenia-image"})
    obs, reward, terminated, truncated, info = env.step("<reason>Unknown flag.</reason><search><img></search>")
    assert not terminated and not truncated and reward == 0.0
    assert info["search_failures"] == 1 and "503" in info["search_error"]
    assert "503" in obs["messages"][-1]["content"][-1]["text"]
    obs, reward, terminated, truncated, info = env.step("<reason>I will guess.</reason><answer>x</answer>")
    assert terminated and info["end_reason"] == "answer"
    env.close()
