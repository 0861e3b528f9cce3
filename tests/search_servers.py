"""Helpers for tests that need real local servers (redis-server on 127.0.0.1, a free port, bounded waits)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_binary(name: str) -> str:
    """The binary's path; skip when missing, but fail when CI demands services (MMSEARCH_REQUIRE_SERVICES=1)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install {name}); needed for this test"
        if os.environ.get("MMSEARCH_REQUIRE_SERVICES") == "1":
            pytest.fail(message + " and MMSEARCH_REQUIRE_SERVICES=1 forbids skipping")
        pytest.skip(message)
    return path


@contextmanager
def redis_server(timeout_s: float = 10.0) -> Iterator[str]:
    """Start a throwaway redis-server on a free loopback port (no persistence); yield its URL."""
    import redis

    binary = require_binary("redis-server")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if client.ping():
                    break
            except redis.exceptions.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not come up on port {port} within {timeout_s} s")
            time.sleep(0.05)
        client.close()
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
