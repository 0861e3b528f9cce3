"""HTTP status classification for live backends: which of our errors a non-2xx answer becomes.

:func:`check_status` maps 429 → :class:`~mmsearch_env.errors.SearchRateLimitedError` (with the
``Retry-After`` parsed by :func:`parse_retry_after`, the package's one parser of that header),
5xx → :class:`~mmsearch_env.errors.SearchTransientError` (worth retrying) and any other non-2xx →
:class:`~mmsearch_env.errors.SearchBackendError` (not worth retrying).
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Protocol, TypeVar

from mmsearch_env.errors import SearchBackendError, SearchRateLimitedError, SearchTransientError
from mmsearch_env.web.credentials import redact

__all__ = ["HTTPReply", "check_status", "parse_retry_after"]

_REDIRECTS = (301, 302, 303, 307, 308)


class HTTPReply(Protocol):
    """What :func:`check_status` reads of a reply (a :class:`~mmsearch_env.web.http.FetchResult`)."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


Reply = TypeVar("Reply", bound=HTTPReply)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date; ``None`` if absent/bad.

    >>> parse_retry_after("7"), parse_retry_after(None), parse_retry_after("soon")
    (7.0, None, None)
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
        return max(0.0, seconds) if seconds == seconds else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def check_status(result: Reply, what: str, detail: str | None = None) -> Reply:
    """Return ``result`` when its status is 2xx, else raise the matching error (see the module docstring).

    ``detail`` is the service's own error text (e.g. SerpAPI's ``error`` field), shown redacted.
    Header names are looked up in lowercase (as :class:`~mmsearch_env.web.http.FetchResult` stores them).
    """
    if 200 <= result.status < 300:
        return result
    extra = f": {redact(detail)[:300]}" if detail else ""
    if result.status == 429:
        retry_after = parse_retry_after(result.headers.get("retry-after"))
        hint = f"; retry after {retry_after:g} s" if retry_after is not None else ""
        raise SearchRateLimitedError(f"{what} is rate limiting us (HTTP 429){hint}{extra}", retry_after=retry_after)
    if result.status >= 500:
        raise SearchTransientError(f"{what} failed with HTTP {result.status}{extra}")
    if result.status in _REDIRECTS:
        raise SearchBackendError(f"{what} answered HTTP {result.status} without a Location header")
    raise SearchBackendError(f"{what} refused the request with HTTP {result.status}{extra}")
