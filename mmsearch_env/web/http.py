"""Safe HTTP fetching for live backends: SSRF guard, timeouts, size caps, content types, image limits.

Everything a live backend downloads goes through :func:`fetch`, because the URLs come from the web
(search results, thumbnails, redirects) and must not reach the machine's own network:

* **SSRF guard.** Only ``http``/``https``. The host is resolved and *every* address must be public
  (not private, loopback, link-local, multicast, reserved, unspecified, shared/CGNAT, nor an IPv4-mapped,
  6to4, Teredo or NAT64 IPv6 address wrapping one). The connection is made to the checked IP itself
  (``Host`` header and TLS SNI/certificate check carry the name), so a DNS answer that changes between
  check and connect (DNS rebinding) cannot redirect it. Redirects are followed by hand, at most
  ``max_redirects``, and every hop is checked again.
* **Loosening is explicit.** ``allowed_hosts=("127.0.0.1:8080",)`` admits exactly that host *as written
  in the URL* and port, whatever it resolves to; ``allow_private_hosts=True`` admits every address.
  Neither changes the scheme rule. A redirect from an allowed host to another private target is refused.
* **Timeouts.** ``connect_timeout`` per connection attempt and one ``total_timeout`` for the whole fetch
  (all hops, headers and body): a watchdog shuts the socket down at the deadline, so a server that
  drips one byte a second cannot hold a worker past it.
* **Size and type.** Bodies are streamed and the fetch aborts past ``max_bytes`` (compressed and
  decompressed); ``accept`` lists the content types the caller can use (``image/*`` style wildcards).
Failures raise :mod:`mmsearch_env.errors` types: :class:`UnsafeURLError` (a refused target),
:class:`~mmsearch_env.errors.SearchTransientError` (timeouts, resets, refused connections) and
:class:`~mmsearch_env.errors.SearchBackendError` (oversize bodies, wrong content types). Any HTTP status
is returned as is: :func:`mmsearch_env.web.status.check_status` turns one into an error, and
:mod:`mmsearch_env.web.images` decodes downloaded images.
Error messages show URLs with secret query parameters redacted (see :func:`~mmsearch_env.web.credentials.redact_url`).

DNS lookups are bounded by ``connect_timeout`` (a slow lookup's thread is abandoned, not killed).
Environment proxy settings are ignored on purpose: a proxy would connect on our behalf to targets we
could not check.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import ipaddress
import json
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

from mmsearch_env.errors import (
    ConfigError,
    SearchBackendError,
    SearchTransientError,
)
from mmsearch_env.web.credentials import redact, redact_url

# check_status lives in web.status; re-exported for the modules that still import it from here
from mmsearch_env.web.status import check_status

__all__ = [
    "FetchPolicy",
    "FetchResult",
    "UnsafeURLError",
    "check_status",
    "fetch",
    "is_public_address",
]

_REDIRECTS = (301, 302, 303, 307, 308)
_CHUNK = 65536


class UnsafeURLError(SearchBackendError):
    """The SSRF guard refused a URL (scheme, or a private/loopback/... address). Not worth retrying."""


@dataclass(frozen=True)
class FetchPolicy:
    """How :func:`fetch` may reach the network. Every field is JSON-able (backends take it as a dict).

    The defaults are for untrusted URLs from the web; loosen them only for hosts you control.
    """

    # Parameters that control time
    connect_timeout: float = field(default=5.0, metadata={"help": "seconds to open one TCP/TLS connection"})
    read_timeout: float = field(default=10.0, metadata={"help": "seconds one socket read may wait"})
    total_timeout: float = field(
        default=20.0, metadata={"help": "hard deadline in seconds for the whole fetch: all redirect hops and body"}
    )
    # Parameters that control size
    max_bytes: int = field(default=5_000_000, metadata={"help": "abort bodies larger than this (bytes)"})
    max_redirects: int = field(default=5, metadata={"help": "redirect hops followed, each one re-checked"})
    # Parameters that control which targets are allowed (the SSRF guard)
    allow_private_hosts: bool = field(
        default=False,
        metadata={"help": "allow private, loopback, link-local... addresses everywhere (trusted networks only)"},
    )
    allowed_hosts: tuple[str, ...] = field(
        default=(),
        metadata={"help": "exact 'host:port' targets allowed even when they resolve to a private address"},
    )
    ca_bundle: str | None = field(
        default=None, metadata={"help": "PEM file of CA certificates to trust for https instead of the system's"}
    )
    user_agent: str = field(default="mmsearch-env", metadata={"help": "User-Agent header sent"})

    def __post_init__(self) -> None:
        if isinstance(self.allowed_hosts, str) or not all(isinstance(h, str) for h in self.allowed_hosts):
            raise ConfigError(
                f"allowed_hosts must be a list of 'host:port' strings, got {self.allowed_hosts!r}; "
                "e.g. allowed_hosts=['127.0.0.1:8080']"
            )
        object.__setattr__(self, "allowed_hosts", tuple(_host_key(h) for h in self.allowed_hosts))
        for name in ("connect_timeout", "read_timeout", "total_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0 seconds, got {getattr(self, name)!r}")
        if self.max_bytes < 1 or self.max_redirects < 0:
            raise ConfigError(
                f"max_bytes must be >= 1 and max_redirects >= 0, got {self.max_bytes} and {self.max_redirects}"
            )

    @classmethod
    def from_options(cls, options: FetchPolicy | Mapping[str, Any] | None, **defaults: Any) -> FetchPolicy:
        """Build from a dict of options (JSON config) over ``defaults``; unknown keys are a clear error."""
        if isinstance(options, FetchPolicy):
            return options
        merged = {**defaults, **dict(options or {})}
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ConfigError(f"unknown fetch option(s) {unknown}; expected some of {sorted(known)}")
        if "allowed_hosts" in merged and not isinstance(merged["allowed_hosts"], str):
            merged["allowed_hosts"] = tuple(merged["allowed_hosts"])
        return cls(**merged)

    def allowing(self, url: str) -> FetchPolicy:
        """This policy plus ``url``'s exact host:port (for endpoints the user configured, e.g. a local SearXNG)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"endpoint {redact_url(url)!r} must be an http:// or https:// URL with a host")
        key = _host_key(f"{_bracket(parts.hostname)}:{_port(parts)}")
        if key in self.allowed_hosts:
            return self
        return FetchPolicy.from_options({**_fields(self), "allowed_hosts": (*self.allowed_hosts, key)})


