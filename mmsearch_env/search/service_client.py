"""The environment's client of ``mmsearch serve`` (the protocol: :mod:`mmsearch_env.search.service`).

``search="service"``, ``search_options={"url": "http://127.0.0.1:8765"}``; the token comes from
``$MMSEARCH_SERVICE_TOKEN`` or ``token=``.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import requests

from mmsearch_env.errors import ConfigError, SearchBackendError, SearchRateLimitedError, SearchTransientError
from mmsearch_env.search.base import (
    ImageSearchRequest,
    SearchBackendBase,
    SearchResponse,
    TextSearchRequest,
    ToolName,
)
from mmsearch_env.search.codec import request_to_json, response_from_json
from mmsearch_env.web.status import parse_retry_after

__all__ = ["TOKEN_ENV", "ServiceSearch"]

#: Environment variable holding the service's bearer token (server and client).
TOKEN_ENV = "MMSEARCH_SERVICE_TOKEN"


class ServiceSearch(SearchBackendBase):
    """The environment's client of ``mmsearch serve``.

    Args:
        url: the service's base URL (``http://127.0.0.1:8765``).
        token: bearer token; default ``$MMSEARCH_SERVICE_TOKEN``.
        timeout_s: HTTP timeout per call.

    Errors come back typed: the service's transient / rate-limited / permanent backend failures raise
    :class:`~mmsearch_env.errors.SearchTransientError` / :class:`~mmsearch_env.errors.SearchRateLimitedError` /
    :class:`~mmsearch_env.errors.SearchBackendError`; an unreachable service or HTTP 5xx is transient; HTTP 401
    is a :class:`~mmsearch_env.errors.SearchBackendError` saying the token was rejected. The env turns all of
    them into tool-error turns.
    """

    name = "service"
    price_per_call = 0.0  # the server's backend reports the real cost per response

    def __init__(self, url: str = "http://127.0.0.1:8765", token: str | None = None, timeout_s: float = 60.0):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"service url must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self._token = token if token is not None else os.environ.get(TOKEN_ENV)
        self.timeout_s = float(timeout_s)
        self.cache_options = {"url": self.url}
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            if self._token:
                session.headers["Authorization"] = f"Bearer {self._token}"
            self._local.session = session
        return session

    def _post(self, tool: ToolName, body: dict[str, Any]) -> SearchResponse:
        try:
            reply = self._session().post(f"{self.url}/v1/{tool}", json=body, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise SearchTransientError(f"search service at {self.url} unreachable: {type(exc).__name__}") from exc
        if reply.status_code == 401:
            hint = "no token was given" if not self._token else "the token was rejected"
            raise SearchBackendError(
                f"search service at {self.url} answered HTTP 401 Unauthorized ({hint}): set ${TOKEN_ENV} to the "
                "token `mmsearch serve` printed at start-up"
            )
        if reply.status_code == 429:
            raise SearchRateLimitedError(
                f"search service at {self.url}: HTTP 429", parse_retry_after(reply.headers.get("Retry-After"))
            )
        if reply.status_code >= 500:
            raise SearchTransientError(f"search service at {self.url}: HTTP {reply.status_code}")
        if reply.status_code != 200:
            raise SearchBackendError(f"search service at {self.url}: HTTP {reply.status_code}: {reply.text[:300]}")
        try:
            data = reply.json()
        except ValueError as exc:
            raise SearchTransientError(f"search service at {self.url} sent malformed JSON") from exc
        kind = data.get("error_type") if isinstance(data, dict) else None
        if kind == "rate_limited":
            raise SearchRateLimitedError(str(data.get("error")), data.get("retry_after"))
        if kind == "transient":
            raise SearchTransientError(str(data.get("error")))
        if kind == "backend":
            raise SearchBackendError(str(data.get("error")))
        return response_from_json(data)

    def image_search(self, request: ImageSearchRequest) -> SearchResponse:
        return self._post("image_search", request_to_json(request))

    def text_search(self, request: TextSearchRequest) -> SearchResponse:
        return self._post("text_search", request_to_json(request))

    def metrics(self) -> dict[str, Any]:
        """The service's ``/metrics`` document."""
        reply = self._session().get(f"{self.url}/metrics", timeout=self.timeout_s)
        if reply.status_code == 401:
            raise SearchBackendError(f"search service at {self.url} rejected the token (HTTP 401)")
        reply.raise_for_status()
        return reply.json()

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()

    def __repr__(self) -> str:
        return f"ServiceSearch({self.url!r})"  # never the token
