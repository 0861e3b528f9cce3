"""SerpAPI Lens + Google → reader → summariser, against local servers speaking the real wire formats."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re

import pytest
from live_servers import (
    LocalServer,
    Reply,
    chat_completion,
    html_page,
    jina_text,
    png_bomb,
    png_bytes,
    serpapi_google,
    serpapi_lens,
)
from PIL import Image

from mmsearch_env.errors import ConfigError, SearchBackendError, SearchRateLimitedError, SearchTransientError
from mmsearch_env.search import ImageSearchRequest, TextSearchRequest, call_search, make_search

KEY = "serp-SECRET-4f9a7c2e91"
LLM_KEY = "llm-SECRET-77aa0b3c"
COLORS = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0), (0, 200, 200), (200, 0, 200), (90, 90, 90)]
PRICE_P, PRICE_C = 0.002, 0.01  # dollars per 1k prompt / completion tokens
SUMMARY_COST = 1000 / 1000 * PRICE_P + 100 / 1000 * PRICE_C  # usage below: 1000 prompt, 100 completion tokens


def paragraphs(i: int) -> list[str]:
    return [
        f"Landmark {i} stands on the river bank of Tolm.",
        "Visitors arrive by boat in the summer months.",
        f"The tower of landmark {i} was completed in {1900 + i}.",
    ]


class FakeWeb:
    """SerpAPI + thumbnails + pages + chat endpoint + JINA Reader, all on one 127.0.0.1 server."""

    def __init__(self) -> None:
        self.server = LocalServer()
        self.lens_matches: list[dict] = []
        self.organic: list[dict] = []
        self.serp_reply: Reply | None = None  # overrides the SerpAPI answer (faults)
        self.chat_reply: Reply | None = None
        r = self.server.routes
        r["/search.json"] = self._serpapi
        r["/v1/chat/completions"] = self._chat
        r["/jina/*"] = self._jina
        for i, color in enumerate(COLORS):
            r[f"/thumb/{i}.png"] = Reply(body=png_bytes(color), content_type="image/png")
            r[f"/page/{i}"] = Reply(body=html_page(f"Page {i}", paragraphs(i)))
        r["/thumb/bomb.png"] = Reply(body=png_bomb(5000, 5000), content_type="image/png")
        r["/page/error"] = Reply(500, "<h1>Internal error</h1>")
        r["/page/to-private"] = Reply(302, headers={"Location": "http://10.0.0.1/page"})
        r["/page/image"] = Reply(body=png_bytes(), content_type="image/png")
        r["/page/slow"] = Reply(body=html_page("Slow", paragraphs(9)), delay=5)

    def url(self, path: str) -> str:
        return self.server.url(path)

    def _serpapi(self, request) -> Reply:
        if self.serp_reply is not None:
            return self.serp_reply
        if request.query.get("api_key") != KEY:
            return Reply(
                401, {"error": "Invalid API key. Your API key should be here: https://serpapi.com/manage-api-key"}
            )
        if request.query["engine"] == "google_lens":
            return Reply(body=serpapi_lens(self.lens_matches, request.query["url"]))
        return Reply(body=serpapi_google(self.organic, request.query["q"]))

    def _chat(self, request) -> Reply:
        if self.chat_reply is not None:
            return self.chat_reply
        user = request.json()["messages"][1]["content"]
        title = re.search(r"Page title: (.*)", user).group(1)
        year = re.search(r"completed in (\d+)", user).group(1)
        content = f"<think>plan</think>{title} is a riverside landmark. Its tower dates from {year}. A. B. C. D."
        return Reply(body=chat_completion(content, 1000, 100))

    def _jina(self, request) -> Reply:
        target = request.raw_path[len("/jina/") :]
        i = int(target.rsplit("/", 1)[1])
        return Reply(body=jina_text(f"Jina page {i}", target, "\n\n".join(paragraphs(i))), content_type="text/plain")

    def options(self, **extra) -> dict:
        """search_options for make_search: SerpAPI on this server; pages/thumbnails allowed on it only."""
        options = {
            "base_url": self.url(""),
            "fetch": {"allowed_hosts": [self.server.host_port], "total_timeout": 2},
            "summarizer": {
                "base_url": self.url("/v1"),
                "model": "tiny",
                "api_key_env": "TEST_LLM_KEY",
                "price_per_1k_prompt_tokens": PRICE_P,
                "price_per_1k_completion_tokens": PRICE_C,
            },
        }
        options.update(extra)
        return options


@pytest.fixture
def web(monkeypatch):
    monkeypatch.setenv("SERPAPI_API_KEY", KEY)
    monkeypatch.setenv("TEST_LLM_KEY", LLM_KEY)
    monkeypatch.delenv("MMSEARCH_SECRETS_FILE", raising=False)
    fake = FakeWeb()
    with fake.server:
        yield fake


def image_request(url: str | None = "https://img.example.org/q.png") -> ImageSearchRequest:
    return ImageSearchRequest(image=Image.new("RGB", (32, 32), (1, 2, 3)), image_url=url, example_id="q1")


# -- image search ---------------------------------------------------------------------------------


def lens_matches(web: FakeWeb, thumbs: list[str | None]) -> list[dict]:
    return [
        {"title": f"Match {i}", "link": f"https://site{i}.example.org/item", "thumbnail": t}
        for i, t in enumerate(thumbs)
    ]


def test_lens_returns_top5_titles_links_and_downloaded_thumbnails(web):
    web.lens_matches = lens_matches(web, [web.url(f"/thumb/{i}.png") for i in range(7)])
    backend = make_search("serpapi", web.options(gl="de"))
    response = backend.image_search(image_request())
    assert response.ok and [r.title for r in response.results] == [f"Match {i}" for i in range(5)]
    assert [r.url for r in response.results] == [f"https://site{i}.example.org/item" for i in range(5)]
    assert [r.thumbnail.getpixel((0, 0)) for r in response.results] == COLORS[:5]
    assert response.cost_usd == pytest.approx(0.015)
    sent = web.server.requests[0]
    assert sent.path == "/search.json" and sent.query["engine"] == "google_lens"
    assert sent.query["url"] == "https://img.example.org/q.png" and sent.query["api_key"] == KEY
    assert (sent.query["hl"], sent.query["gl"]) == ("en", "de")


@pytest.mark.parametrize(("mode", "expected"), [("keep", [0, 1, 2, 3, 4]), ("skip", [0, 3, 5, 6])])
def test_failed_thumbnails_are_kept_without_image_or_skipped(web, mode, expected):
    with LocalServer({"/x.png": Reply(body=png_bytes(), content_type="image/png")}) as internal:
        thumbs = [
            web.url("/thumb/0.png"),
            web.url("/thumb/missing.png"),  # 404
            "http://10.0.0.1/thumb.png",  # SSRF guard
            web.url("/thumb/3.png"),
            internal.url("/x.png"),  # private host not in allowed_hosts
            web.url("/thumb/5.png"),
            web.url("/thumb/6.png"),
            None,  # no thumbnail at all
            web.url("/thumb/bomb.png"),
        ]
        web.lens_matches = lens_matches(web, thumbs)
        response = make_search("serpapi", web.options(missing_thumbnail=mode)).image_search(image_request())
        assert internal.requests == []
    assert [r.title for r in response.results] == [f"Match {i}" for i in expected]
    with_image = [r.thumbnail is not None for r in response.results]
    if mode == "keep":
        assert with_image == [True, False, False, True, False]
    else:  # skip: failures replaced by later matches; the list ran out (only 4 usable thumbnails)
        assert all(with_image)
        assert [r.thumbnail.getpixel((0, 0)) for r in response.results] == [COLORS[i] for i in expected]


def test_image_host_publishes_local_images_and_missing_url_is_a_clear_error(web, tmp_path):
    web.lens_matches = lens_matches(web, [web.url("/thumb/0.png")])
    options = web.options(image_host={"base_url": "https://my.host/imgs/", "directory": str(tmp_path / "pub")})
    request = image_request(url=None)
    response = make_search("serpapi", options).image_search(request)
    assert response.ok and response.results[0].title == "Match 0"
    files = list((tmp_path / "pub").iterdir())
    assert len(files) == 1 and files[0].name == hashlib.sha256(files[0].read_bytes()).hexdigest() + ".png"
    assert web.server.requests[0].query["url"] == f"https://my.host/imgs/{files[0].name}"
    assert Image.open(files[0]).convert("RGB").tobytes() == request.image.tobytes()
    # without an image_url and without a host: the tool call fails with a message that says what to do
    before = len(web.server.requests)
    failed = call_search(make_search("serpapi", web.options()), "image_search", request)
    assert not failed.ok and "needs a public URL of the image" in failed.error and "image_host" in failed.error
    assert len(web.server.requests) == before  # nothing was sent (nothing billed)


def test_data_uri_thumbnails_are_decoded(web):
    import base64

    inline = "data:image/png;base64," + base64.b64encode(png_bytes((1, 2, 250))).decode()
    web.lens_matches = lens_matches(web, [inline])
    response = make_search("serpapi", web.options()).image_search(image_request())
    assert response.results[0].thumbnail.getpixel((0, 0)) == (1, 2, 250)


# -- text search ----------------------------------------------------------------------------------


def organic(web: FakeWeb, paths: list[str]) -> list[dict]:
    return [{"title": f"Result {p}", "link": web.url(f"/page/{p}"), "snippet": f"Snippet about {p}."} for p in paths]


def test_text_search_reads_pages_in_parallel_replaces_failures_and_summarises(web):
    web.organic = organic(web, ["0", "error", "to-private", "image", "1", "slow", "2", "3", "4", "5"])
    backend = make_search("serpapi", web.options())
    response = backend.text_search(TextSearchRequest("landmark tower year", question="When was its tower built?"))
    assert response.ok
    assert [r.url for r in response.results] == [web.url(f"/page/{i}") for i in range(5)]
    assert [r.title for r in response.results] == [f"Result {i}" for i in range(5)]
    for i, result in enumerate(response.results):
        # the model's answer, <think> removed, capped at 5 sentences
        assert result.summary == f"Page {i} is a riverside landmark. Its tower dates from {1900 + i}. A. B. C."
    assert response.cost_usd == pytest.approx(0.015 + 5 * SUMMARY_COST)
    chats = [r for r in web.server.requests if r.path == "/v1/chat/completions"]
    assert len(chats) == 5
    body = chats[0].json()
    assert body["model"] == "tiny" and body["temperature"] == 0.0
    assert "When was its tower built?" in body["messages"][1]["content"]
    assert "landmark tower year" in body["messages"][1]["content"]
    assert "Log in" not in body["messages"][1]["content"]  # trafilatura dropped the navigation
    assert chats[0].headers["authorization"] == f"Bearer {LLM_KEY}"
    serp = web.server.requests[0]
    assert serp.query["engine"] == "google" and serp.query["q"] == "landmark tower year" and serp.query["num"] == "10"


@pytest.mark.parametrize(
    "fault",
    [
        Reply(500, {"error": {"message": "model overloaded"}}),
        Reply(200, "this is not json", content_type="application/json"),
        Reply(200, {"choices": []}),
        Reply(429, {"error": "slow"}, headers={"Retry-After": "1"}),
        Reply(reset=True),
    ],
    ids=["500", "malformed", "no-choices", "429", "reset"],
)
def test_summariser_failures_fall_back_to_extractive_summaries(web, fault, caplog):
    web.organic = organic(web, ["0", "1"])
    web.chat_reply = fault
    with caplog.at_level(logging.DEBUG):
        response = make_search("serpapi", web.options()).text_search(TextSearchRequest("tower completed year"))
    assert response.ok and len(response.results) == 2
    # lead sentence + the sentence sharing the query's words; no model text
    assert (
        response.results[0].summary
        == "Landmark 0 stands on the river bank of Tolm. The tower of landmark 0 was completed in 1900."
    )
    assert response.cost_usd == pytest.approx(0.015)  # no tokens billed
    assert "using an extractive summary" in caplog.text


def test_jina_reader_and_snippet_modes(web, monkeypatch):
    monkeypatch.setenv("JINA_API_KEY", "jina-SECRET-0099")
    web.organic = organic(web, ["0", "1", "2"])
    options = web.options(reader={"kind": "jina", "endpoint": web.url("/jina/")}, summarizer=None)
    response = make_search("serpapi", options).text_search(TextSearchRequest("tower completed"))
    assert [r.url for r in response.results] == [web.url(f"/page/{i}") for i in range(3)]
    assert response.results[1].summary.endswith("The tower of landmark 1 was completed in 1901.")
    jina = [r for r in web.server.requests if r.path.startswith("/jina/")]
    assert len(jina) == 3 and jina[0].headers["authorization"] == "Bearer jina-SECRET-0099"
    assert web.server.hits("/page/0") == 0  # JINA fetched the pages, not us
    assert response.cost_usd == pytest.approx(0.015)

    snippets = make_search("serpapi", web.options(text_mode="snippets")).text_search(TextSearchRequest("tower"))
    assert [r.summary for r in snippets.results] == ["Snippet about 0.", "Snippet about 1.", "Snippet about 2."]
    assert sum(web.server.hits(f"/page/{i}") for i in range(3)) == 0


def test_no_readable_page_is_an_error_that_still_carries_the_search_cost(web):
    web.organic = organic(web, ["error", "image"])
    response = call_search(make_search("serpapi", web.options()), "text_search", TextSearchRequest("x"))
    assert not response.ok and "no result page could be read (2 of 2 tried" in response.error
    assert response.cost_usd == pytest.approx(0.015)


# -- SerpAPI errors and keys ------------------------------------------------------------------------


def test_serpapi_failures_map_to_typed_errors(web, monkeypatch):
    backend = make_search("serpapi", web.options(api_fetch={"total_timeout": 0.5}))
    request = TextSearchRequest("q")
    cases = [
        (Reply(429, {"error": "too many"}, headers={"Retry-After": "12"}), SearchRateLimitedError, "HTTP 429"),
        (Reply(503, "<html>busy</html>"), SearchTransientError, "HTTP 503"),
        (Reply(200, "{not json", content_type="application/json"), SearchBackendError, "malformed JSON"),
        (
            Reply(200, {"error": "Your searches for the month have run out. You can upgrade your plan."}),
            SearchBackendError,
            "searches for the month have run out",
        ),
        (Reply(body={"organic_results": []}, delay=3), SearchTransientError, "timed out"),
        (Reply(reset=True), SearchTransientError, "connection failed"),
    ]
    for reply, error, message in cases:
        web.serp_reply = reply
        with pytest.raises(error, match=re.escape(message)) as info:
            backend.text_search(request)
        if error is SearchRateLimitedError:
            assert info.value.retry_after == 12.0
        if error is SearchBackendError:
            assert not isinstance(info.value, SearchTransientError)
    # "no results" arrives in the error field too, but it is an empty answer, not a failure
    web.serp_reply = Reply(
        body={"search_metadata": {"status": "Success"}, "error": "Google hasn't returned any results for this query."}
    )
    assert backend.text_search(request).results == ()
    web.serp_reply = None
    monkeypatch.setenv("SERPAPI_API_KEY", "wrong-key-000")
    with pytest.raises(SearchBackendError, match="HTTP 401: Invalid API key"):
        make_search("serpapi", web.options()).text_search(request)


def test_the_key_never_appears_in_logs_errors_or_records(web, caplog):
    import gymnasium as gym

    echo = Reply(500, {"error": "bad"})

    def echoing(request):  # a misbehaving server that echoes the request line, key included
        return Reply(400, {"error": f"cannot parse {request.raw_path}"})

    web.lens_matches = lens_matches(web, [web.url("/thumb/0.png")])
    web.organic = organic(web, ["0"])
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG):
        backend = make_search("serpapi", web.options(api_fetch={"total_timeout": 0.5}))
        texts.append(repr(backend))
        texts.append(str(backend.image_search(image_request())))
        for reply in (
            echoing,
            echo,
            Reply(body="{", content_type="application/json"),
            Reply(delay=3),
            Reply(reset=True),
        ):
            web.server.routes["/search.json"] = reply
            for tool, request in (("image_search", image_request()), ("text_search", TextSearchRequest("q"))):
                response = call_search(backend, tool, request)
                assert not response.ok
                texts.append(response.error)
        web.server.routes["/search.json"] = web._serpapi
        env = gym.make("MMSearch-v0", dataset="sample", search="serpapi", search_options=web.options())
        env.reset(seed=0)
        env.step("<reason>look it up</reason><text_search>landmark tower</text_search>")
        texts.append(env.unwrapped.episode_record().to_json())
        texts.append(env.spec.to_json())
        env.close()
    assert "cannot parse /search.json?" in " ".join(texts)  # the echo did reach us...
    joined = " ".join(texts) + caplog.text
    assert KEY not in joined and LLM_KEY not in joined  # ...with the key redacted
    assert "api_key=REDACTED" in joined or "***" in joined


def test_missing_key_and_secrets_files(web, monkeypatch, tmp_path):
    monkeypatch.delenv("SERPAPI_API_KEY")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.config/mmsearch/secrets.toml
    with pytest.raises(ConfigError, match=r"set the environment variable SERPAPI_API_KEY .* secrets file"):
        make_search("serpapi", web.options())
    web.lens_matches = lens_matches(web, [web.url("/thumb/0.png")])
    toml = tmp_path / "secrets.toml"
    toml.write_text(f'SERPAPI_API_KEY = "{KEY}"\n')
    os.chmod(toml, 0o600)
    backend = make_search("serpapi", web.options(secrets_file=str(toml)))
    assert backend.image_search(image_request()).ok
    as_json = tmp_path / "secrets.json"
    as_json.write_text(json.dumps({"SERPAPI_API_KEY": KEY}))
    os.chmod(as_json, 0o644)
    monkeypatch.setenv("MMSEARCH_SECRETS_FILE", str(as_json))
    with pytest.warns(UserWarning, match=r"readable by other users .*chmod 600"):
        backend = make_search("serpapi", web.options())
    assert backend.image_search(image_request()).ok
    broken = tmp_path / "broken.toml"
    broken.write_text(f'SERPAPI_API_KEY = "{KEY}\n')
    os.chmod(broken, 0o600)
    with pytest.raises(ConfigError, match="is not valid") as info:
        make_search("serpapi", web.options(secrets_file=str(broken)))
    assert KEY not in str(info.value)


def test_options_are_checked(web):
    with pytest.raises(ConfigError, match="do not fit the 'serpapi' backend"):
        make_search("serpapi", {"bogus": 1})
    with pytest.raises(ConfigError, match="missing_thumbnail must be 'keep' or 'skip'"):
        make_search("serpapi", web.options(missing_thumbnail="drop"))
    with pytest.raises(ConfigError, match=r"unknown reader kind 'jinna'.*Did you mean 'jina'"):
        make_search("serpapi", web.options(reader={"kind": "jinna"}))
    with pytest.raises(ConfigError, match="image_host must be"):
        make_search("serpapi", web.options(image_host={"url": "x"}))
    with pytest.raises(ConfigError, match="unknown fetch option"):
        make_search("serpapi", web.options(fetch={"allow_private": True}))
    with pytest.raises(ConfigError, match="Did you mean 'serpapi'"):
        make_search("serpap")


def test_end_to_end_episode_with_image_and_text_search(web, tmp_path):
    """gym.make with search='serpapi' on the local server: tool turns show served titles and summaries."""
    import gymnasium as gym

    web.lens_matches = lens_matches(web, [web.url(f"/thumb/{i}.png") for i in range(5)])
    web.organic = organic(web, ["0", "1", "2", "3", "4", "5"])
    # the sample dataset has no image URLs: publish the question image through the image host hook
    options = web.options(image_host={"base_url": "https://my.host/imgs", "directory": str(tmp_path)})
    env = gym.make("MMSearch-v0", dataset="sample", search="serpapi", search_options=options)
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step("<reason>what is it?</reason><search><img></search>")
    assert not (terminated or truncated) and info["image_searches"] == 1 and info["search_failures"] == 0
    text = json.dumps(obs["messages"], default=str)
    assert all(f"Match {i}" in text for i in range(5))
    images = [b for m in obs["messages"] for b in m["content"] if b.get("type") == "image"]
    assert len(images) == 1 + 5  # the question image and five downloaded thumbnails
    assert info["search_cost_usd"] == pytest.approx(0.015)
    step = "<reason>find the year</reason><text_search>landmark tower</text_search>"
    obs, reward, terminated, truncated, info = env.step(step)
    assert info["text_searches"] == 1 and info["search_failures"] == 0
    text = json.dumps(obs["messages"], default=str)
    for i in range(5):
        assert f"Page {i} is a riverside landmark. Its tower dates from {1900 + i}." in text
        assert web.url(f"/page/{i}") in text
    obs, reward, terminated, truncated, info = env.step("<reason>done</reason><answer>1903</answer>")
    assert terminated
    assert info["search_cost_usd"] == pytest.approx(0.015 + 0.015 + 5 * SUMMARY_COST)
    record = env.unwrapped.episode_record().to_dict()
    assert [s["tool"] for s in record["searches"]] == ["image_search", "text_search"]
    env.close()


def test_async_callers_get_the_same_results(web):
    """Rollout engines call backends through acall_search; the sync backend runs in a worker thread."""
    import asyncio

    from mmsearch_env.search import acall_search

    web.lens_matches = lens_matches(web, [web.url(f"/thumb/{i}.png") for i in range(3)])
    web.organic = organic(web, ["0", "1"])
    backend = make_search("serpapi", web.options())

    async def both():
        return await asyncio.gather(
            acall_search(backend, "image_search", image_request()),
            acall_search(backend, "text_search", TextSearchRequest("tower completed")),
        )

    image, text = asyncio.run(both())
    assert [r.title for r in image.results] == ["Match 0", "Match 1", "Match 2"]
    assert [r.url for r in text.results] == [web.url("/page/0"), web.url("/page/1")]
    assert image.cost_usd + text.cost_usd == pytest.approx(0.03 + 2 * SUMMARY_COST)


def test_cache_and_budget_wrappers_read_the_live_backends_price_and_options(web, tmp_path):
    """serpapi behind search='cached' costs once, then replays free; behind 'resilient' its price drives the budget."""
    import warnings

    web.organic = organic(web, ["0", "1", "2", "3", "4", "5"])
    request = TextSearchRequest(query="landmark tower", question="When was the tower completed?", example_id="q1")
    backend = make_search("serpapi", web.options())
    assert backend.price_per_call == pytest.approx(0.015) and backend.question_aware
    assert KEY not in json.dumps(backend.cache_options) and LLM_KEY not in json.dumps(backend.cache_options)

    cache = str(tmp_path / "cache.sqlite")
    cached = make_search("cached", {"backend": "serpapi", "backend_options": web.options(), "cache": cache})
    first = call_search(cached, "text_search", request)
    served = len(web.server.requests)
    again = call_search(cached, "text_search", request)
    assert first.ok and not first.cached and first.cost_usd == pytest.approx(0.015 + 5 * SUMMARY_COST)
    assert again.cached and again.cost_usd == 0.0 and again.results == first.results
    assert len(web.server.requests) == served  # the hit made no network call
    other = make_search(
        "cached", {"backend": "serpapi", "backend_options": web.options(text_mode="snippets"), "cache": cache}
    )
    assert not call_search(other, "text_search", request).cached  # another configuration is another key

    limited = make_search("resilient", {"backend": "serpapi", "backend_options": web.options(), "budget_usd": 0.02})
    assert call_search(limited, "text_search", request).ok
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        refused = call_search(limited, "text_search", request)
    assert not refused.ok and "budget" in refused.error
