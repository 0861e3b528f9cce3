"""The search service bounds request size and shape: a real uvicorn server on 127.0.0.1, hostile bodies."""

from __future__ import annotations

import http.client
import io
import json
import re
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
from PIL import Image

from mmsearch_env.errors import ConfigError, SearchBackendError
from mmsearch_env.search import ImageSearchRequest, TextSearchRequest
from mmsearch_env.search.codec import encode_image
from mmsearch_env.search.service import (
    MAX_BODY_BYTES,
    MAX_JSON_DEPTH,
    BackgroundServer,
    ServiceSearch,
    build_service_backend,
    create_app,
)

TOKEN = "test-token-456"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
SMALL = 64 * 1024


@pytest.fixture(scope="module")
def servers():
    backend = build_service_backend("sample", cache=None)
    with (
        BackgroundServer(create_app(backend, token=TOKEN)) as default,
        BackgroundServer(create_app(backend, token=TOKEN, max_body_bytes=SMALL)) as small,
    ):
        yield {"default": default, "small": small}
    backend.close()


def _declared_only(url: str, path: str, length: int, token: str | None = TOKEN) -> tuple[int, dict]:
    """Send headers declaring ``length`` bytes but no body: the answer cannot come from reading it."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.putrequest("POST", path)
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(length))
        if token:
            connection.putheader("Authorization", f"Bearer {token}")
        connection.endheaders()
        reply = connection.getresponse()
        return reply.status, json.loads(reply.read() or b"{}")
    finally:
        connection.close()


def test_defaults_are_documented_values():
    assert MAX_BODY_BYTES == 16 * 2**20 and MAX_JSON_DEPTH == 32
    with pytest.raises(ConfigError, match="max_body_bytes and max_json_depth must be >= 1"):
        create_app(build_service_backend("sample", cache=None), token=None, max_body_bytes=0)


def test_a_fifty_megabyte_body_is_413_before_it_is_read(servers):
    status, body = _declared_only(servers["default"].url, "/v1/image_search", 50 * 2**20)
    assert status == 413
    assert f"exceeds this service's limit of {MAX_BODY_BYTES} bytes" in body["detail"]
    assert "--max-body-bytes" in body["detail"]
    # authentication comes first: a stranger's large body is a 401, never read either
    status, body = _declared_only(servers["default"].url, "/v1/image_search", 50 * 2**20, token=None)
    assert status == 401


def test_a_chunked_body_is_cut_off_at_the_limit(servers):
    def chunks():
        for _ in range(40):
            yield b" " * 4096  # 160 KiB of whitespace, no Content-Length

    reply = requests.post(f"{servers['small'].url}/v1/text_search", data=chunks(), headers=HEADERS, timeout=10)
    assert reply.status_code == 413
    assert reply.json()["detail"].startswith(f"request body of more than {SMALL} bytes exceeds")


# (body, status, message) -- each a 4xx that says what was wrong
BAD_BODIES = [
    pytest.param(b"[" * 100_000 + b"]" * 100_000, 400, "nested deeper than 32 levels", id="array nested 100k deep"),
    pytest.param(b'{"query": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001, 400, "nested deeper", id="objects 50k"),
    pytest.param(b"[" * 100_000, 400, "nested deeper", id="unclosed 100k"),
    pytest.param(b'{"query": "\xff\xfe not utf-8"}', 400, "bad text_search request body", id="invalid UTF-8"),
    pytest.param(b"\x00\x01\x02", 400, "bad text_search request body", id="binary garbage"),
    pytest.param(b"", 400, "bad text_search request body", id="empty body"),
    pytest.param(b'"just a string"', 400, "must be a JSON object", id="not an object"),
    pytest.param(b"[" * 33 + b"]" * 33, 400, "nested deeper than 32", id="one level past the limit"),
    pytest.param(b'{"query": "' + b"[" * 100_000 + b'"}', 200, None, id="brackets inside a string are text"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD_BODIES)
def test_hostile_json_is_a_4xx_with_a_message(servers, body, status, message):
    reply = requests.post(f"{servers['default'].url}/v1/text_search", data=body, headers=HEADERS, timeout=30)
    assert reply.status_code == status, reply.text[:300]
    if message is not None:
        assert message in reply.json()["detail"]
    else:
        assert reply.json()["error"] is None  # searched: a long odd query is still a query


def test_a_legitimate_multi_megabyte_image_passes_and_an_oversized_one_is_a_clear_tool_error(servers):
    noise = np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
    image = Image.fromarray(noise)  # incompressible: its PNG is ~3 MB, base64 ~4 MB
    body = json.dumps({"image_png_b64": encode_image(image), "example_id": "sample-arvenia-image"}).encode()
    assert 3 * 2**20 < len(body) < MAX_BODY_BYTES
    reply = requests.post(f"{servers['default'].url}/v1/image_search", data=body, headers=HEADERS, timeout=60)
    assert reply.status_code == 200 and reply.json()["error"] is None
    client = ServiceSearch(servers["small"].url, token=TOKEN)
    with pytest.raises(SearchBackendError, match=re.escape(f"exceeds this service's limit of {SMALL} bytes")):
        client.image_search(ImageSearchRequest(image=image))
    assert client.text_search(TextSearchRequest("capital of Arvenia")).ok  # the small server still serves
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    assert len(buffer.getvalue()) > SMALL


def test_a_query_with_a_lone_surrogate_is_searched_not_a_500(servers):
    body = b'{"query": "capital of Arvenia \\ud83d", "question": "Which\\udc00?"}'  # valid JSON, invalid Unicode
    reply = requests.post(f"{servers['default'].url}/v1/text_search", data=body, headers=HEADERS, timeout=30)
    assert reply.status_code == 200, reply.text[:300]
    assert reply.json()["error"] is None and reply.json()["results"]
