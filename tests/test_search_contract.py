"""The "add your own backend" recipe, end to end, and the contract every backend and wrapper honours."""

from __future__ import annotations

import asyncio

import gymnasium as gym
import pytest

import mmsearch_env  # noqa: F401  (registers MMSearch-v0)
from mmsearch_env.errors import ConfigError
from mmsearch_env.search import (
    AsyncSearchBackend,
    SearchBackend,
    SearchBackendBase,
    SearchResponse,
    SearchResult,
    SearchWrapper,
    TextSearchRequest,
    as_backend,
    make_search,
)
from mmsearch_env.search.cache import CachedSearch
from mmsearch_env.search.faults import FaultySearch
from mmsearch_env.search.resilience import ResilientSearch

IMG = "<reason>I do not know this flag.</reason><search><img></search>"
TXT = "<reason>I need the capital.</reason><text_search>capital of Arvenia</text_search>"
ARVENIA = {"example_id": "sample-arvenia-image-text"}


# -- the recipe: subclass SearchBackendBase, implement only what you support -----------------------------


class Almanac(SearchBackendBase):
    """A text-only backend answering from a dict of facts."""

    name = "almanac"

    def __init__(self, facts: dict[str, str]):
        self.facts = facts
        self.calls = 0

    def text_search(self, request: TextSearchRequest) -> SearchResponse:
        self.calls += 1
        hits = [(k, v) for k, v in self.facts.items() if k in request.query.lower()]
        return SearchResponse(
            "text_search",
            tuple(SearchResult(k.title(), f"https://almanac.invalid/{i}", summary=v) for i, (k, v) in enumerate(hits)),
        )


FACTS = {"arvenia": "Arvenia is a small country. Its capital is Velmont."}


def tool_text(obs) -> str:
    return "".join(block.get("text", "") for block in obs["messages"][-1]["content"])


def test_a_text_only_backend_answers_text_searches_and_refuses_image_search():
    backend = Almanac(FACTS)
    env = gym.make("MMSearch-v0", dataset="sample", search=backend)
    env.reset(seed=0, options=ARVENIA)
    obs, _, _, _, info = env.step(TXT)
    assert "Its capital is Velmont." in tool_text(obs) and "search_error" not in info and backend.calls == 1

    env.reset(seed=0, options=ARVENIA)
    obs, _, terminated, _, info = env.step(IMG)
    assert info["search_error"] == "the 'almanac' backend does not support image search" and not terminated
    assert env.unwrapped.search is backend  # a SearchBackendBase is used as it is
    env.close()


def test_wrapped_in_a_cache_a_replay_hits_and_never_calls_the_backend(tmp_path):
    backend = Almanac(FACTS)
    path = tmp_path / "almanac.sqlite"
    env = gym.make("MMSearch-v0", dataset="sample", search=CachedSearch(backend, path))
    env.reset(seed=0, options=ARVENIA)
    first, *_ = env.step(TXT)
    assert backend.calls == 1 and not env.unwrapped.episode_record().to_dict()["searches"][0]["cached"]
    env.close()

    replay = CachedSearch(None, path, mode="replay", backend_name="almanac")
    env = gym.make("MMSearch-v0", dataset="sample", search=replay)
    env.reset(seed=0, options=ARVENIA)
    again, *_ = env.step(TXT)
    search = env.unwrapped.episode_record().to_dict()["searches"][0]
    assert search["cached"] and search["cost_usd"] == 0.0 and backend.calls == 1
    assert tool_text(again) == tool_text(first) and replay.stats.hits == 1
    env.close()


# -- the contract -------------------------------------------------------------------------------------------


class Priced(SearchBackendBase):
    name = "priced"
    price_per_call = 0.02
    question_aware = True

    def __init__(self):
        self.cache_options = {"engine": "x"}
        self.closed = 0
        self.episodes: list[str | None] = []

    def text_search(self, request):
        return SearchResponse("text_search")

    def close(self):
        self.closed += 1

    def reset_episode(self, example_id=None):
        self.episodes.append(example_id)


def test_every_wrapper_forwards_the_whole_contract(tmp_path):
    inner = Priced()
    chain = CachedSearch(ResilientSearch(FaultySearch(inner)), tmp_path / "c.sqlite")
    for layer in (chain, chain.backend, chain.backend.backend):
        assert isinstance(layer, SearchWrapper) and layer.unwrapped is inner
        assert layer.price_per_call == 0.02 and layer.question_aware is True
        assert layer.cache_options == {"engine": "x"}
        assert isinstance(layer, SearchBackend) and isinstance(layer, AsyncSearchBackend)
    assert chain.name == "priced+faults"  # the fault injector names itself; the others pass the name through
    chain.reset_episode("q1")
    chain.close()
    assert inner.episodes == ["q1"] and inner.closed == 1


def test_a_wrapper_overriding_only_sync_methods_is_not_skipped_by_async_callers():
    class Upper(SearchWrapper):
        def text_search(self, request):
            response = self.backend.text_search(request)
            return SearchResponse("text_search", tuple(SearchResult(r.title.upper(), r.url) for r in response.results))

    wrapped = Upper(Almanac(FACTS))
    got = asyncio.run(wrapped.atext_search(TextSearchRequest("arvenia")))
    assert [r.title for r in got.results] == ["ARVENIA"]


class DuckTyped:
    """Only ``name`` and one search method: no base class, no close, no price."""

    name = "duck"

    def text_search(self, request):
        return SearchResponse("text_search", (SearchResult("Quack", "https://duck.invalid/"),))


def test_make_search_gives_a_duck_typed_object_the_whole_contract():
    backend = make_search(DuckTyped())
    assert isinstance(backend, SearchBackendBase) and isinstance(backend, SearchBackend)
    assert (backend.name, backend.price_per_call, backend.cache_options, backend.question_aware) == (
        "duck",
        0.0,
        None,
        False,
    )
    backend.reset_episode("x")
    backend.close()  # defaults: nothing to do, nothing raised
    assert backend.text_search(TextSearchRequest("q")).results[0].title == "Quack"
    assert asyncio.run(backend.atext_search(TextSearchRequest("q"))).ok
    assert backend.image_search(None).error == "the 'duck' backend does not support image search"
    assert as_backend(backend) is backend
    with pytest.raises(ConfigError, match="an object with image_search"):
        make_search(object())
