"""A local OpenAI-compatible chat server for tests: real HTTP on 127.0.0.1, real wire format.

It stands in for a paid API (the only kind of mock the project allows). ``POST /v1/chat/completions``
answers like the OpenAI API does (``id``, ``object``, ``choices[0].message``, ``finish_reason``,
``usage``; errors as ``{"error": {"message", "type", "code"}}``), with a scripted "model":

* judge prompts (they end "Reply with exactly one word: CORRECT or INCORRECT.") get ``CORRECT`` when
  the ground truth appears inside the model's answer (a lenient judge), else ``INCORRECT``;
* summariser prompts (they carry "Page text:") get the page's first two sentences;
* other conversations: no image-search results yet → image search; otherwise the answer is the
  top result's title with a leading "Flag of " removed (tags protocol).

Usage is deterministic: prompt tokens = characters of text // 4 + 85 per image; completion tokens =
characters of the reply // 4. A reply longer than the request's ``max_tokens`` is cut to
``max_tokens * 4`` characters with ``finish_reason="length"``, as a real server cuts it.

Faults: ``fail_next`` schedules HTTP statuses for the next requests (429 carries ``Retry-After: 0``; 401
echoes the request's ``Authorization`` header in its message, as careless servers do); ``delay_s``
holds every reply while watching the socket: a client that gives up and closes its connection is counted
in ``disconnects`` (and sets ``disconnected``), and that request is never answered.
"""

from __future__ import annotations

import base64
import io
import json
import re
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

_TITLE_RE = re.compile(r"^\s*\d+\.\s*title:\s*(.+?)\s*$", re.MULTILINE)
_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


class FakeOpenAI:
    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []  # per request, header names lower-cased
        self.images: list[tuple[int, int]] = []
        self.fail_next: list[int] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.answered = 0
        self.disconnects = 0
        self.disconnected = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real API servers do

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    self._send(404, _error(404, f"no route {self.path}"))
                    return
                with server._lock:
                    server.requests.append(body)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                    status = server.fail_next.pop(0) if server.fail_next else 200
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if server.delay_s and not self._wait_unless_closed(server.delay_s):
                        with server._lock:
                            server.disconnects += 1
                        server.disconnected.set()
                        self.close_connection = True
                        return
                    if status == 401:
                        echoed = f"Incorrect API key provided: {self.headers.get('Authorization', '(none)')}."
                        self._send(401, _error(401, echoed))
                    elif status != 200:
                        extra = {"Retry-After": "0"} if status == 429 else {}
                        self._send(status, _error(status, "scheduled failure"), extra)
                    else:
                        self._send(200, server.reply(body))
                    with server._lock:
                        server.answered += 1
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _wait_unless_closed(self, seconds: float) -> bool:
                """Sleep ``seconds``; False as soon as the client closes the connection (it gave up)."""
                deadline = time.monotonic() + seconds
                while (remaining := deadline - time.monotonic()) > 0:
                    readable, _, _ = select.select([self.connection], [], [], min(remaining, 0.05))
                    if readable:
                        try:
                            if self.connection.recv(1, socket.MSG_PEEK) == b"":
                                return False
                        except OSError:
                            return False
                return True

            def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def reply(self, body: dict[str, Any]) -> dict[str, Any]:
        texts, images = [], 0
        for message in body["messages"]:
            content = message["content"]
            if isinstance(content, str):
                texts.append(content)
                continue
            for part in content:
                if part["type"] == "text":
                    texts.append(part["text"])
                elif part["type"] == "image_url":
                    images += 1
                    url = part["image_url"]["url"]
                    assert url.startswith("data:image/png;base64,"), url[:40]
                    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
                    with self._lock:
                        self.images.append(image.size)
        prompt = "\n".join(texts)
        if prompt.rstrip().endswith("CORRECT or INCORRECT."):
            truth = re.search(r"^Ground truth: (.*)$", prompt, re.MULTILINE).group(1).strip().lower()
            answer = re.search(r"^Model's answer: (.*)$", prompt, re.MULTILINE).group(1).strip().lower()
            content = "CORRECT" if truth and truth in answer else "INCORRECT"
        elif "\nPage text:\n" in prompt:
            page = prompt.split("\nPage text:\n", 1)[1].split("\n\nWrite at most", 1)[0]
            content = " ".join(re.split(r"(?<=[.!?])\s+", " ".join(page.split()))[:2])
        else:
            titles = _TITLE_RE.findall(prompt)
            if not titles:
                content = "<reason>I do not recognise this image.</reason><search><img></search>"
            else:
                guess = titles[0].removeprefix("Flag of ").split(" - ")[0]
                content = f"<reason>The top result names it.</reason><answer>{guess}</answer>"
        finish_reason = "stop"
        if body.get("max_tokens") is not None and len(content) // 4 > body["max_tokens"]:
            content, finish_reason = content[: body["max_tokens"] * 4], "length"
        usage = {"prompt_tokens": len(prompt) // 4 + 85 * images, "completion_tokens": len(content) // 4}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage,
        }


def _error(status: int, message: str) -> dict[str, Any]:
    kind, code = _ERRORS.get(status, ("server_error", None))
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
