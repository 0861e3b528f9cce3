"""The text-search pipeline shared by the live engines: result URLs → page reader → summariser.

As in the paper: the pages of the top results are fetched in parallel; a page that fails (unreachable,
refused by the SSRF guard, not HTML, no main text) is replaced by the next result, until ``max_results``
summaries are written or the result list runs out. Results keep the engine's order.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from mmsearch_env.errors import ConfigError, SearchBackendError, SearchTransientError
from mmsearch_env.search.base import SearchResult
from mmsearch_env.search.reader import PageReader
from mmsearch_env.search.summarize import ChatSummarizer, extractive_summary
from mmsearch_env.web.credentials import redact

__all__ = ["Candidate", "TextPipeline", "fill_parallel"]

logger = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Candidate:
    """One organic result of a search engine, before its page is read."""

    title: str
    url: str
    snippet: str = ""


def fill_parallel(
    items: Sequence[T], work: Callable[[T], R], want: int, *, workers: int, budget_s: float | None = None
) -> tuple[list[tuple[int, R]], list[tuple[int, Exception]]]:
    """Run ``work`` on items in parallel until ``want`` succeed, starting a replacement for each failure.

    Returns the successes as ``(index, value)`` in item order (at most ``want``) and the failures.
    At most ``want`` calls run at once (capped by ``workers``), so no more work is started than needed.
    After ``budget_s`` seconds no replacement is started (running calls finish under their own timeouts).
    """
    stop_at = time.monotonic() + budget_s if budget_s is not None else None
    done: list[tuple[int, R]] = []
    failed: list[tuple[int, Exception]] = []
    queue = iter(enumerate(items))
    with cf.ThreadPoolExecutor(max_workers=max(1, min(workers, want))) as pool:
        running: dict[cf.Future[R], int] = {}

        def top_up() -> None:
            while len(done) + len(running) < want:
                if stop_at is not None and time.monotonic() >= stop_at:
                    return
                nxt = next(queue, None)
                if nxt is None:
                    return
                running[pool.submit(work, nxt[1])] = nxt[0]

        top_up()
        while running:
            finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for future in finished:
                index = running.pop(future)
                try:
                    done.append((index, future.result()))
                except Exception as exc:  # a failed item is replaced, never fatal
                    failed.append((index, exc))
            top_up()
    done.sort(key=lambda pair: pair[0])
    return done[:want], failed


Mode = Literal["summaries", "snippets"]


class TextPipeline:
    """Turn :class:`Candidate` results into ``SearchResult``s with summaries, and what that cost.

    Args:
        reader: reads a page's main text (local trafilatura or JINA Reader).
        summarizer: a chat summariser, or ``None`` for extractive summaries only.
        mode: ``"summaries"`` (read pages) or ``"snippets"`` (use the engine's snippets, no page fetches).
        budget_s: seconds after which failed pages are no longer replaced (bounds a call's duration).
    """

    def __init__(
        self,
        reader: PageReader,
        summarizer: ChatSummarizer | None = None,
        *,
        max_results: int = 5,
        workers: int = 5,
        mode: Mode = "summaries",
        max_sentences: int = 5,
        budget_s: float = 60.0,
    ) -> None:
        if mode not in ("summaries", "snippets"):
            raise ConfigError(f"text_mode must be 'summaries' or 'snippets', got {mode!r}")
        if max_results < 1 or workers < 1:
            raise ConfigError(f"max_results and page_workers must be >= 1, got {max_results} and {workers}")
        self.reader, self.summarizer = reader, summarizer
        self.max_results, self.workers, self.mode = max_results, workers, mode
        self.max_sentences = max_sentences
        self.budget_s = budget_s

    def run(
        self, candidates: Sequence[Candidate], *, query: str, question: str | None
    ) -> tuple[tuple[SearchResult, ...], float]:
        """Results (at most ``max_results``) and their summarisation cost in dollars.

        Raises :class:`SearchTransientError` when there were candidates but not one page could be read.
        """
        unique: dict[str, Candidate] = {}
        for candidate in candidates:
            unique.setdefault(candidate.url, candidate)
        items = list(unique.values())
        if self.mode == "snippets":
            chosen = [c for c in items if c.snippet.strip()][: self.max_results]
            return tuple(SearchResult(c.title, c.url, summary=c.snippet.strip()) for c in chosen), 0.0

        def work(candidate: Candidate) -> tuple[SearchResult, float]:
            page = self.reader.read(candidate.url)
            if self.summarizer is not None:
                summary = self.summarizer.summarize(page, question=question, query=query)
                text, cost = summary.text, summary.cost_usd
            else:
                text, cost = extractive_summary(page.text, f"{query} {question or ''}", self.max_sentences), 0.0
            if not text.strip():
                raise SearchBackendError(f"page {candidate.url!r} gave an empty summary")
            return SearchResult(candidate.title or page.title or candidate.url, candidate.url, summary=text), cost

        done, failed = fill_parallel(items, work, self.max_results, workers=self.workers, budget_s=self.budget_s)
        for index, exc in failed:
            logger.debug("page %d replaced: %s", index, redact(str(exc)))
        if items and not done:
            first = redact(str(failed[0][1])) if failed else "no page tried"
            raise SearchTransientError(
                f"no result page could be read ({len(failed)} of {len(items)} tried; first failure: {first})"
            )
        return tuple(result for _, (result, _) in done), sum(cost for _, (_, cost) in done)
