"""A persistent, content-keyed search cache in front of any backend, with record and strict replay.

Keys
    ``sha256(canonical_json({v, backend, options, tool, <what was asked>}))`` where *what was asked* is

    * image search: ``image`` = :func:`~mmsearch_env.search.codec.image_digest` of the pixels
      (or ``example_id`` when ``image_key="example_id"`` — how released per-question caches such as
      FVQA's are keyed, see :mod:`mmsearch_env.search.fvqa_cache`);
    * text search: ``query`` = :func:`~mmsearch_env.search.codec.normalize_query`, plus the normalised
      ``question`` when the backend's summaries depend on it (``backend.question_aware``).

    ``backend`` is the backend's ``name``; ``options`` its configuration (``backend.cache_options`` or
    the options it was built with) minus anything that looks like a secret (:func:`public_options`).
    Changing a model, an engine or a result count therefore changes the key; rotating an API key does not.

Values
    :func:`~mmsearch_env.search.codec.response_to_json` documents (JSON, thumbnails as PNG): never
    pickle. Only successful responses are stored; failures are retried next time.

Stores
    :class:`SQLiteStore` (default; one file, WAL journal, every ``put`` its own committed transaction, so a
    killed process loses nothing it committed, and several processes can share the file) and
    :class:`RedisStore` (a cache shared across machines).

Modes (:class:`CachedSearch`)
    ``"read-through"`` (default): a hit answers, a miss calls the backend and stores the answer.
    ``"record"``: always call the backend and store (refreshes entries).
    ``"replay"``: a hit answers, a miss raises :class:`~mmsearch_env.errors.SearchBackendError` naming the
    key and the request; the backend is never called — a recorded run replays with zero network calls.

A hit is returned with ``cached=True`` and ``cost_usd=0``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from mmsearch_env.errors import ConfigError, SearchBackendError, SearchTransientError
from mmsearch_env.search.base import (
    ImageSearchRequest,
    SearchBackendBase,
    SearchResponse,
    SearchWrapper,
    TextSearchRequest,
    ToolName,
)
from mmsearch_env.search.calls import call_search
from mmsearch_env.search.codec import (
    WIRE_VERSION,
    canonical_json,
    image_digest,
    normalize_query,
    response_from_json,
    response_to_json,
)
from mmsearch_env.search.extras import require

__all__ = [
    "CACHE_MODES",
    "CacheStats",
    "CacheStore",
    "CachedSearch",
    "RedisStore",
    "SQLiteStore",
    "cache_key",
    "open_store",
    "public_options",
]

logger = logging.getLogger(__name__)

CacheMode = Literal["read-through", "record", "replay"]
CACHE_MODES: tuple[str, ...] = ("read-through", "record", "replay")
_SECRET_RE = re.compile(r"(key|token|secret|password|passwd|auth|credential|cookie)", re.IGNORECASE)


def public_options(options: Any) -> Any:
    """``options`` without secrets: dict entries whose name looks like a credential are dropped (recursively).

    >>> public_options({"engine": "google_lens", "api_key": "s3cret", "headers": {"Authorization": "x", "n": 5}})
    {'engine': 'google_lens', 'headers': {'n': 5}}
    """
    if isinstance(options, dict):
        return {k: public_options(v) for k, v in options.items() if not _SECRET_RE.search(str(k))}
    if isinstance(options, (list, tuple)):
        return [public_options(v) for v in options]
    if isinstance(options, (str, int, float, bool)) or options is None:
        return options
    return repr(options)  # paths and other objects: their spelling is their identity


def cache_key(
    tool: ToolName,
    request: ImageSearchRequest | TextSearchRequest,
    *,
    backend: str,
    options: dict[str, Any] | None = None,
    image_key: Literal["content", "example_id"] = "content",
    question_aware: bool = False,
) -> tuple[str, dict[str, Any]]:
    """The cache key of a request: ``(sha256 hex, the canonical document it hashes)``.

    The document is returned too so that a replay miss can say exactly what was asked.
    """
    doc: dict[str, Any] = {
        "v": WIRE_VERSION,
        "backend": backend,
        "options": public_options(options or {}),
        "tool": tool,
    }
    if tool == "image_search":
        if not isinstance(request, ImageSearchRequest):
            raise TypeError(f"image_search needs an ImageSearchRequest, got {type(request).__name__}")
        if image_key == "example_id":
            if not request.example_id:
                raise SearchBackendError("this cache is keyed by example_id, but the image search request has none")
            doc["example_id"] = request.example_id
        else:
            doc["image"] = image_digest(request.image)
    else:
        if not isinstance(request, TextSearchRequest):
            raise TypeError(f"text_search needs a TextSearchRequest, got {type(request).__name__}")
        doc["query"] = normalize_query(request.query)
        if question_aware:
            doc["question"] = normalize_query(request.question or "")
    return hashlib.sha256(canonical_json(doc).encode("utf-8")).hexdigest(), doc


class CacheStore(Protocol):
    """Where cache entries live: bytes by key. Implementations are thread-safe."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes) -> None: ...

    def close(self) -> None: ...


