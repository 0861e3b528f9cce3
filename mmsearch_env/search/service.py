"""``mmsearch serve``: one HTTP search service (cache + rate limit + retries) shared by many trainers.

Server (FastAPI + uvicorn; ``pip install 'mmsearch-env[serve]'``)
    ``POST /v1/image_search`` ``{"image_png_b64", "image_url"?, "example_id"?}`` and
    ``POST /v1/text_search`` ``{"query", "question"?, "example_id"?}`` answer with the
    :func:`~mmsearch_env.search.codec.response_to_json` document (thumbnails base64 PNG) plus
    ``error_type`` (``null``, ``"transient"``, ``"rate_limited"`` or ``"backend"``) and ``retry_after``,
    so a client re-raises the same kind of error the backend raised. Both need
    ``Authorization: Bearer <token>``; a missing or wrong token is HTTP 401.
    ``GET /health`` (no token; says only that the service is up) and ``GET /metrics`` (token): calls, cache
    hits, failures and latency percentiles per tool.

    Request bodies are bounded before they are parsed: over ``max_body_bytes`` (default
    :data:`MAX_BODY_BYTES`, 16 MiB, ``--max-body-bytes``) is HTTP 413, JSON nested deeper than
    ``max_json_depth`` (default :data:`MAX_JSON_DEPTH`) or not JSON at all is HTTP 400, each with a message
    saying what was wrong. A legitimate body is one flat JSON object whose largest part is the question's
    image as base64 PNG: a 2-megapixel photo makes ~6 MB of PNG, ~8 MB of base64, so 16 MiB passes any
    image a question needs while a runaway client cannot make the service buffer hundreds of MB.

    Bound to 127.0.0.1 by default; another host needs ``--allow-remote`` (put TLS in front of it). The token
    comes from ``$MMSEARCH_SERVICE_TOKEN`` or is generated and printed once to stderr; it is never logged
    (uvicorn's access log has paths only).

Client
    :class:`ServiceSearch` (``search="service"``, ``search_options={"url": "http://127.0.0.1:8765"}``; the
    token from ``$MMSEARCH_SERVICE_TOKEN`` or ``token=``) speaks that protocol from the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import re
import secrets
import sys
import threading
import time
from collections import deque
from typing import Any

from mmsearch_env.errors import ConfigError, SearchBackendError, SearchRateLimitedError, SearchTransientError
from mmsearch_env.search import make_search
from mmsearch_env.search.base import TOOLS, SearchBackendBase, SearchResponse, SearchWrapper, ToolName
from mmsearch_env.search.cache import CachedSearch
from mmsearch_env.search.calls import call_search
from mmsearch_env.search.codec import request_from_json, response_to_json
from mmsearch_env.search.extras import require
from mmsearch_env.search.resilience import ResilientSearch
from mmsearch_env.search.service_client import TOKEN_ENV, ServiceSearch

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "TOKEN_ENV",
    "BackgroundServer",
    "ServiceMetrics",
    "ServiceSearch",
    "add_serve_arguments",
    "build_service_backend",
    "create_app",
    "json_depth_exceeds",
    "serve_main",
]

logger = logging.getLogger(__name__)

#: Largest request body the service reads (bytes): room for a base64 PNG of a multi-megapixel image.
MAX_BODY_BYTES = 16 * 2**20
#: Deepest JSON nesting a request may have; a real one is a flat object (depth 1).
MAX_JSON_DEPTH = 32
# A JSON string literal (escapes included), removed before counting brackets so text cannot count
# (unrolled: the plain alternation form is 25x slower on a multi-MB base64 string)
_JSON_STRING_RE = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
_NOT_BRACKETS = bytes(b for b in range(256) if b not in _BRACKETS)


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """True if the JSON text ``body`` nests arrays/objects deeper than ``limit`` (linear; stops early).

    >>> json_depth_exceeds(b'{"a": [[1]], "s": "[[[[["}', 3), json_depth_exceeds(b"[" * 5, 4)
    (False, True)
    """
    depth = 0
    for byte in _JSON_STRING_RE.sub(b"", body).translate(None, delete=_NOT_BRACKETS):
        depth += _BRACKETS[byte]
        if depth > limit:
            return True
    return False


class ServiceMetrics:
    """Per-tool counters and a window of recent latencies (thread-safe)."""

    def __init__(self, window: int = 10_000):
        self._lock = threading.Lock()
        self._started = time.time()
        self._counts = {tool: {"calls": 0, "hits": 0, "failures": 0} for tool in TOOLS}
        self._latency = {tool: deque(maxlen=window) for tool in TOOLS}

    def record(self, tool: ToolName, latency_s: float, *, ok: bool, cached: bool) -> None:
        with self._lock:
            counts = self._counts[tool]
            counts["calls"] += 1
            counts["hits"] += int(cached)
            counts["failures"] += int(not ok)
            self._latency[tool].append(latency_s)

    def snapshot(self) -> dict[str, Any]:
        """``{"uptime_s", "tools": {tool: {calls, hits, failures, hit_ratio, latency_ms: {p50, p90, p99, max}}}}``."""
        with self._lock:
            tools: dict[str, Any] = {}
            for tool in TOOLS:
                counts = dict(self._counts[tool])
                samples = sorted(self._latency[tool])
                counts["hit_ratio"] = counts["hits"] / counts["calls"] if counts["calls"] else 0.0
                counts["latency_ms"] = {
                    name: (1000 * _percentile(samples, q) if samples else None)
                    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
                }
                tools[tool] = counts
            return {"uptime_s": time.time() - self._started, "tools": tools}


def _percentile(sorted_samples: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted samples."""
    index = min(len(sorted_samples) - 1, max(0, round(q * len(sorted_samples) + 0.5) - 1))
    return sorted_samples[index]


