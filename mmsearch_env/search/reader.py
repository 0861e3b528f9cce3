"""Page readers: turn a result URL into the page's main text, locally (trafilatura) or through JINA Reader.

* :class:`LocalReader` downloads the page with the safe fetcher (SSRF guard, caps) and extracts the main
  text with ``trafilatura`` (``pip install 'mmsearch-env[live]'``). ``text/plain`` pages are used as is.
* :class:`JinaReader` asks ``{endpoint}{url}`` (default ``https://r.jina.ai/``) for the page as text; JINA
  fetches the page from its own network, so only the scheme of the page URL is checked here. The key
  (``JINA_API_KEY``) is optional: JINA serves keyless requests at a lower rate limit.

Both raise :class:`~mmsearch_env.errors.SearchBackendError` (or a subclass) when a page cannot be read;
the text pipeline then replaces that page with the next search result.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from mmsearch_env.errors import ConfigError, SearchBackendError, did_you_mean
from mmsearch_env.search.extras import require
from mmsearch_env.web.credentials import get_secret, redact_url
from mmsearch_env.web.http import FetchPolicy, UnsafeURLError, fetch
from mmsearch_env.web.status import check_status

__all__ = ["JinaReader", "LocalReader", "PageReader", "PageText", "make_reader"]

_HTML_TYPES = ("text/html", "application/xhtml+xml", "text/plain")
_TITLE_RE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class PageText:
    """The readable content of one page."""

    url: str
    title: str
    text: str


class PageReader(Protocol):
    name: str

    def read(self, url: str) -> PageText: ...


def _trafilatura() -> Any:
    return require(
        "trafilatura", extra="live", purpose="the local page reader", alternative=" or reader={'kind': 'jina'}"
    )


class LocalReader:
    """Fetch the page under ``policy`` and extract its main text with trafilatura (at most ``max_chars``)."""

    name = "local"

    def __init__(self, policy: FetchPolicy, *, max_chars: int = 20_000) -> None:
        self.policy = policy
        self.max_chars = max_chars

    def read(self, url: str) -> PageText:
        shown = redact_url(url)
        result = check_status(
            fetch(url, policy=self.policy, accept=_HTML_TYPES, what=f"page {shown!r}"), f"page {shown!r}"
        )
        raw = result.text()
        if result.content_type == "text/plain":
            return PageText(result.url, "", raw.strip()[: self.max_chars])
        trafilatura = _trafilatura()
        text = trafilatura.extract(raw, url=result.url, include_comments=False, include_tables=True)
        if not text or not text.strip():
            raise SearchBackendError(f"page {shown!r}: no readable main text found")
        match = _TITLE_RE.search(raw)
        title = html.unescape(" ".join(match.group(1).split())) if match else ""
        return PageText(result.url, title, text.strip()[: self.max_chars])


class JinaReader:
    """Read pages through JINA Reader: ``GET {endpoint}{url}`` returns the page as titled plain text."""

    name = "jina"

    def __init__(
        self,
        *,
        endpoint: str = "https://r.jina.ai/",
        api_key_env: str | None = "JINA_API_KEY",
        secrets_file: str | None = None,
        policy: FetchPolicy | None = None,
        max_chars: int = 20_000,
    ) -> None:
        self.endpoint = endpoint if endpoint.endswith("/") else endpoint + "/"
        self.policy = (policy or FetchPolicy(total_timeout=30)).allowing(self.endpoint)
        self.max_chars = max_chars
        self._key = get_secret(api_key_env, secrets_file=secrets_file, required=False) if api_key_env else None

    def read(self, url: str) -> PageText:
        if urlsplit(url).scheme not in ("http", "https"):
            raise UnsafeURLError(f"refused {redact_url(url)!r}: only http:// and https:// pages are read")
        headers = {"X-Return-Format": "markdown"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        what = f"JINA Reader for {redact_url(url)!r}"
        result = fetch(self.endpoint + url, policy=self.policy, headers=headers, accept=("text/*",), what=what)
        check_status(result, what, detail=result.text()[:200] if result.status >= 400 else None)
        return _parse_jina(url, result.text(), self.max_chars)


def _parse_jina(url: str, body: str, max_chars: int) -> PageText:
    """Split JINA's ``Title: ...`` / ``URL Source: ...`` / ``Markdown Content:`` header from the text."""
    title, text = "", body
    head, marker, rest = body.partition("Markdown Content:")
    if marker:
        text = rest
        for line in head.splitlines():
            if line.startswith("Title:"):
                title = line[len("Title:") :].strip()
    text = text.strip()
    if not text:
        raise SearchBackendError(f"JINA Reader returned no text for {redact_url(url)!r}")
    return PageText(url, title, text[:max_chars])


READERS = ("local", "jina")


def make_reader(options: Mapping[str, Any] | None, *, web_policy: FetchPolicy) -> PageReader:
    """``{"kind": "local"}`` (default) or ``{"kind": "jina", "endpoint": ..., "api_key_env": ...}``."""
    options = dict(options or {})
    kind = options.pop("kind", "local")
    if kind not in READERS:
        raise ConfigError(f"unknown reader kind {kind!r}; expected one of {READERS}." + did_you_mean(kind, READERS))
    try:
        if kind == "local":
            return LocalReader(web_policy, **options)
        api = FetchPolicy.from_options(options.pop("fetch", None), total_timeout=30)
        return JinaReader(policy=api, **options)
    except TypeError as exc:
        raise ConfigError(f"reader options {options!r} do not fit the {kind!r} reader: {exc}") from exc
