"""Search backends: the local engine retrieves for real; call_search turns every failure into a value."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from PIL import Image

from mmsearch_env.data.sample import COUNTRIES, sample_examples
from mmsearch_env.errors import ConfigError
from mmsearch_env.search import (
    DisabledSearch,
    ImageSearchRequest,
    LocalSearch,
    Page,
    SearchBackendBase,
    SearchResponse,
    SearchResult,
    StaticSearch,
    TextSearchRequest,
    acall_search,
    call_search,
    make_search,
)
from mmsearch_env.search.sample_web import sample_pages


@pytest.fixture(scope="module")
def engine():
    return make_search("sample")


def test_image_search_top1_on_every_perturbed_question_image(engine):
    """Every question image is a perturbed view of its country's flag; top-1 must be that country."""
    examples = sample_examples(None)
    assert len(examples) == 4 * len(COUNTRIES)
    for example in examples:
        response = engine.image_search(ImageSearchRequest(image=example.image))
        assert response.ok and len(response.results) == 5
        entity = example.metadata["entity"]
        assert response.results[0].title in (f"Flag of {entity}", f"{entity} - country profile"), example.id
        assert all(isinstance(r.thumbnail, Image.Image) for r in response.results)
        # the question image itself is never a corpus image (a match, not a lookup)
        assert all(r.thumbnail.tobytes() != example.image.tobytes() for r in response.results)


def test_text_search_finds_the_fact(engine):
    for example in sample_examples(None):
        query = example.metadata["text_query"]
        if query is None:
            continue
        response = engine.text_search(TextSearchRequest(query=query))
        assert response.ok and 1 <= len(response.results) <= 5
        assert example.metadata["entity"] in response.results[0].url
        assert example.answer.lower() in response.results[0].summary.lower(), (query, response.results[0].summary)


def test_text_summaries_are_short_and_query_aware(engine):
    response = engine.text_search(TextSearchRequest(query="currency of Belmora"))
    top = response.results[0]
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", top.summary) if s]
    assert len(sentences) <= 5
    assert "belmoran lira" in top.summary
    assert top.summary.startswith("Belmora is a country")  # the lead sentence says what the page is


def test_text_search_no_match_is_ok_and_empty(engine):
    response = engine.text_search(TextSearchRequest(query="zzzqqq xylophone"))
    assert response.ok and response.results == ()


def test_local_search_on_user_pages():
    red = Image.new("RGB", (40, 40), (250, 0, 0))
    half = Image.new("RGB", (40, 40), (250, 0, 0))
    half.paste((0, 0, 250), (0, 20, 40, 40))
    pages = [
        Page("https://x.invalid/red", "Red square", "A red square. It is red.", (red,)),
        Page("https://x.invalid/split", "Split square", "Half red, half blue.", (half,)),
        Page("https://x.invalid/text", "Only text", "Rivers flow to the sea. The Nile is long."),
    ]
    engine = LocalSearch(pages, max_results=2, summary_sentences=1)
    query = half.resize((37, 41)).crop((1, 1, 36, 40))
    results = engine.image_search(ImageSearchRequest(image=query)).results
    assert [r.title for r in results] == ["Split square", "Red square"]
    text = engine.text_search(TextSearchRequest(query="Nile river")).results
    assert [r.title for r in text] == ["Only text"]
    assert text[0].summary == "Rivers flow to the sea."  # one sentence: the lead


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"pages": []}, "needs at least one Page"), ({"pages": sample_pages(), "max_results": 0}, "must be >= 1")],
)
def test_local_search_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        LocalSearch(**kwargs)


def test_make_search_errors():
    with pytest.raises(ConfigError, match=re.escape("Did you mean 'disabled'?")):
        make_search("disable")
    with pytest.raises(ConfigError, match="do not fit the 'sample' backend"):
        make_search("sample", {"nonsense": 1})
    with pytest.raises(ConfigError, match="search_options apply only when search is given by name"):
        make_search(StaticSearch(), {"x": 1})
    assert make_search("sample", {"max_results": 3}).max_results == 3


class Broken(SearchBackendBase):
    name = "broken"

    def image_search(self, request):
        raise RuntimeError("")

    def text_search(self, request):
        return SearchResponse("image_search")  # wrong tool


