"""Retries, a circuit breaker, a rate limiter, per-call timeouts and dollar budgets around any backend.

:class:`ResilientSearch` runs each call as::

    budget check → circuit breaker → rate limiter → call (with timeout) → retry transient failures

* **Retries** (``tenacity``; :class:`~mmsearch_env.errors.SearchTransientError`: timeouts, resets, 5xx): up to
  ``max_attempts`` attempts; between them exponential backoff ``min(max_delay_s, base_delay_s · 2^n)``
  with equal jitter (half fixed, half uniform, from the wrapper's seeded generator); a 429's
  ``retry_after`` replaces the backoff, capped at ``max_retry_after_s``. Permanent errors are not retried.
  When retries give up the last error is raised; :func:`~mmsearch_env.search.base.call_search` turns it
  into the tool-error turn and the episode goes on.
* **Circuit breaker**: ``breaker_threshold`` consecutive transient failures (429s excluded: the backend is
  up, just throttling) open it; while open, calls fail at once without touching the backend; after
  ``breaker_cooldown_s`` one probe call is let through (half-open): success closes it, failure re-opens.
* **Rate limiter**: a token bucket (``rate_per_s``, ``burst``) in-process, or in Redis (``redis_url``) so
  every process sharing the URL and ``limiter_key`` shares one limit (an atomic Lua script on the server's
  clock).
* **Budgets** in dollars: ``budget_usd`` per run (this wrapper's lifetime), ``episode_budget_usd`` per
  episode (calls for one ``example_id`` since :meth:`ResilientSearch.reset_episode`). A call whose
  ``price_per_call`` would exceed a budget, or any paid call once a budget is spent, raises
  :class:`~mmsearch_env.errors.SearchBackendError` (a tool error for the model) and the user is warned once
  (a :class:`SearchBudgetWarning` through ``warnings`` and a ``logging`` warning). Cache hits never reach
  this wrapper (put the cache outside it), so they cost nothing.

Time is injectable (``clock``, ``sleep``) so tests run without real waiting.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import gymnasium as gym
from tenacity import RetryCallState, RetryError, Retrying, retry_if_exception_type, stop_after_attempt

from mmsearch_env.errors import ConfigError, SearchBackendError, SearchRateLimitedError, SearchTransientError
from mmsearch_env.search.base import ImageSearchRequest, SearchResponse, SearchWrapper, TextSearchRequest, ToolName
from mmsearch_env.search.calls import call_search
from mmsearch_env.search.extras import require

__all__ = [
    "CircuitBreaker",
    "CircuitOpenError",
    "RedisTokenBucket",
    "ResetSearchEpisodes",
    "ResilienceConfig",
    "ResilientSearch",
    "SearchBudgetWarning",
    "TokenBucket",
]

logger = logging.getLogger(__name__)


class SearchBudgetWarning(UserWarning):
    """A search budget in dollars is spent: further paid searches become tool errors."""


class CircuitOpenError(SearchBackendError):
    """The circuit breaker is open: the backend failed repeatedly and is left alone for a cooldown."""


@dataclass
class ResilienceConfig:
    """Settings of :class:`ResilientSearch` (see the module docstring for the semantics)."""

    # Parameters that control retries
    max_attempts: int = field(default=4, metadata={"help": "attempts per call, the first included"})
    base_delay_s: float = field(default=0.5, metadata={"help": "backoff before the 2nd attempt (doubles after)"})
    max_delay_s: float = field(default=30.0, metadata={"help": "cap of the exponential backoff"})
    max_retry_after_s: float = field(default=60.0, metadata={"help": "cap on a 429's Retry-After"})
    timeout_s: float | None = field(default=None, metadata={"help": "per-attempt timeout (None: backend's own)"})
    seed: int = field(default=0, metadata={"help": "seed of the jitter generator"})
    # Parameters that control the circuit breaker
    breaker_threshold: int = field(default=5, metadata={"help": "consecutive failures that open the circuit"})
    breaker_cooldown_s: float = field(default=30.0, metadata={"help": "seconds open before a probe call"})
    # Parameters that control the rate limiter
    rate_per_s: float | None = field(default=None, metadata={"help": "calls per second (None: unlimited)"})
    burst: int = field(default=1, metadata={"help": "token bucket size"})
    redis_url: str | None = field(default=None, metadata={"help": "share the limiter through this Redis"})
    limiter_key: str = field(default="mmsearch:ratelimit", metadata={"help": "Redis key of the shared bucket"})
    # Parameters that control spending
    budget_usd: float | None = field(default=None, metadata={"help": "dollars this run may spend on searches"})
    episode_budget_usd: float | None = field(default=None, metadata={"help": "dollars one episode may spend"})

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be an int >= 1, got {self.max_attempts!r}")
        if isinstance(self.breaker_threshold, bool) or not isinstance(self.breaker_threshold, int):
            raise ConfigError(f"breaker_threshold must be an int >= 1, got {self.breaker_threshold!r}")
        if self.breaker_threshold < 1:
            raise ConfigError(f"breaker_threshold must be an int >= 1, got {self.breaker_threshold!r}")
        for name in ("base_delay_s", "max_delay_s", "max_retry_after_s", "breaker_cooldown_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{name} must be a number of seconds >= 0, got {value!r}")
        for name in ("timeout_s", "rate_per_s"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or value <= 0):
                raise ConfigError(f"{name} must be a positive number or None, got {value!r}")
        for name in ("budget_usd", "episode_budget_usd"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or value < 0):
                raise ConfigError(f"{name} must be a number of dollars >= 0 or None, got {value!r}")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ConfigError(f"burst must be an int >= 1, got {self.burst!r}")
        if self.redis_url is not None and self.rate_per_s is None:
            raise ConfigError("redis_url shares a rate limit; set rate_per_s too (calls per second)")


class CircuitBreaker:
    """Closed → (``threshold`` consecutive failures) → open → (``cooldown_s``) → half-open: one probe."""

    def __init__(self, threshold: int = 5, cooldown_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"`` (cooldown over, probe allowed or in flight)."""
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "half-open" if self._clock() - self._opened_at >= self.cooldown_s else "open"

    def before_call(self) -> None:
        """Raise :class:`CircuitOpenError` unless a call may go through now."""
        with self._lock:
            if self._opened_at is None:
                return
            waited = self._clock() - self._opened_at
            if waited < self.cooldown_s:
                raise CircuitOpenError(
                    f"circuit open: the backend failed {self.threshold} times in a row; "
                    f"next try in {self.cooldown_s - waited:.1f} s"
                )
            if self._probing:
                raise CircuitOpenError("circuit half-open: a probe call is in flight; try again shortly")
            self._probing = True

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._probing = False

    def record_neutral(self) -> None:
        """The call ended without telling us about the backend's health (429, permanent error, a bug):
        release a half-open probe slot, count nothing."""
        with self._lock:
            self._probing = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._probing or self._failures >= self.threshold:
                if self._opened_at is None or self._probing:
                    logger.warning("search circuit breaker opened after %d consecutive failures", self._failures)
                self._opened_at = self._clock()
            self._probing = False


