"""The shared chat endpoint (settings, redaction, blocking calls) and the ChatSummarizer built on it."""

from __future__ import annotations

import logging
import re

import pytest
from fake_openai import FakeOpenAI

from mmsearch_env.errors import ConfigError
from mmsearch_env.search.openai_chat import ChatEndpoint, EndpointError, GenerationSettings, redact_secrets
from mmsearch_env.search.reader import PageText
from mmsearch_env.search.summarize import ChatSummarizer

PAGE = PageText(
    url="https://example.org/tolm",
    title="Tolm",
    text="Tolm is the capital of Arvenia. It lies on the river Ost. The tower was completed in 1907. It rains.",
)
LLM_KEY = "llm-SECRET-5f1e2d3c"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_tokens": 0}, "max_tokens must be an int >= 1, got 0"),  # nothing could be generated
        ({"temperature": -0.1}, "temperature must be a number >= 0, got -0.1"),
        ({"top_p": 1.5}, "top_p must be in (0, 1] or None, got 1.5"),
        ({"stop": ("",)}, "stop must be non-empty strings, got ('',)"),  # an empty stop string ends every reply
        ({"timeout": 0}, "timeout must be > 0 seconds, got 0"),
        ({"max_retries": -1}, "max_retries must be an int >= 0, got -1"),
        ({"concurrency": 0}, "concurrency must be an int >= 1, got 0"),  # the batch would never start
        ({"max_tokenz": 5}, "unknown generation setting(s) ['max_tokenz']"),
    ],
)
def test_generation_settings_reject_bad_values(changes, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        GenerationSettings().updated(**changes)


def test_generation_settings_request_options():
    assert GenerationSettings().request_options() == {"max_tokens": 2048, "temperature": 0.0}
    settings = GenerationSettings().updated(stop="</answer>", top_p=0.5, temperature=None)  # None: unchanged
    assert settings.stop == ("</answer>",) and settings.temperature == 0.0
    assert settings.request_options()["stop"] == ["</answer>"] and settings.request_options()["top_p"] == 0.5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc.DEF-123", "Authorization: Bearer ***"),  # any bearer token
        ("(key Bearer tok1234).", "(key Bearer ***)."),  # punctuation around it survives
        ("key=sk-proj-AbCdEf0123456789 rejected", "key=*** rejected"),  # OpenAI-style key anywhere
        ("mine-is-hunter2222 here", "mine-is-*** here"),  # a configured secret, whatever its shape
        ("sk-short is fine", "sk-short is fine"),  # too short to be a key: left alone
    ],
)
def test_redact_secrets(text, expected):
    assert redact_secrets(text, ["hunter2222", None]) == expected


def test_blocking_create_and_its_errors():
    with FakeOpenAI() as fake:
        endpoint = ChatEndpoint("m", f"{fake.base_url}?max_tokens=2&max_retries=0", what="the test endpoint")
        reply = endpoint.create([{"role": "user", "content": "hello"}])
        assert (reply.text, reply.finish_reason) == ("<reason>", "length")  # cut at 2 tokens of 4 characters
        assert reply.usage == {"prompt_tokens": 1, "completion_tokens": 2, "finish_reason": "length"}
        fake.fail_next = [404]
        with pytest.raises(EndpointError, match=re.escape("HTTP 404: scheduled failure); check the model name")):
            endpoint.create([{"role": "user", "content": "hello"}])
        endpoint.close()
    with pytest.raises(EndpointError, match=re.escape("could not be reached")) as info:
        endpoint.create([{"role": "user", "content": "hello"}])  # the server is gone
    assert info.value.status is None


def test_blocking_create_abandons_a_request_that_times_out():
    with FakeOpenAI(delay_s=60) as slow:
        endpoint = ChatEndpoint("m", slow.base_url, settings=GenerationSettings(timeout=0.5, max_retries=0))
        with pytest.raises(EndpointError, match=re.escape("did not answer within 0.5 s (1 attempts)")):
            endpoint.create([{"role": "user", "content": "hello"}])
        assert slow.disconnected.wait(10) and slow.answered == 0 and len(slow.requests) == 1


@pytest.fixture
def llm_key(monkeypatch):
    monkeypatch.setenv("TEST_LLM_KEY", LLM_KEY)


def test_summarizer_writes_the_summary_and_bills_the_usage(llm_key):
    with FakeOpenAI() as fake:
        summarizer = ChatSummarizer(
            base_url=fake.base_url,
            model="tiny",
            api_key_env="TEST_LLM_KEY",
            max_sentences=1,
            price_per_1k_prompt_tokens=2.0,
            price_per_1k_completion_tokens=10.0,
        )
        summary = summarizer.summarize(PAGE, question="Which country?", query="Tolm capital")
    [body] = fake.requests
    # the fake answers the page's first two sentences; the summariser keeps max_sentences of them
    assert summary.source == "llm" and summary.text == "Tolm is the capital of Arvenia."
    assert body["max_tokens"] == 300 and body["temperature"] == 0.0
    assert "Which country?" in body["messages"][1]["content"]
    assert fake.headers[0]["authorization"] == f"Bearer {LLM_KEY}"
    # the fake's usage: characters // 4 of the prompt (system + "\n" + user) and of the whole reply
    prompt_tokens = (len(body["messages"][0]["content"]) + 1 + len(body["messages"][1]["content"])) // 4
    completion_tokens = len("Tolm is the capital of Arvenia. It lies on the river Ost.") // 4
    assert summary.cost_usd == pytest.approx(prompt_tokens / 1000 * 2.0 + completion_tokens / 1000 * 10.0)


def test_summarizer_falls_back_to_extractive_without_leaking_the_key(llm_key, caplog):
    with FakeOpenAI() as fake:
        summarizer = ChatSummarizer(base_url=fake.base_url, model="tiny", api_key_env="TEST_LLM_KEY", max_retries=0)
        fake.fail_next = [401]
        with caplog.at_level(logging.DEBUG):
            summary = summarizer.summarize(PAGE, question=None, query="tower completed")
    assert summary == summary.__class__(
        "Tolm is the capital of Arvenia. The tower was completed in 1907.", 0.0, "extractive"
    )
    assert "using an extractive summary" in caplog.text and "HTTP 401" in caplog.text
    assert LLM_KEY not in caplog.text and len(fake.requests) == 1  # a 401 is not retried


def test_summarizer_options_keep_working():
    summarizer = ChatSummarizer(
        base_url="http://127.0.0.1:9/v1?top_p=0.5", model="tiny", api_key_env=None, fetch={"total_timeout": 7}
    )
    assert summarizer.endpoint.settings == GenerationSettings(max_tokens=300, top_p=0.5, timeout=7.0, max_retries=1)
    with pytest.raises(ConfigError, match=re.escape("needs model='<name the server serves>'")):
        ChatSummarizer(base_url="http://127.0.0.1:9/v1", model="")
    with pytest.raises(ConfigError, match=re.escape("unknown fetch option(s) ['total_timout']")):
        ChatSummarizer(base_url="http://127.0.0.1:9/v1", model="m", fetch={"total_timout": 3})
