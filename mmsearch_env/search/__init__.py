"""Search backends behind one interface (the contract: :mod:`mmsearch_env.search.base`).

:func:`make_search` builds a backend from a name in :data:`SEARCH_BACKENDS` and JSON-able options, or
checks a backend object and returns it with the whole contract (:func:`~mmsearch_env.search.base.as_backend`).
"""

from __future__ import annotations

from typing import Any

from mmsearch_env.errors import ConfigError, did_you_mean
from mmsearch_env.search.base import (
    MAX_RESULTS,
    AsyncSearchBackend,
    ImageSearchRequest,
    SearchBackend,
    SearchBackendBase,
    SearchResponse,
    SearchResult,
    SearchWrapper,
    TextSearchRequest,
    ToolName,
    as_backend,
)
from mmsearch_env.search.cache import CachedSearch
from mmsearch_env.search.calls import acall_search, call_search, sanitize_response
from mmsearch_env.search.faults import FaultySearch
from mmsearch_env.search.fvqa_cache import FvqaImageSearch
from mmsearch_env.search.local import LocalSearch, Page, load_pages
from mmsearch_env.search.resilience import ResilientSearch
from mmsearch_env.search.sample_web import sample_pages
from mmsearch_env.search.searxng import SearxngSearch
from mmsearch_env.search.serpapi import SerpAPISearch
from mmsearch_env.search.service_client import ServiceSearch
from mmsearch_env.search.static import DisabledSearch, StaticSearch

__all__ = [
    "MAX_RESULTS",
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
    "SearchWrapper",
    "StaticSearch",
    "TextSearchRequest",
    "ToolName",
    "acall_search",
    "as_backend",
    "call_search",
    "load_pages",
    "make_search",
    "sanitize_response",
]


def _sample(**options: Any) -> LocalSearch:
    return LocalSearch(sample_pages(), **options)


def _local(pages: str, **options: Any) -> LocalSearch:
    """``search="local", search_options={"pages": "pages.jsonl", ...}``: LocalSearch over a JSONL file."""
    if not isinstance(pages, str):
        raise ConfigError("search 'local' needs search_options={'pages': 'path/to/pages.jsonl'}")
    return LocalSearch(load_pages(pages), **options)


def _corpus(**options: Any) -> SearchBackendBase:
    from mmsearch_env.search.corpus import CorpusSearch  # loads onnxruntime and bm25s: only when asked for

    return CorpusSearch(**options)


def _cached(backend: Any = "corpus", backend_options: dict[str, Any] | None = None, **options: Any) -> CachedSearch:
    """``search="cached"``: ``{"backend": NAME, "backend_options": {...}, "cache": PATH|URL, "mode": ...}``."""
    inner = None if backend is None else make_search(backend, backend_options)
    if isinstance(backend, str):  # key by the registry name the user chose ("sample" and "local" differ)
        options.setdefault("backend_name", backend)
    return CachedSearch(inner, options=backend_options, **options)


def _resilient(
    backend: Any = "corpus", backend_options: dict[str, Any] | None = None, **options: Any
) -> ResilientSearch:
    """``search="resilient"``: ``{"backend": ..., "backend_options": ..., **ResilienceConfig fields}``."""
    return ResilientSearch(make_search(backend, backend_options), **options)


def _faults(backend: Any = "corpus", backend_options: dict[str, Any] | None = None, **options: Any) -> FaultySearch:
    """``search="faults"``: ``{"backend": ..., "backend_options": ..., **FaultConfig fields}``."""
    return FaultySearch(make_search(backend, backend_options), **options)


def _fvqa(cache: Any, text: Any = None, text_options: dict[str, Any] | None = None) -> FvqaImageSearch:
    """``search="fvqa"``: ``{"cache": PATH|URL, "text": NAME, "text_options": {...}}``."""
    return FvqaImageSearch(cache, text=None if text is None else make_search(text, text_options))


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
    "service": ServiceSearch,
    "serpapi": SerpAPISearch,
    "searxng": SearxngSearch,
}


def make_search(search: Any = "corpus", options: dict[str, Any] | None = None) -> SearchBackendBase:
    """Build a backend from a name and options, or check a backend object; either way with the whole contract.

    An object that only duck-types (``name`` and search methods, no base class) comes back wrapped by
    :func:`~mmsearch_env.search.base.as_backend`; a :class:`SearchBackendBase` comes back as itself.

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
    try:
        return as_backend(search)
    except TypeError as exc:
        raise ConfigError(
            f"search must be a backend name {sorted(SEARCH_BACKENDS)} or an object with image_search()/"
            f"text_search() (or aimage_search()/atext_search()) methods and a name; got {type(search).__name__}."
        ) from exc