# Both rate limiters (in-process and Redis) stay ours rather than the ``limits`` package's. Measured with
# limits 5.8: its rate items count whole granularity units (``RateLimitItemPerSecond(1, 0.25).get_expiry()
# == 0``), whatever the storage, so "4 calls a second, burst 1" cannot be written; "4 per 1 second" let 4 of
# 10 back-to-back calls through at once under each of its moving, fixed and sliding-window strategies, where
# this bucket lets 1 through and paces the rest 0.25 s apart. Its strategies only answer "allowed now?" (we
# would still write the waiting loop), and its memory storage reads the wall clock, where this bucket takes
# the injectable clock the tests use.


class TokenBucket:
    """In-process token bucket: ``rate_per_s`` tokens a second, at most ``burst`` stored; thread-safe."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.rate = float(rate_per_s)
        self.burst = int(burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = threading.Lock()

    def try_acquire(self) -> float:
        """Take a token and return 0, or return the seconds to wait before one is available."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate

    def acquire(self) -> None:
        """Block (via ``sleep``) until a token is taken."""
        while (wait := self.try_acquire()) > 0:
            self._sleep(wait)


_REDIS_BUCKET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1])
local stamp = tonumber(state[2])
if tokens == nil or stamp == nil then
  tokens = burst
  stamp = now
