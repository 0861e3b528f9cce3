"""The search backend contract: requests, results, responses, and the one safe way to call a backend.

What a backend must implement
    ``name`` (a short string) and ``image_search(ImageSearchRequest)`` / ``text_search(TextSearchRequest)``
    returning a :class:`SearchResponse` — or their ``async`` twins ``aimage_search`` / ``atext_search``.
    Subclass :class:`SearchBackendBase`: it derives the missing half (sync ↔ async), and a tool you leave
    out answers with a "does not support" error response.

What a backend may override (:class:`SearchBackendBase` has the defaults)
    ``price_per_call`` (dollars per uncached call, ``0.0``; budgets read it), ``cache_options`` (the
    configuration a cache keys on, ``None``: the options it was built with), ``question_aware`` (``False``;
    ``True`` when text results depend on the request's ``question``, so caches key on it),
    ``close()`` (release connections; no-op) and ``reset_episode(example_id)`` (a new episode starts; no-op).
    The :class:`SearchBackend` / :class:`AsyncSearchBackend` protocols list all of it.

Wrappers
    :class:`SearchWrapper` is to backends what ``gymnasium.Wrapper`` is to envs: it holds ``backend``,
    forwards every part of the contract to it, and a subclass overrides only what it changes
    (caching, retries, fault injection). ``unwrapped`` is the innermost backend.

Objects that only duck-type (``name`` and the search methods, no base class) go through :func:`as_backend`
once, which wraps them so that the rest of the code can rely on the whole contract.

Failures are values: a backend reports a failure by returning ``SearchResponse(error=...)``, and
:func:`~mmsearch_env.search.calls.call_search` / :func:`~mmsearch_env.search.calls.acall_search` turn
anything else that goes wrong — an exception, a timeout, a malformed return — into such a response.
Every response passes :func:`~mmsearch_env.search.calls.sanitize_response` on the way out: at most
:data:`MAX_RESULTS` results, only ``str`` text without lone surrogates (:func:`valid_unicode`), a finite cost.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from PIL import Image

from mmsearch_env.text import valid_unicode

__all__ = [
    "MAX_RESULTS",
    "TOOLS",
    "AsyncSearchBackend",
    "ImageSearchRequest",
    "SearchBackend",
    "SearchBackendBase",
    "SearchResponse",
    "SearchResult",
    "SearchWrapper",
    "TextSearchRequest",
    "ToolName",
    "as_backend",
    "is_cost",
    "run_coroutine",
    "safe_text",
]

ToolName = Literal["image_search", "text_search"]
TOOLS: tuple[ToolName, ...] = ("image_search", "text_search")
#: Results one search call may return (the paper shows the top 5); longer answers are clipped.
MAX_RESULTS = 5


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
    #: wall-clock seconds the call took (set by ``call_search``; not part of equality)
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
    """A synchronous search backend: the whole contract (see the module docstring)."""

    name: str
    price_per_call: float
    cache_options: dict[str, Any] | None
    question_aware: bool

    def image_search(self, request: ImageSearchRequest) -> SearchResponse: ...

    def text_search(self, request: TextSearchRequest) -> SearchResponse: ...

    def close(self) -> None: ...

    def reset_episode(self, example_id: str | None = None) -> None: ...


@runtime_checkable
class AsyncSearchBackend(Protocol):
    """An asynchronous search backend: the whole contract, with ``async`` search methods."""

    name: str
    price_per_call: float
    cache_options: dict[str, Any] | None
    question_aware: bool

    async def aimage_search(self, request: ImageSearchRequest) -> SearchResponse: ...

    async def atext_search(self, request: TextSearchRequest) -> SearchResponse: ...

    def close(self) -> None: ...

    def reset_episode(self, example_id: str | None = None) -> None: ...


class SearchBackendBase:
    """Base of every backend: override the sync *or* the async methods; the other pair is derived.

    A backend that supports only one tool leaves the other alone and callers get a clear error
    response ("... does not support image search"). The class attributes are the contract's defaults.
    """

    name: str = "base"
    #: dollars per uncached call (budgets reserve it before a call)
    price_per_call: float = 0.0
    #: what a cache keys on besides the name (``None``: the options the backend was built with)
    cache_options: dict[str, Any] | None = None
    #: text results depend on ``TextSearchRequest.question`` (caches then key on it)
    question_aware: bool = False

    def image_search(self, request: ImageSearchRequest) -> SearchResponse:
        if _overrides(self, "aimage_search"):
            return run_coroutine(self.aimage_search(request))
        return SearchResponse("image_search", error=f"the {self.name!r} backend does not support image search")

    def text_search(self, request: TextSearchRequest) -> SearchResponse:
        if _overrides(self, "atext_search"):
            return run_coroutine(self.atext_search(request))
        return SearchResponse("text_search", error=f"the {self.name!r} backend does not support text search")

    async def aimage_search(self, request: ImageSearchRequest) -> SearchResponse:
        return await asyncio.to_thread(self.image_search, request)

    async def atext_search(self, request: TextSearchRequest) -> SearchResponse:
        return await asyncio.to_thread(self.text_search, request)

    def close(self) -> None:
        """Release connections or files (nothing by default)."""

    def reset_episode(self, example_id: str | None = None) -> None:
        """A new episode of ``example_id`` starts (``None``: every episode); nothing by default."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _overrides(backend: SearchBackendBase, method: str) -> bool:
    """True when ``backend``'s class defines ``method`` itself rather than taking a base class's default."""
    return getattr(type(backend), method) not in (
        getattr(SearchBackendBase, method),
        getattr(SearchWrapper, method, None),
    )


