"""Local HTTP servers on 127.0.0.1 for the live-backend tests: real sockets, real wire formats, injected faults.

A :class:`LocalServer` maps paths to :class:`Reply` objects (or functions of the :class:`Request` that
return one). Replies can misbehave on purpose: wait before answering, drip the body slowly, send huge
bodies without holding them in memory, reset the connection, redirect anywhere. Every loop is bounded,
the server binds an ephemeral port on 127.0.0.1 only, and it records every request it saw.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lowercase names
    body: bytes
    raw_path: str

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    """What the server sends. ``body`` dict/list → JSON; str → UTF-8."""

    status: int = 200
    body: Any = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before the status line
    drip: float = 0.0  # seconds between body pieces of ``drip_bytes``
    drip_bytes: int = 1
    repeat: int = 1  # send the body this many times (huge bodies from a small buffer)
    send_length: bool = True
    reset: bool = False  # abort the TCP connection (RST) instead of answering
    gzip: bool = False
    declared_length: int | None = None  # a Content-Length that lies (a body cut short)

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, (dict, list)):
            return json.dumps(self.body).encode(), self.content_type or "application/json"
        if isinstance(self.body, str):
            return self.body.encode(), self.content_type or "text/html; charset=utf-8"
        return bytes(self.body), self.content_type or "application/octet-stream"


Route = Reply | Callable[[Request], Reply]


class LocalServer:
    """A threaded HTTP(S) server on 127.0.0.1:<ephemeral port>. Use as a context manager."""

    def __init__(self, routes: dict[str, Route] | None = None, *, tls: ssl.SSLContext | None = None):
        self.routes: dict[str, Route] = dict(routes or {})
        self.requests: list[Request] = []
        self._stopping = threading.Event()
        self.sni: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                pass

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Request(
                    method=self.command,
                    path=parts.path,
                    query={k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()},
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    raw_path=self.path,
                )
                server.requests.append(request)
                route = server.routes.get(parts.path)
                if route is None:  # "prefix*" routes, longest prefix first
                    prefixes = [k for k in server.routes if k.endswith("*") and parts.path.startswith(k[:-1])]
                    if prefixes:
                        route = server.routes[max(prefixes, key=len)]
                if route is None:
                    reply = Reply(404, {"error": f"no route {parts.path}"})
                else:
                    reply = route(request) if callable(route) else route
                self._send(reply)

            do_GET = do_POST = _handle

            def _send(self, reply: Reply) -> None:
                if reply.delay:
                    server._stopping.wait(reply.delay)
                if reply.reset:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                data, content_type = reply.encoded()
                if reply.gzip:
                    packer = zlib.compressobj(wbits=31)
                    data = packer.compress(data * reply.repeat) + packer.flush()
                    repeat = 1
                else:
                    repeat = reply.repeat
                self.send_response(reply.status)
                self.send_header("Content-Type", content_type)
                if reply.gzip:
                    self.send_header("Content-Encoding", "gzip")
                if reply.declared_length is not None:
                    self.send_header("Content-Length", str(reply.declared_length))
                elif reply.send_length:
                    self.send_header("Content-Length", str(len(data) * repeat))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                try:
                    for _ in range(repeat):
                        if reply.drip:
                            for i in range(0, len(data), reply.drip_bytes):
                                if server._stopping.wait(reply.drip):
                                    return
                                self.wfile.write(data[i : i + reply.drip_bytes])
                                self.wfile.flush()
                        else:
                            self.wfile.write(data)
                        if server._stopping.is_set():
                            return
                except OSError:  # the client hung up (as the size caps make it do)
                    return

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: self.sni.append(name)
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def hits(self, path: str) -> int:
        return sum(1 for r in self.requests if r.path == path)

    def __enter__(self) -> LocalServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def png_bytes(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (24, 16)) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims ``width``×``height`` pixels (a decompression bomb's signature)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(64)) + compressor.flush()  # a few rows only
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# -- real wire formats -----------------------------------------------------------------------------


def serpapi_metadata(engine: str, **params: Any) -> dict[str, Any]:
    return {
        "search_metadata": {
            "id": "6751c0ffee0123456789abcd",
            "status": "Success",
            "json_endpoint": "https://serpapi.com/searches/0123/6751c0ffee0123456789abcd.json",
            "created_at": "2026-11-25 12:00:00 UTC",
            "processed_at": "2026-11-25 12:00:00 UTC",
            "total_time_taken": 1.42,
        },
        "search_parameters": {"engine": engine, **params},
    }


def serpapi_lens(matches: list[dict[str, Any]], image_url: str = "https://example.org/q.png") -> dict[str, Any]:
    """A SerpAPI ``engine=google_lens`` answer with ``visual_matches`` entries as SerpAPI shapes them."""
    visual = []
    for i, match in enumerate(matches, start=1):
        entry = {
            "position": i,
            "title": match["title"],
            "link": match["link"],
            "source": "example.org",
            "source_icon": "https://encrypted-tbn0.gstatic.com/favicon-tbn?q=tbn:icon",
            "image": match["link"] + "/full.jpg",
            "image_width": 1200,
            "image_height": 800,
            "thumbnail_width": 225,
            "thumbnail_height": 150,
        }
        if match.get("thumbnail") is not None:
            entry["thumbnail"] = match["thumbnail"]
        visual.append(entry)
    return {
        **serpapi_metadata("google_lens", url=image_url, hl="en"),
        "visual_matches": visual,
        "related_content": [{"query": "flag", "link": "https://www.google.com/search?q=flag"}],
    }


def serpapi_google(results: list[dict[str, str]], q: str = "query") -> dict[str, Any]:
    """A SerpAPI ``engine=google`` answer with ``organic_results``."""
    organic = [
        {
            "position": i,
            "title": r["title"],
            "link": r["link"],
            "redirect_link": "https://www.google.com/url?sa=t&url=" + r["link"],
            "displayed_link": r["link"],
            "snippet": r.get("snippet", ""),
            "snippet_highlighted_words": [],
            "source": "Example",
        }
        for i, r in enumerate(results, start=1)
    ]
    return {
        **serpapi_metadata("google", q=q, hl="en", google_domain="google.com"),
        "search_information": {"total_results": 1234, "time_taken_displayed": 0.31, "query_displayed": q},
        "organic_results": organic,
    }


def chat_completion(content: str, prompt_tokens: int, completion_tokens: int, model: str = "tiny") -> dict[str, Any]:
    """An OpenAI ``chat.completion`` object with ``usage``."""
    return {
        "id": "chatcmpl-local-1",
        "object": "chat.completion",
        "created": 1764072000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def searxng(results: list[dict[str, str]], q: str = "query") -> dict[str, Any]:
    """A SearXNG ``format=json`` answer."""
    return {
        "query": q,
        "number_of_results": 0,
        "results": [
            {
                "url": r["url"],
                "title": r["title"],
                "content": r.get("content", ""),
                "engine": "duckduckgo",
                "parsed_url": ["http", "example.org", "/", "", "", ""],
                "template": "default.html",
                "engines": ["duckduckgo", "brave"],
                "positions": [i],
                "score": 2.0 / i,
                "category": "general",
            }
            for i, r in enumerate(results, start=1)
        ],
        "answers": [],
        "corrections": [],
        "infoboxes": [],
        "suggestions": [],
        "unresponsive_engines": [],
    }


def jina_text(title: str, url: str, content: str) -> str:
    """JINA Reader's default text answer."""
    return f"Title: {title}\n\nURL Source: {url}\n\nMarkdown Content:\n{content}\n"


def html_page(title: str, paragraphs: list[str]) -> str:
    """An article page with boilerplate around the main text (what trafilatura must cut)."""
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (
        f"<!doctype html><html><head><title>{title}</title></head><body>"
        "<nav><a href='/'>Home</a> | <a href='/about'>About us</a> | <a href='/login'>Log in</a></nav>"
        f"<article><h1>{title}</h1>{body}</article>"
        "<footer>Copyright 2026 Example Media. All rights reserved. Cookie settings.</footer></body></html>"
    )