def _fields(policy: FetchPolicy) -> dict[str, Any]:
    return {name: getattr(policy, name) for name in policy.__dataclass_fields__}


@dataclass(frozen=True)
class FetchResult:
    """A fetched response. ``url`` is the final URL after redirects; header names are lowercase."""

    url: str
    status: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def text(self) -> str:
        charset = "utf-8"
        for part in self.headers.get("content-type", "").split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                charset = value.strip("\"'")
        try:
            return self.content.decode(charset, errors="replace")
        except LookupError:
            return self.content.decode("utf-8", errors="replace")

    def json(self, *, what: str) -> Any:
        """Parse the body as JSON or raise :class:`SearchBackendError` naming ``what`` answered."""
        try:
            return json.loads(self.content)
        except ValueError as exc:
            raise SearchBackendError(
                f"{what} returned malformed JSON (HTTP {self.status}, {len(self.content)} bytes, "
                f"content-type {self.content_type or 'none'!r}): {exc}"
            ) from exc


def is_public_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True only for globally routable unicast addresses, looking inside IPv6 forms that wrap IPv4.

    >>> [is_public_address(ipaddress.ip_address(a)) for a in ("8.8.8.8", "10.1.2.3", "::ffff:127.0.0.1")]
    [True, False, False]
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # the socket connects to the IPv4 address itself
            return is_public_address(ip.ipv4_mapped)
        wrapped = ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if wrapped is None and ip in _NAT64:
            wrapped = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if wrapped is None and ip in _IPV4_COMPATIBLE:
            wrapped = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if wrapped is not None and not is_public_address(wrapped):
            return False
    return bool(ip.is_global) and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified or ip.is_loopback)


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _port(parts: Any) -> int:
    try:
        port = parts.port
    except ValueError as exc:
        raise UnsafeURLError(f"URL has an invalid port: {exc}") from exc
    return port if port is not None else (443 if parts.scheme == "https" else 80)


