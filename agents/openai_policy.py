"""A policy backed by any OpenAI-compatible chat endpoint (vLLM, SGLang, llama.cpp server, hosted APIs).

The observation's messages are sent to ``POST {base_url}/chat/completions`` through the official ``openai``
SDK (``pip install 'mmsearch-env[openai]'``): text blocks as text parts, images as ``image_url`` parts
holding PNG ``data:`` URLs (no image hosting needed). :meth:`OpenAIPolicy.aact_batch` sends a batch as
concurrent async requests (``concurrency`` at a time) on the caller's event loop; :meth:`act_batch` runs
it from synchronous code. Tool-result messages (role ``"tool"`` in the ``tool_calls`` protocol) are sent
as ``"user"`` messages, because the turns carry their tool calls as text, not as the API's structured
``tool_calls``.

After each batch, ``last_usage`` (the rollout engine's token hook) holds per reply ``None`` or
``{"prompt_tokens", "completion_tokens", "finish_reason"}`` (``"length"``: the turn was cut at
``max_tokens``), and ``last_replies`` the full :class:`~mmsearch_env.search.openai_chat.ChatReply` objects
(``None`` for a failed request).

Text-only models: ``text_only=True`` sends no images at all (search-result thumbnails are dropped, their
titles stay); pair it with the environment's ``image_position="none"``, whose prompt says the image is
not shown (the evaluation harness does both for ``--image-position none``).

Transient failures (connection errors, timeouts, HTTP 408/409/429/5xx) are retried by the SDK
(``max_retries``, honouring ``Retry-After``). A request that times out is abandoned with its connection
closed, so the server can stop generating it. A request still failing after its retries fails its own
episode only: the batch raises :class:`~agents.policy.PartialBatchError` holding the other replies, and
the rollout engine skips (or, with ``on_error="stop"``, stops at) the failed episode. The API key (argument, or
``OPENAI_API_KEY`` from the environment or the secrets file) is sent as a Bearer token and is redacted from
every error message.

Spec strings (``mmsearch eval --policy``): ``openai:MODEL@BASE_URL``, optionally with generation settings
as a query, e.g. ``openai:Qwen2.5-VL-7B-Instruct@http://127.0.0.1:8000/v1?max_tokens=512&temperature=0.7``
(fields of :class:`~mmsearch_env.search.openai_chat.GenerationSettings`; ``stop`` may repeat).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

from agents.policy import PartialBatchError, PolicyBase
from mmsearch_env.errors import ConfigError
from mmsearch_env.search.openai_chat import (
    ChatEndpoint,
    ChatReply,
    EndpointError,
    GenerationSettings,
    split_settings_query,
)
from mmsearch_env.web.credentials import get_secret

__all__ = [
    "EndpointError",
    "GenerationSettings",
    "OpenAIPolicy",
    "api_key_or_default",
    "image_data_url",
    "parse_endpoint_spec",
    "resolve_concurrency",
    "to_openai",
]


def api_key_or_default(api_key: str | None) -> str | None:
    """``api_key``, else ``OPENAI_API_KEY`` (environment or secrets file), else ``None`` (no key sent)."""
    if api_key is not None:
        return api_key or None
    return get_secret("OPENAI_API_KEY", required=False)


def resolve_concurrency(concurrency: int | None, max_concurrency: int | None) -> int | None:
    """``concurrency``, or its former name ``max_concurrency``; both given and different is an error."""
    if concurrency is not None and max_concurrency is not None and concurrency != max_concurrency:
        raise ConfigError(
            f"concurrency={concurrency!r} and max_concurrency={max_concurrency!r} disagree; "
            "give only concurrency (max_concurrency is its former name)"
        )
    return concurrency if concurrency is not None else max_concurrency


def parse_endpoint_spec(spec: str) -> tuple[str, str]:
    """``"MODEL@BASE_URL"`` → ``(model, base_url)``; the model may contain ``:`` (``"llama3:8b@http://..."``).

    A settings query stays on the URL (the constructors read it) but is checked here, so a typo fails early.

    >>> parse_endpoint_spec("gpt-4o@http://127.0.0.1:8000/v1")
    ('gpt-4o', 'http://127.0.0.1:8000/v1')
    >>> parse_endpoint_spec("llama3:8b@http://127.0.0.1:8000/v1?max_tokens=64&temperature=0")
    ('llama3:8b', 'http://127.0.0.1:8000/v1?max_tokens=64&temperature=0')
    """
    model, sep, base_url = spec.partition("@")
    if not sep or not model or not base_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"endpoint {spec!r} must look like MODEL@BASE_URL[?SETTINGS], e.g. "
            "'gpt-4o@https://api.openai.com/v1' or 'Qwen2.5-VL-7B-Instruct@http://127.0.0.1:8000/v1?max_tokens=512'"
        )
    split_settings_query(base_url)
    return model, base_url.rstrip("/")


def image_data_url(image: Any) -> str:
    """A PIL image as a ``data:image/png;base64,...`` URL."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def to_openai(messages: Sequence[Mapping[str, Any]], *, text_only: bool = False) -> list[dict[str, Any]]:
    """Convert the env's Hugging Face style chat messages to the OpenAI chat format (``text_only``: no images)."""
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
            elif block["type"] == "image" and not text_only:
                parts.append({"type": "image_url", "image_url": {"url": image_data_url(block["image"])}})
        out.append({"role": "user", "content": parts})
    return out


