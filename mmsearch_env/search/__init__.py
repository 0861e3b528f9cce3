"""Search backends behind one interface (see :mod:`mmsearch_env.search.base`)."""

from __future__ import annotations

from typing import Any

from mmsearch_env.errors import ConfigError, did_you_mean
from mmsearch_env.search.base import (
    AsyncSearchBackend,
    ImageSearchRequest,
    SearchBackend,
    SearchBackendBase,
    SearchResponse,
    SearchResult,
    TextSearchRequest,
    ToolName,
    acall_search,
    call_search,
)
from mmsearch_env.search.local import LocalSearch, Page, load_pages
from mmsearch_env.search.static import DisabledSearch, StaticSearch

__all__ = [
    "SEARCH_BACKENDS",
    "AsyncSearchBackend",
    "DisabledSearch",
    "ImageSearchRequest",
    "LocalSearch",
    "Page",
    "SearchBackend",
    "SearchBackendBase",
    "SearchResponse",
    "SearchResult",
    "StaticSearch",
    "TextSearchRequest",
    "ToolName",
    "acall_search",
    "call_search",
    "load_pages",
    "make_search",
]


def _sample(**options: Any) -> LocalSearch:
    from mmsearch_env.data.sample import sample_pages

    return LocalSearch(sample_pages(), **options)


def _local(pages: str, **options: Any) -> LocalSearch:
    """``search="local", search_options={"pages": "pages.jsonl", ...}``: LocalSearch over a JSONL file."""
    if not isinstance(pages, str):
        raise ConfigError("search 'local' needs search_options={'pages': 'path/to/pages.jsonl'}")
    return LocalSearch(load_pages(pages), **options)


def _corpus(**options: Any) -> Any:
    from mmsearch_env.search.corpus import CorpusSearch  # loads onnxruntime and bm25s: keep it lazy

    return CorpusSearch(**options)


def _serpapi(**options: Any) -> Any:
    """``search="serpapi"``: Google Lens + Google via SerpAPI (options: :class:`~.serpapi.SerpAPISearch`)."""
    from mmsearch_env.search.serpapi import SerpAPISearch

    return SerpAPISearch(**options)


def _searxng(**options: Any) -> Any:
    """``search="searxng"``: text search on your SearXNG instance (options: :class:`~.searxng.SearxngSearch`)."""
    from mmsearch_env.search.searxng import SearxngSearch

    return SearxngSearch(**options)


def _cached(backend: Any = "corpus", backend_options: dict[str, Any] | None = None, **options: Any) -> Any:
    """``search="cached"``: ``{"backend": NAME, "backend_options": {...}, "cache": PATH|URL, "mode": ...}``."""
    from mmsearch_env.search.cache import CachedSearch

    inner = None if backend is None else make_search(backend, backend_options)
    if isinstance(backend, str):  # key by the registry name the user chose ("sample" and "local" differ)
        options.setdefault("backend_name", backend)
    return CachedSearch(inner, options=backend_options, **options)


def _resilient(backend: Any = "corpus", backend_options: dict[str, Any] | None = None, **options: Any) -> Any:
    """``search="resilient"``: ``{"backend": ..., "backend_options": ..., **ResilienceConfig fields}``."""
    from mmsearch_env.search.resilience import ResilientSearch

    return ResilientSearch(make_search(backend, backend_options), **options)


def _faults(backend: Any = "corpus", backend_options: dict[str, Any] | None = None, **options: Any) -> Any:
    """``search="faults"``: ``{"backend": ..., "backend_options": ..., **FaultConfig fields}``."""
    from mmsearch_env.search.faults import FaultySearch

    return FaultySearch(make_search(backend, backend_options), **options)


def _fvqa(**options: Any) -> Any:
    from mmsearch_env.search.fvqa_cache import FvqaImageSearch

    return FvqaImageSearch(**options)


def _service(**options: Any) -> Any:
    from mmsearch_env.search.service import ServiceSearch

    return ServiceSearch(**options)


#: Backends constructible by name (``gym.make(..., search=NAME, search_options={...})``).
SEARCH_BACKENDS = {
    "corpus": _corpus,
    "sample": _sample,
    "local": _local,
    "disabled": DisabledSearch,
    "cached": _cached,
    "resilient": _resilient,
    "faults": _faults,
    "fvqa": _fvqa,
    "service": _service,
    "serpapi": _serpapi,
    "searxng": _searxng,
}


def make_search(search: Any = "corpus", options: dict[str, Any] | None = None) -> Any:
    """Build a backend from a name and options, or check and pass a backend object through.

    ``"disabled"`` ignores ``options``: switching search off (curation's and export's search-free envs,
    the search-utility reruns) must not fail because the config also carries the real backend's options.
    """
    if search == "disabled":
        options = None
    if isinstance(search, str):
        if search not in SEARCH_BACKENDS:
            raise ConfigError(
                f"unknown search backend {search!r}; expected one of {sorted(SEARCH_BACKENDS)} or a backend "
                "object with image_search()/text_search() methods." + did_you_mean(search, SEARCH_BACKENDS)
            )
        try:
            return SEARCH_BACKENDS[search](**(options or {}))
        except TypeError as exc:
            raise ConfigError(f"search_options {options!r} do not fit the {search!r} backend: {exc}") from exc
    if options:
        raise ConfigError(
            "search_options apply only when search is given by name; configure the backend object itself."
        )
    if isinstance(search, (SearchBackend, AsyncSearchBackend)):
        return search
    raise ConfigError(
        f"search must be a backend name {sorted(SEARCH_BACKENDS)} or an object with image_search()/"
        f"text_search() (or aimage_search()/atext_search()) methods and a name; got {type(search).__name__}."
    )
