"""A seeded fault-injection wrapper: train and evaluate under an unreliable web, and test resilience.

Each call draws one uniform number from the wrapper's own seeded generator and picks at most one fault
by cumulative rate, in this order: ``timeout`` (sleeps ``timeout_s``, then raises
:class:`~mmsearch_env.errors.SearchTransientError`), ``error`` (transient, like an HTTP 503),
``permanent_error`` (:class:`~mmsearch_env.errors.SearchBackendError`), ``rate_limit``
(:class:`~mmsearch_env.errors.SearchRateLimitedError` with ``retry_after``), ``empty`` (a successful
response with no results), ``truncated`` (fewer results, summaries cut in half). Independently, a
``latency_rate`` share of calls first sleeps ``latency_s``. Same seed + same call sequence ⇒ same faults.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from mmsearch_env.errors import ConfigError, SearchBackendError, SearchRateLimitedError, SearchTransientError
from mmsearch_env.search.base import ImageSearchRequest, SearchResponse, SearchWrapper, TextSearchRequest, ToolName
from mmsearch_env.search.calls import call_search

__all__ = ["FaultConfig", "FaultySearch"]

_FAULTS = ("timeout", "error", "permanent_error", "rate_limit", "empty", "truncated")


@dataclass
class FaultConfig:
    """Rates (probabilities per call) and sizes of injected faults."""

    # Parameters that control which faults happen
    seed: int = field(default=0, metadata={"help": "seed of the wrapper's own random generator"})
    timeout_rate: float = field(default=0.0, metadata={"help": "share of calls that time out"})
    error_rate: float = field(default=0.0, metadata={"help": "share of calls failing transiently (HTTP 5xx)"})
    permanent_error_rate: float = field(default=0.0, metadata={"help": "share of calls failing for good"})
    rate_limit_rate: float = field(default=0.0, metadata={"help": "share of calls answered HTTP 429"})
    empty_rate: float = field(default=0.0, metadata={"help": "share of calls returning no results"})
    truncated_rate: float = field(default=0.0, metadata={"help": "share of calls returning cut results"})
    latency_rate: float = field(default=0.0, metadata={"help": "share of calls delayed by latency_s"})
    # Parameters that control how big the faults are
    latency_s: float = field(default=0.5, metadata={"help": "added delay of a slow call, seconds"})
    timeout_s: float = field(default=0.0, metadata={"help": "how long a timing-out call hangs before failing"})
    retry_after_s: float | None = field(default=1.0, metadata={"help": "Retry-After of injected 429s"})

    def __post_init__(self) -> None:
        rates = {name: getattr(self, f"{name}_rate") for name in (*_FAULTS, "latency")}
        for name, rate in rates.items():
            if not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
                raise ConfigError(f"{name}_rate must be a probability in [0, 1], got {rate!r}")
        total = sum(rates[name] for name in _FAULTS)
        if total > 1.0 + 1e-9:
            raise ConfigError(
                f"fault rates (all but latency_rate) add up to {total:g} > 1; each call gets at most one fault"
            )
        if self.latency_s < 0 or self.timeout_s < 0:
            raise ConfigError("latency_s and timeout_s must be >= 0 seconds")


class FaultySearch(SearchWrapper):
    """Wrap ``backend`` and inject faults (see the module docstring). ``injected`` counts them by kind.

    Args:
        backend: the backend to wrap.
        config: a :class:`FaultConfig`, or pass its fields as keyword arguments.
        sleep: how to wait (tests pass a fake to stay instant).
    """

    def __init__(
        self,
        backend: Any,
        config: FaultConfig | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        **rates: Any,
    ):
        if config is not None and rates:
            raise ConfigError("pass either a FaultConfig or fault keyword arguments, not both")
        try:
            self.config = config or FaultConfig(**rates)
        except TypeError as exc:
            raise ConfigError(f"unknown fault option: {exc}; see FaultConfig for the fields") from exc
        super().__init__(backend)
        self.injected: Counter[str] = Counter()
        self._sleep = sleep
        self._rng = random.Random(self.config.seed)
        self._lock = threading.Lock()

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.backend.name}+faults"

    def image_search(self, request: ImageSearchRequest) -> SearchResponse:
        return self._call("image_search", request)

    def text_search(self, request: TextSearchRequest) -> SearchResponse:
        return self._call("text_search", request)

    def _draw(self) -> tuple[bool, str | None, float]:
        cfg = self.config
        with self._lock:
            slow = self._rng.random() < cfg.latency_rate
            draw = self._rng.random()
            cut = self._rng.random()
        edge = 0.0
        for name in _FAULTS:
            edge += getattr(cfg, f"{name}_rate")
            if draw < edge:
                return slow, name, cut
        return slow, None, cut

    def _call(self, tool: ToolName, request: ImageSearchRequest | TextSearchRequest) -> SearchResponse:
        cfg = self.config
        slow, fault, cut = self._draw()
        if slow:
            self._note("latency")
            self._sleep(cfg.latency_s)
        if fault is not None:
            self._note(fault)
        if fault == "timeout":
            self._sleep(cfg.timeout_s)
            raise SearchTransientError(f"injected fault: {tool} timed out")
        if fault == "error":
            raise SearchTransientError(f"injected fault: {tool} got HTTP 503 Service Unavailable")
        if fault == "permanent_error":
            raise SearchBackendError(f"injected fault: {tool} got HTTP 400 Bad Request")
        if fault == "rate_limit":
            raise SearchRateLimitedError(f"injected fault: {tool} got HTTP 429 Too Many Requests", cfg.retry_after_s)
        response = call_search(self.backend, tool, request, raise_errors=True)
        if fault == "empty" and response.ok:
            return replace(response, results=())
        if fault == "truncated" and response.ok and response.results:
            keep = max(1, int(cut * len(response.results)))
            results = tuple(
                replace(r, summary=r.summary[: len(r.summary) // 2]) if r.summary else r
                for r in response.results[:keep]
            )
            return replace(response, results=results)
        return response

    def _note(self, kind: str) -> None:
        with self._lock:
            self.injected[kind] += 1
