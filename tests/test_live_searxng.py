"""SearXNG JSON API backend and the page readers, against local servers with the real wire formats."""

from __future__ import annotations

import re

import pytest
from live_servers import LocalServer, Reply, html_page, searxng

from mmsearch_env.errors import ConfigError, SearchBackendError, SearchTransientError
from mmsearch_env.search import ImageSearchRequest, TextSearchRequest, call_search, make_search
from mmsearch_env.search.reader import LocalReader, _parse_jina
from mmsearch_env.search.summarize import extractive_summary
from mmsearch_env.web.http import FetchPolicy, UnsafeURLError

PAGES = {
    "/wiki/tolm": html_page(
        "Tolm - Wikipedia",
        [
            "Tolm is the capital of Arvenia and its largest city.",
            "The city hosts a famous glass bridge over the river Ves.",
            "The bridge was designed by the architect Mira Castell in 1931.",
        ],
    ),
    "/news/bridge": html_page(
        "Bridge reopens",
        ["After repairs the glass bridge in Tolm reopened to pedestrians.", "Its designer Mira Castell died in 1960."],
    ),
}


@pytest.fixture
def instance():
    """A SearXNG instance (JSON format enabled) plus the pages its results point to, on one server."""

    def search(request):
        if request.query.get("format") != "json":
            return Reply(403, "Forbidden")
        results = [
            {"url": server.url("/down"), "title": "Dead link", "content": "gone"},
            {"url": server.url("/wiki/tolm"), "title": "Tolm", "content": "Tolm is the capital of Arvenia."},
            {"url": "http://192.168.0.10/admin", "title": "Router", "content": "internal"},
            {"url": server.url("/news/bridge"), "title": "Bridge reopens", "content": "The glass bridge reopened."},
        ]
        return Reply(body=searxng(results, request.query["q"]))

    server = LocalServer({"/search": search, "/down": Reply(502, "bad gateway")})
    for path, page in PAGES.items():
        server.routes[path] = Reply(body=page)
    with server:
        yield server


def options(server: LocalServer, **extra) -> dict:
    return {"base_url": server.url(""), "fetch": {"allowed_hosts": [server.host_port]}, **extra}


def test_searxng_summaries_through_the_local_reader(instance):
    backend = make_search("searxng", options(instance))
    response = backend.text_search(TextSearchRequest("glass bridge designer", question="Who designed the bridge?"))
    assert response.ok and response.cost_usd == 0.0
    assert [r.title for r in response.results] == ["Tolm", "Bridge reopens"]  # failed pages replaced, order kept
    assert response.results[0].summary == (
        "Tolm is the capital of Arvenia and its largest city. The city hosts a famous glass bridge over the river Ves. "
        "The bridge was designed by the architect Mira Castell in 1931."
    )
    sent = instance.requests[0]
    assert sent.path == "/search" and sent.query == {
        "q": "glass bridge designer",
        "format": "json",
        "categories": "general",
    }


def test_searxng_snippets_mode_fetches_no_pages(instance):
    backend = make_search("searxng", options(instance, text_mode="snippets", max_results=2, language="de"))
    response = backend.text_search(TextSearchRequest("tolm"))
    assert instance.requests[0].query["language"] == "de"
    assert [r.summary for r in response.results] == ["gone", "Tolm is the capital of Arvenia."]
    assert [r.path for r in instance.requests] == ["/search"]


def test_searxng_errors_are_clear(instance):
    backend = make_search("searxng", options(instance))
    instance.routes["/search"] = Reply(403, "Forbidden")
    with pytest.raises(SearchBackendError, match=re.escape("enable it in the instance's settings.yml")):
        backend.text_search(TextSearchRequest("x"))
    instance.routes["/search"] = Reply(200, {"query": "x"})
    with pytest.raises(SearchBackendError, match="without a 'results' list"):
        backend.text_search(TextSearchRequest("x"))
    instance.routes["/search"] = Reply(200, "<html>", content_type="application/json")
    with pytest.raises(SearchBackendError, match="malformed JSON"):
        backend.text_search(TextSearchRequest("x"))
    instance.routes["/search"] = Reply(500, "boom")
    with pytest.raises(SearchTransientError, match="HTTP 500"):
        backend.text_search(TextSearchRequest("x"))
    # no reverse image search in SearXNG: a tool error, not a crash
    from PIL import Image

    response = call_search(backend, "image_search", ImageSearchRequest(image=Image.new("RGB", (4, 4))))
    assert not response.ok and "does not support image search" in response.error
    with pytest.raises(ConfigError, match=re.escape("search_options={'base_url'")):
        make_search("searxng", {})


