"""A policy backed by any OpenAI-compatible chat endpoint (vLLM, SGLang, llama.cpp server, hosted APIs).

The observation's messages are sent to ``POST {base_url}/chat/completions`` with ``requests``: text
blocks as text parts, images as ``image_url`` parts holding PNG ``data:`` URLs (no image hosting
needed). A batch is sent as concurrent requests (``max_concurrency`` at a time); each reply's ``usage``
is exposed through ``last_usage`` (the rollout engine's token hook). Tool-result messages (role
``"tool"`` in the ``tool_calls`` protocol) are sent as ``"user"`` messages, because the turns carry
their tool calls as text, not as the API's structured ``tool_calls``.

Transient failures (connection errors, HTTP 429 and 5xx) are retried with exponential backoff,
honouring ``Retry-After``; when retries run out the call raises :class:`EndpointError`, which stops the
rollout (finished episodes are already saved; rerun to resume). The API key (argument, or the
``OPENAI_API_KEY`` environment variable) is sent as a Bearer token and never logged.
"""

from __future__ import annotations

import base64
import concurrent.futures
import io
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from agents.policy import PolicyBase
from mmsearch_env.errors import ConfigError, MMSearchError

__all__ = ["EndpointError", "OpenAIChatClient", "OpenAIPolicy", "image_data_url", "parse_endpoint_spec", "to_openai"]

logger = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class EndpointError(MMSearchError, RuntimeError):
    """An OpenAI-compatible endpoint failed (after retries) or answered something that is not a chat reply."""


def parse_endpoint_spec(spec: str) -> tuple[str, str]:
    """``"MODEL@BASE_URL"`` → ``(model, base_url)``; the model may contain ``:`` (``"llama3:8b@http://..."``).

    >>> parse_endpoint_spec("gpt-4o@http://127.0.0.1:8000/v1")
    ('gpt-4o', 'http://127.0.0.1:8000/v1')
    """
    model, sep, base_url = spec.partition("@")
    if not sep or not model or not base_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"endpoint {spec!r} must look like MODEL@BASE_URL, e.g. "
            "'gpt-4o@https://api.openai.com/v1' or 'Qwen2.5-VL-7B-Instruct@http://127.0.0.1:8000/v1'"
        )
    return model, base_url.rstrip("/")


def image_data_url(image: Any) -> str:
    """A PIL image as a ``data:image/png;base64,...`` URL."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def to_openai(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Convert the env's Hugging Face style chat messages to the OpenAI chat format."""
    out: list[dict[str, Any]] = []
    for message in messages:
        role = message["role"]
        blocks = message["content"]
        if isinstance(blocks, str):
            out.append({"role": "user" if role == "tool" else role, "content": blocks})
            continue
        if role in ("assistant", "system"):  # text only in these roles
            out.append({"role": role, "content": "".join(b.get("text", "") for b in blocks if b["type"] == "text")})
            continue
        parts: list[dict[str, Any]] = []
        for block in blocks:
            if block["type"] == "text":
                parts.append({"type": "text", "text": block["text"]})
            elif block["type"] == "image":
                parts.append({"type": "image_url", "image_url": {"url": image_data_url(block["image"])}})
        out.append({"role": "user", "content": parts})
    return out


