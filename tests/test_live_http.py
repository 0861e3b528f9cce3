"""Safe fetching: the SSRF guard, redirects, deadlines, size/type caps and image-bomb limits, on real sockets."""

from __future__ import annotations

import ipaddress
import re
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from live_servers import LocalServer, Reply, closed_port, png_bomb, png_bytes

from mmsearch_env.errors import ConfigError, SearchBackendError, SearchRateLimitedError, SearchTransientError
from mmsearch_env.web.credentials import redact_url
from mmsearch_env.web.http import FetchPolicy, UnsafeURLError, fetch, is_public_address
from mmsearch_env.web.images import fetch_image
from mmsearch_env.web.status import check_status, parse_retry_after


@pytest.fixture
def server():
    with LocalServer({"/ok": Reply(body="<html>hello</html>")}) as srv:
        yield srv


def allow(srv: LocalServer, **extra) -> FetchPolicy:
    return FetchPolicy(allowed_hosts=(srv.host_port,), **extra)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/",  # RFC 1918
        "http://192.168.1.1:8080/x",
        "http://172.16.5.4/",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
        "http://100.64.0.1/",  # shared address space (CGNAT)
        "http://0.0.0.0/",  # unspecified
        "http://224.0.0.1/",  # multicast
        "http://240.0.0.1/",  # reserved
        "http://[::1]/",  # IPv6 loopback
        "http://[fe80::1]/",  # IPv6 link-local
        "http://[fc00::1]/",  # IPv6 unique local
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped loopback
        "http://[::ffff:10.0.0.1]/",  # IPv4-mapped private
        "http://[2002:a00:1::]/",  # 6to4 wrapping 10.0.0.1
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 wrapping 169.254.169.254
        "http://2130706433/",  # 127.0.0.1 as an integer
        "http://0x7f.1/",  # 127.0.0.1 in hex shorthand
        "http://localhost/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/_x",
        "ftp://example.com/file",
        "dict://127.0.0.1:11211/stat",
        "http:///nohost",
    ],
)
def test_guard_refuses_private_and_non_http_targets(url):
    with pytest.raises(UnsafeURLError, match="refused"):
        fetch(url, policy=FetchPolicy(total_timeout=2))


def test_guard_refuses_the_local_test_server_without_the_option(server):
    for url in (server.url("/ok"), server.url("/ok", host="localhost")):
        with pytest.raises(UnsafeURLError, match=re.escape("allowed_hosts=['")):
            fetch(url)
    assert server.requests == []  # refused before any connection


def test_allowed_hosts_admits_exactly_that_host_and_port(server):
    result = fetch(server.url("/ok"), policy=allow(server))
    assert result.status == 200 and result.text() == "<html>hello</html>"
    assert result.content_type == "text/html"
    # same IP, spelled differently (the allowlist is about what the URL says): refused
    with pytest.raises(UnsafeURLError):
        fetch(server.url("/ok", host="localhost"), policy=allow(server))
    # another port on the same host: refused
    with pytest.raises(UnsafeURLError):
        fetch(f"http://127.0.0.1:{closed_port()}/", policy=allow(server))
    # allow_private_hosts admits everything private
    assert fetch(server.url("/ok", host="localhost"), policy=FetchPolicy(allow_private_hosts=True)).status == 200


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("1.1.1.1", True),
        ("2001:4860:4860::8888", True),
        ("::ffff:8.8.8.8", True),  # mapped public stays public
        ("127.0.0.1", False),
        ("10.255.0.1", False),
        ("169.254.0.5", False),
        ("192.0.2.1", False),  # documentation range
        ("::", False),
        ("ff02::1", False),
        ("ff0e::1", False),  # global-scope multicast is still not a web server
        ("::ffff:192.168.0.1", False),
        ("2001::a00:1", False),  # Teredo
    ],
)
def test_is_public_address(address, public):
    assert is_public_address(ipaddress.ip_address(address)) is public


def test_redirect_to_private_address_is_refused_even_from_an_allowed_host():
    with LocalServer({"/secret": Reply(body="internal")}) as internal:
        routes = {
            "/to-private": Reply(302, headers={"Location": "http://10.0.0.1/admin"}),
            "/to-metadata": Reply(301, headers={"Location": "http://169.254.169.254/latest/meta-data/"}),
            "/to-other-port": Reply(302, headers={"Location": internal.url("/secret")}),
            "/to-ipv6-loopback": Reply(307, headers={"Location": f"http://[::1]:{internal.port}/secret"}),
            "/to-file": Reply(302, headers={"Location": "file:///etc/passwd"}),
            "/to-self": Reply(302, headers={"Location": "/final"}),
            "/final": Reply(body="arrived"),
        }
        with LocalServer(routes) as outer:
            policy = allow(outer)
            for path in ("/to-private", "/to-metadata", "/to-other-port", "/to-ipv6-loopback", "/to-file"):
                with pytest.raises(UnsafeURLError, match="refused"):
                    fetch(outer.url(path), policy=policy)
            assert internal.requests == []  # the private target was never contacted
            # a redirect within the allowed host:port is followed
            result = fetch(outer.url("/to-self"), policy=policy)
            assert result.text() == "arrived" and result.url == outer.url("/final")
            # and the explicit loosening lets the cross-port redirect through
            loose = FetchPolicy(allow_private_hosts=True)
            assert fetch(outer.url("/to-other-port"), policy=loose).text() == "internal"