class _Forwarded:
    """A contract attribute that a wrapper reads from its backend, unless it was set on the wrapper itself."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attribute = name

    def __get__(self, wrapper: Any, owner: type | None = None) -> Any:
        if wrapper is None:
            return self
        if self.attribute in wrapper.__dict__:
            return wrapper.__dict__[self.attribute]
        return getattr(wrapper.backend, self.attribute)

    def __set__(self, wrapper: Any, value: Any) -> None:
        wrapper.__dict__[self.attribute] = value


class SearchWrapper(SearchBackendBase):
    """A backend around another backend, forwarding the whole contract to it (like ``gymnasium.Wrapper``).

    ``name``, ``price_per_call``, ``cache_options`` and ``question_aware`` read the backend's unless set
    on the wrapper. Subclasses override what they change. A subclass that overrides only the sync search methods gets
    async twins that run them in a thread (and vice versa), so no call path skips the wrapper.
    """

    def __init__(self, backend: Any) -> None:
        self.backend: SearchBackendBase = as_backend(backend)

    @property
    def unwrapped(self) -> SearchBackendBase:
        """The innermost backend."""
        backend = self.backend
        while isinstance(backend, SearchWrapper):
            backend = backend.backend
        return backend

    name = _Forwarded()  # type: ignore[assignment]
    price_per_call = _Forwarded()  # type: ignore[assignment]
    cache_options = _Forwarded()  # type: ignore[assignment]
    question_aware = _Forwarded()  # type: ignore[assignment]

    def image_search(self, request: ImageSearchRequest) -> SearchResponse:
        if _overrides(self, "aimage_search"):
            return run_coroutine(self.aimage_search(request))
        return self.backend.image_search(request)

    def text_search(self, request: TextSearchRequest) -> SearchResponse:
        if _overrides(self, "atext_search"):
            return run_coroutine(self.atext_search(request))
        return self.backend.text_search(request)

    async def aimage_search(self, request: ImageSearchRequest) -> SearchResponse:
        if _overrides(self, "image_search"):
            return await asyncio.to_thread(self.image_search, request)
        return await self.backend.aimage_search(request)

    async def atext_search(self, request: TextSearchRequest) -> SearchResponse:
        if _overrides(self, "text_search"):
            return await asyncio.to_thread(self.text_search, request)
        return await self.backend.atext_search(request)

    def close(self) -> None:
        self.backend.close()

    def reset_episode(self, example_id: str | None = None) -> None:
        self.backend.reset_episode(example_id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.backend!r})"


class _DuckTyped(SearchBackendBase):
    """The contract around an object that only has ``name`` and search methods (see :func:`as_backend`)."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj
        self.name = valid_unicode(safe_text(lambda: str(getattr(obj, "name", type(obj).__name__))))
        price = getattr(obj, "price_per_call", 0.0)
        self.price_per_call = float(price) if is_cost(price) else 0.0
        options = getattr(obj, "cache_options", None)
        self.cache_options = dict(options) if isinstance(options, dict) else None
        self.question_aware = getattr(obj, "question_aware", False) is True

    def _unsupported(self, tool: ToolName) -> SearchResponse:
        return SearchResponse(tool, error=f"the {self.name!r} backend does not support {tool.replace('_', ' ')}")

    def _sync(self, tool: ToolName, request: Any) -> SearchResponse:
        method = getattr(self.obj, tool, None)
        if callable(method):
            return method(request)
        coroutine_fn = getattr(self.obj, "a" + tool, None)
        if callable(coroutine_fn):
            return run_coroutine(coroutine_fn(request))
        return self._unsupported(tool)

    async def _async(self, tool: ToolName, request: Any) -> SearchResponse:
        coroutine_fn = getattr(self.obj, "a" + tool, None)
        if callable(coroutine_fn):
            return await coroutine_fn(request)
        method = getattr(self.obj, tool, None)
        if callable(method):
            return await asyncio.to_thread(method, request)
        return self._unsupported(tool)

    def image_search(self, request: ImageSearchRequest) -> SearchResponse:
        return self._sync("image_search", request)

    def text_search(self, request: TextSearchRequest) -> SearchResponse:
        return self._sync("text_search", request)

    async def aimage_search(self, request: ImageSearchRequest) -> SearchResponse:
        return await self._async("image_search", request)

    async def atext_search(self, request: TextSearchRequest) -> SearchResponse:
        return await self._async("text_search", request)

    def close(self) -> None:
        closer = getattr(self.obj, "close", None)
        if callable(closer):
            closer()

    def reset_episode(self, example_id: str | None = None) -> None:
        hook = getattr(self.obj, "reset_episode", None)
        if callable(hook):
            hook(example_id)

    def __repr__(self) -> str:
        return f"as_backend({safe_text(lambda: repr(self.obj))})"


