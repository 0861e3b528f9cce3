"""One OpenAI-compatible chat client for everything here that calls a chat model, on the official ``openai`` SDK.

The policy (:class:`agents.openai_policy.OpenAIPolicy`), the judge (:class:`agents.judge.LLMJudge`) and the
page summariser (:class:`mmsearch_env.search.summarize.ChatSummarizer`) all talk to ``POST
{base_url}/chat/completions`` of some server (vLLM, SGLang, llama.cpp server, a hosted API) through
:class:`ChatEndpoint`. It adds three things to the SDK:

* **Settings in one place.** :class:`GenerationSettings` holds the sampling and request settings with their
  defaults; a base URL may carry overrides as a query, ``http://127.0.0.1:8000/v1?max_tokens=64&temperature=0``
  (:func:`split_settings_query`), so a spec string like ``openai:MODEL@URL?max_tokens=64`` configures a run.
* **What each reply was.** :class:`ChatReply` keeps the text, ``finish_reason`` (``"length"``: cut at
  ``max_tokens``) and the token usage.
* **Errors that cannot leak keys.** Every SDK failure (after the SDK's own retries: connection errors,
  timeouts, 408/409/429/5xx with ``Retry-After``) becomes one :class:`EndpointError` whose text has every
  configured key, every secret from :mod:`mmsearch_env.web.credentials` and anything that looks like a
  bearer token blanked out (:func:`redact_secrets`); the SDK's exception, whose text may echo the key, is
  not chained. A request that times out is abandoned: the SDK closes its connection.

The ``openai`` package is an optional dependency (``pip install 'mmsearch-env[openai]'``), imported when
the first endpoint is built.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from mmsearch_env.errors import ConfigError, MMSearchError, did_you_mean
from mmsearch_env.web.credentials import redact

__all__ = [
    "ChatEndpoint",
    "ChatReply",
    "EndpointError",
    "GenerationSettings",
    "redact_secrets",
    "split_settings_query",
]

# "Bearer <token>" (any scheme-less token after it) and OpenAI-style keys, wherever they appear in a message.
_TOKEN_RE = re.compile(r"(?i)\b(bearer\s+)[^\s'\",;)\]}]*[^\s'\",;)\]}.]|\bsk-[A-Za-z0-9_-]{8,}")
_NO_KEY = "no-key"  # the SDK insists on some key; this one is never sent (see ChatEndpoint._headers)


class EndpointError(MMSearchError, RuntimeError):
    """A chat endpoint failed (after the SDK's retries) or answered something that is not a chat reply.

    ``status`` is the HTTP status (``None`` for connection errors and timeouts), ``code`` the API's error
    code when it gave one (e.g. ``"invalid_api_key"``). The message never contains an API key.
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


def redact_secrets(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` without ``secrets``, any key :func:`~mmsearch_env.web.credentials.get_secret` handed out,
    or anything shaped like a bearer token or an ``sk-`` key.

    >>> redact_secrets("401: key Bearer abc.def is wrong; sk-proj-0123456789abc too; mine: hunter22", ["hunter22"])
    '401: key Bearer *** is wrong; *** too; mine: ***'
    """
    text = redact(text)
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")
    return _TOKEN_RE.sub(lambda m: (m.group(1) or "") + "***", text)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling and request settings of a chat endpoint; the defaults are the policy's (the paper's eval).

    The judge and the summariser start from :data:`agents.judge.JUDGE_SETTINGS` and
    :data:`mmsearch_env.search.summarize.SUMMARY_SETTINGS` instead. ``stop`` may be given as one string.
    """

    # Parameters that control generation
    max_tokens: int = field(default=2048, metadata={"help": "cap on generated tokens per reply (the paper: 2048)"})
    temperature: float = field(default=0.0, metadata={"help": "sampling temperature; 0 is greedy"})
    top_p: float | None = field(default=None, metadata={"help": "nucleus sampling mass; None: the server's default"})
    stop: tuple[str, ...] = field(default=(), metadata={"help": "strings that end the reply (not included)"})
    # Parameters that control requests
    timeout: float = field(default=120.0, metadata={"help": "seconds per request before it is abandoned"})
    max_retries: int = field(
        default=2, metadata={"help": "SDK retries of a connection error, timeout, 408/409/429/5xx per request"}
    )
    concurrency: int = field(default=8, metadata={"help": "requests in flight at once for one batch"})

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        if not _positive_int(self.max_tokens):
            raise ConfigError(f"max_tokens must be an int >= 1, got {self.max_tokens!r}")
        if not isinstance(self.temperature, (int, float)) or self.temperature < 0:
            raise ConfigError(f"temperature must be a number >= 0, got {self.temperature!r}")
        if self.top_p is not None and not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise ConfigError(f"top_p must be in (0, 1] or None, got {self.top_p!r}")
        if not all(isinstance(s, str) and s for s in self.stop):
            raise ConfigError(f"stop must be non-empty strings, got {self.stop!r}")
        if not isinstance(self.timeout, (int, float)) or not self.timeout > 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {self.timeout!r}")
        if not (isinstance(self.max_retries, int) and not isinstance(self.max_retries, bool) and self.max_retries >= 0):
            raise ConfigError(f"max_retries must be an int >= 0, got {self.max_retries!r}")
        if not _positive_int(self.concurrency):
            raise ConfigError(f"concurrency must be an int >= 1, got {self.concurrency!r}")

    def updated(self, **changes: Any) -> GenerationSettings:
        """A copy with the changes that are not ``None`` (so keyword arguments can default to "unchanged")."""
        unknown = sorted(set(changes) - set(self.__dataclass_fields__))
        if unknown:
            raise ConfigError(
                f"unknown generation setting(s) {unknown}; expected some of {sorted(self.__dataclass_fields__)}"
                + did_you_mean(unknown[0], list(self.__dataclass_fields__))
            )
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def request_options(self) -> dict[str, Any]:
        """The sampling fields of a chat-completions request body (unset optional ones left out)."""
        options: dict[str, Any] = {"max_tokens": self.max_tokens, "temperature": float(self.temperature)}
        if self.top_p is not None:
            options["top_p"] = float(self.top_p)
        if self.stop:
            options["stop"] = list(self.stop)
        return options


_QUERY_TYPES = {
    "max_tokens": int,
    "temperature": float,
    "top_p": float,
    "timeout": float,
    "max_retries": int,
    "concurrency": int,
}


def split_settings_query(base_url: str) -> tuple[str, dict[str, Any]]:
    """``"URL?max_tokens=64&stop=a&stop=b"`` → ``("URL", {"max_tokens": 64, "stop": ("a", "b")})``.

    Every :class:`GenerationSettings` field may appear (``stop`` repeated for several strings); other keys
    are a :class:`ConfigError`, so a typo never passes silently. Trailing slashes are dropped.

    >>> split_settings_query("http://127.0.0.1:8000/v1/?max_tokens=64&temperature=0.7")
    ('http://127.0.0.1:8000/v1', {'max_tokens': 64, 'temperature': 0.7})
    """
    parts = urlsplit(base_url)
    overrides: dict[str, Any] = {}
    stops: list[str] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "stop":
            stops.append(value)
            continue
        convert = _QUERY_TYPES.get(key)
        if convert is None:
            raise ConfigError(
                f"unknown setting {key!r} in the endpoint URL {base_url!r}; expected some of "
                f"{sorted([*_QUERY_TYPES, 'stop'])}" + did_you_mean(key, [*_QUERY_TYPES, "stop"])
            )
        try:
            overrides[key] = convert(value)
        except ValueError:
            raise ConfigError(
                f"setting {key}={value!r} in the endpoint URL must be a{'n int' if convert is int else ' number'}"
            ) from None
    if stops:
        overrides["stop"] = tuple(stops)
    return urlunsplit(parts._replace(query="")).rstrip("/"), overrides


@dataclass(frozen=True)
class ChatReply:
    """One chat completion: the assistant text, why it ended, and its token usage (``None``: not reported)."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    @property
    def usage(self) -> dict[str, Any] | None:
        """``{"prompt_tokens", "completion_tokens", "finish_reason"}`` (a count the server did not give is
        ``None``), or ``None`` when the server gave neither usage nor a finish reason."""
        if self.prompt_tokens is None and self.completion_tokens is None and self.finish_reason is None:
            return None
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "finish_reason": self.finish_reason,
        }


def _load_openai(what: str) -> Any:
    try:
        import openai
    except ImportError as exc:
        raise ConfigError(
            f"{what} needs the openai package ({exc}); install it with: pip install 'mmsearch-env[openai]'"
        ) from None
    return openai


class ChatEndpoint:
    """``POST {base_url}/chat/completions`` for one model through ``openai.OpenAI`` / ``openai.AsyncOpenAI``.

    Args:
        model: the model name the server serves.
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``, optionally with a settings query.
        api_key: the key, sent as a Bearer token; ``None`` or ``""``: no ``Authorization`` header at all.
        settings: generation and request settings (default :class:`GenerationSettings`).
        overrides: settings that win over ``settings`` and the URL's query (``None`` values: unchanged).
        what: how messages name this endpoint (``"the judge endpoint"``).

    :meth:`create` is thread-safe (one pooled SDK client); :meth:`acreate_many` runs on the caller's event
    loop with its own async client, at most ``settings.concurrency`` requests in flight. ``settings`` may be
    replaced between calls (e.g. another temperature); each request reads it afresh.
    """

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key: str | None = None,
        settings: GenerationSettings | None = None,
        overrides: Mapping[str, Any] | None = None,
        what: str = "the chat endpoint",
    ):
        if not isinstance(model, str) or not model:
            raise ConfigError(f"{what} needs model='<name the server serves>', got {model!r}")
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"{what}: base_url must be an http(s) URL like 'http://127.0.0.1:8000/v1', got {base_url!r}"
            )
        self.base_url, query = split_settings_query(base_url)
        self.settings = (settings or GenerationSettings()).updated(**query).updated(**dict(overrides or {}))
        self.model = model
        self.what = what
        self._openai = _load_openai(what)
        self._api_key = api_key or None
        self._client: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never shows the key
        return f"ChatEndpoint(model={self.model!r}, base_url={self.base_url!r})"

    def _headers(self) -> dict[str, Any]:
        # A keyless local server gets no Authorization header rather than a made-up key.
        return {} if self._api_key else {"Authorization": self._openai.Omit()}

    def _client_options(self) -> dict[str, Any]:
        return {
            "api_key": self._api_key or _NO_KEY,
            "base_url": self.base_url,
            "max_retries": self.settings.max_retries,
            "timeout": self.settings.timeout,
        }

    def _body(self, messages: Sequence[Mapping[str, Any]], extra_body: Mapping[str, Any] | None) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": list(messages),
            **self.settings.request_options(),
            "extra_headers": self._headers(),
            "extra_body": dict(extra_body) if extra_body else None,
            "timeout": self.settings.timeout,
        }

    def create(
        self, messages: Sequence[Mapping[str, Any]], *, extra_body: Mapping[str, Any] | None = None
    ) -> ChatReply:
        """One chat completion (blocking); raises :class:`EndpointError`."""
        with self._lock:
            if self._client is None:
                self._client = self._openai.OpenAI(**self._client_options())
        # with_options shares the connection pool and follows a settings change made after the first call
        client = self._client.with_options(max_retries=self.settings.max_retries)
        try:
            completion = client.chat.completions.create(**self._body(messages, extra_body))
        except (self._openai.OpenAIError, ValueError) as exc:
            error = self._error(exc)
        else:
            return self._reply(completion)
        raise error  # outside the except block, so the SDK's exception (it may echo the key) is not chained

    async def acreate_many(
        self,
        conversations: Sequence[Sequence[Mapping[str, Any]]],
        *,
        extra_body: Mapping[str, Any] | None = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """One reply per conversation, in order, at most ``settings.concurrency`` at a time.

        The first failure cancels the requests still running and raises :class:`EndpointError`; with
        ``return_exceptions=True`` every request runs to its end and a failed one's place holds its
        :class:`EndpointError` instead (one bad request does not cost the others their replies).
        """
        semaphore = asyncio.Semaphore(self.settings.concurrency)
        # An async connection pool belongs to one event loop: a client per call works from any loop.
        async with self._openai.AsyncOpenAI(**self._client_options()) as client:

            async def one(messages: Sequence[Mapping[str, Any]]) -> ChatReply:
                async with semaphore:
                    try:
                        completion = await client.chat.completions.create(**self._body(messages, extra_body))
                    except (self._openai.OpenAIError, ValueError) as exc:
                        error = self._error(exc)
                    else:
                        return self._reply(completion)
                    raise error

            tasks = [asyncio.ensure_future(one(m)) for m in conversations]
            try:
                if return_exceptions:
                    results = await asyncio.gather(*tasks, return_exceptions=True)
                    for result in results:  # a cancellation or a bug is not a per-request failure
                        if isinstance(result, BaseException) and not isinstance(result, EndpointError):
                            raise result
                    return list(results)
                return list(await asyncio.gather(*tasks))
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    def create_many(
        self,
        conversations: Sequence[Sequence[Mapping[str, Any]]],
        *,
        extra_body: Mapping[str, Any] | None = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """:meth:`acreate_many` from synchronous code (in a worker thread when this thread runs a loop)."""

        def run() -> list[Any]:
            return asyncio.run(
                self.acreate_many(conversations, extra_body=extra_body, return_exceptions=return_exceptions)
            )

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            in_loop = False
        else:
            in_loop = True
        if not in_loop:
            return run()  # outside the except block: a failure carries no unrelated context
        with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="openai") as pool:
            return pool.submit(run).result()

    def _reply(self, completion: Any) -> ChatReply:
        choices = getattr(completion, "choices", None)
        if not choices:
            text = f"{self.what} ({self.base_url}) answered without choices: {str(completion)[:200]}"
            raise EndpointError(redact_secrets(text, [self._api_key]))
        choice = choices[0]
        content = getattr(getattr(choice, "message", None), "content", None)
        if isinstance(content, list):  # some servers answer with content parts
            content = "".join(p.get("text", "") if isinstance(p, Mapping) else "" for p in content)
        usage = getattr(completion, "usage", None)
        return ChatReply(
            text=content if isinstance(content, str) else "",
            finish_reason=getattr(choice, "finish_reason", None),
            prompt_tokens=_count(getattr(usage, "prompt_tokens", None)),
            completion_tokens=_count(getattr(usage, "completion_tokens", None)),
        )

    def _error(self, exc: BaseException) -> EndpointError:
        """The SDK's failure as an :class:`EndpointError` with every secret redacted."""
        openai = self._openai
        where = f"{self.what} ({self.base_url}, model {self.model!r})"
        status = getattr(exc, "status_code", None)
        code = getattr(exc, "code", None)
        if isinstance(exc, openai.APITimeoutError):
            text = (
                f"{where} did not answer within {self.settings.timeout:g} s "
                f"({self.settings.max_retries + 1} attempts); raise timeout= or check the server"
            )
        elif isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            text = f"{where} could not be reached ({type(cause or exc).__name__}: {cause or exc}); is the server up?"
        elif isinstance(exc, openai.APIStatusError):
            body = exc.body if isinstance(exc.body, Mapping) else {}
            message = body.get("message") or (exc.body if isinstance(exc.body, str) else exc.message)
            hint = {
                401: "; check the API key",
                403: "; check the API key's permissions",
                404: "; check the model name and base_url",
            }.get(exc.status_code, "")
            text = f"{where} refused the request (HTTP {exc.status_code}: {str(message)[:300]}){hint}"
        else:
            text = f"{where} answered something that is not a chat completion ({type(exc).__name__}: {exc})"
        return EndpointError(
            redact_secrets(text, [self._api_key]), status=status, code=str(code) if code is not None else None
        )

    def close(self) -> None:
        """Close the pooled connections of the blocking client (a later call opens new ones)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