def test_redirect_hops_are_bounded_and_credentials_stay_on_their_origin():
    with LocalServer() as other:
        other.routes["/landing"] = Reply(body="ok")
        routes = {
            "/loop": Reply(302, headers={"Location": "/loop"}),
            "/away": Reply(302, headers={"Location": other.url("/landing")}),
        }
        with LocalServer(routes) as srv:
            with pytest.raises(SearchBackendError, match="more than 3 redirects"):
                fetch(srv.url("/loop"), policy=FetchPolicy(allowed_hosts=(srv.host_port,), max_redirects=3))
            assert srv.hits("/loop") == 4
            policy = FetchPolicy(allowed_hosts=(srv.host_port, other.host_port))
            fetch(srv.url("/away"), policy=policy, headers={"Authorization": "Bearer sekrit-token"})
            assert srv.requests[-1].headers["authorization"] == "Bearer sekrit-token"
            assert "authorization" not in other.requests[-1].headers


def test_total_deadline_stops_a_slow_server_and_a_slow_drip():
    routes = {
        "/slow-headers": Reply(body="late", delay=10),
        # 200 bytes, one every 0.05 s: each read is quick, the whole body takes 10 s
        "/drip": Reply(body="x" * 200, drip=0.05),
    }
    with LocalServer(routes) as srv:
        policy = allow(srv, read_timeout=5, total_timeout=0.6)
        for path in ("/slow-headers", "/drip"):
            started = time.monotonic()
            with pytest.raises(SearchTransientError, match="total deadline"):
                fetch(srv.url(path), policy=policy)
            # functional, not a speed target: it returned long before the server would have finished
            assert time.monotonic() - started < 8
        # the per-read timeout fires on its own when nothing arrives
        with pytest.raises(SearchTransientError, match=re.escape("no data for 0.3 s")):
            fetch(srv.url("/slow-headers"), policy=allow(srv, read_timeout=0.3, total_timeout=5))


def test_size_caps_abort_huge_bodies_with_and_without_length_and_gzip_bombs():
    block = b"0" * 65536
    routes = {
        "/declared": Reply(body=block, repeat=200, content_type="text/html"),  # 13 MB, Content-Length says so
        "/undeclared": Reply(body=block, repeat=200, send_length=False, content_type="text/html"),
        "/gzip-bomb": Reply(body=block, repeat=400, gzip=True, content_type="text/html"),  # 26 MB → ~25 kB
    }
    with LocalServer(routes) as srv:
        policy = allow(srv, max_bytes=1_000_000)
        with pytest.raises(SearchBackendError, match="13,107,200 bytes, over the 1,000,000 byte limit"):
            fetch(srv.url("/declared"), policy=policy)
        with pytest.raises(SearchBackendError, match="over the 1,000,000 byte limit; aborted"):
            fetch(srv.url("/undeclared"), policy=policy)
        with pytest.raises(SearchBackendError, match="decompressed body is over"):
            fetch(srv.url("/gzip-bomb"), policy=policy)
        small = Reply(body="y" * 1000, gzip=True, content_type="text/plain")
        srv.routes["/gzip-ok"] = small
        assert fetch(srv.url("/gzip-ok"), policy=policy).text() == "y" * 1000


def test_statuses_map_to_typed_errors():
    http_date = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=120), usegmt=True)
    routes = {
        "/429": Reply(429, {"error": "slow down"}, headers={"Retry-After": "3"}),
        "/429-date": Reply(429, {"error": "slow down"}, headers={"Retry-After": http_date}),
        "/500": Reply(500, "oops"),
        "/503": Reply(503, "busy"),
        "/404": Reply(404, "nope"),
        "/reset": Reply(reset=True),
        "/cut-short": Reply(200, {"results": [1, 2, 3]}, declared_length=5000),
    }
    with LocalServer(routes) as srv:
        policy = allow(srv)
        with pytest.raises(SearchRateLimitedError, match="retry after 3 s") as info:
            check_status(fetch(srv.url("/429"), policy=policy), "svc")
        assert info.value.retry_after == 3.0
        with pytest.raises(SearchRateLimitedError) as info:
            check_status(fetch(srv.url("/429-date"), policy=policy), "svc")
        assert 100 < info.value.retry_after <= 120
        for path in ("/500", "/503"):
            with pytest.raises(SearchTransientError, match="HTTP 5"):
                check_status(fetch(srv.url(path), policy=policy), "svc")
        with pytest.raises(SearchBackendError, match="refused the request with HTTP 404") as info:
            check_status(fetch(srv.url("/404"), policy=policy), "svc")
        assert not isinstance(info.value, SearchTransientError)  # not worth retrying
        with pytest.raises(SearchTransientError, match="connection failed"):
            fetch(srv.url("/reset"), policy=policy)
        with pytest.raises(SearchTransientError, match="connection closed after 22 of 5,000 bytes"):
            fetch(srv.url("/cut-short"), policy=policy)
    port = closed_port()
    with pytest.raises(SearchTransientError, match="connection failed"):
        fetch(f"http://127.0.0.1:{port}/", policy=FetchPolicy(allowed_hosts=(f"127.0.0.1:{port}",)))