def _host_key(host_port: str) -> str:
    """Normalise 'host:port' (IPv6 in brackets) for allowlist comparison."""
    host, sep, port = host_port.strip().lower().rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"allowed_hosts entries must be 'host:port' (e.g. '127.0.0.1:8080'), got {host_port!r}")
    bare = host.strip("[]")
    with contextlib.suppress(ValueError):
        bare = str(ipaddress.ip_address(bare))
    return f"{_bracket(bare)}:{int(port)}"


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # as written (IPv6 without brackets)
    port: int
    ip: str
    path: str  # path + query


def _getaddrinfo(host: str, port: int, timeout: float, shown: str) -> list[Any]:
    """``socket.getaddrinfo`` with a timeout: the lookup runs in a daemon thread that is abandoned if slow."""
    box: dict[str, Any] = {}

    def lookup() -> None:
        try:
            box["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            box["error"] = exc

    worker = threading.Thread(target=lookup, name="mmsearch-dns", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise SearchTransientError(f"cannot resolve the host of {shown!r}: DNS lookup timed out after {timeout:g} s")
    if "error" in box:
        raise SearchTransientError(f"cannot resolve the host of {shown!r}: {box['error']}") from box["error"]
    return box["infos"]


def _resolve(url: str, policy: FetchPolicy, deadline: _Deadline) -> _Target:
    """Check ``url`` against the policy and pick the IP to connect to, or raise :class:`UnsafeURLError`."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise UnsafeURLError(f"refused {shown!r}: not a valid URL ({exc})") from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise UnsafeURLError(f"refused {shown!r}: only http:// and https:// URLs are fetched, not {parts.scheme!r}")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UnsafeURLError(f"refused {shown!r}: the URL has no host")
    try:
        host = host.encode("idna").decode("ascii")  # the Host header and SNI need the ASCII form
    except UnicodeError as exc:
        raise UnsafeURLError(f"refused {shown!r}: the host name is not valid IDNA ({exc})") from exc
    port = _port(parts)
    allowed = policy.allow_private_hosts or _host_key(f"{_bracket(host)}:{port}") in policy.allowed_hosts
    infos = _getaddrinfo(host, port, min(policy.connect_timeout, max(deadline.remaining(), 0.001)), shown)
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not addresses:
        raise SearchTransientError(f"the host of {shown!r} resolved to no address")
    if not allowed:
        # Every address must be public: a name with one public and one private record is a rebinding trick.
        bad = [str(a) for a in addresses if not is_public_address(a)]
        if bad:
            raise UnsafeURLError(
                f"refused {shown!r}: {host!r} resolves to non-public address {bad[0]} (private, loopback, "
                "link-local, multicast or reserved). Allow it explicitly with fetch option "
                f"allowed_hosts=['{_bracket(host)}:{port}'] or allow_private_hosts=True if you trust it."
            )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return _Target(parts.scheme.lower(), host, port, str(addresses[0]), path)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a fixed IP while SNI and certificate verification use the URL's host name."""

    def __init__(self, ip: str, port: int, server_name: str, timeout: float, context: ssl.SSLContext):
        super().__init__(ip, port, timeout=timeout, context=context)
        self._server_name = server_name

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._server_name)


_SSL_CONTEXTS: dict[str | None, ssl.SSLContext] = {}
_SSL_LOCK = threading.Lock()


def _ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    with _SSL_LOCK:
        if ca_bundle not in _SSL_CONTEXTS:
            try:
                _SSL_CONTEXTS[ca_bundle] = ssl.create_default_context(cafile=ca_bundle)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"cannot load ca_bundle {ca_bundle!r}: {exc}") from exc
        return _SSL_CONTEXTS[ca_bundle]