class OpenAIPolicy(PolicyBase):
    """Writes assistant turns with a chat model behind an OpenAI-compatible endpoint.

    Args:
        model: the model name the endpoint serves.
        base_url: the API root (``.../v1``), optionally with a settings query (``?max_tokens=512``).
        api_key: default ``OPENAI_API_KEY`` (environment or secrets file); ``""``: send no key.
        settings: all generation and request settings at once (defaults: :class:`GenerationSettings`:
            greedy, ``max_tokens=2048``, ``timeout=120`` s per request, the SDK's 2 retries, 8 in flight).
        max_tokens, temperature, top_p, stop, timeout, max_retries, concurrency: override one field of
            ``settings`` (and of the URL's query); ``None`` leaves it.
        max_concurrency: the former name of ``concurrency``.
        extra_body: extra JSON fields for every request (e.g. ``{"repetition_penalty": 1.05}`` for vLLM).
        name: the policy's name in reports (default ``"openai:<model>"``).
        text_only: send no images (a text-only model; see the module docstring).

    ``temperature`` can be set on the object (sampled rollouts); the other settings are in ``settings``.
    """

    def __init__(
        self,
        model: str,
        base_url: str = "http://127.0.0.1:8000/v1",
        *,
        api_key: str | None = None,
        settings: GenerationSettings | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        concurrency: int | None = None,
        max_concurrency: int | None = None,
        extra_body: Mapping[str, Any] | None = None,
        name: str | None = None,
        text_only: bool = False,
    ):
        overrides = {
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "stop": stop,
            "timeout": timeout,
            "max_retries": max_retries,
            "concurrency": resolve_concurrency(concurrency, max_concurrency),
        }
        self.endpoint = ChatEndpoint(
            model,
            base_url,
            api_key=api_key_or_default(api_key),
            settings=settings,
            overrides=overrides,
            what="the policy endpoint",
        )
        self.model = model
        self.extra_body = dict(extra_body or {})
        self.name = name or f"openai:{model}"
        self.text_only = bool(text_only)
        self.last_usage: list[dict[str, Any] | None] | None = None
        self.last_replies: list[ChatReply | None] | None = None

    @property
    def settings(self) -> GenerationSettings:
        """The generation and request settings every request uses."""
        return self.endpoint.settings

    @property
    def temperature(self) -> float:
        return self.endpoint.settings.temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self.endpoint.settings = self.endpoint.settings.updated(temperature=value)

    async def aact_batch(
        self, observations: Sequence[Mapping[str, Any]], infos: Sequence[Mapping[str, Any]]
    ) -> list[str]:
        conversations = [to_openai(o["messages"], text_only=self.text_only) for o in observations]
        replies = await self.endpoint.acreate_many(conversations, extra_body=self.extra_body, return_exceptions=True)
        return self._turns(replies)

    def act_batch(self, observations: Sequence[Mapping[str, Any]], infos: Sequence[Mapping[str, Any]]) -> list[str]:
        conversations = [to_openai(o["messages"], text_only=self.text_only) for o in observations]
        replies = self.endpoint.create_many(conversations, extra_body=self.extra_body, return_exceptions=True)
        return self._turns(replies)

    def _turns(self, replies: Sequence[ChatReply | EndpointError]) -> list[str]:
        """The replies' texts; a failed request of a batch of one raises its :class:`EndpointError`, of a
        bigger batch :class:`PartialBatchError` (the other replies are not lost)."""
        self.last_replies = [r if isinstance(r, ChatReply) else None for r in replies]
        self.last_usage = [r.usage if isinstance(r, ChatReply) else None for r in replies]
        if len(replies) == 1 and isinstance(replies[0], EndpointError):
            raise replies[0]
        if any(isinstance(r, BaseException) for r in replies):
            raise PartialBatchError([r.text if isinstance(r, ChatReply) else r for r in replies], self.last_usage)
        return [r.text for r in replies]  # type: ignore[union-attr]

    def close(self) -> None:
        self.endpoint.close()