def test_content_types_and_image_bombs():
    routes = {
        "/img.png": Reply(body=png_bytes((10, 200, 10)), content_type="image/png"),
        "/html-as-image": Reply(body="<html></html>"),
        "/bomb.png": Reply(body=png_bomb(5000, 5000), content_type="image/png"),
        "/huge-bomb.png": Reply(body=png_bomb(), content_type="image/png"),
        "/garbage.png": Reply(body=b"not an image at all", content_type="image/png"),
    }
    with LocalServer(routes) as srv:
        policy = allow(srv)
        image = fetch_image(srv.url("/img.png"), policy=policy)
        assert image.mode == "RGB" and image.size == (24, 16) and image.getpixel((0, 0)) == (10, 200, 10)
        with pytest.raises(
            SearchBackendError, match=re.escape("content type 'text/html', expected one of ['image/*']")
        ):
            fetch_image(srv.url("/html-as-image"), policy=policy)
        with pytest.raises(SearchBackendError, match="5000x5000 pixels, over the 16,000,000 pixel limit"):
            fetch_image(srv.url("/bomb.png"), policy=policy)
        with pytest.raises(SearchBackendError, match="refused a decompression bomb"):
            fetch_image(srv.url("/huge-bomb.png"), policy=policy)
        with pytest.raises(SearchBackendError, match="not a decodable image"):
            fetch_image(srv.url("/garbage.png"), policy=policy)
        with pytest.raises(SearchBackendError, match="24x16 pixels, over the 100 pixel limit"):
            fetch_image(srv.url("/img.png"), policy=policy, max_pixels=100)


def test_https_connects_to_the_checked_ip_with_sni_and_verifies_the_certificate(tmp_path):
    trustme = pytest.importorskip("trustme", reason="trustme (dev extra) makes the local TLS certificates")
    import ssl

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with LocalServer({"/tls": Reply(body="secure")}, tls=server_ctx) as srv:
        policy = FetchPolicy(allowed_hosts=(f"localhost:{srv.port}", srv.host_port), ca_bundle=str(ca_file))
        assert fetch(srv.url("/tls", host="localhost"), policy=policy).text() == "secure"
        assert "localhost" in srv.sni  # SNI carried the name although we connected to the IP
        assert srv.requests[-1].headers["host"] == f"localhost:{srv.port}"
        # the certificate names localhost, not 127.0.0.1: verification must fail
        with pytest.raises(SearchBackendError, match="TLS handshake failed"):
            fetch(srv.url("/tls"), policy=policy)
        # and without our CA the system store does not trust it
        with pytest.raises(SearchBackendError, match="TLS handshake failed"):
            fetch(srv.url("/tls", host="localhost"), policy=FetchPolicy(allowed_hosts=(f"localhost:{srv.port}",)))


def test_policy_options_are_validated():
    with pytest.raises(ConfigError, match="unknown fetch option"):
        FetchPolicy.from_options({"allow_private": True})
    with pytest.raises(ConfigError, match="'host:port'"):
        FetchPolicy(allowed_hosts=("127.0.0.1",))
    with pytest.raises(ConfigError, match="list of 'host:port'"):
        FetchPolicy(allowed_hosts="127.0.0.1:80")
    with pytest.raises(ConfigError, match="total_timeout must be > 0"):
        FetchPolicy(total_timeout=0)
    policy = FetchPolicy.from_options({"allowed_hosts": ["[::1]:8080", "LOCALHOST:80"]})
    assert policy.allowed_hosts == ("[::1]:8080", "localhost:80")


def test_redaction_and_retry_after():
    assert "abc" not in redact_url("http://u:abc@h/x?api_key=abc&q=1")
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert parse_retry_after("-5") == 0.0


def test_dns_lookups_are_bounded_by_the_connect_timeout(monkeypatch):
    import socket

    import mmsearch_env.web.http as http_module

    def hanging_resolver(*args, **kwargs):  # a resolver that never answers in time (no traffic leaves)
        time.sleep(2)
        raise socket.gaierror("too late")

    monkeypatch.setattr(http_module.socket, "getaddrinfo", hanging_resolver)
    with pytest.raises(SearchTransientError, match=re.escape("DNS lookup timed out after 0.2 s")):
        fetch("http://slow-dns.invalid/", policy=FetchPolicy(connect_timeout=0.2))