class SQLiteStore:
    """A cache in one SQLite file: WAL journal, one committed transaction per ``put``.

    ``synchronous=NORMAL`` in WAL mode: a crashed or killed *process* loses nothing that was committed;
    only an OS crash or power loss may drop the last transactions (``durable=True`` → ``FULL`` closes
    that gap at a cost in write latency). Several processes may share the file (readers never block;
    writers wait up to ``busy_timeout_s``).
    """

    def __init__(self, path: str | os.PathLike[str], *, durable: bool = False, busy_timeout_s: float = 30.0):
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            raise ConfigError(f"cache directory {str(self.path.parent)!r} does not exist; create it first")
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(self.path), timeout=busy_timeout_s, check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, value BLOB NOT NULL, created REAL NOT NULL)"
        )

    def get(self, key: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM entries WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def put(self, key: str, value: bytes) -> None:
        with self._lock:
            # autocommit mode (isolation_level=None): this statement is its own committed transaction
            self._db.execute(
                "INSERT OR REPLACE INTO entries (key, value, created) VALUES (?, ?, ?)", (key, value, time.time())
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"


class RedisStore:
    """A cache shared across processes and machines, in Redis (``pip install 'mmsearch-env[redis]'``).

    Keys are ``prefix + sha256``; ``ttl_s`` (optional) expires entries. Point every trainer at the same
    server (or better: at one ``mmsearch serve`` in front of it).
    """

    def __init__(
        self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "mmsearch:cache:", ttl_s: float | None = None
    ):
        redis = require("redis", extra="redis", purpose="the Redis search cache")
        self.url = url
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._client = redis.Redis.from_url(url)
        self._errors = redis.RedisError

    def get(self, key: str) -> bytes | None:
        try:
            value = self._client.get(self.prefix + key)
        except self._errors as exc:
            raise SearchTransientError(f"the Redis search cache is unreachable: {type(exc).__name__}: {exc}") from exc
        return None if value is None else bytes(value)

    def put(self, key: str, value: bytes) -> None:
        try:
            self._client.set(self.prefix + key, value, px=None if self.ttl_s is None else int(self.ttl_s * 1000))
        except self._errors as exc:
            raise SearchTransientError(f"the Redis search cache is unreachable: {type(exc).__name__}: {exc}") from exc

    def __len__(self) -> int:
        return sum(1 for _ in self._client.scan_iter(match=self.prefix + "*", count=1000))

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        # the URL may carry a password: show host only
        return f"RedisStore(prefix={self.prefix!r})"


def open_store(spec: str | os.PathLike[str] | CacheStore) -> CacheStore:
    """A store from a spec: ``redis://…`` / ``rediss://…`` → :class:`RedisStore`, else a SQLite file path."""
    if isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        if text.startswith(("redis://", "rediss://", "unix://")):
            return RedisStore(text)
        return SQLiteStore(text)
    if all(callable(getattr(spec, m, None)) for m in ("get", "put")):
        return spec
    raise ConfigError(f"cache must be a SQLite path, a redis:// URL or a store object, got {type(spec).__name__}")


@dataclass
class CacheStats:
    """Counters of one :class:`CachedSearch` (thread-safe updates under its lock)."""

    hits: int = 0
    misses: int = 0
    stores: int = 0
    backend_calls: int = 0

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "stores": self.stores,
            "backend_calls": self.backend_calls,
            "hit_ratio": self.hit_ratio,
        }


class _ReplayOnly(SearchBackendBase):
    """The backend of a pure replay: never called, since a replay miss raises before reaching it."""

    name = "replay"


class CachedSearch(SearchWrapper):
    """Wrap ``backend`` with a persistent cache (see the module docstring for keys, modes and stores).

    Args:
        backend: any search backend; may be ``None`` in ``"replay"`` mode (a pure replay of a recording).
            Its ``name``, ``price_per_call``, ``question_aware`` and ``close``/``reset_episode`` are forwarded.
        cache: a SQLite path (default ``mmsearch-cache.sqlite``), a ``redis://`` URL or a store object.
        mode: ``"read-through"``, ``"record"`` or ``"replay"``.
        options: the backend's configuration for the key (default: ``backend.cache_options`` if present,
            else ``{}``); secrets are dropped.
        image_key: ``"content"`` (pixels) or ``"example_id"`` (per-question caches).
        image_format: ``"png"`` or ``"webp"`` (lossless) for stored thumbnails.

    Exceptions from the backend propagate (a cache does not hide failures; wrap the backend in
    :class:`~mmsearch_env.search.resilience.ResilientSearch` to retry), and are not cached.
    """

    def __init__(
        self,
        backend: Any = None,
        cache: str | os.PathLike[str] | CacheStore = "mmsearch-cache.sqlite",
        *,
        mode: CacheMode = "read-through",
        options: dict[str, Any] | None = None,
        image_key: Literal["content", "example_id"] = "content",
        image_format: str = "png",
        backend_name: str | None = None,
    ):
        if mode not in CACHE_MODES:
            raise ConfigError(f"cache mode must be one of {list(CACHE_MODES)}, got {mode!r}")
        if backend is None and mode != "replay":
            raise ConfigError(f"a cache without a backend can only replay; got mode={mode!r}")
        if image_key not in ("content", "example_id"):
            raise ConfigError(f"image_key must be 'content' or 'example_id', got {image_key!r}")
        if image_format not in ("png", "webp"):
            raise ConfigError(f"image_format must be 'png' or 'webp', got {image_format!r}")
        super().__init__(_ReplayOnly() if backend is None else backend)
        self.store = open_store(cache)
        self._owns_store = isinstance(cache, (str, os.PathLike))  # a store object passed in is the caller's
        self.mode = mode
        self.backend_name = backend_name or self.backend.name
        if options is None:
            options = self.backend.cache_options or {}
        self.options = public_options(dict(options))
        self.image_key = image_key
        self.image_format = image_format
        self.stats = CacheStats()
        self._lock = threading.Lock()

    @property
    def name(self) -> str:  # type: ignore[override]
        """The name entries are keyed by (``backend_name``)."""
        return self.backend_name

    # -- the two tools ---------------------------------------------------------------------------------
    def image_search(self, request: ImageSearchRequest) -> SearchResponse:
        return self._search("image_search", request)

    def text_search(self, request: TextSearchRequest) -> SearchResponse:
        return self._search("text_search", request)

    def key(self, tool: ToolName, request: ImageSearchRequest | TextSearchRequest) -> str:
        """The cache key this wrapper uses for ``request``."""
        return self._key(tool, request)[0]

    def _key(self, tool: ToolName, request: ImageSearchRequest | TextSearchRequest) -> tuple[str, dict[str, Any]]:
        return cache_key(
            tool,
            request,
            backend=self.backend_name,
            options=self.options,
            image_key=self.image_key,
            question_aware=self.backend.question_aware,
        )

    def lookup_json(self, tool: ToolName, request: ImageSearchRequest | TextSearchRequest) -> dict[str, Any] | None:
        """A hit as its stored JSON document (thumbnails left encoded), marked cached and free; else ``None``.

        The search service answers hits with this, skipping a PNG decode and re-encode per thumbnail. A
        miss is not counted here (the call that follows counts it); ``"record"`` mode always misses.
        """
        if self.mode == "record":
            return None
        raw = self.store.get(self._key(tool, request)[0])
        if raw is None:
            return None
        try:
            document = json.loads(raw)
        except ValueError:
            return None  # corrupt: the regular path logs it and refetches
        if not isinstance(document, dict) or document.get("v") != WIRE_VERSION or document.get("tool") != tool:
            return None
        self._count(hits=1)
        document.update(cached=True, cost_usd=0.0, latency_s=0.0)
        return document

    def _search(self, tool: ToolName, request: ImageSearchRequest | TextSearchRequest) -> SearchResponse:
        key, doc = self._key(tool, request)
        if self.mode != "record":
            raw = self.store.get(key)
            if raw is not None:
                try:
                    response = response_from_json(json.loads(raw))
                except (ValueError, SearchBackendError) as exc:
                    logger.warning("ignoring a corrupt cache entry %s: %s", key, exc)
                else:
                    self._count(hits=1)
                    return replace(response, cached=True, cost_usd=0.0, latency_s=0.0)
            self._count(misses=1)
            if self.mode == "replay":
                raise SearchBackendError(
                    f"strict replay: no cache entry {key} in {self.store!r} for {_describe(doc)}; "
                    "record it first (mode='record' or 'read-through') or check the backend name and options"
                )
        self._count(backend_calls=1)
        response = call_search(self.backend, tool, request, raise_errors=True)
        if response.ok:
            self.store.put(key, canonical_json(response_to_json(response, self.image_format)).encode("utf-8"))
            self._count(stores=1)
        return response

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self.stats, name, getattr(self.stats, name) + delta)

    def close(self) -> None:
        """Close the store (when this wrapper opened it) and the wrapped backend."""
        if self._owns_store:
            self.store.close()
        super().close()

    def __repr__(self) -> str:
        return f"CachedSearch({self.backend!r}, {self.store!r}, mode={self.mode!r})"


def _describe(doc: dict[str, Any]) -> str:
    what = {k: v for k, v in doc.items() if k not in ("v",)}
    return f"{doc['tool']} request {canonical_json(what)}"