class _Deadline:
    """Shuts the connection's socket down when the total time is up, unblocking any read."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def watch(self, sock: socket.socket | None) -> None:
        # the socket itself, not the connection: http.client drops conn.sock once a "Connection: close"
        # response starts, while the response keeps reading from the socket
        with self._lock:
            self._sock = sock
            if sock is not None and self.expired:
                self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            self._shutdown()

    def cancel(self) -> None:
        self._timer.cancel()


def fetch(
    url: str,
    *,
    policy: FetchPolicy | None = None,
    method: str = "GET",
    params: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    json_body: Any = None,
    accept: Sequence[str] | None = None,
    what: str | None = None,
) -> FetchResult:
    """Fetch ``url`` under ``policy`` (defaults: the strict web policy) and return the final response.

    Args:
        params: query parameters appended to the URL (their secret values are redacted in messages).
        json_body: sent as ``application/json`` (``method`` becomes ``POST`` if left at ``GET``).
        accept: allowed content types of a 2xx body (``"image/*"`` wildcards); ``None`` accepts any.
        what: how messages name the service ("SerpAPI"); defaults to the redacted URL.

    Any status is returned (callers decide with :func:`~mmsearch_env.web.status.check_status`); redirects
    are followed and re-checked.
    """
    policy = policy or FetchPolicy()
    if params:
        url = url + ("&" if urlsplit(url).query else "?") + urlencode({k: v for k, v in params.items()})
    body: bytes | None = None
    send_headers = {"User-Agent": policy.user_agent, "Accept-Encoding": "gzip, identity"}
    if accept:
        send_headers["Accept"] = ", ".join(accept)
    if json_body is not None:
        body = json.dumps(json_body).encode()
        send_headers["Content-Type"] = "application/json"
        method = "POST" if method == "GET" else method
    send_headers.update(headers or {})
    deadline = _Deadline(policy.total_timeout)
    try:
        for _hop in range(policy.max_redirects + 1):
            result = _fetch_once(url, method, body, send_headers, policy, deadline, what)
            if result.status in _REDIRECTS and "location" in result.headers:
                new_url = urljoin(url, result.headers["location"])
                if _origin(new_url) != _origin(url):
                    # credentials were meant for the first origin only
                    send_headers = {k: v for k, v in send_headers.items() if k.lower() not in _CREDENTIAL_HEADERS}
                url = new_url
                if result.status == 303 or (result.status in (301, 302) and method == "POST"):
                    method, body = "GET", None
                    send_headers.pop("Content-Type", None)
                continue
            if accept and 200 <= result.status < 300 and not _type_ok(result.content_type, accept):
                raise SearchBackendError(
                    f"{what or redact_url(result.url)} returned content type {result.content_type or 'none'!r}, "
                    f"expected one of {list(accept)}"
                )
            return result
        raise SearchBackendError(
            f"{what or redact_url(url)}: more than {policy.max_redirects} redirects; stopped at {redact_url(url)!r}"
        )
    finally:
        deadline.cancel()


_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-api-key"})


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    try:
        return parts.scheme, parts.hostname, parts.port
    except ValueError:
        return parts.scheme, parts.hostname, None


def _type_ok(content_type: str, accept: Sequence[str]) -> bool:
    for pattern in accept:
        pattern = pattern.lower()
        if pattern == "*/*" or content_type == pattern:
            return True
        if pattern.endswith("/*") and content_type.startswith(pattern[:-1]):
            return True
    return False


def _fetch_once(
    url: str,
    method: str,
    body: bytes | None,
    headers: Mapping[str, str],
    policy: FetchPolicy,
    deadline: _Deadline,
    what: str | None,
) -> FetchResult:
    target = _resolve(url, policy, deadline)
    name = what or redact_url(url)
    if deadline.remaining() <= 0:
        raise SearchTransientError(f"{name}: timed out after {policy.total_timeout:g} s (total)")
    connect_timeout = min(policy.connect_timeout, deadline.remaining())
    conn: http.client.HTTPConnection
    if target.scheme == "https":
        conn = _PinnedHTTPSConnection(
            target.ip, target.port, target.host, connect_timeout, _ssl_context(policy.ca_bundle)
        )
    else:
        conn = http.client.HTTPConnection(target.ip, target.port, timeout=connect_timeout)
    default_port = 443 if target.scheme == "https" else 80
    host_header = _bracket(target.host) + ("" if target.port == default_port else f":{target.port}")
    try:
        try:
            conn.connect()
        except TimeoutError as exc:
            raise SearchTransientError(f"{name}: connection timed out after {connect_timeout:g} s") from exc
        except ssl.SSLError as exc:
            raise SearchBackendError(f"{name}: TLS handshake failed ({exc.reason or exc})") from exc
        deadline.watch(conn.sock)
        conn.sock.settimeout(policy.read_timeout)
        conn.request(method, target.path, body=body, headers={"Host": host_header, **headers})
        response = conn.getresponse()
        response_headers = {k.lower(): v for k, v in response.getheaders()}
        declared = response_headers.get("content-length", "")
        if declared.isdigit() and int(declared) > policy.max_bytes:
            raise SearchBackendError(
                f"{name}: response body is {int(declared):,} bytes, over the {policy.max_bytes:,} byte limit"
            )
        content = _read_body(response, response_headers, policy, name)
        if deadline.expired:
            raise TimeoutError
        return FetchResult(url=url, status=response.status, headers=response_headers, content=content)
    except SearchTransientError as exc:
        if deadline.expired:  # the watchdog's shutdown looks like an early close: say what really happened
            raise SearchTransientError(_timeout_message(name, policy, deadline)) from exc
        raise
    except SearchBackendError:
        raise
    except TimeoutError as exc:
        raise SearchTransientError(_timeout_message(name, policy, deadline)) from exc
    except (OSError, http.client.HTTPException) as exc:
        if deadline.expired:
            raise SearchTransientError(_timeout_message(name, policy, deadline)) from exc
        kind = type(exc).__name__
        raise SearchTransientError(f"{name}: connection failed ({kind}: {redact(str(exc)) or 'no detail'})") from exc
    finally:
        deadline.watch(None)
        conn.close()


def _timeout_message(name: str, policy: FetchPolicy, deadline: _Deadline) -> str:
    if deadline.expired:
        return f"{name}: timed out after {policy.total_timeout:g} s (total deadline)"
    return f"{name}: timed out reading the response (no data for {policy.read_timeout:g} s)"


def _read_body(response: http.client.HTTPResponse, headers: Mapping[str, str], policy: FetchPolicy, name: str) -> bytes:
    encoding = headers.get("content-encoding", "identity").lower()
    inflater = zlib.decompressobj(wbits=47) if encoding in ("gzip", "x-gzip", "deflate") else None
    out = io.BytesIO()
    raw = 0
    while True:
        chunk = response.read1(_CHUNK)
        if not chunk:
            break
        raw += len(chunk)
        if raw > policy.max_bytes:
            raise SearchBackendError(f"{name}: response body is over the {policy.max_bytes:,} byte limit; aborted")
        if inflater is not None:
            try:
                # max_length bounds the output of a zip bomb before it is materialised
                chunk = inflater.decompress(chunk, policy.max_bytes + 1 - out.tell())
            except zlib.error as exc:
                raise SearchBackendError(f"{name}: corrupt {encoding} body ({exc})") from exc
            if inflater.unconsumed_tail:
                chunk += b"x"  # more output was pending: over the limit
        out.write(chunk)
        if out.tell() > policy.max_bytes:
            raise SearchBackendError(f"{name}: decompressed body is over the {policy.max_bytes:,} byte limit; aborted")
    declared = headers.get("content-length", "")
    if declared.isdigit() and raw < int(declared):
        # http.client's read1 returns b"" on an early close instead of raising: catch the cut here
        raise SearchTransientError(f"{name}: connection closed after {raw:,} of {int(declared):,} bytes")
    return out.getvalue()