def test_call_search_turns_failures_into_values():
    image_request = ImageSearchRequest(image=Image.new("RGB", (8, 8)))
    text_request = TextSearchRequest(query="q")
    r = call_search(Broken(), "image_search", image_request)
    assert not r.ok and r.error == "RuntimeError: no message"
    r = call_search(Broken(), "text_search", text_request)
    assert r.error == "backend returned a malformed SearchResponse (wrong tool or result type)"
    r = call_search(object(), "text_search", text_request)
    assert "has no text_search method" in r.error
    r = call_search(DisabledSearch(), "text_search", text_request, timeout=1.0)
    assert r.error == "search is disabled in this environment" and r.latency_s >= 0


def test_static_search_counts_calls_and_equality_ignores_latency():
    backend = StaticSearch(text_results=[SearchResult("t", "https://x.invalid", summary="s")])
    a = call_search(backend, "text_search", TextSearchRequest(query="q"))
    b = call_search(backend, "text_search", TextSearchRequest(query="q"))
    assert backend.calls == 2 and a == b and a.ok


def test_async_calls_and_timeout():
    class SlowAsync(SearchBackendBase):
        name = "slow-async"

        async def atext_search(self, request):
            await asyncio.sleep(5)
            return SearchResponse("text_search")

    async def main():
        started = time.perf_counter()
        timed_out = await acall_search(SlowAsync(), "text_search", TextSearchRequest(query="q"), timeout=0.1)
        elapsed = time.perf_counter() - started
        # sync backend awaited through a thread; async backend's sync side derived
        static = await acall_search(StaticSearch(), "image_search", ImageSearchRequest(image=Image.new("RGB", (4, 4))))
        return timed_out, elapsed, static

    timed_out, elapsed, static = asyncio.run(main())
    assert timed_out.error == "timed out after 0.1 s" and elapsed < 2
    assert static.ok and static.tool == "image_search"


def test_concurrent_async_searches_overlap():
    import threading

    lock, state = threading.Lock(), {"now": 0, "peak": 0}

    class Sleepy(SearchBackendBase):
        name = "sleepy"

        def text_search(self, request):
            with lock:
                state["now"] += 1
                state["peak"] = max(state["peak"], state["now"])
            time.sleep(0.2)
            with lock:
                state["now"] -= 1
            return SearchResponse("text_search")

    async def main():
        return await asyncio.gather(
            *(acall_search(Sleepy(), "text_search", TextSearchRequest(query=str(i))) for i in range(4))
        )

    results = asyncio.run(main())
    assert all(r.ok for r in results)
    assert state["peak"] > 1  # sync backends run in worker threads, overlapping, not one after another


def test_local_backend_from_pages_file(tmp_path):
    import json

    import gymnasium as gym

    Image.new("RGB", (30, 20), (10, 200, 10)).save(tmp_path / "green.png")
    rows = [
        {
            "url": "https://x.invalid/g",
            "title": "Green flag",
            "text": "The green flag belongs to Verdia.",
            "images": ["green.png"],
        },
        {"url": "https://x.invalid/v", "title": "Verdia", "text": "Verdia is a land. Its capital is Mossgate."},
    ]
    pages = tmp_path / "pages.jsonl"
    pages.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    dataset = [
        {"question": "Capital of this flag's country?", "image": str(tmp_path / "green.png"), "answer": "Mossgate"}
    ]
    env = gym.make("MMSearch-v0", dataset=dataset, search="local", search_options={"pages": str(pages)})
    assert "local" in env.spec.to_json()  # JSON-able kwargs: the backend is a name plus options
    env.reset(seed=0)
    obs, *_ = env.step("<reason>?</reason><search><img></search>")
    assert "title: Green flag" in "".join(b.get("text", "") for b in obs["messages"][-1]["content"])
    obs, *_ = env.step("<reason>?</reason><text_search>Verdia capital</text_search>")
    assert "Mossgate" in obs["messages"][-1]["content"][0]["text"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{oops", ":1: not valid JSON"),
        ('{"url": "u", "title": "t"}', ":1: field 'text' must be a non-empty string"),
        (
            '{"url": "u", "title": "t", "text": "x", "images": "a.png"}',
            ":1: field 'images' must be a list of image paths",
        ),
        ('{"url": "u", "title": "t", "text": "x", "images": ["missing.png"]}', "does not exist"),
        ("[1, 2]", ":1: expected a JSON object"),
    ],
)
def test_pages_file_errors(tmp_path, line, message):
    from mmsearch_env.errors import DatasetError
    from mmsearch_env.search import load_pages

    path = tmp_path / "pages.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=re.escape(message)):
        load_pages(path)
    with pytest.raises(ConfigError, match=re.escape("needs search_options={'pages': 'path/to/pages.jsonl'}")):
        make_search("local", {"pages": 3})
