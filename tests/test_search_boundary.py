"""Every malformed backend answer becomes a tool error or a clipped valid result, at the one boundary.

The same table runs through ``call_search`` (with and without a timeout), ``acall_search`` (with and
without a timeout) and a real ``MMSearch-v0`` episode, whose record must stay strict JSON.
"""

from __future__ import annotations

import asyncio
import json
import math

import gymnasium as gym
import pytest
from PIL import Image

import mmsearch_env  # noqa: F401  (registers MMSearch-v0)
from mmsearch_env.search import (
    MAX_RESULTS,
    ImageSearchRequest,
    SearchBackendBase,
    SearchResponse,
    SearchResult,
    TextSearchRequest,
    acall_search,
    call_search,
    sanitize_response,
)
from mmsearch_env.text import valid_unicode

IMG = "<reason>I do not know this flag.</reason><search><img></search>"
TXT = "<reason>I need the capital.</reason><text_search>capital of Arvenia</text_search>"
THUMB = Image.new("RGB", (8, 8), (1, 2, 3))


class Unreadable(SearchResponse):
    """A response whose ``results`` raise when read."""

    def __getattribute__(self, name):
        if name == "results":
            raise RuntimeError("boom")
        return super().__getattribute__(name)


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("even the message is broken")


def result(**fields):
    base = {"title": "t", "url": "https://x.invalid/", "summary": "s", "thumbnail": THUMB}
    return SearchResult(**{**base, **fields})


def response(*results, **fields):
    return lambda tool: SearchResponse(tool, tuple(results), **fields)


def raising(exc):
    def make(tool):
        raise exc

    return make


# (case id, what the backend does for a tool, expected: ("error", substring) or ("ok", number of results))
CASES = [
    ("title None", response(result(title=None)), ("error", "result 0 has title of type NoneType, expected str")),
    ("title int", response(result(title=3)), ("error", "result 0 has title of type int, expected str")),
    ("url bytes", response(result(url=b"https://x")), ("error", "result 0 has url of type bytes, expected str")),
    ("summary int", response(result(summary=7)), ("error", "summary of type int, expected str or None")),
    ("thumbnail str", response(result(thumbnail="x.png")), ("error", "thumbnail of type str, expected Image")),
    ("error int", response(error=500), ("error", "error of type int, expected str or None")),
    ("results None", lambda tool: SearchResponse(tool, None), ("error", "results of type NoneType")),
    ("results a generator", lambda tool: SearchResponse(tool, (r for r in ())), ("error", "results of type generator")),
    ("result not a SearchResult", response("a string"), ("error", "wrong tool or result type")),
    (
        "wrong tool",
        lambda tool: SearchResponse("image_search" if tool == "text_search" else "text_search"),
        ("error", "wrong tool"),
    ),
    ("cost str", response(result(), cost_usd="0.01"), ("error", "cost_usd '0.01', expected a finite number")),
    ("cost nan", response(result(), cost_usd=math.nan), ("error", "cost_usd nan, expected a finite number")),
    ("cost inf", response(result(), cost_usd=math.inf), ("error", "cost_usd inf, expected a finite number")),
    ("cost negative", response(result(), cost_usd=-0.5), ("error", "cost_usd -0.5, expected a finite number")),
    ("cost bool", response(result(), cost_usd=True), ("error", "cost_usd True, expected a finite number")),
    ("cost too big for a float", response(result(), cost_usd=10**400), ("error", "cost_usd 1000")),
    ("fields that raise", lambda tool: Unreadable(tool), ("error", "a SearchResponse that could not be checked")),
    ("not a response", lambda tool: {"results": []}, ("error", "returned dict, expected a SearchResponse")),
    ("None", lambda tool: None, ("error", "returned NoneType, expected a SearchResponse")),
    ("unprintable exception", raising(Unprintable()), ("error", "Unprintable: <the exception's message could not")),
    ("exception with a surrogate", raising(ValueError("bad \ud83d")), ("error", "ValueError: bad \ufffd")),
    ("error with a surrogate", response(error="down \ud83d"), ("error", "down \ufffd")),
    ("too many results", response(*(result(title=f"r{i}") for i in range(MAX_RESULTS + 4))), ("ok", MAX_RESULTS)),
    (
        "surrogates in title, url, summary",
        response(result(title="a\ud83d", url="https://x.invalid/\udcff", summary="\ud83d\ude00 s\udc00")),
        ("ok", 1),
    ),
]


