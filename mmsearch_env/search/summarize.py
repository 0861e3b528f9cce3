"""Question-aware page summaries: any OpenAI-compatible chat endpoint, with an extractive fallback.

:class:`ChatSummarizer` sends ``POST {base_url}/chat/completions`` (vLLM, SGLang, llama.cpp server, a hosted
API...) with our own prompt asking for at most ``max_sentences`` sentences of facts from the page that bear
on the question and the query. Its cost comes from the response's ``usage`` field and the configured
prices per 1k prompt / completion tokens. When the call fails for any reason (network, HTTP error,
malformed answer, empty text) the summary falls back to :func:`extractive_summary` — the same lead +
query-overlap sentence picker the in-process engine uses — and the failure is logged (without keys).
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from functools import lru_cache

from mmsearch_env.errors import ConfigError, SearchBackendError
from mmsearch_env.search.credentials import get_secret, redact
from mmsearch_env.search.http import FetchPolicy, check_status, fetch
from mmsearch_env.search.local import LocalSearch, Page, tokenize
from mmsearch_env.search.reader import PageText

__all__ = ["SUMMARY_SYSTEM_PROMPT", "ChatSummarizer", "Summary", "extractive_summary"]

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
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1`` (vLLM) or ``https://api.openai.com/v1``.
        model: the model name the server expects.
        api_key_env: environment variable (or secrets-file entry) with the key; sent as a Bearer token
            when set. ``None`` for servers without auth.
        price_per_1k_prompt_tokens, price_per_1k_completion_tokens: US dollars, for ``cost_usd``.
        max_input_chars: the page text is cut to this many characters before it is sent.
        fetch: options of the :class:`FetchPolicy` for the endpoint (its own host:port is always allowed).
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        secrets_file: str | None = None,
        max_sentences: int = 5,
        max_tokens: int = 300,
        temperature: float = 0.0,
        max_input_chars: int = 8_000,
        price_per_1k_prompt_tokens: float = 0.0,
        price_per_1k_completion_tokens: float = 0.0,
        fetch: dict | None = None,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"summarizer base_url must be an http(s) URL like 'http://127.0.0.1:8000/v1', got {base_url!r}"
            )
        if not isinstance(model, str) or not model:
            raise ConfigError("summarizer needs model='<name the server serves>'")
        if max_sentences < 1 or min(price_per_1k_prompt_tokens, price_per_1k_completion_tokens) < 0:
            raise ConfigError("summarizer max_sentences must be >= 1 and prices >= 0")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.max_sentences = max_sentences
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.max_input_chars = max_input_chars
        self.prices = (price_per_1k_prompt_tokens, price_per_1k_completion_tokens)
        self.policy = FetchPolicy.from_options(fetch, total_timeout=60, max_bytes=2_000_000).allowing(self.url)
        key = get_secret(api_key_env, secrets_file=secrets_file, required=False) if api_key_env else None
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._warned = False
        self._lock = threading.Lock()

    def summarize(self, page: PageText, *, question: str | None, query: str) -> Summary:
        """A summary of ``page``; never raises for endpoint failures (falls back to extractive)."""
        try:
            return self._chat(page, question=question, query=query)
        except SearchBackendError as exc:
            self._log_fallback(str(exc))
        text = extractive_summary(page.text, f"{query} {question or ''}", self.max_sentences)
        return Summary(text, 0.0, "extractive")

    def _log_fallback(self, message: str) -> None:
        with self._lock:
            first, self._warned = not self._warned, True
        # once loudly (a misconfigured endpoint), then quietly (a flaky one)
        logger.log(
            logging.WARNING if first else logging.DEBUG,
            "summarizer failed, using an extractive summary: %s",
            redact(message),
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
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": SUMMARY_SYSTEM_PROMPT}, {"role": "user", "content": user}],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        what = "the summarizer endpoint"
        result = fetch(self.url, policy=self.policy, json_body=body, headers=self._headers, what=what)
        if not 200 <= result.status < 300:
            check_status(result, what, detail=result.text()[:300])
        data = result.json(what=what)
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise SearchBackendError(f"{what} answered without choices[0].message.content") from exc
        if not isinstance(content, str):
            raise SearchBackendError(f"{what} answered with non-text content")
        text = _first_sentences(_THINK_RE.sub("", content), self.max_sentences)
        if not text:
            raise SearchBackendError(f"{what} returned an empty summary")
        usage = data.get("usage") if isinstance(data, dict) else None
        cost = 0.0
        if isinstance(usage, dict):
            prompt = usage.get("prompt_tokens") or 0
            completion = usage.get("completion_tokens") or 0
            if isinstance(prompt, (int, float)) and isinstance(completion, (int, float)):
                cost = prompt / 1000 * self.prices[0] + completion / 1000 * self.prices[1]
        return Summary(text, cost, "llm")