class OpenAIChatClient:
    """A small, thread-safe client for ``POST {base_url}/chat/completions`` with retries.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``.
        api_key: Bearer token; default ``$OPENAI_API_KEY``; none sent when empty.
        timeout: seconds per request.
        max_retries: retries of a transient failure (connection error, 408/409/429/5xx).
        backoff_s: first retry delay, doubled each retry (``Retry-After`` wins when given).
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        pool_size: int = 16,
    ):
        try:
            import requests
            from requests.adapters import HTTPAdapter
        except ImportError as exc:  # pragma: no cover - requests is a core dependency
            raise ConfigError("OpenAIPolicy needs requests: pip install requests") from exc
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.timeout = timeout
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self._api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        self._requests = requests
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(1, pool_size))
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIChatClient(url={self.url!r})"

    def create(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Send one chat completion request; return the parsed JSON reply (retrying transient failures)."""
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        problem = "no attempt made"
        for attempt in range(self.max_retries + 1):
            delay = self.backoff_s * (2**attempt)
            try:
                response = self._session.post(self.url, json=payload, headers=headers, timeout=self.timeout)
            except self._requests.RequestException as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    try:
                        body = response.json()
                    except ValueError as exc:
                        raise EndpointError(f"{self.url} returned HTTP 200 with a body that is not JSON") from exc
                    if not isinstance(body, dict) or not body.get("choices"):
                        raise EndpointError(f"{self.url} returned JSON without 'choices': {str(body)[:200]}")
                    return body
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code not in _RETRY_STATUS:
                    raise EndpointError(f"{self.url} refused the request ({problem}); check the model name and key")
                retry_after = response.headers.get("Retry-After")
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    delay = min(float(retry_after), 60.0)
            if attempt < self.max_retries:
                logger.warning("chat request failed (%s); retry %d in %.1f s", problem, attempt + 1, delay)
                time.sleep(delay)
        raise EndpointError(f"{self.url} failed after {self.max_retries + 1} attempts: {problem}")

    def close(self) -> None:
        self._session.close()


def reply_text(body: Mapping[str, Any]) -> str:
    """The assistant text of a chat completion reply (content parts joined; ``""`` when empty)."""
    message = body["choices"][0].get("message") or {}
    content = message.get("content")
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    return content if isinstance(content, str) else ""


def reply_usage(body: Mapping[str, Any]) -> dict[str, int] | None:
    usage = body.get("usage")
    if not isinstance(usage, Mapping):
        return None
    return {
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
        "completion_tokens": int(usage.get("completion_tokens") or 0),
    }


class OpenAIPolicy(PolicyBase):
    """Writes assistant turns with a chat model behind an OpenAI-compatible endpoint.

    Args:
        model: the model name the endpoint serves.
        base_url: the API root (``.../v1``).
        api_key: default ``$OPENAI_API_KEY``.
        temperature: sampling temperature (0: greedy, as the paper evaluates).
        max_tokens: cap per turn (the paper: 2048).
        max_concurrency: requests in flight at once for one batch.
        timeout, max_retries: per request; see :class:`OpenAIChatClient`.
        extra_body: extra JSON fields for every request (e.g. ``{"top_p": 0.9}``).
        name: the policy's name in reports (default ``"openai:<model>"``).

    After each :meth:`act_batch`, ``last_usage`` holds each reply's token usage (or ``None``).
    """

    def __init__(
        self,
        model: str,
        base_url: str = "http://127.0.0.1:8000/v1",
        *,
        api_key: str | None = None,
        temperature: float = 0.0,
        max_tokens: int = 2048,
        max_concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 3,
        extra_body: Mapping[str, Any] | None = None,
        name: str | None = None,
    ):
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, got {max_concurrency!r}")
        self.model = model
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.max_concurrency = int(max_concurrency)
        self.extra_body = dict(extra_body or {})
        self.name = name or f"openai:{model}"
        self.client = OpenAIChatClient(
            base_url, api_key=api_key, timeout=timeout, max_retries=max_retries, pool_size=max_concurrency
        )
        self.last_usage: list[dict[str, int] | None] | None = None

    def _one(self, observation: Mapping[str, Any]) -> tuple[str, dict[str, int] | None]:
        payload = {
            "model": self.model,
            "messages": to_openai(observation["messages"]),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            **self.extra_body,
        }
        body = self.client.create(payload)
        return reply_text(body), reply_usage(body)

    def act_batch(self, observations: Sequence[Mapping[str, Any]], infos: Sequence[Mapping[str, Any]]) -> list[str]:
        if len(observations) == 1:
            results = [self._one(observations[0])]
        else:
            workers = min(self.max_concurrency, len(observations))
            with concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openai") as pool:
                results = list(pool.map(self._one, observations))
        self.last_usage = [usage for _, usage in results]
        return [text for text, _ in results]

    def close(self) -> None:
        self.client.close()
