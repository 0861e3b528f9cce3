"""SearXNG text search: the free, self-hosted live option (``GET /search?q=...&format=json``).

SearXNG answers JSON only when ``search.formats`` in its ``settings.yml`` includes ``json``; otherwise it
replies HTTP 403, and the error says so. Results (``url``, ``title``, ``content``) go through the same
reader → summariser pipeline as SerpAPI Google, or straight out as snippets (``text_mode="snippets"``).
SearXNG has no reverse image search: image search calls return the "does not support" tool error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmsearch_env.errors import ConfigError, SearchBackendError, SearchTransientError
from mmsearch_env.search.base import SearchBackendBase, SearchResponse, TextSearchRequest
from mmsearch_env.search.pipeline import Candidate
from mmsearch_env.search.serpapi import make_text_pipeline, text_cache_options
from mmsearch_env.web.http import FetchPolicy, fetch
from mmsearch_env.web.status import check_status

__all__ = ["SearxngSearch"]


class SearxngSearch(SearchBackendBase):
    """Text search through a SearXNG instance's JSON API.

    Args:
        base_url: the instance root, e.g. ``http://127.0.0.1:8888`` (required: there is no public default;
            its host:port is allowed by the SSRF guard, since you chose it).
        categories, language: passed to SearXNG when set.
        price_per_search: dollars per call (0: self-hosted).
        text_mode, reader, summarizer, page_workers, page_budget_s, fetch: as for :class:`~mmsearch_env.search.serpapi.SerpAPISearch`.
        api_fetch: :class:`FetchPolicy` options for the instance itself.
    """

    name = "searxng"

    def __init__(
        self,
        *,
        base_url: str | None = None,
        max_results: int = 5,
        categories: str | None = "general",
        language: str | None = None,
        price_per_search: float = 0.0,
        text_mode: str = "summaries",
        reader: Mapping[str, Any] | None = None,
        summarizer: Mapping[str, Any] | None = None,
        page_workers: int = 5,
        page_budget_s: float = 60.0,
        fetch: Mapping[str, Any] | None = None,
        api_fetch: Mapping[str, Any] | None = None,
    ) -> None:
        if not base_url:
            raise ConfigError(
                "search 'searxng' needs the URL of your instance: search_options={'base_url': 'http://127.0.0.1:8888'}"
            )
        if price_per_search < 0:
            raise ConfigError(f"price_per_search must be >= 0, got {price_per_search}")
        self.endpoint = base_url.rstrip("/") + "/search"
        self.api_policy = FetchPolicy.from_options(api_fetch, total_timeout=30).allowing(self.endpoint)
        self.web_policy = FetchPolicy.from_options(fetch)
        self.params = {k: v for k, v in (("categories", categories), ("language", language)) if v}
        self.price_per_search = price_per_search
        # What the cache keys on and the budget reads (see search/cache.py, search/resilience.py); no secrets.
        self.price_per_call = price_per_search
        self.question_aware = text_mode == "summaries"
        self.cache_options = text_cache_options(
            base_url, max_results, text_mode, reader, summarizer, categories=categories, language=language
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

    def text_search(self, request: TextSearchRequest) -> SearchResponse:
        what = "SearXNG"
        result = fetch(
            self.endpoint,
            policy=self.api_policy,
            params={"q": request.query, "format": "json", **self.params},
            what=what,
        )
        if result.status == 403:
            raise SearchBackendError(
                f"{what} refused format=json (HTTP 403): enable it in the instance's settings.yml "
                "(search: formats: [html, json]) and restart SearXNG"
            )
        check_status(result, what, detail=result.text()[:200] if result.status >= 400 else None)
        data = result.json(what=what)
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            raise SearchBackendError(f"{what} returned JSON without a 'results' list")
        candidates = [
            Candidate(r["title"], r["url"], r.get("content") if isinstance(r.get("content"), str) else "")
            for r in data["results"]
            if isinstance(r, dict) and isinstance(r.get("title"), str) and isinstance(r.get("url"), str)
        ]
        try:
            results, cost = self.pipeline.run(candidates, query=request.query, question=request.question)
        except SearchTransientError as exc:
            return SearchResponse("text_search", error=f"{type(exc).__name__}: {exc}", cost_usd=self.price_per_search)
        return SearchResponse("text_search", results, cost_usd=self.price_per_search + cost)
