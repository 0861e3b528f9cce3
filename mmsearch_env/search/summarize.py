"""Question-aware page summaries: any OpenAI-compatible chat endpoint, with an extractive fallback.

:class:`ChatSummarizer` sends ``POST {base_url}/chat/completions`` (vLLM, SGLang, llama.cpp server, a hosted
API...) through the official ``openai`` SDK (:class:`~mmsearch_env.search.openai_chat.ChatEndpoint`; ``pip
install 'mmsearch-env[openai]'``) with our own prompt asking for at most ``max_sentences`` sentences of facts
from the page that bear on the question and the query. Its cost comes from the response's ``usage`` field
and the configured prices per 1k prompt / completion tokens. When the call fails for any reason (network,
timeout, HTTP error after the SDK's retries, malformed answer, empty text) the summary falls back to
:func:`extractive_summary` — the same lead + query-overlap sentence picker the in-process engine uses — and
the failure is logged (without keys).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from mmsearch_env.errors import ConfigError
from mmsearch_env.search.local import LocalSearch, Page, tokenize
from mmsearch_env.search.openai_chat import ChatEndpoint, EndpointError, GenerationSettings
from mmsearch_env.search.reader import PageText
from mmsearch_env.web.credentials import get_secret
from mmsearch_env.web.http import FetchPolicy

__all__ = ["SUMMARY_SETTINGS", "SUMMARY_SYSTEM_PROMPT", "ChatSummarizer", "Summary", "extractive_summary"]

logger = logging.getLogger(__name__)

SUMMARY_SYSTEM_PROMPT = (
    "You condense web pages for a research assistant that answers questions about an image. "
    "Report only facts stated on the page, in plain sentences, without preamble, lists or markdown. "
    "Prefer facts that help answer the user's question or match the search query: names, dates, places, "
    "numbers. If the page says nothing relevant, say in one sentence what the page is about."
)
SUMMARY_USER_TEMPLATE = (
    "Question: {question}\nSearch query: {query}\nPage title: {title}\nPage URL: {url}\n\n"
    "Page text:\n{text}\n\n"
    "Write at most {max_sentences} sentences."
)
# Greedy and short; one retry only: a failed summary has a free fallback, a slow one delays the whole search.
SUMMARY_SETTINGS = GenerationSettings(max_tokens=300, temperature=0.0, timeout=60.0, max_retries=1)
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+")
_THINK_RE = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class Summary:
    """A page summary, what it cost, and whether the model wrote it (``"llm"``) or the fallback did."""

    text: str
    cost_usd: float = 0.0
    source: str = "extractive"


@lru_cache(maxsize=8)
def _extractor(max_sentences: int) -> LocalSearch:
    # LocalSearch.summarize needs only its summary_sentences setting; a one-page engine carries it.
    return LocalSearch([Page("about:blank", "summary", "summary")], summary_sentences=max_sentences)


def extractive_summary(text: str, terms_from: str, max_sentences: int = 5) -> str:
    """The page's lead sentence plus the sentences sharing most words with ``terms_from``, in page order.

    >>> extractive_summary("Arvenia is a country. Its capital is Tolm. It rains.", "capital of Arvenia", 2)
    'Arvenia is a country. Its capital is Tolm.'
    """
    lines = []
    for line in text.splitlines():
        line = " ".join(line.split()).lstrip("#*-> ").strip()
        if not line:
            continue
        if line[-1] not in ".!?":
            if len(line.split()) < 8:
                continue  # a heading or a menu item, not a sentence of the page
            line += "."
        lines.append(line)
    return _extractor(max_sentences).summarize(" ".join(lines), tokenize(terms_from))


def _first_sentences(text: str, n: int) -> str:
    sentences = [s for s in _SENTENCE_RE.split(" ".join(text.split())) if s]
    return " ".join(sentences[:n])


class ChatSummarizer:
    """Summarise pages with an OpenAI-compatible chat model; fall back to an extractive summary.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1`` (vLLM) or ``https://api.openai.com/v1``,
            optionally with a settings query (``?max_tokens=200``).
        model: the model name the server expects.
        api_key_env: environment variable (or secrets-file entry) with the key; sent as a Bearer token
            when set. ``None`` for servers without auth.
        max_sentences: the summary keeps at most this many sentences of the reply.
        max_tokens, temperature, top_p, stop, timeout, max_retries: override one field of
            :data:`SUMMARY_SETTINGS` (greedy, 300 tokens, 60 s per request, 1 SDK retry). Calls are made
            one per page by the search pipeline's reader threads, so there is no ``concurrency`` here.
        price_per_1k_prompt_tokens, price_per_1k_completion_tokens: US dollars, for ``cost_usd``.
        max_input_chars: the page text is cut to this many characters before it is sent.
        fetch: only ``total_timeout`` (the default ``timeout``) is used; the endpoint is one the user
            configured, so the safe-fetch guards for web pages do not apply. Other valid keys are ignored.
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        secrets_file: str | None = None,
        max_sentences: int = 5,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        max_input_chars: int = 8_000,
        price_per_1k_prompt_tokens: float = 0.0,
        price_per_1k_completion_tokens: float = 0.0,
        fetch: dict | None = None,
    ) -> None:
        if max_sentences < 1 or min(price_per_1k_prompt_tokens, price_per_1k_completion_tokens) < 0:
            raise ConfigError("summarizer max_sentences must be >= 1 and prices >= 0")
        if fetch is not None and timeout is None:
            timeout = FetchPolicy.from_options(fetch).total_timeout
        key = get_secret(api_key_env, secrets_file=secrets_file, required=False) if api_key_env else None
        self.endpoint = ChatEndpoint(
            model,
            base_url,
            api_key=key,
            settings=SUMMARY_SETTINGS,
            overrides={
                "max_tokens": max_tokens,
                "temperature": temperature,
                "top_p": top_p,
                "stop": stop,
                "timeout": timeout,
                "max_retries": max_retries,
            },
            what="the summarizer endpoint",
        )
        self.model = model
        self.max_sentences = max_sentences
        self.max_input_chars = max_input_chars
        self.prices = (price_per_1k_prompt_tokens, price_per_1k_completion_tokens)
        self._warned = False
        self._lock = threading.Lock()

    def summarize(self, page: PageText, *, question: str | None, query: str) -> Summary:
        """A summary of ``page``; never raises for endpoint failures (falls back to extractive)."""
        try:
            return self._chat(page, question=question, query=query)
        except EndpointError as exc:
            self._log_fallback(str(exc))  # already redacted
        text = extractive_summary(page.text, f"{query} {question or ''}", self.max_sentences)
        return Summary(text, 0.0, "extractive")

    def _log_fallback(self, message: str) -> None:
        with self._lock:
            first, self._warned = not self._warned, True
        # once loudly (a misconfigured endpoint), then quietly (a flaky one)
        logger.log(
            logging.WARNING if first else logging.DEBUG,
            "summarizer failed, using an extractive summary: %s",
            message,
        )

    def _chat(self, page: PageText, *, question: str | None, query: str) -> Summary:
        user = SUMMARY_USER_TEMPLATE.format(
            question=question or "(none given)",
            query=query,
            title=page.title or "(untitled)",
            url=page.url,
            text=page.text[: self.max_input_chars],
            max_sentences=self.max_sentences,
        )
        reply = self.endpoint.create(
            [{"role": "system", "content": SUMMARY_SYSTEM_PROMPT}, {"role": "user", "content": user}]
        )
        text = _first_sentences(_THINK_RE.sub("", reply.text), self.max_sentences)
        if not text:
            raise EndpointError(f"{self.endpoint.what} returned an empty summary")
        cost = (reply.prompt_tokens or 0) / 1000 * self.prices[0] + (reply.completion_tokens or 0) / 1000 * self.prices[
            1
        ]
        return Summary(text, cost, "llm")

    def close(self) -> None:
        """Close the endpoint's pooled connections."""
        self.endpoint.close()