class Bad(SearchBackendBase):
    """A backend that answers every call with one case's misbehaviour."""

    name = "bad"

    def __init__(self, make):
        self.make = make

    def image_search(self, request):
        return self.make("image_search")

    def text_search(self, request):
        return self.make("text_search")


def check(got: SearchResponse, tool: str, expected) -> None:
    kind, detail = expected
    assert isinstance(got, SearchResponse) and got.tool == tool
    assert isinstance(got.cost_usd, float) and math.isfinite(got.cost_usd) and got.cost_usd >= 0
    assert isinstance(got.latency_s, float) and got.latency_s >= 0
    if kind == "error":
        assert isinstance(got.error, str) and detail in got.error and not got.ok
        assert got.results == ()
    else:
        assert got.ok and len(got.results) == detail
    for text in [got.error or ""] + [t for r in got.results for t in (r.title, r.url, r.summary or "")]:
        text.encode("utf-8")  # no lone surrogate is left


REQUESTS = {"image_search": ImageSearchRequest(image=THUMB), "text_search": TextSearchRequest(query="q")}


@pytest.mark.parametrize(("make", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
@pytest.mark.parametrize("tool", ["image_search", "text_search"])
def test_call_search_sync_and_async_with_and_without_timeout(make, expected, tool):
    backend, request = Bad(make), REQUESTS[tool]
    check(call_search(backend, tool, request), tool, expected)
    check(call_search(backend, tool, request, timeout=30.0), tool, expected)
    check(asyncio.run(acall_search(backend, tool, request)), tool, expected)
    check(asyncio.run(acall_search(backend, tool, request, timeout=30.0)), tool, expected)


@pytest.mark.parametrize(("make", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_env_turns_every_case_into_a_tool_error_or_clipped_results(make, expected):
    env = gym.make("MMSearch-v0", dataset="sample", search=Bad(make))
    env.reset(seed=0, options={"example_id": "sample-arvenia-image-text"})
    for action in (IMG, TXT):
        obs, reward, terminated, truncated, info = env.step(action)
        assert not (terminated or truncated) and obs["messages"][-1]["role"] != "assistant"
        kind, detail = expected
        if kind == "error":
            assert detail in info["search_error"]
        else:
            assert "search_error" not in info
        text = json.dumps(obs["messages"][-1]["content"], default=str, ensure_ascii=False)
        text.encode("utf-8")
    record = env.unwrapped.episode_record().to_dict()
    json.dumps(record, allow_nan=False, ensure_ascii=False).encode("utf-8")
    searches = record["searches"]
    assert [s["tool"] for s in searches] == ["image_search", "text_search"]
    if expected[0] == "ok":
        assert all(s["ok"] and len(s["results"]) == expected[1] for s in searches)
    env.close()


def test_sanitize_response_and_clean_text_directly():
    assert valid_unicode("plain") == "plain" and valid_unicode("a\ud83d") == "a\ufffd"
    assert valid_unicode("\ud83d\ude00") == "\U0001f600"  # a pair spelled as two code points is joined
    got = sanitize_response("text_search", SearchResponse("text_search", [result()], cost_usd=1))
    assert got.ok and isinstance(got.results, tuple) and got.cost_usd == 1.0 and isinstance(got.cost_usd, float)
    # a failure keeps a valid cost (a paid call that failed was still paid for)
    got = sanitize_response("text_search", SearchResponse("text_search", error="quota", cost_usd=0.015))
    assert got.error == "quota" and got.cost_usd == 0.015