end
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


class RedisTokenBucket:
    """A token bucket in Redis shared by every process using the same URL and key.

    One Lua script refills and takes a token atomically on the server's clock (``TIME``), so processes
    on different machines with skewed clocks still share one rate.
    """

    def __init__(
        self,
        url: str,
        rate_per_s: float,
        burst: int = 1,
        *,
        key: str = "mmsearch:ratelimit",
        sleep: Callable[[float], None] = time.sleep,
    ):
        redis = require("redis", extra="redis", purpose="a shared rate limit")
        self.rate = float(rate_per_s)
        self.burst = int(burst)
        self.key = key
        self._sleep = sleep
        self._client = redis.Redis.from_url(url)
        self._script = self._client.register_script(_REDIS_BUCKET_LUA)

    def try_acquire(self) -> float:
        return float(self._script(keys=[self.key], args=[self.rate, self.burst]))

    def acquire(self) -> None:
        while (wait := self.try_acquire()) > 0:
            self._sleep(wait)

    def close(self) -> None:
        self._client.close()


class ResilientSearch(SearchWrapper):
    """Wrap ``backend`` with retries, a circuit breaker, a rate limiter, timeouts and budgets.

    Args:
        backend: the backend to protect (its ``price_per_call`` in dollars drives the budget checks).
        config: a :class:`ResilienceConfig`, or pass its fields as keyword arguments.
        clock, sleep: time sources (tests pass fakes).

    ``spent_usd`` is what this run has spent; ``stats`` counts calls, attempts, retries and failures.
    """

    def __init__(
        self,
        backend: Any,
        config: ResilienceConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        **options: Any,
    ):
        if config is not None and options:
            raise ConfigError("pass either a ResilienceConfig or its fields as keyword arguments, not both")
        if config is None:
            known = {f.name for f in fields(ResilienceConfig)}
            unknown = sorted(set(options) - known)
            if unknown:
                raise ConfigError(f"unknown resilience option(s) {unknown}; expected some of {sorted(known)}")
            config = ResilienceConfig(**options)
        super().__init__(backend)
        self.config = config
        self.breaker = CircuitBreaker(config.breaker_threshold, config.breaker_cooldown_s, clock)
        self.limiter: TokenBucket | RedisTokenBucket | None = None
        if config.rate_per_s is not None:
            if config.redis_url:
                self.limiter = RedisTokenBucket(
                    config.redis_url, config.rate_per_s, config.burst, key=config.limiter_key, sleep=sleep
                )
            else:
                self.limiter = TokenBucket(config.rate_per_s, config.burst, clock=clock, sleep=sleep)
        self.spent_usd = 0.0
        self.stats = {"calls": 0, "attempts": 0, "retries": 0, "failures": 0, "refused_budget": 0}
        self._episode_spent: dict[str | None, float] = {}
        self._reserved = 0.0
        self._warned: set[str] = set()
        self._sleep = sleep
        self._rng = random.Random(config.seed)
        self._lock = threading.Lock()

    # -- the two tools ---------------------------------------------------------------------------------
    def image_search(self, request: ImageSearchRequest) -> SearchResponse:
        return self._call("image_search", request)

    def text_search(self, request: TextSearchRequest) -> SearchResponse:
        return self._call("text_search", request)

    def reset_episode(self, example_id: str | None = None) -> None:
        """Start a new episode for ``example_id`` (``None``: every episode): its spend goes back to 0."""
        with self._lock:
            if example_id is None:
                self._episode_spent.clear()
            else:
                self._episode_spent.pop(example_id, None)
        super().reset_episode(example_id)

    def backoff_s(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based)."""
        cfg = self.config
        if retry_after is not None and retry_after >= 0:
            return min(float(retry_after), cfg.max_retry_after_s)
        delay = min(cfg.max_delay_s, cfg.base_delay_s * (2.0**attempt))
        with self._lock:
            return delay / 2 + self._rng.uniform(0.0, delay / 2)

    # -- internals -------------------------------------------------------------------------------------
    def _reserve(self, example_id: str | None) -> float:
        """Check the budgets and reserve this call's price; raise when it would overspend."""
        cfg = self.config
        price = self.price_per_call
        with self._lock:
            self.stats["calls"] += 1
            checks = [("run", cfg.budget_usd, self.spent_usd + self._reserved)]
            if cfg.episode_budget_usd is not None:
                checks.append(("episode", cfg.episode_budget_usd, self._episode_spent.get(example_id, 0.0)))
            for kind, budget, spent in checks:
                if budget is None:
                    continue
                if (price > 0 and spent + price > budget + 1e-12) or spent > budget + 1e-12:
                    self.stats["refused_budget"] += 1
                    first = kind not in self._warned
                    self._warned.add(kind)
                    message = (
                        f"the search budget of ${budget:.4f} per {kind} is spent (${spent:.4f} used, "
                        f"next call ${price:.4f}); further paid searches are refused"
                    )
                    break
            else:
                self._reserved += price
                return price
        if first:
            logger.warning("%s", message)
            warnings.warn(message + " (this warning is shown once)", SearchBudgetWarning, stacklevel=4)
        raise SearchBackendError(message)

    def _settle(self, example_id: str | None, reserved: float, cost: float) -> None:
        with self._lock:
            self._reserved -= reserved
            self.spent_usd += cost
            self._episode_spent[example_id] = self._episode_spent.get(example_id, 0.0) + cost

    def _attempt(self, tool: ToolName, request: ImageSearchRequest | TextSearchRequest, number: int) -> SearchResponse:
        """Attempt ``number`` (1-based): breaker, limiter, then the call; tells the breaker what happened."""
        self.breaker.before_call()
        if self.limiter is not None:
            self.limiter.acquire()
        with self._lock:
            self.stats["attempts"] += 1
            if number > 1:
                self.stats["retries"] += 1
        try:
            response = call_search(self.backend, tool, request, timeout=self.config.timeout_s, raise_errors=True)
        except SearchRateLimitedError:
            self.breaker.record_neutral()  # the backend answered; throttling is not ill health
            raise
        except SearchTransientError:
            self.breaker.record_failure()
            raise
        except BaseException:
            self.breaker.record_neutral()  # permanent errors and bugs: not retried, not counted
            raise
        self.breaker.record_success()
        return response

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        retry_after = error.retry_after if isinstance(error, SearchRateLimitedError) else None
        return self.backoff_s(state.attempt_number - 1, retry_after)

    def _call(self, tool: ToolName, request: ImageSearchRequest | TextSearchRequest) -> SearchResponse:
        example_id = request.example_id
        reserved = self._reserve(example_id)
        cost = 0.0
        retrying = Retrying(
            stop=stop_after_attempt(self.config.max_attempts),
            retry=retry_if_exception_type(SearchTransientError),
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=lambda state: logger.info(
                "%s attempt %d failed (%s); retrying in %.2f s",
                tool,
                state.attempt_number,
                state.outcome.exception() if state.outcome is not None else None,
                state.upcoming_sleep,
            ),
        )
        try:
            for attempt in retrying:
                with attempt:
                    response = self._attempt(tool, request, attempt.retry_state.attempt_number)
            cost = response.cost_usd
            return response
        except RetryError as gave_up:
            with self._lock:
                self.stats["failures"] += 1
            last = gave_up.last_attempt.exception()
            raise SearchTransientError(
                f"{tool} failed after {self.config.max_attempts} attempt(s); last error: {last}"
            ) from last
        except CircuitOpenError:
            with self._lock:
                self.stats["failures"] += 1
            raise
        finally:
            self._settle(example_id, reserved, cost)

    def close(self) -> None:
        if isinstance(self.limiter, RedisTokenBucket):
            self.limiter.close()
        super().close()


class ResetSearchEpisodes(gym.Wrapper):
    """Tell the env's search backend when an episode starts, so per-episode budgets restart.

    ``env = ResetSearchEpisodes(gym.make("MMSearch-v0", search=ResilientSearch(..., episode_budget_usd=0.05)))``:
    every ``reset()`` calls ``search.reset_episode(example_id)`` on the backend (wrappers forward it).
    """

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        observation, info = self.env.reset(**kwargs)
        self.env.unwrapped.search.reset_episode(info.get("example_id"))
        return observation, info