def _error_body(tool: ToolName, exc: BaseException, latency_s: float) -> dict[str, Any]:
    if isinstance(exc, SearchRateLimitedError):
        kind, retry_after = "rate_limited", exc.retry_after
    elif isinstance(exc, SearchTransientError):
        kind, retry_after = "transient", None
    else:
        kind, retry_after = "backend", None
    body = response_to_json(SearchResponse(tool, error=f"{type(exc).__name__}: {exc}", latency_s=latency_s))
    body.update(error_type=kind, retry_after=retry_after)
    return body


def _server_modules() -> tuple[Any, Any]:
    """``(fastapi, uvicorn)``, or a :class:`ConfigError` naming the extra that installs them."""
    purpose = "the search service (mmsearch serve)"
    for module in ("fastapi", "fastapi.concurrency", "fastapi.responses"):
        require(module, extra="serve", purpose=purpose)
    return require("fastapi", extra="serve", purpose=purpose), require("uvicorn", extra="serve", purpose=purpose)


def create_app(
    backend: SearchBackendBase,
    *,
    token: str | None,
    metrics: ServiceMetrics | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_json_depth: int = MAX_JSON_DEPTH,
) -> Any:
    """The FastAPI app serving ``backend`` (already wrapped in cache/resilience as wanted).

    ``token=None`` disables authentication (only for tests on loopback; ``mmsearch serve`` always sets one).
    A body over ``max_body_bytes`` is HTTP 413 (refused from its ``Content-Length``, or as soon as a
    streamed body passes the limit); JSON nested deeper than ``max_json_depth`` is HTTP 400.
    """
    if max_body_bytes < 1 or max_json_depth < 1:
        raise ConfigError(f"max_body_bytes and max_json_depth must be >= 1, got {max_body_bytes} and {max_json_depth}")
    fastapi, _ = _server_modules()
    FastAPI, HTTPException, Request = fastapi.FastAPI, fastapi.HTTPException, fastapi.Request
    run_in_threadpool, JSONResponse = fastapi.concurrency.run_in_threadpool, fastapi.responses.JSONResponse

    metrics = metrics or ServiceMetrics()
    app = FastAPI(title="mmsearch search service", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.metrics = metrics
    app.state.backend = backend
    expected = None if token is None else f"Bearer {token}".encode()

    def authorize(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not secrets.compare_digest(given, expected):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong bearer token: send 'Authorization: Bearer <token>' with the token "
                f"printed by `mmsearch serve` (clients read it from ${TOKEN_ENV})",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def too_large(size: str) -> Any:
        return HTTPException(
            status_code=413,
            detail=f"request body of {size} bytes exceeds this service's limit of {max_body_bytes} bytes; "
            "send a smaller image (downscale it) or start the service with a larger --max-body-bytes",
        )

    async def read_body(tool: ToolName, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise HTTPException(status_code=400, detail=f"bad Content-Length header {declared[:40]!r}")
            if int(declared) > max_body_bytes:
                raise too_large(declared)
        chunks, size = [], 0
        async for chunk in request.stream():  # a chunked body has no Content-Length: count as it comes
            size += len(chunk)
            if size > max_body_bytes:
                raise too_large(f"more than {max_body_bytes}")
            chunks.append(chunk)
        body = b"".join(chunks)
        if await run_in_threadpool(json_depth_exceeds, body, max_json_depth):  # linear, but off the loop
            raise HTTPException(
                status_code=400,
                detail=f"bad {tool} request body: JSON nested deeper than {max_json_depth} levels; a request is "
                "one flat JSON object",
            )
        return body

    async def search(tool: ToolName, request: Request) -> Any:
        authorize(request)
        body = await read_body(tool, request)
        try:
            payload = json.loads(body)
            if not isinstance(payload, dict):
                raise TypeError("the body must be a JSON object")
            search_request = request_from_json(tool, payload)
        except (ValueError, TypeError, KeyError, RecursionError, SearchBackendError) as exc:
            raise HTTPException(
                status_code=400, detail=f"bad {tool} request body: {type(exc).__name__}: {str(exc)[:300]}"
            ) from exc
        started = time.perf_counter()
        if isinstance(backend, CachedSearch):  # a cache hit goes out as stored: no thumbnail decode/re-encode
            try:
                document = await run_in_threadpool(backend.lookup_json, tool, search_request)
            except SearchBackendError:
                document = None
            if document is not None:
                latency = time.perf_counter() - started
                metrics.record(tool, latency, ok=document.get("error") is None, cached=True)
                document.update(error_type=None, retry_after=None, latency_s=latency)
                return JSONResponse(document)
        try:
            # raise_errors: the failure's kind (transient, rate limited) travels to the client as error_type
            response = await run_in_threadpool(call_search, backend, tool, search_request, raise_errors=True)
        except Exception as exc:
            latency = time.perf_counter() - started
            metrics.record(tool, latency, ok=False, cached=False)
            return JSONResponse(_error_body(tool, exc, latency))
        latency = time.perf_counter() - started
        metrics.record(tool, latency, ok=response.ok, cached=response.cached)
        body = await run_in_threadpool(response_to_json, response)  # PNG encoding is CPU work: off the loop
        body.update(error_type=None if response.ok else "backend", retry_after=None, latency_s=latency)
        return JSONResponse(body)

    async def image_search(request: Request) -> Any:
        return await search("image_search", request)

    async def text_search(request: Request) -> Any:
        return await search("text_search", request)

    async def health() -> dict[str, str]:
        return {"status": "ok"}

    async def get_metrics(request: Request) -> dict[str, Any]:
        authorize(request)
        snapshot = metrics.snapshot()
        layer: SearchBackendBase = backend
        while True:  # walk the wrapper chain (cache → resilience → backend)
            if isinstance(layer, CachedSearch) and "cache" not in snapshot:
                snapshot["cache"] = layer.stats.as_dict()
            if isinstance(layer, ResilientSearch) and "resilience" not in snapshot:
                snapshot["resilience"] = {**layer.stats, "spent_usd": layer.spent_usd, "breaker": layer.breaker.state}
            if not isinstance(layer, SearchWrapper):
                return snapshot
            layer = layer.backend

    # FastAPI reads parameter types from annotations, which this module's `from __future__ import
    # annotations` leaves as strings naming a locally imported class: give it the class itself.
    for endpoint in (image_search, text_search, get_metrics):
        endpoint.__annotations__["request"] = Request
    app.add_api_route("/v1/image_search", image_search, methods=["POST"])
    app.add_api_route("/v1/text_search", text_search, methods=["POST"])
    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/metrics", get_metrics, methods=["GET"])
    return app


class BackgroundServer:
    """Run an ASGI app with uvicorn in a daemon thread on ``host`` (a free port unless given).

    ``with BackgroundServer(app) as server: server.url`` — start waits (bounded) until the socket listens;
    exit asks uvicorn to stop and joins the thread.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, *, start_timeout_s: float = 20.0):
        _, uvicorn = _server_modules()
        self._server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
        )
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not the main thread
        self._thread = threading.Thread(target=self._server.run, name="mmsearch-serve", daemon=True)
        self.host = host
        self.port = port
        self.start_timeout_s = start_timeout_s

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the search service did not start within {self.start_timeout_s:g} s")
            time.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def build_service_backend(
    backend: str,
    options: dict[str, Any] | None = None,
    *,
    cache: str | None = "mmsearch-cache.sqlite",
    cache_mode: str = "read-through",
    resilience: dict[str, Any] | None = None,
) -> SearchBackendBase:
    """``make_search(backend, options)`` wrapped in :class:`ResilientSearch` and then :class:`CachedSearch`.

    The cache is outermost so hits skip the rate limiter and the budget (they are free).
    """
    inner = make_search(backend, options)
    wrapped: SearchBackendBase = ResilientSearch(inner, **(resilience or {}))
    if cache:
        # keyed like search="cached" with the same name and options, so either can replay the other's recording
        wrapped = CachedSearch(wrapped, cache, mode=cache_mode, options=options, backend_name=backend)  # type: ignore[arg-type]
    return wrapped


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``mmsearch serve`` options (the CLI calls this and :func:`serve_main`)."""
    parser.add_argument("--backend", default="sample", help="search backend name (default: sample)")
    parser.add_argument("--options", default="{}", help='backend options as JSON, e.g. \'{"pages": "p.jsonl"}\'')
    parser.add_argument("--cache", default="mmsearch-cache.sqlite", help="SQLite path, redis:// URL, or 'none'")
    parser.add_argument("--cache-mode", default="read-through", choices=["read-through", "record", "replay"])
    parser.add_argument(
        "--resilience", default="{}", help="ResilienceConfig fields as JSON, e.g. '{\"rate_per_s\": 5}'"
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback address")
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=MAX_BODY_BYTES,
        help=f"largest request body accepted; larger is HTTP 413 (default: {MAX_BODY_BYTES}, room for the "
        "base64 PNG of a multi-megapixel image)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="info logs every request"
    )


def _json_option(text: str, flag: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{flag} must be a JSON object, got {text!r}: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{flag} must be a JSON object, got {text!r}")
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_main(args: argparse.Namespace) -> int:
    """Run ``mmsearch serve`` until interrupted."""
    if not _is_loopback(args.host) and not args.allow_remote:
        raise ConfigError(
            f"refusing to bind {args.host!r}: the service is loopback-only by default; pass --allow-remote "
            "(and put TLS in front of it) to expose it"
        )
    _, uvicorn = _server_modules()
    backend = build_service_backend(
        args.backend,
        _json_option(args.options, "--options"),
        cache=None if args.cache == "none" else args.cache,
        cache_mode=args.cache_mode,
        resilience=_json_option(args.resilience, "--resilience"),
    )
    token = os.environ.get(TOKEN_ENV)
    if not token:
        token = secrets.token_urlsafe(32)
        # printed exactly once, to stderr, for the operator; never logged afterwards
        sys.stderr.write(f"mmsearch serve: generated bearer token (export {TOKEN_ENV}=...): {token}\n")
        sys.stderr.flush()
    app = create_app(backend, token=token, max_body_bytes=args.max_body_bytes)
    logger.info("serving %s on http://%s:%d", backend, args.host, args.port)
    try:
        config = uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            access_log=args.log_level in ("debug", "info"),
        )
        asyncio.run(uvicorn.Server(config).serve())
    finally:
        backend.close()
    return 0
