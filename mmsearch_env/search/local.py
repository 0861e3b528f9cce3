"""An in-process search engine over a list of :class:`Page` objects.

Small, dependency-free (numpy + Pillow) and genuinely retrieving:

* image search ranks pages by cosine similarity of a colour layout descriptor (the image reduced to
  16×16 RGB, centred) — robust to the resizing, small crops and colour shifts of a re-photographed
  image, which is what reverse image search must survive;
* text search ranks pages with Okapi BM25 over title + text, and summarises each hit with the
  (at most ``summary_sentences``) sentences that share the most terms with the query, in page order.

It backs the built-in sample "web"; users can point it at their own pages.
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from mmsearch_env.data.schema import load_image, read_jsonl
from mmsearch_env.errors import ConfigError, DatasetError
from mmsearch_env.search.base import (
    ImageSearchRequest,
    SearchBackendBase,
    SearchResponse,
    SearchResult,
    TextSearchRequest,
)

__all__ = ["STOPWORDS", "LocalSearch", "Page", "image_descriptor", "split_sentences", "summarize", "tokenize"]

_TOKEN_RE = re.compile(r"\w+")
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+")
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "is",
        "are",
        "was",
        "were",
        "be",
        "by",
        "with",
        "and",
        "or",
        "what",
        "which",
        "who",
        "whose",
        "how",
        "this",
        "that",
        "its",
        "it",
        "as",
        "from",
    ]
)


@dataclass(frozen=True)
class Page:
    """One web page of a local corpus: a stable url-like id, a title, text and its images."""

    url: str
    title: str
    text: str
    images: tuple[Image.Image, ...] = field(default=(), compare=False)


def load_pages(path: str | os.PathLike[str]) -> list[Page]:
    """Read pages from JSONL: one ``{"url", "title", "text", "images": [paths]}`` object per line.

    Image paths are relative to the file. Errors name the line and the field.
    """
    base = Path(path).parent
    pages = []
    for where, row in read_jsonl(path, what="pages file"):
        if not isinstance(row, dict):
            raise DatasetError(f"{where}: expected a JSON object with url, title and text")
        for key in ("url", "title", "text"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise DatasetError(f"{where}: field {key!r} must be a non-empty string")
        images = row.get("images", [])
        if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
            raise DatasetError(f"{where}: field 'images' must be a list of image paths")
        loaded = tuple(load_image(base / p, where=f"{where}: field 'images'") for p in images)
        pages.append(Page(row["url"], row["title"], row["text"], loaded))
    return pages


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens without stopwords.

    >>> tokenize("What is the capital of Arvenia?")
    ['capital', 'arvenia']
    """
    return [t for t in _TOKEN_RE.findall(text.lower()) if t not in STOPWORDS]


def image_descriptor(image: Image.Image, size: int = 16) -> np.ndarray:
    """A unit-norm colour layout descriptor: the image at ``size``×``size`` RGB, mean removed."""
    small = image.convert("RGB").resize((size, size), Image.Resampling.BOX)
    vec = np.asarray(small, dtype=np.float32).reshape(-1) / 255.0
    vec -= vec.mean()
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm > 0 else vec


