"""OpenAIPolicy on the openai SDK against a real local HTTP server speaking the chat-completions wire format."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time

import gymnasium as gym
import pytest
from fake_openai import FakeOpenAI

import mmsearch_env
from agents.openai_policy import EndpointError, GenerationSettings, OpenAIPolicy, parse_endpoint_spec, to_openai
from agents.policy import Policy
from agents.rollout import rollout

KEY = "sk-test-0123456789abcdef"


@pytest.fixture
def server():
    with FakeOpenAI() as fake:
        yield fake


def observations(n=1):
    env = gym.make("MMSearch-v0", split=None)
    batch = [env.reset(options={"index": i}) for i in range(n)]
    return [o for o, _ in batch], [i for _, i in batch]


def test_request_carries_images_as_data_urls_and_the_key(server):
    [obs], infos = observations()
    policy = OpenAIPolicy("fake-vlm", server.base_url, api_key=KEY, max_tokens=64)
    assert isinstance(policy, Policy)
    [turn] = policy.act_batch([obs], infos)
    assert turn.endswith("<search><img></search>")
    [body] = server.requests
    assert body["model"] == "fake-vlm" and body["max_tokens"] == 64 and body["temperature"] == 0.0
    assert "top_p" not in body and "stop" not in body  # unset settings are the server's
    parts = body["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url", "text"]
    assert server.images == [obs["image"].size]  # the PNG decodes to the question image's size
    assert server.headers[0]["authorization"] == f"Bearer {KEY}"
    assert policy.last_usage == [
        {"prompt_tokens": len(parts[1]["text"]) // 4 + 85, "completion_tokens": len(turn) // 4, "finish_reason": "stop"}
    ]
    assert KEY not in repr(policy.endpoint)


def test_no_key_sends_no_authorization_header(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("MMSEARCH_SECRETS_FILE", raising=False)
    monkeypatch.setenv("HOME", "/nonexistent")  # no default secrets file either
    obs, infos = observations()
    OpenAIPolicy("m", server.base_url).act_batch(obs, infos)
    assert "authorization" not in server.headers[0]


def test_a_reply_cut_at_max_tokens_is_recorded(server):
    obs, infos = observations()
    policy = OpenAIPolicy("m", server.base_url, max_tokens=5)
    [turn] = policy.act_batch(obs, infos)
    assert turn == "<reason>I do not rec"  # 5 tokens of the fake's 4 characters each
    assert policy.last_usage[0]["finish_reason"] == "length" and policy.last_usage[0]["completion_tokens"] == 5
    assert policy.last_replies[0].finish_reason == "length"


def test_settings_from_the_spec_query_and_keywords(server):
    obs, infos = observations()
    url = f"{server.base_url}?max_tokens=7&temperature=0.5&top_p=0.9&stop=</answer>&stop=</search>&timeout=9"
    policy = OpenAIPolicy(*parse_endpoint_spec(f"m@{url}"), temperature=0.25)  # the keyword wins
    assert policy.settings == GenerationSettings(
        max_tokens=7, temperature=0.25, top_p=0.9, stop=("</answer>", "</search>"), timeout=9.0
    )
    policy.temperature = 1.0  # what curate does for sampled rollouts
    policy.act_batch(obs, infos)
    body = server.requests[0]
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (7, 1.0, 0.9)
    assert body["stop"] == ["</answer>", "</search>"]
    assert server.headers[0]["x-stainless-read-timeout"] == "9.0"  # the per-request timeout reached the SDK
    with pytest.raises(mmsearch_env.ConfigError, match=re.escape("unknown setting 'max_token'")) as info:
        parse_endpoint_spec(f"m@{server.base_url}?max_token=5")
    assert "Did you mean 'max_tokens'?" in str(info.value)
    with pytest.raises(mmsearch_env.ConfigError, match=re.escape("setting temperature='hot' in the endpoint URL")):
        OpenAIPolicy("m", f"{server.base_url}?temperature=hot")
    with pytest.raises(mmsearch_env.ConfigError, match=re.escape("concurrency must be an int >= 1, got 0")):
        OpenAIPolicy("m", server.base_url, concurrency=0)


def test_tool_messages_become_user_messages():
    messages = [
        {"role": "assistant", "content": [{"type": "text", "text": "<tool_call>{}</tool_call>"}]},
        {"role": "tool", "content": [{"type": "text", "text": "results"}]},
    ]
    assert to_openai(messages) == [
        {"role": "assistant", "content": "<tool_call>{}</tool_call>"},
        {"role": "user", "content": [{"type": "text", "text": "results"}]},
    ]


def test_batch_is_sent_concurrently_within_the_bound():
    with FakeOpenAI(delay_s=0.2) as fake:
        obs, infos = observations(6)
        policy = OpenAIPolicy("m", fake.base_url, concurrency=3)
        turns = asyncio.run(policy.aact_batch(obs, infos))
        assert len(turns) == 6 and len(policy.last_usage) == 6 and len(fake.requests) == 6
        assert fake.max_in_flight >= 2  # overlapping requests, not one after another
        assert fake.max_in_flight <= 3  # never more than the semaphore allows


def test_act_batch_works_inside_a_running_event_loop(server):
    obs, infos = observations()
    policy = OpenAIPolicy("m", server.base_url, max_concurrency=2)  # the former name of concurrency

    async def caller():
        return policy.act_batch(obs, infos)  # e.g. a notebook: runs on a worker thread

    assert asyncio.run(caller())[0].endswith("<search><img></search>")
    assert policy.settings.concurrency == 2


def test_a_server_error_is_retried_by_the_sdk(server, caplog):
    obs, infos = observations()
    server.fail_next = [500, 429]
    policy = OpenAIPolicy("m", server.base_url, api_key=KEY, max_retries=2)
    with caplog.at_level(logging.DEBUG):
        [turn] = policy.act_batch(obs, infos)
    assert turn.endswith("<search><img></search>")
    assert len(server.requests) == 3
    assert [h["x-stainless-retry-count"] for h in server.headers] == ["0", "1", "2"]
    assert KEY not in caplog.text


def test_a_rejected_key_never_leaks_into_errors_or_logs(server, caplog, monkeypatch):
    obs, infos = observations()
    secrets = [KEY, "plain-token-without-prefix"]  # the second one only the configured-secret rule catches
    for key in secrets:
        server.fail_next = [401]
        with caplog.at_level(logging.DEBUG), pytest.raises(EndpointError) as info:
            OpenAIPolicy("m", server.base_url, api_key=key).act_batch(obs, infos)
        error = info.value
        assert server.headers[-1]["authorization"] == f"Bearer {key}"  # the server did get (and echo) it
        assert error.status == 401 and error.code == "invalid_api_key"
        assert "refused the request (HTTP 401: Incorrect API key provided: Bearer ***.)" in str(error)
        assert "check the API key" in str(error)
        assert error.__cause__ is None and error.__context__ is None  # the SDK's text is not chained
        assert key not in str(error) and key not in repr(error) and key not in caplog.text
    # The same through the environment variable, once the server stops echoing the header.
    monkeypatch.setenv("OPENAI_API_KEY", "env-key-0000111122223333")
    server.fail_next = [400]
    with pytest.raises(EndpointError, match=re.escape("HTTP 400: scheduled failure")):
        OpenAIPolicy("m", server.base_url).act_batch(obs, infos)
    assert server.headers[-1]["authorization"] == "Bearer env-key-0000111122223333"


def test_a_request_that_times_out_is_abandoned():
    with FakeOpenAI(delay_s=60) as slow:
        obs, infos = observations()
        policy = OpenAIPolicy("m", slow.base_url, timeout=0.5, max_retries=1)
        with pytest.raises(EndpointError, match=re.escape("did not answer within 0.5 s (2 attempts)")) as info:
            policy.act_batch(obs, infos)
        assert info.value.status is None
        assert len(slow.requests) == 2  # one try and one SDK retry, not more
        assert slow.disconnected.wait(10)  # the server saw the client close the connection...
        for _ in range(200):  # the second close may reach the server just after the error is raised
            if slow.disconnects == 2:
                break
            time.sleep(0.05)
        assert slow.disconnects == 2 and slow.answered == 0  # ...for both attempts, and never answered


def test_a_missing_openai_package_names_the_extra(server, monkeypatch):
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(mmsearch_env.ConfigError, match=re.escape("pip install 'mmsearch-env[openai]'")):
        OpenAIPolicy("m", server.base_url)


def test_endpoint_spec():
    assert parse_endpoint_spec("llama3:8b@http://127.0.0.1:1/v1/") == ("llama3:8b", "http://127.0.0.1:1/v1")
    with pytest.raises(mmsearch_env.ConfigError, match="MODEL@BASE_URL"):
        parse_endpoint_spec("gpt-4o")


def test_rollout_records_usage_per_episode(server, tmp_path):
    policy = OpenAIPolicy("fake-vlm", server.base_url)
    result = rollout(
        policy, range(4), env_config={"split": None}, concurrency=4, out=tmp_path / "t.jsonl", progress=False
    )
    assert len(server.requests) == 8  # image search, then answer, per episode
    for record in result.records:
        assert record.policy == "openai:fake-vlm"
        assert record.usage["prompt_tokens"] > 0 and record.usage["completion_tokens"] > 0
        assert set(record.usage) == {"prompt_tokens", "completion_tokens"}  # finish_reason is not summed
        assert [a.kind for a in record.actions] == ["image_search", "answer"]
    assert sum(r.correct for r in result.records) >= 1  # the scripted model reads the top title


def test_one_failed_request_fails_its_episode_only_and_the_run_goes_on(server, tmp_path):
    server.fail_next = [400]  # the first request of the first batch fails, no retry helps
    policy = OpenAIPolicy("fake-vlm", server.base_url, max_retries=0)
    out = tmp_path / "t.jsonl"
    result = rollout(policy, range(4), env_config={"split": None}, concurrency=4, out=out, progress=False)
    assert len(result.skipped) == 1 and "HTTP 400: scheduled failure" in result.skipped[0].error
    assert len(result.records) == 3  # the batch's other episodes kept their replies and finished
    assert len(server.requests) == 4 + 3  # nobody's request was sent twice
    assert len((tmp_path / "t.skipped.jsonl").read_text().splitlines()) == 1
    for record in result.records:
        assert record.finish_reasons == ["stop", "stop"]  # one per turn, as the server reported


def test_eval_flags_override_the_spec_and_the_report_shows_cut_off_replies(server, tmp_path):
    from agents.cli import main

    spec = f"openai:fake-vlm@{server.base_url}?max_tokens=64&temperature=0.5"
    argv = ["eval", "--policy", spec, "--limit", "2", "--out", str(tmp_path), "--quiet"]
    argv += ["--no-plot", "--search-utility", "off", "--max-tokens", "3", "--temperature", "0", "--top-p", "0.5"]
    argv += ["--stop", "</answer>", "--request-timeout", "7", "--retries", "1", "--concurrency", "2"]
    assert main(argv) == 0
    body = server.requests[0]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["stop"]) == (3, 0.0, 0.5, ["</answer>"])
    assert server.headers[0]["x-stainless-read-timeout"] == "7.0"
    records = [json.loads(line) for line in (tmp_path / "trajectories.jsonl").read_text().splitlines()]
    assert [r["finish_reasons"] for r in records] == [["length"], ["length"]]  # 3 tokens cut every reply
    report = json.loads((tmp_path / "report.json").read_text())["rows"][0]
    assert (report["truncated_replies"], report["replies"], report["format_rate"]) == (2, 2, 0.0)
    table = (tmp_path / "report.md").read_text()
    assert "| format % | cut-off replies |" in table and "| 0.0 | 2 / 2 |" in table


def test_curate_takes_the_same_generation_flags(server, tmp_path):
    from agents.cli import main

    argv = ["curate", "--policy", f"openai:fake-vlm@{server.base_url}", "--limit", "2", "--rollouts", "1"]
    argv += ["--out", str(tmp_path), "--quiet", "--max-tokens", "60", "--top-p", "0.25", "--stop", "STOP"]
    argv += ["--temperature", "0.7", "--retries", "0", "--on-shortfall", "keep-all"]
    assert main(argv) == 0
    assert server.requests, "curation sent no request"
    for body in server.requests:  # every rollout of both passes carries the flags
        assert (body["max_tokens"], body["top_p"], body["stop"]) == (60, 0.25, ["STOP"])
        assert body["temperature"] == 0.7
