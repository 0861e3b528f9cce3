"""OpenAIPolicy and its client against a real local HTTP server speaking the chat-completions wire format."""

from __future__ import annotations

import logging

import gymnasium as gym
import pytest
from fake_openai import FakeOpenAI

import mmsearch_env
from agents.openai_policy import EndpointError, OpenAIPolicy, parse_endpoint_spec, to_openai
from agents.policy import Policy
from agents.rollout import rollout


@pytest.fixture
def server():
    with FakeOpenAI() as fake:
        yield fake


def first_observation(index=0):
    env = gym.make("MMSearch-v0", split=None)
    obs, info = env.reset(options={"index": index})
    return env, obs, info


def test_request_carries_images_as_data_urls_and_the_key(server):
    env, obs, info = first_observation()
    policy = OpenAIPolicy("fake-vlm", server.base_url, api_key="sk-test-123", max_tokens=64)
    assert isinstance(policy, Policy)
    [turn] = policy.act_batch([obs], [info])
    assert turn.endswith("<search><img></search>")
    [body] = server.requests
    assert body["model"] == "fake-vlm" and body["max_tokens"] == 64 and body["temperature"] == 0.0
    parts = body["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url", "text"]
    assert server.images == [obs["image"].size]  # the PNG decodes to the question image's size
    assert server.headers[0]["Authorization"] == "Bearer sk-test-123"
    assert policy.last_usage == [
        {"prompt_tokens": len(parts[1]["text"]) // 4 + 85, "completion_tokens": len(turn) // 4}
    ]
    assert "sk-test-123" not in repr(policy.client)


def test_tool_messages_become_user_messages():
    messages = [
        {"role": "assistant", "content": [{"type": "text", "text": "<tool_call>{}</tool_call>"}]},
        {"role": "tool", "content": [{"type": "text", "text": "results"}]},
    ]
    assert to_openai(messages) == [
        {"role": "assistant", "content": "<tool_call>{}</tool_call>"},
        {"role": "user", "content": [{"type": "text", "text": "results"}]},
    ]


def test_batch_is_sent_concurrently():
    with FakeOpenAI(delay_s=0.2) as fake:
        env = gym.make("MMSearch-v0", split=None)
        batch = [env.reset(options={"index": i}) for i in range(4)]
        policy = OpenAIPolicy("m", fake.base_url, max_concurrency=4)
        turns = policy.act_batch([o for o, _ in batch], [i for _, i in batch])
        assert len(turns) == 4 and len(policy.last_usage) == 4
        assert fake.max_in_flight >= 2  # overlapping requests, not one after another


def test_transient_failures_are_retried(server, caplog):
    env, obs, info = first_observation()
    server.fail_next = [503, 429]
    policy = OpenAIPolicy("m", server.base_url, api_key="sk-secret-xyz", max_retries=3)
    policy.client.backoff_s = 0.01
    with caplog.at_level(logging.WARNING):
        [turn] = policy.act_batch([obs], [info])
    assert turn.endswith("<search><img></search>")
    assert len(server.requests) == 3
    assert "sk-secret-xyz" not in caplog.text  # keys are never logged


def test_errors_are_clear(server):
    env, obs, info = first_observation()
    server.fail_next = [400]
    with pytest.raises(EndpointError, match=r"refused the request \(HTTP 400"):
        OpenAIPolicy("m", server.base_url).act_batch([obs], [info])
    server.fail_next = [500, 500]
    policy = OpenAIPolicy("m", server.base_url, max_retries=1)
    policy.client.backoff_s = 0.0
    with pytest.raises(EndpointError, match="failed after 2 attempts: HTTP 500"):
        policy.act_batch([obs], [info])


def test_endpoint_spec():
    assert parse_endpoint_spec("llama3:8b@http://127.0.0.1:1/v1/") == ("llama3:8b", "http://127.0.0.1:1/v1")
    with pytest.raises(mmsearch_env.ConfigError, match="MODEL@BASE_URL"):
        parse_endpoint_spec("gpt-4o")


def test_rollout_records_usage_per_episode(server, tmp_path):
    policy = OpenAIPolicy("fake-vlm", server.base_url)
    result = rollout(
        policy, range(4), env_kwargs={"split": None}, concurrency=4, out=tmp_path / "t.jsonl", progress=False
    )
    assert len(server.requests) == 8  # image search, then answer, per episode
    for record in result.records:
        assert record["policy"] == "openai:fake-vlm"
        assert record["usage"]["prompt_tokens"] > 0 and record["usage"]["completion_tokens"] > 0
        assert [a["kind"] for a in record["actions"]] == ["image_search", "answer"]
    assert sum(r["info"]["correct"] for r in result.records) >= 1  # the scripted model reads the top title
