"""The search backend interface: requests, results, responses, and the safe way to call a backend.

A backend implements ``image_search(ImageSearchRequest)`` and ``text_search(TextSearchRequest)``
returning a :class:`SearchResponse`; or their ``async`` twins ``aimage_search`` / ``atext_search``.
Subclassing :class:`SearchBackendBase` gives the missing half for free (sync ↔ async).

Failures are values: a backend reports a failure by returning ``SearchResponse(error=...)``, and
:func:`call_search` turns anything else that goes wrong — an exception, a wrong return type, a timeout —
into such a response, so the environment never sees an exception from a backend.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable

from PIL import Image

__all__ = [
    "AsyncSearchBackend",
    "ImageSearchRequest",
    "SearchBackend",
    "SearchBackendBase",
    "SearchResponse",
    "SearchResult",
    "TextSearchRequest",
    "ToolName",
    "acall_search",
    "call_search",
]

ToolName = Literal["image_search", "text_search"]


@dataclass(frozen=True)
class ImageSearchRequest:
    """Reverse image search of the question's image.

    Attributes:
        image: the question's image (RGB).
        image_url: a public URL of the same image, when the dataset has one (live engines need it).
        example_id: the dataset row's id (caches keyed by question, e.g. FVQA's released caches).
        rng_seed: a seed the environment draws from its own seeded RNG, for backends that randomise
            (search-quality knobs); same env seed ⇒ same seed here. ``None``: the backend's own choice.
    """

    image: Image.Image
    image_url: str | None = None
    example_id: str | None = None
    #: not part of equality, so caches keyed by request still hit
    rng_seed: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class TextSearchRequest:
    """Text search. ``question`` lets a backend write question-aware summaries (as the paper does);
    ``rng_seed`` as in :class:`ImageSearchRequest`."""

    query: str
    question: str | None = None
    example_id: str | None = None
    #: not part of equality, so caches keyed by request still hit
    rng_seed: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class SearchResult:
    """One web result: image search fills ``thumbnail``, text search fills ``summary``."""

    title: str
    url: str
    thumbnail: Image.Image | None = None
    summary: str | None = None


@dataclass(frozen=True)
class SearchResponse:
    """What one search call returned. ``error`` is ``None`` on success (``results`` may be empty)."""

    tool: ToolName
    results: tuple[SearchResult, ...] = ()
    error: str | None = None
    #: wall-clock seconds the call took (set by :func:`call_search`; not part of equality)
    latency_s: float = field(default=0.0, compare=False)
    #: what the call cost in US dollars (0 for offline backends and for cache hits; not part of equality)
    cost_usd: float = field(default=0.0, compare=False)
    #: True when a cache answered instead of the backend (not part of equality)
    cached: bool = field(default=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None


@runtime_checkable
class SearchBackend(Protocol):
    """A synchronous search backend."""

    name: str

    def image_search(self, request: ImageSearchRequest) -> SearchResponse: ...

    def text_search(self, request: TextSearchRequest) -> SearchResponse: ...


@runtime_checkable
class AsyncSearchBackend(Protocol):
    """An asynchronous search backend."""

    name: str

    async def aimage_search(self, request: ImageSearchRequest) -> SearchResponse: ...

    async def atext_search(self, request: TextSearchRequest) -> SearchResponse: ...


class SearchBackendBase:
    """Convenience base: override the sync *or* the async methods; the other pair is derived.

    A backend that supports only one tool leaves the other alone and callers get a clear error
    response ("... does not support image search").
    """

    name = "base"

    def image_search(self, request: ImageSearchRequest) -> SearchResponse:
        if type(self).aimage_search is not SearchBackendBase.aimage_search:
            return _run_coroutine(self.aimage_search(request))
        return SearchResponse("image_search", error=f"the {self.name!r} backend does not support image search")

    def text_search(self, request: TextSearchRequest) -> SearchResponse:
        if type(self).atext_search is not SearchBackendBase.atext_search:
            return _run_coroutine(self.atext_search(request))
        return SearchResponse("text_search", error=f"the {self.name!r} backend does not support text search")

    async def aimage_search(self, request: ImageSearchRequest) -> SearchResponse:
        return await asyncio.to_thread(self.image_search, request)

    async def atext_search(self, request: TextSearchRequest) -> SearchResponse:
        return await asyncio.to_thread(self.text_search, request)

    def close(self) -> None:
        """Release connections or files (nothing by default)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _run_coroutine(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, even when an event loop is already running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _method(backend: Any, tool: ToolName, asynchronous: bool) -> Any:
    name = ("a" if asynchronous else "") + tool
    return getattr(backend, name, None)


def _checked(tool: ToolName, backend: Any, response: Any, started: float) -> SearchResponse:
    latency = time.perf_counter() - started
    if not isinstance(response, SearchResponse):
        return SearchResponse(
            tool,
            error=f"backend {getattr(backend, 'name', type(backend).__name__)!r} returned "
            f"{type(response).__name__}, expected a SearchResponse",
            latency_s=latency,
        )
    if response.tool != tool or not all(isinstance(r, SearchResult) for r in response.results):
        return SearchResponse(
            tool, error="backend returned a malformed SearchResponse (wrong tool or result type)", latency_s=latency
        )
    return replace(response, latency_s=latency)


def _failure(tool: ToolName, exc: BaseException, started: float) -> SearchResponse:
    message = str(exc) or "no message"
    return SearchResponse(tool, error=f"{type(exc).__name__}: {message}", latency_s=time.perf_counter() - started)


def call_search(
    backend: Any,
    tool: ToolName,
    request: ImageSearchRequest | TextSearchRequest,
    *,
    timeout: float | None = None,
) -> SearchResponse:
    """Call ``backend`` for ``tool`` and always return a :class:`SearchResponse`.

    Exceptions become error responses. With ``timeout`` (seconds) the call runs in a daemon worker
    thread and a call that overruns returns an error response at once; the abandoned call finishes in
    the background (threads cannot be killed), so backends should also enforce their own timeouts.
    A backend with only async methods is run on a private event loop.
    """
    started = time.perf_counter()
    sync = _method(backend, tool, asynchronous=False)
    if sync is None:
        coroutine_fn = _method(backend, tool, asynchronous=True)
        if coroutine_fn is None:
            return SearchResponse(tool, error=f"backend {backend!r} has no {tool} method")
        sync = lambda req: _run_coroutine(coroutine_fn(req))  # noqa: E731
    if timeout is None:
        try:
            return _checked(tool, backend, sync(request), started)
        except Exception as exc:
            return _failure(tool, exc, started)

    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["response"] = sync(request)
        except BaseException as exc:
            box["error"] = exc

    worker = threading.Thread(target=work, name=f"mmsearch-{tool}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        return SearchResponse(tool, error=f"timed out after {timeout:g} s", latency_s=time.perf_counter() - started)
    if "error" in box:
        return _failure(tool, box["error"], started)
    return _checked(tool, backend, box.get("response"), started)


async def acall_search(
    backend: Any,
    tool: ToolName,
    request: ImageSearchRequest | TextSearchRequest,
    *,
    timeout: float | None = None,
) -> SearchResponse:
    """The async twin of :func:`call_search`; sync-only backends run in a worker thread."""
    started = time.perf_counter()
    coroutine_fn = _method(backend, tool, asynchronous=True)
    try:
        if coroutine_fn is not None:
            awaitable = coroutine_fn(request)
        else:
            sync = _method(backend, tool, asynchronous=False)
            if sync is None:
                return SearchResponse(tool, error=f"backend {backend!r} has no {tool} method")
            awaitable = asyncio.to_thread(sync, request)
        response = await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        return SearchResponse(tool, error=f"timed out after {timeout:g} s", latency_s=time.perf_counter() - started)
    except Exception as exc:
        return _failure(tool, exc, started)
    return _checked(tool, backend, response, started)
