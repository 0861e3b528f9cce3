"""A local OpenAI-compatible chat server for tests: real HTTP on 127.0.0.1, real wire format.

It stands in for a paid API (the only kind of mock the project allows). ``POST /v1/chat/completions``
answers like the OpenAI API does (``id``, ``object``, ``choices[0].message``, ``finish_reason``,
``usage``), with a scripted "model":

* judge prompts (they end "Reply with exactly one word: CORRECT or INCORRECT.") get ``CORRECT`` when
  the ground truth appears inside the model's answer (a lenient judge), else ``INCORRECT``;
* other conversations: no image-search results yet → image search; otherwise the answer is the
  top result's title with a leading "Flag of " removed (tags protocol).

Usage is deterministic: prompt tokens = characters of text // 4 + 85 per image; completion tokens =
characters of the reply // 4. Failures can be scheduled with ``fail_next`` (a list of HTTP statuses).
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

_TITLE_RE = re.compile(r"^\s*\d+\.\s*title:\s*(.+?)\s*$", re.MULTILINE)


class FakeOpenAI:
    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.images: list[tuple[int, int]] = []
        self.fail_next: list[int] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    status = server.fail_next.pop(0) if server.fail_next else 200
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if server.delay_s:
                        time.sleep(server.delay_s)
                    if status != 200:
                        extra = {"Retry-After": "0"} if status == 429 else {}
                        self._send(status, {"error": {"message": "scheduled failure"}}, extra)
                        return
                    self._send(200, server.reply(body))
                finally:
                    with server._lock:
                        server.in_flight -= 1

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
        else:
            titles = _TITLE_RE.findall(prompt)
            if not titles:
                content = "<reason>I do not recognise this image.</reason><search><img></search>"
            else:
                guess = titles[0].removeprefix("Flag of ").split(" - ")[0]
                content = f"<reason>The top result names it.</reason><answer>{guess}</answer>"
        usage = {"prompt_tokens": len(prompt) // 4 + 85 * images, "completion_tokens": len(content) // 4}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": usage,
        }
