"""The one safe way to call a backend: :func:`call_search` / :func:`acall_search`, and the check they apply.

Whatever a backend does — returns a malformed answer, raises (even an exception whose message cannot be
printed), hangs past ``timeout`` — the caller gets a valid :class:`~mmsearch_env.search.base.SearchResponse`
(see :func:`sanitize_response`). Wrappers that act on the *kind* of failure (retries, caches) pass
``raise_errors=True`` and still get the checked answer when there is one.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from PIL import Image

from mmsearch_env.errors import SearchTransientError
from mmsearch_env.search.base import (
    MAX_RESULTS,
    ImageSearchRequest,
    SearchResponse,
    SearchResult,
    TextSearchRequest,
    ToolName,
    is_cost,
    run_coroutine,
    safe_text,
)
from mmsearch_env.text import valid_unicode

__all__ = ["acall_search", "call_search", "sanitize_response"]


def _result_problem(index: int, result: Any) -> str | None:
    if not isinstance(result, SearchResult):
        return "wrong tool or result type"
    for name, value, allowed in (
        ("title", result.title, (str,)),
        ("url", result.url, (str,)),
        ("summary", result.summary, (str, type(None))),
        ("thumbnail", result.thumbnail, (Image.Image, type(None))),
    ):
        if not isinstance(value, allowed):
            expected = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
            return f"result {index} has {name} of type {type(value).__name__}, expected {expected}"
    return None


def _clean_result(result: SearchResult) -> SearchResult:
    summary = None if result.summary is None else valid_unicode(result.summary)
    return SearchResult(valid_unicode(result.title), valid_unicode(result.url), result.thumbnail, summary)


def sanitize_response(tool: ToolName, response: Any, *, backend_name: str = "backend") -> SearchResponse:
    """The one check every backend answer passes: a valid :class:`SearchResponse` for ``tool``, or an error one.

    * not a ``SearchResponse``, the wrong ``tool``, ``results`` not a sequence of :class:`SearchResult`,
      a title/url that is not ``str``, a summary that is not ``str``/``None``, a thumbnail that is not a
      PIL image/``None``, an ``error`` that is not ``str``/``None``, a ``cost_usd`` that is not a finite
      number ``>= 0`` → an error response naming the problem (the cost is kept when it is valid);
    * more than :data:`MAX_RESULTS` results → the first :data:`MAX_RESULTS`;
    * lone surrogates in any text → U+FFFD (:func:`valid_unicode`);
    * an error response carries no results.

    ``latency_s`` is kept; never raises.
    """
    try:
        return _sanitize(tool, response, backend_name)
    except Exception as exc:  # a response object whose own attributes raise (properties, __getattribute__)
        return SearchResponse(
            tool, error=f"backend returned a SearchResponse that could not be checked ({type(exc).__name__})"
        )


def _sanitize(tool: ToolName, response: Any, backend_name: str) -> SearchResponse:
    if not isinstance(response, SearchResponse):
        return SearchResponse(
            tool, error=f"backend {backend_name!r} returned {type(response).__name__}, expected a SearchResponse"
        )
    cost, error, results = response.cost_usd, response.error, response.results
    problem = None
    if response.tool != tool:
        problem = "wrong tool or result type"
    elif error is not None and not isinstance(error, str):
        problem = f"error of type {type(error).__name__}, expected str or None"
    elif not isinstance(results, (tuple, list)):
        problem = f"results of type {type(results).__name__}, expected a tuple of SearchResult"
    elif not is_cost(cost):
        shown = safe_text(lambda: repr(cost)[:40]) if isinstance(cost, (str, int, float)) else type(cost).__name__
        problem = f"cost_usd {shown}, expected a finite number of dollars >= 0"
    else:
        problem = next(filter(None, (_result_problem(i, r) for i, r in enumerate(results))), None)
    latency = response.latency_s if is_cost(response.latency_s) else 0.0
    cost = float(cost) if is_cost(cost) else 0.0
    if problem is not None:
        return SearchResponse(
            tool, error=f"backend returned a malformed SearchResponse ({problem})", latency_s=latency, cost_usd=cost
        )
    if error is not None:
        return SearchResponse(tool, error=valid_unicode(error), latency_s=latency, cost_usd=cost)
    return SearchResponse(
        tool,
        tuple(_clean_result(r) for r in results[:MAX_RESULTS]),
        latency_s=latency,
        cost_usd=cost,
        cached=response.cached is True,
    )


def _backend_name(backend: Any) -> str:
    return valid_unicode(safe_text(lambda: str(getattr(backend, "name", None) or type(backend).__name__)))


def _method(backend: Any, tool: ToolName, asynchronous: bool) -> Any:
    method = getattr(backend, ("a" if asynchronous else "") + tool, None)
    return method if callable(method) else None


def _checked(tool: ToolName, backend: Any, response: Any, started: float) -> SearchResponse:
    checked = sanitize_response(tool, response, backend_name=_backend_name(backend))
    return _with_latency(checked, started)


def _with_latency(response: SearchResponse, started: float) -> SearchResponse:
    return SearchResponse(
        response.tool,
        response.results,
        response.error,
        latency_s=time.perf_counter() - started,
        cost_usd=response.cost_usd,
        cached=response.cached,
    )


def _failure(tool: ToolName, exc: BaseException, started: float) -> SearchResponse:
    message = safe_text(lambda: str(exc), "<the exception's message could not be read>") or "no message"
    error = valid_unicode(f"{type(exc).__name__}: {message}")
    return _with_latency(SearchResponse(tool, error=error), started)


def _timed_out(tool: ToolName, timeout: float, started: float, raise_errors: bool) -> SearchResponse:
    if raise_errors:
        raise SearchTransientError(f"{tool} timed out after {timeout:g} s")
    return _with_latency(SearchResponse(tool, error=f"timed out after {timeout:g} s"), started)


def call_search(
    backend: Any,
    tool: ToolName,
    request: ImageSearchRequest | TextSearchRequest,
    *,
    timeout: float | None = None,
    raise_errors: bool = False,
) -> SearchResponse:
    """Call ``backend`` for ``tool`` and return a valid :class:`SearchResponse` (see :func:`sanitize_response`).

    Exceptions become error responses. With ``timeout`` (seconds) the call runs in a daemon worker
    thread and a call that overruns returns an error response at once; the abandoned call finishes in
    the background (threads cannot be killed), so backends should also enforce their own timeouts.
    A backend with only async methods is run on a private event loop.

    ``raise_errors=True`` is for wrappers that act on the kind of failure (retries, caches): the
    backend's exceptions propagate unchanged and a timeout raises
    :class:`~mmsearch_env.errors.SearchTransientError`; the return value is still checked.
    """
    started = time.perf_counter()
    sync = _method(backend, tool, asynchronous=False)
    if sync is None:
        coroutine_fn = _method(backend, tool, asynchronous=True)
        if coroutine_fn is None:
            return SearchResponse(tool, error=f"backend {_backend_name(backend)!r} has no {tool} method")
        sync = lambda req: run_coroutine(coroutine_fn(req))  # noqa: E731
    if timeout is None:
        try:
            response = sync(request)
        except Exception as exc:
            if raise_errors:
                raise
            return _failure(tool, exc, started)
        return _checked(tool, backend, response, started)

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
        return _timed_out(tool, timeout, started, raise_errors)
    if "error" in box:
        if raise_errors:
            raise box["error"]
        return _failure(tool, box["error"], started)
    return _checked(tool, backend, box.get("response"), started)


async def acall_search(
    backend: Any,
    tool: ToolName,
    request: ImageSearchRequest | TextSearchRequest,
    *,
    timeout: float | None = None,
    raise_errors: bool = False,
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
                return SearchResponse(tool, error=f"backend {_backend_name(backend)!r} has no {tool} method")
            awaitable = asyncio.to_thread(sync, request)
        if timeout is None:
            response = await awaitable
        else:
            try:
                response = await asyncio.wait_for(awaitable, timeout)
            except asyncio.TimeoutError:
                return _timed_out(tool, timeout, started, raise_errors)
    except Exception as exc:
        if raise_errors:
            raise
        return _failure(tool, exc, started)
    return _checked(tool, backend, response, started)
