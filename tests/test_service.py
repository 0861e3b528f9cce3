"""`mmsearch serve`: a real uvicorn server on 127.0.0.1, the env's client, auth, metrics and the CLI."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import gymnasium as gym
import pytest
import requests
from search_servers import free_port

import mmsearch_env  # noqa: F401
from agents.cli import main
from agents.scripted import OraclePolicy
from mmsearch_env.errors import SearchBackendError, SearchRateLimitedError, SearchTransientError
from mmsearch_env.search import TextSearchRequest, make_search
from mmsearch_env.search.faults import FaultySearch
from mmsearch_env.search.service import BackgroundServer, ServiceSearch, build_service_backend, create_app

TOKEN = "test-token-123"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    backend = build_service_backend("sample", cache=str(tmp_path_factory.mktemp("svc") / "cache.sqlite"))
    with BackgroundServer(create_app(backend, token=TOKEN)) as running:
        yield running
    backend.close()


def _transcript(env, indices) -> list:
    base = env.unwrapped
    policy = OraclePolicy(base.examples)
    out = []
    for index in indices:
        observation, info = env.reset(options={"index": index})
        while True:
            observation, reward, terminated, truncated, info = env.step(policy.act(observation, info))
            blocks = [
                [b.get("text") or (b["image"].size, b["image"].tobytes()) for b in m["content"]]
                for m in observation["messages"]
            ]
            out.append((blocks, reward, terminated, truncated, info["search_failures"]))
            if terminated or truncated:
                break
    return out


def test_env_episodes_through_the_service_match_the_direct_backend(server):
    indices = range(0, 64, 5)
    direct = _transcript(gym.make("MMSearch-v0", dataset="sample", split=None), indices)
    options = {"url": server.url, "token": TOKEN}
    env = gym.make("MMSearch-v0", dataset="sample", split=None, search="service", search_options=options)
    served = _transcript(env, indices)
    assert served == direct
    assert sum(step[1] for step in served) > 5 and all(step[4] == 0 for step in served)
    again = _transcript(env, indices)  # the second pass is served from the service's cache
    assert again == direct
    metrics = env.unwrapped.search.metrics()
    env.close()
    image, text = metrics["tools"]["image_search"], metrics["tools"]["text_search"]
    assert image["calls"] >= 2 and image["hits"] >= image["calls"] // 2 and image["failures"] == 0
    assert text["calls"] >= 2 and text["hits"] >= 1
    assert 0 < image["latency_ms"]["p50"] <= image["latency_ms"]["p99"] <= image["latency_ms"]["max"]
    assert metrics["cache"]["hits"] == image["hits"] + text["hits"]
    resilience = metrics["resilience"]
    assert resilience["calls"] == metrics["cache"]["misses"] and resilience["breaker"] == "closed"
    assert resilience["spent_usd"] == 0.0 and resilience["failures"] == 0


def test_wrong_or_missing_token_is_a_clear_401(server, monkeypatch):
    monkeypatch.delenv("MMSEARCH_SERVICE_TOKEN", raising=False)
    reply = requests.post(f"{server.url}/v1/text_search", json={"query": "x"}, timeout=10)
    assert reply.status_code == 401 and reply.headers["www-authenticate"] == "Bearer"
    assert "missing or wrong bearer token" in reply.json()["detail"]
    assert requests.get(f"{server.url}/metrics", timeout=10).status_code == 401
    assert requests.get(f"{server.url}/health", timeout=10).json() == {"status": "ok"}

    with pytest.raises(SearchBackendError, match=r"HTTP 401 Unauthorized \(the token was rejected\)"):
        ServiceSearch(server.url, token="wrong").text_search(TextSearchRequest("x"))
    env = gym.make("MMSearch-v0", dataset="sample", search="service", search_options={"url": server.url})
    env.reset(options={"example_id": "sample-arvenia-image"})
    _, _, terminated, _, info = env.step("<reason>?</reason><search><img></search>")
    assert not terminated and "HTTP 401 Unauthorized (no token was given)" in info["search_error"]
    assert "MMSEARCH_SERVICE_TOKEN" in info["search_error"]
    env.close()
    assert "wrong" not in repr(ServiceSearch(server.url, token="wrong"))  # the token never shows in reprs
    # the token from the environment variable is used by default
    monkeypatch.setenv("MMSEARCH_SERVICE_TOKEN", TOKEN)
    assert ServiceSearch(server.url).text_search(TextSearchRequest("capital of Arvenia")).ok


def test_bad_bodies_are_400_with_the_reason(server):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    reply = requests.post(f"{server.url}/v1/image_search", json={"image_png_b64": "nope"}, headers=headers, timeout=10)
    assert reply.status_code == 400 and "bad image_search request body" in reply.json()["detail"]
    reply = requests.post(f"{server.url}/v1/text_search", data=b"[1, 2", headers=headers, timeout=10)
    assert reply.status_code == 400
    reply = requests.post(f"{server.url}/v1/text_search", json={"query": 5}, headers=headers, timeout=10)
    assert reply.status_code == 400 and "needs 'query': a string" in reply.json()["detail"]
    reply = requests.post(f"{server.url}/v1/image_search", json={}, headers=headers, timeout=10)
    assert reply.status_code == 400 and "image_png_b64" in reply.json()["detail"]


def test_backend_error_kinds_survive_the_wire():
    sample = make_search("sample")
    cases = [
        (FaultySearch(sample, rate_limit_rate=1.0, retry_after_s=4.0), SearchRateLimitedError),
        (FaultySearch(sample, error_rate=1.0), SearchTransientError),
        (FaultySearch(sample, permanent_error_rate=1.0), SearchBackendError),
    ]
    for backend, kind in cases:
        with BackgroundServer(create_app(backend, token=None)) as running:
            client = ServiceSearch(running.url)
            with pytest.raises(kind) as caught:
                client.text_search(TextSearchRequest("x"))
            if kind is SearchRateLimitedError:
                assert caught.value.retry_after == 4.0
            if kind is SearchBackendError:
                assert not isinstance(caught.value, SearchTransientError)
            assert client.metrics()["tools"]["text_search"]["failures"] == 1
            client.close()
    # nothing listening: a transient, retryable failure
    with pytest.raises(SearchTransientError, match="unreachable"):
        ServiceSearch(f"http://127.0.0.1:{free_port()}", timeout_s=2).text_search(TextSearchRequest("x"))


def test_cli_serve_prints_a_generated_token_once_and_serves(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MMSEARCH_SERVICE_TOKEN"}
    cache = str(tmp_path / "cli.sqlite")
    process = subprocess.Popen(
        [sys.executable, "-m", "agents.cli", "serve", "--port", str(port), "--cache", cache],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        first = process.stderr.readline()
        match = re.search(r"generated bearer token \(export MMSEARCH_SERVICE_TOKEN=\.\.\.\): (\S+)", first)
        assert match, first
        token = match.group(1)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{url}/health", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, "server did not come up"
            time.sleep(0.1)
        client = ServiceSearch(url, token=token)
        assert client.text_search(TextSearchRequest("capital of Arvenia")).ok
        assert client.text_search(TextSearchRequest("capital of Arvenia")).cached
        client.close()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            _, rest = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            _, rest = process.communicate(timeout=5)
    assert token not in rest  # printed once at start, never logged afterwards


def test_cli_serve_refuses_a_public_bind_without_opt_in(capsys):
    assert main(["serve", "--host", "0.0.0.0", "--port", "1"]) == 2
    assert "refusing to bind '0.0.0.0'" in capsys.readouterr().err
    assert main(["serve", "--options", "[1]", "--port", "1"]) == 2
    assert "--options must be a JSON object" in capsys.readouterr().err


def test_two_services_share_one_redis_cache_and_rate_limit():
    from search_servers import redis_server

    from mmsearch_env.search.cache import CachedSearch

    with redis_server() as url:
        resilience = {"rate_per_s": 1000.0, "burst": 10, "redis_url": url, "limiter_key": "svc-limit"}
        stacks = [build_service_backend("sample", cache=url, resilience=resilience) for _ in range(2)]
        assert all(isinstance(stack, CachedSearch) for stack in stacks)
        with (
            BackgroundServer(create_app(stacks[0], token=None)) as a,
            BackgroundServer(create_app(stacks[1], token=None)) as b,
        ):
            first = ServiceSearch(a.url).text_search(TextSearchRequest("capital of Arvenia"))
            second = ServiceSearch(b.url).text_search(TextSearchRequest("capital of arvenia"))
        assert not first.cached and second.cached and second == first
        assert stacks[0].stats.backend_calls == 1 and stacks[1].stats.backend_calls == 0
        # a recording made through the env (search="cached") is the service's cache and vice versa
        replay = make_search("cached", {"backend": "sample", "cache": url, "mode": "replay"})
        assert replay.text_search(TextSearchRequest("CAPITAL of Arvenia")) == first
        replay.close()
        import redis

        client = redis.Redis.from_url(url)
        assert client.exists("svc-limit") == 1  # the shared bucket lives in Redis
        client.close()
        for stack in stacks:
            stack.close()


def test_importing_the_package_pulls_no_server_dependencies():
    code = (
        "import sys, mmsearch_env, mmsearch_env.search.cache, mmsearch_env.search.service, "
        "mmsearch_env.search.resilience, mmsearch_env.search.fvqa_cache, agents.cli; "
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'redis', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=os.getcwd())
    assert out.stdout.strip() == "[]"
