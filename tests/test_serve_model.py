"""`mmsearch serve-model`: a real OpenAI-compatible server process on 127.0.0.1 with a tiny local LLM."""

from __future__ import annotations

import re
import time

import gymnasium as gym
import pytest
import requests
from _train_deps import require_train_extra
from model_servers import serve_model, tiny_llm

import mmsearch_env  # noqa: F401

require_train_extra()

from agents.openai_policy import OpenAIPolicy  # noqa: E402
from agents.serve_model import RequestError, parse_request  # noqa: E402
from agents.tiny_vlm import build_tiny_vlm  # noqa: E402
from mmsearch_env.search.openai_chat import EndpointError  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = tiny_llm(tmp_path_factory.mktemp("tiny-llm"), build_tiny_vlm())
    with serve_model(path, name="tiny") as url:
        yield url


def test_replies_carry_finish_reason_and_usage_in_the_openai_format(server):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3, "temperature": 0}
    reply = requests.post(f"{server}/chat/completions", json=body, timeout=60).json()
    assert reply["object"] == "chat.completion" and reply["model"] == "tiny"
    [choice] = reply["choices"]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    # the random model never writes its end-of-turn token in 3 tokens: the cap cut it
    assert choice["finish_reason"] == "length" and reply["usage"]["completion_tokens"] == 3
    assert reply["usage"]["prompt_tokens"] > 3
    assert requests.get(f"{server}/models", timeout=10).json()["data"][0]["id"] == "tiny"


def test_the_policy_plays_text_only_episodes_through_it(server):
    env = gym.make("MMSearch-v0", dataset="sample", image_position="none")
    obs, info = env.reset(options={"index": 0})
    assert "not shown to you" in obs["messages"][0]["content"][0]["text"]
    obs, *_ = env.step("<reason>?</reason><search><img></search>")  # the result turn has thumbnails
    policy = OpenAIPolicy("tiny", f"{server}?max_tokens=4&temperature=0", text_only=True)
    [turn] = policy.act_batch([obs], [info])
    assert isinstance(turn, str)
    assert policy.last_usage[0]["finish_reason"] == "length" and policy.last_usage[0]["completion_tokens"] == 4


def test_image_parts_are_refused_with_the_fix(server):
    env = gym.make("MMSearch-v0", dataset="sample")
    obs, info = env.reset(options={"index": 0})
    with pytest.raises(EndpointError, match=re.escape("--image-position none")) as error:
        OpenAIPolicy("tiny", server, max_tokens=2).act_batch([obs], [info])
    assert error.value.status == 400


def test_a_request_the_client_abandons_is_cancelled_on_the_server(server):
    health = requests.get(server.removesuffix("/v1") + "/health", timeout=10).json()
    policy = OpenAIPolicy("tiny", server, max_tokens=30000, timeout=1.0, max_retries=0)
    env = gym.make("MMSearch-v0", dataset="sample", image_position="none")
    obs, info = env.reset(options={"index": 0})
    with pytest.raises(EndpointError, match="did not answer within 1 s"):
        policy.act_batch([obs], [info])
    for _ in range(600):  # the server notices the closed connection within its polling interval
        now = requests.get(server.removesuffix("/v1") + "/health", timeout=10).json()
        if now["cancelled"] > health["cancelled"]:
            break
        time.sleep(0.1)
    assert now["cancelled"] == health["cancelled"] + 1 and now["served"] == health["served"]
    # the model is free again: the next request is answered
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert requests.post(f"{server}/chat/completions", json=body, timeout=60).json()["choices"][0]["finish_reason"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": []}, "non-empty 'messages'"),  # nothing to answer
        ({"messages": [{"role": "robot", "content": "x"}]}, "each message needs a role"),  # unknown role
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens must be"),  # no budget
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "only n=1"),  # several choices
    ],
)
def test_bad_requests_are_refused(body, message):
    with pytest.raises(RequestError, match=re.escape(message)):
        parse_request(body)
