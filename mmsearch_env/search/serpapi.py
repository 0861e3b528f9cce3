"""SerpAPI backends: Google Lens image search and Google text search (→ page reader → summariser).

``gym.make("MMSearch-v0", search="serpapi", search_options={...})`` with the key in ``SERPAPI_API_KEY``
(or a secrets file, see :mod:`mmsearch_env.web.credentials`). The key travels in the query string, as
SerpAPI requires, and is redacted from every message.

Image search (``engine=google_lens``) needs a *public* URL of the question image: the dataset's
``image_url``, or the ``image_host`` hook, which writes the image (PNG, named by its SHA-256) into a
directory you serve and builds the URL from your base URL. ``visual_matches`` give the top results'
title, link and thumbnail; thumbnails are downloaded in parallel through the safe fetcher.

Cost: ``price_per_search`` dollars per successful SerpAPI call (default $0.015: the Developer plan,
$75 for 5,000 searches; errored searches are not billed by SerpAPI), plus the summariser's token cost.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from mmsearch_env.errors import ConfigError, SearchBackendError, SearchTransientError
from mmsearch_env.search.base import (
    ImageSearchRequest,
    SearchBackendBase,
    SearchResponse,
    SearchResult,
    TextSearchRequest,
)
from mmsearch_env.search.pipeline import Candidate, TextPipeline, fill_parallel
from mmsearch_env.search.reader import make_reader
from mmsearch_env.search.summarize import ChatSummarizer
from mmsearch_env.web.credentials import get_secret, redact
from mmsearch_env.web.http import FetchPolicy, FetchResult, fetch
from mmsearch_env.web.images import MAX_THUMBNAIL_PIXELS, decode_image, fetch_image
from mmsearch_env.web.status import check_status

__all__ = ["SERPAPI_PRICE_PER_SEARCH", "ImageHost", "SerpAPISearch", "make_text_pipeline"]

logger = logging.getLogger(__name__)

#: US dollars per search: SerpAPI Developer plan, $75 per month for 5,000 searches (serpapi.com/pricing).
SERPAPI_PRICE_PER_SEARCH = 0.015
#: SerpAPI reports "no results" through its ``error`` field; these are empty answers, not failures.
_NO_RESULTS = "hasn't returned any results"


class ImageHost:
    """Publish local images for engines that need a URL: write ``<sha256>.png`` to ``directory``.

    You serve ``directory`` at ``base_url`` (any static file server or bucket). Files are written once
    (atomically: temp file + rename), so concurrent workers and reruns agree on the URL.
    """

    def __init__(self, base_url: str, directory: str) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"image_host base_url must be an http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.directory = Path(directory).expanduser()
        self.directory.mkdir(parents=True, exist_ok=True)

    def url_for(self, image: Image.Image) -> str:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
        data = buffer.getvalue()
        name = hashlib.sha256(data).hexdigest() + ".png"
        path = self.directory / name
        if not path.exists():
            fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(tmp, 0o644)  # the web server must read it
            os.replace(tmp, path)
        return f"{self.base_url}/{name}"


def text_cache_options(
    base_url: str | None,
    max_results: int,
    text_mode: str,
    reader: Mapping[str, Any] | None,
    summarizer: Mapping[str, Any] | None,
    **engine: Any,
) -> dict[str, Any]:
    """What a cache keys a live text backend on: the options that change its results, never a secret."""
    return {
        "base_url": base_url,
        "max_results": max_results,
        "text_mode": text_mode,
        "reader": dict(reader or {}),
        "summarizer": {k: v for k, v in (summarizer or {}).items() if "key" not in k.lower()},
        **engine,
    }


def make_text_pipeline(
    *,
    max_results: int,
    text_mode: str,
    reader: Mapping[str, Any] | None,
    summarizer: Mapping[str, Any] | None,
    page_workers: int,
    web_policy: FetchPolicy,
    page_budget_s: float = 60.0,
) -> TextPipeline:
    """Build the reader → summariser pipeline from JSON-able options (shared with SearXNG)."""
    chat = None
    if summarizer is not None:
        if not isinstance(summarizer, Mapping):
            raise ConfigError("summarizer must be a dict like {'base_url': ..., 'model': ...} or None")
        try:
            chat = ChatSummarizer(**summarizer)
        except TypeError as exc:
            raise ConfigError(f"summarizer options {sorted(summarizer)} do not fit ChatSummarizer: {exc}") from exc
    return TextPipeline(
        make_reader(reader, web_policy=web_policy),
        chat,
        max_results=max_results,
        workers=page_workers,
        mode=text_mode,  # type: ignore[arg-type]
        budget_s=page_budget_s,
    )


class SerpAPISearch(SearchBackendBase):
    """Google Lens image search and Google text search through SerpAPI.

    Args:
        base_url: SerpAPI's root (tests point it at a local server).
        api_key_env: the variable (or secrets-file entry) holding the key.
        max_results: results per call (the paper uses 5).
        price_per_search: dollars per successful SerpAPI call.
        image_host: ``{"base_url": ..., "directory": ...}`` to publish images that have no ``image_url``.
        missing_thumbnail: ``"keep"`` a visual match whose thumbnail fails (title only), or ``"skip"`` it
            and take the next match.
        text_mode: ``"summaries"`` (read and summarise pages) or ``"snippets"`` (Google's snippets only).
        reader: ``{"kind": "local"}`` (trafilatura) or ``{"kind": "jina", "endpoint": ...}``.
        summarizer: ChatSummarizer options (``base_url``, ``model``, ``api_key_env``, prices...) or ``None``
            for extractive summaries.
        page_workers: pages read at once.
        page_budget_s: seconds after which failed pages are no longer replaced by later results.
        num: organic results asked for (spares to replace pages that fail).
        fetch: :class:`FetchPolicy` options for thumbnails and pages (the untrusted web).
        api_fetch: :class:`FetchPolicy` options for SerpAPI itself (its host:port is always allowed).
    """

    name = "serpapi"

    def __init__(
        self,
        *,
        base_url: str = "https://serpapi.com",
        api_key_env: str = "SERPAPI_API_KEY",
        secrets_file: str | None = None,
        max_results: int = 5,
        price_per_search: float = SERPAPI_PRICE_PER_SEARCH,
        hl: str | None = "en",
        gl: str | None = None,
        image_host: Mapping[str, str] | None = None,
        missing_thumbnail: Literal["keep", "skip"] = "keep",
        max_thumbnail_pixels: int = MAX_THUMBNAIL_PIXELS,
        thumbnail_workers: int = 5,
        text_mode: str = "summaries",
        reader: Mapping[str, Any] | None = None,
        summarizer: Mapping[str, Any] | None = None,
        page_workers: int = 5,
        page_budget_s: float = 60.0,
        num: int = 10,
        fetch: Mapping[str, Any] | None = None,
        api_fetch: Mapping[str, Any] | None = None,
    ) -> None:
        if missing_thumbnail not in ("keep", "skip"):
            raise ConfigError(f"missing_thumbnail must be 'keep' or 'skip', got {missing_thumbnail!r}")
        if max_results < 1 or num < max_results or price_per_search < 0:
            raise ConfigError(
                f"need max_results >= 1, num >= max_results and price_per_search >= 0; got {max_results}, {num}, "
                f"{price_per_search}"
            )
        self.endpoint = base_url.rstrip("/") + "/search.json"
        self.api_policy = FetchPolicy.from_options(api_fetch, total_timeout=60).allowing(self.endpoint)
        self.web_policy = FetchPolicy.from_options(fetch)
        self._key = get_secret(api_key_env, secrets_file=secrets_file, purpose="SerpAPI")
        self.max_results, self.price_per_search, self.num = max_results, price_per_search, num
        self.locale = {k: v for k, v in (("hl", hl), ("gl", gl)) if v}
        if image_host is not None and not (
            isinstance(image_host, Mapping) and set(image_host) == {"base_url", "directory"}
        ):
            raise ConfigError("image_host must be {'base_url': 'https://your.host/imgs', 'directory': '/served/dir'}")
        self.image_host = ImageHost(**image_host) if image_host is not None else None
        self.missing_thumbnail = missing_thumbnail
        self.max_thumbnail_pixels = max_thumbnail_pixels
        self.thumbnail_workers = thumbnail_workers
        # What the cache keys on and the budget reads (see search/cache.py, search/resilience.py); no secrets.
        self.price_per_call = price_per_search
        self.question_aware = text_mode == "summaries"
        self.cache_options = text_cache_options(
            base_url,
            max_results,
            text_mode,
            reader,
            summarizer,
            hl=hl,
            gl=gl,
            missing_thumbnail=missing_thumbnail,
            num=num,
        )
        self.pipeline = make_text_pipeline(
            max_results=max_results,
            text_mode=text_mode,
            reader=reader,
            summarizer=summarizer,
            page_workers=page_workers,
            web_policy=self.web_policy,
            page_budget_s=page_budget_s,
        )

    # -- the API call ------------------------------------------------------------------------------
    def _call(self, engine: str, params: Mapping[str, Any]) -> dict[str, Any]:
        what = f"SerpAPI ({engine})"
        result: FetchResult = fetch(
            self.endpoint,
            policy=self.api_policy,
            params={"engine": engine, **params, **self.locale, "api_key": self._key},
            what=what,
        )
        if not 200 <= result.status < 300:
            detail = None
            try:
                body = result.json(what=what)
                detail = body.get("error") if isinstance(body, dict) else None
            except SearchBackendError:
                detail = result.text()[:200]
            check_status(result, what, detail=detail)
        data = result.json(what=what)
        if not isinstance(data, dict):
            raise SearchBackendError(f"{what} returned JSON {type(data).__name__}, expected an object")
        error = data.get("error")
        if error and _NO_RESULTS not in str(error):
            raise SearchBackendError(f"{what} reported an error: {redact(str(error))[:300]}")
        return data

    # -- image search ------------------------------------------------------------------------------
    def image_url(self, request: ImageSearchRequest) -> str:
        """The public URL Lens will fetch: the dataset's, else one published by ``image_host``."""
        if request.image_url:
            return request.image_url
        if self.image_host is not None:
            return self.image_host.url_for(request.image)
        raise ConfigError(
            f"Google Lens needs a public URL of the image, and example {request.example_id!r} has no image_url. "
            "Give the dataset an 'image_url' column, or publish images with search_options={'image_host': "
            "{'base_url': 'https://your.host/imgs', 'directory': '/dir/served/there'}}."
        )

    def image_search(self, request: ImageSearchRequest) -> SearchResponse:
        data = self._call("google_lens", {"url": self.image_url(request)})
        matches = data.get("visual_matches") or []
        candidates = [
            m
            for m in matches
            if isinstance(m, dict) and isinstance(m.get("title"), str) and isinstance(m.get("link"), str)
        ]

        def work(match: dict[str, Any]) -> SearchResult:
            thumbnail = None
            url = match.get("thumbnail")
            try:
                if not isinstance(url, str):
                    raise SearchBackendError("the match has no thumbnail URL")
                thumbnail = self._thumbnail(url)
            except SearchBackendError as exc:
                if self.missing_thumbnail == "skip":
                    raise
                logger.debug("thumbnail dropped: %s", redact(str(exc)))
            return SearchResult(title=match["title"], url=match["link"], thumbnail=thumbnail)

        done, _failed = fill_parallel(candidates, work, self.max_results, workers=self.thumbnail_workers)
        results = tuple(result for _, result in done)
        return SearchResponse("image_search", results, cost_usd=self.price_per_search)

    def _thumbnail(self, url: str) -> Image.Image:
        if url.startswith("data:image/"):
            # Lens inlines some thumbnails as base64 data URIs
            header, _, payload = url.partition(",")
            if ";base64" not in header or len(payload) > self.web_policy.max_bytes * 4 // 3 + 4:
                raise SearchBackendError("unsupported or oversized data: thumbnail")
            try:
                data = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise SearchBackendError(f"corrupt base64 thumbnail ({exc})") from exc
            return decode_image(data, max_pixels=self.max_thumbnail_pixels, what="data: thumbnail")
        return fetch_image(url, policy=self.web_policy, max_pixels=self.max_thumbnail_pixels)

    # -- text search -------------------------------------------------------------------------------
    def text_search(self, request: TextSearchRequest) -> SearchResponse:
        data = self._call("google", {"q": request.query, "num": self.num})
        candidates = [
            Candidate(r["title"], r["link"], r.get("snippet") if isinstance(r.get("snippet"), str) else "")
            for r in data.get("organic_results") or []
            if isinstance(r, dict) and isinstance(r.get("title"), str) and isinstance(r.get("link"), str)
        ]
        try:
            results, cost = self.pipeline.run(candidates, query=request.query, question=request.question)
        except SearchTransientError as exc:
            # SerpAPI has billed the search already: report the failure as a value that carries the cost
            return SearchResponse("text_search", error=f"{type(exc).__name__}: {exc}", cost_usd=self.price_per_search)
        return SearchResponse("text_search", results, cost_usd=self.price_per_search + cost)