class LocalSearch(SearchBackendBase):
    """Image and text search over ``pages``, top ``max_results`` each.

    Args:
        pages: the corpus. Pages without images are never image-search results.
        max_results: results per call (the paper uses 5).
        summary_sentences: at most this many sentences per text-search summary.
        k1, b: BM25 parameters.
    """

    name = "local"

    def __init__(
        self,
        pages: Sequence[Page],
        *,
        max_results: int = 5,
        summary_sentences: int = 5,
        k1: float = 1.5,
        b: float = 0.75,
    ) -> None:
        if not pages:
            raise ConfigError("LocalSearch needs at least one Page; got an empty corpus.")
        if max_results < 1 or summary_sentences < 1:
            raise ConfigError(
                f"max_results and summary_sentences must be >= 1, got {max_results} and {summary_sentences}."
            )
        self.pages = list(pages)
        self.max_results = max_results
        self.summary_sentences = summary_sentences
        self.k1, self.b = k1, b
        # image index: one row per (page, image)
        rows, owners = [], []
        for i, page in enumerate(self.pages):
            for image in page.images:
                rows.append(image_descriptor(image))
                owners.append(i)
        self._image_matrix = np.stack(rows) if rows else np.zeros((0, 768), np.float32)
        self._image_owner = np.asarray(owners, dtype=np.int64)
        # text index: BM25 postings, the title counted twice (titles name the entity)
        self._postings: dict[str, list[tuple[int, int]]] = {}
        lengths = []
        for i, page in enumerate(self.pages):
            counts = Counter(tokenize(f"{page.title} {page.title} {page.text}"))
            lengths.append(sum(counts.values()))
            for term, tf in counts.items():
                self._postings.setdefault(term, []).append((i, tf))
        self._doc_len = np.asarray(lengths, dtype=np.float64)
        self._avg_len = float(self._doc_len.mean()) or 1.0
        n = len(self.pages)
        self._idf = {t: math.log(1 + (n - len(p) + 0.5) / (len(p) + 0.5)) for t, p in self._postings.items()}

    # -- image search ------------------------------------------------------------------------------
    def image_search(self, request: ImageSearchRequest) -> SearchResponse:
        if len(self._image_owner) == 0:
            return SearchResponse("image_search")
        scores = self._image_matrix @ image_descriptor(request.image)
        best: dict[int, float] = {}
        for row in np.argsort(-scores, kind="stable"):
            page = int(self._image_owner[row])
            if page not in best:
                best[page] = float(scores[row])
                if len(best) == self.max_results:
                    break
        results = []
        for page_index in best:
            page = self.pages[page_index]
            results.append(SearchResult(title=page.title, url=page.url, thumbnail=page.images[0]))
        return SearchResponse("image_search", tuple(results))

    # -- text search -------------------------------------------------------------------------------
    def text_search(self, request: TextSearchRequest) -> SearchResponse:
        terms = tokenize(request.query)
        scores = np.zeros(len(self.pages), dtype=np.float64)
        norm = self.k1 * (1 - self.b + self.b * self._doc_len / self._avg_len)
        for term in set(terms):
            for doc, tf in self._postings.get(term, ()):
                scores[doc] += self._idf[term] * tf * (self.k1 + 1) / (tf + norm[doc])
        ranked = [int(i) for i in np.argsort(-scores, kind="stable") if scores[i] > 0][: self.max_results]
        results = tuple(
            SearchResult(
                title=self.pages[i].title,
                url=self.pages[i].url,
                summary=self.summarize(self.pages[i].text, terms),
            )
            for i in ranked
        )
        return SearchResponse("text_search", results)

    def summarize(self, text: str, query_terms: Sequence[str]) -> str:
        """The lead sentence plus the sentences of ``text`` sharing most terms with the query, in order."""
        return summarize(text, query_terms, self.summary_sentences)


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: split after ``.``, ``!`` or ``?`` before a capital, digit or quote, but
    not after an abbreviation ("Co.", "St.", "D.C.", "U.S.", "e.g.") or an initial ("J. R. R. Tolkien").

    >>> split_sentences("Washington, D.C. is the capital. St. Lucia is an island. Mr. J. Smith left!")
    ['Washington, D.C. is the capital.', 'St. Lucia is an island.', 'Mr. J. Smith left!']
    """
    pieces = [p for p in _SENTENCE_RE.split(text.strip()) if p]
    out: list[str] = []
    for piece in pieces:
        if out and (_continues(out[-1]) or not _STARTS_SENTENCE.match(piece)):
            out[-1] = f"{out[-1]} {piece}"
        else:
            out.append(piece)
    return out


def _continues(sentence: str) -> bool:
    """True when ``sentence`` ends in an abbreviation or initial rather than a full stop."""
    if not sentence.endswith("."):
        return False
    last = sentence.rsplit(None, 1)[-1].rstrip(".").lstrip("(\"'")
    return (
        last.lower() in _ABBREVIATIONS
        or (len(last) == 1 and last.isalpha() and last.isupper())  # an initial
        or bool(_DOTTED.fullmatch(last + "."))  # D.C., U.S., e.g.
    )


_STARTS_SENTENCE = re.compile(r"[\"'“‘(\[]?[A-Z0-9]")
_DOTTED = re.compile(r"(?:[A-Za-z]\.){2,}")
_ABBREVIATIONS = frozenset(
    [
        "co",
        "corp",
        "inc",
        "ltd",
        "st",
        "mt",
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "vs",
        "etc",
        "no",
        "approx",
        "ca",
        "gen",
        "col",
        "lt",
        "sgt",
        "capt",
        "rev",
        "ft",
        "fig",
        "vol",
        "ed",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "est",
        "dept",
        "univ",
        "bros",
    ]
)


def _fold_terms(text: str) -> set[str]:
    folded = unicodedata.normalize("NFKD", text.lower()).encode("ascii", "ignore").decode("ascii")
    return {t for t in _TOKEN_RE.findall(folded) if t not in STOPWORDS}


def summarize(text: str, query_terms: Sequence[str], max_sentences: int = 5, *, fill: bool = False) -> str:
    """A query-aware extractive summary of at most ``max_sentences`` sentences, in page order: the lead
    sentence and the sentences sharing most terms with ``query_terms`` (accents folded, so "Turkiye"
    matches "Türkiye"); with ``fill``, then the page's next sentences until the budget is used (as a
    search engine's snippet would, so a fact worded unlike the query still reaches the reader).

    >>> summarize("Arvenia is a land. It rains. Its capital is Lumen.", ["capital"], 2)
    'Arvenia is a land. Its capital is Lumen.'
    >>> summarize("Arvenia is a land. It rains. Its capital is Lumen.", ["river"], 2)
    'Arvenia is a land.'
    >>> summarize("Arvenia is a land. It rains. Its capital is Lumen.", ["river"], 2, fill=True)
    'Arvenia is a land. It rains.'
    """
    sentences = split_sentences(text)
    if not sentences:
        return ""
    wanted = _fold_terms(" ".join(query_terms))
    overlap = [len(wanted & _fold_terms(s)) for s in sentences]
    # The lead sentence says what the page is about (as a search snippet would), then the sentences
    # sharing most terms with the query, then the page's next sentences (a snippet uses its budget).
    order = sorted(range(1, len(sentences)), key=lambda i: (-overlap[i], i))
    keep = {0} | {i for i in order[: max_sentences - 1] if overlap[i] > 0}
    for i in range(1, len(sentences)):
        if not fill or len(keep) >= max_sentences:
            break
        keep.add(i)
    return " ".join(sentences[i] for i in sorted(keep))
