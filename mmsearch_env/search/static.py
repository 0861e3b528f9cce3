"""Backends that return fixed answers: for tests, benchmarks and search-disabled evaluation."""

from __future__ import annotations

from collections.abc import Sequence

from mmsearch_env.search.base import (
    ImageSearchRequest,
    SearchBackendBase,
    SearchResponse,
    SearchResult,
    TextSearchRequest,
)

__all__ = ["DisabledSearch", "StaticSearch"]


class StaticSearch(SearchBackendBase):
    """Returns the same results for every call: an instant backend for overhead benchmarks and tests."""

    name = "static"

    def __init__(self, image_results: Sequence[SearchResult] = (), text_results: Sequence[SearchResult] = ()):
        self.image_results = tuple(image_results)
        self.text_results = tuple(text_results)
        self.calls = 0

    def image_search(self, request: ImageSearchRequest) -> SearchResponse:
        self.calls += 1
        return SearchResponse("image_search", self.image_results)

    def text_search(self, request: TextSearchRequest) -> SearchResponse:
        self.calls += 1
        return SearchResponse("text_search", self.text_results)


class DisabledSearch(SearchBackendBase):
    """Every call fails with "search is disabled": the model gets the tool-error turn.

    Used to measure what a policy does without search (the search-utility metrics).
    """

    name = "disabled"

    def image_search(self, request: ImageSearchRequest) -> SearchResponse:
        return SearchResponse("image_search", error="search is disabled in this environment")

    def text_search(self, request: TextSearchRequest) -> SearchResponse:
        return SearchResponse("text_search", error="search is disabled in this environment")