def test_configured_endpoint_is_trusted_but_its_redirects_are_not(instance):
    """The instance's own host:port is allowed (you chose it); a redirect it sends elsewhere is checked."""
    instance.routes["/search"] = Reply(302, headers={"Location": "http://169.254.169.254/latest/"})
    with pytest.raises(UnsafeURLError, match="refused"):
        make_search("searxng", {"base_url": instance.url("")}).text_search(TextSearchRequest("x"))
    # and its result pages on the same private host are *not* fetched unless the user allows them
    instance.routes["/search"] = Reply(body=searxng([{"url": instance.url("/wiki/tolm"), "title": "Tolm"}]))
    response = call_search(
        make_search("searxng", {"base_url": instance.url("")}), "text_search", TextSearchRequest("x")
    )
    assert not response.ok and "no result page could be read (1 of 1 tried" in response.error
    assert instance.hits("/wiki/tolm") == 0


def test_local_reader_extracts_the_article_and_refuses_non_pages(instance):
    reader = LocalReader(FetchPolicy(allowed_hosts=(instance.host_port,)))
    page = reader.read(instance.url("/wiki/tolm"))
    assert page.title == "Tolm - Wikipedia"
    assert "designed by the architect Mira Castell" in page.text
    assert "Cookie settings" not in page.text and "Log in" not in page.text
    instance.routes["/empty"] = Reply(
        body="<html><head><title>t</title></head><body><script>var a = 1;</script></body></html>"
    )
    with pytest.raises(SearchBackendError, match="no readable main text"):
        reader.read(instance.url("/empty"))
    instance.routes["/json"] = Reply(body={"a": 1})
    with pytest.raises(SearchBackendError, match="content type 'application/json'"):
        reader.read(instance.url("/json"))
    instance.routes["/plain"] = Reply(body="Just text.", content_type="text/plain")
    assert reader.read(instance.url("/plain")).text == "Just text."


def test_jina_text_format_and_extractive_summary():
    page = _parse_jina(
        "https://x.org/a", "Title: A page\n\nURL Source: https://x.org/a\n\nMarkdown Content:\nBody.", 100
    )
    assert (page.title, page.text) == ("A page", "Body.")
    with pytest.raises(SearchBackendError, match="no text"):
        _parse_jina("https://x.org/a", "Title: A\n\nMarkdown Content:\n  ", 100)
    text = "# Heading\nTolm is a city. It has a bridge.\n- Menu\nThe bridge was built in 1931 by Mira Castell."
    assert (
        extractive_summary(text, "bridge built", 2) == "Tolm is a city. The bridge was built in 1931 by Mira Castell."
    )


def test_page_budget_stops_replacing_failed_pages(instance):
    slow_fail = {"url": instance.url("/slow-fail"), "title": "Slow", "content": "x"}
    good = {"url": instance.url("/wiki/tolm"), "title": "Tolm", "content": "y"}
    instance.routes["/slow-fail"] = Reply(503, "busy", delay=0.3)
    instance.routes["/search"] = Reply(body=searxng([slow_fail, good]))
    tight = make_search("searxng", options(instance, max_results=1, page_budget_s=0.1))
    response = call_search(tight, "text_search", TextSearchRequest("tolm"))
    assert not response.ok and "no result page could be read (1 of 2 tried" in response.error
    assert instance.hits("/wiki/tolm") == 0
    relaxed = make_search("searxng", options(instance, max_results=1))
    assert [r.title for r in relaxed.text_search(TextSearchRequest("tolm")).results] == ["Tolm"]