def as_backend(obj: Any) -> SearchBackendBase:
    """``obj`` with the whole backend contract: itself when it is a :class:`SearchBackendBase`, else wrapped.

    ``obj`` needs at least one of ``image_search``/``text_search``/``aimage_search``/``atext_search``;
    what it lacks of the rest (``close``, ``reset_episode``, ``price_per_call``...) gets the defaults.
    Raises :class:`TypeError` for an object with no search method at all.
    """
    if isinstance(obj, SearchBackendBase):
        return obj
    if not any(callable(getattr(obj, prefix + tool, None)) for tool in TOOLS for prefix in ("", "a")):
        raise TypeError(
            f"{type(obj).__name__} is not a search backend: it needs image_search()/text_search() (or "
            "aimage_search()/atext_search()) methods; subclass mmsearch_env.search.SearchBackendBase"
        )
    return _DuckTyped(obj)


# -- text and numbers from foreign objects --------------------------------------------------------------


def safe_text(make: Callable[[], str], fallback: str = "<unprintable>") -> str:
    """``make()`` for text about a foreign object, whose ``__str__``/``__repr__`` may itself raise."""
    try:
        return make()
    except Exception:
        return fallback


def is_cost(value: Any) -> bool:
    """True for a finite, non-negative ``int``/``float`` (not ``bool``): a valid dollar amount or duration."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value) and value >= 0
    except OverflowError:  # an int too large for a float
        return False


def run_coroutine(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, even when an event loop is already running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
