"""Query analysis for text search over the corpus: what a forgiving web search does before ranking.

:class:`QueryAnalyzer` turns a free-form query into

* ``tokens`` for BM25 — the query's words with misspelled ones corrected against the index vocabulary
  (entity names first, then every indexed word; rapidfuzz edit-distance ratio), the canonical title
  of every entity the query names (so "Burma" also searches "myanmar"), and synonyms of fact words
  (money → currency, phone → calling code, nationality → people called…);
* ``entities`` — pages the query names by title, by any other name (the facts' aliases, the CLDR
  names and former names in ``names.json``) or, for elements, by chemical symbol; they are ranked
  first by the search (a web search puts the entity's own page first);
* ``terms`` for the summariser (the tokens, so a fact sentence that answers the question is kept).

Short tokens are kept ("K" is potassium's symbol); only stopwords are dropped.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from rapidfuzz import process
from rapidfuzz.distance import DamerauLevenshtein

from mmsearch_env.corpus import Corpus
from mmsearch_env.corpus.features import bm25_tokenize
from mmsearch_env.corpus.names import FORMER_NAMES

__all__ = ["SYNONYMS", "QueryAnalysis", "QueryAnalyzer"]

#: query word → words the corpus uses for the same thing (added, never replacing the query's word).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "money": ("currency",), "cash": ("currency",), "currencies": ("currency",), "coin": ("currency",),
    "phone": ("calling", "code"), "telephone": ("calling", "code"), "dial": ("calling", "code"),
    "dialing": ("calling", "code"), "dialling": ("calling", "code"), "prefix": ("calling", "code"),
    "nationality": ("people", "called"), "demonym": ("people", "called"), "citizen": ("people", "called"),
    "citizens": ("people", "called"), "someone": ("people", "called"), "person": ("people", "called"),
    "inhabitants": ("people", "called"), "residents": ("people", "called"),
    "speak": ("language", "official"), "spoken": ("language", "official"), "languages": ("language",),
    "tongue": ("language",),
    "domain": ("internet", "domain", "top", "level"), "web": ("internet", "domain"),
    "website": ("internet", "domain"), "tld": ("internet", "domain", "top", "level"),
    "capitol": ("capital",), "seat": ("capital",),
    "continent": ("region",), "part": ("region", "subregion"), "located": ("region",), "where": ("region",),
    "protons": ("atomic", "number"), "mass": ("atomic", "weight"), "weight": ("atomic", "weight"),
    "discover": ("discovered",), "discovery": ("discovered",), "found": ("discovered",),
    "row": ("period",), "column": ("group",), "makes": ("company",), "maker": ("company",),
}  # fmt: skip
#: kinds of page whose titles and other names are matched as entities.
ENTITY_KINDS = ("country", "element", "brand")
_SYMBOL_CUE = frozenset({"symbol", "element", "chemical", "elements"})
_WORD_RE = re.compile(r"\w+")


@dataclass(frozen=True)
class QueryAnalysis:
    tokens: list[str]
    entities: list[int]
    terms: list[str]


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


class QueryAnalyzer:
    """Built once per index (~0.1 s) from the corpus, its BM25 vocabulary and document frequencies.

    Args:
        corpus: the loaded corpus.
        vocab: BM25 vocabulary (term → id).
        doc_freq: term → number of pages containing it (common words are not taken as other names).
        names: page id → other names (``names.json``).
    """

    def __init__(
        self, corpus: Corpus, vocab: dict[str, int], doc_freq: dict[str, int], names: dict[str, list[str]]
    ) -> None:
        self.vocab = vocab
        self.titles: dict[int, list[str]] = {}
        self.phrases: dict[tuple[str, ...], list[int]] = {}
        self.symbols: dict[str, int] = {}
        priority: dict[tuple[str, ...], int] = {}
        former = {n for names_ in FORMER_NAMES.values() for n in names_}

        def add(phrase: tuple[str, ...], page: int, rank: int) -> None:
            if not phrase:
                return
            best = priority.get(phrase)
            if best is None or rank < best:  # a title beats an alias beats a foreign name
                priority[phrase] = rank
                self.phrases[phrase] = [page]
            elif rank == best and page not in self.phrases[phrase]:
                self.phrases[phrase].append(page)

        for i, page in enumerate(corpus.pages):
            if page.kind not in ENTITY_KINDS:
                continue
            title = tuple(bm25_tokenize(page.title))
            self.titles[i] = list(title)
            if page.kind == "brand" and len(title) == 1 and doc_freq.get(title[0], 0) > 20:
                continue  # a brand called by a common word ("Target") is not named by every query using it
            add(title, i, 0)
            for alias in page.facts.get("aliases", []) or []:
                add(tuple(bm25_tokenize(alias)), i, 1)
            for name in names.get(page.id, []):
                phrase = tuple(bm25_tokenize(name))
                if len(phrase) == 1 and doc_freq.get(phrase[0], 0) > 30 and name not in former:
                    continue  # a foreign name that is a common word here ("Nga", "Mali" in another tongue)
                add(phrase, i, 1)
            if page.kind == "element":
                self.symbols[str(page.facts["symbol"])] = i
        self.max_len = max(len(p) for p in self.phrases)
        # words of entity names (corrected first: a misspelled query word is most often a name)
        self.name_words = sorted({w for phrase in self.phrases for w in phrase if len(w) >= 4})
        self.by_length: dict[int, list[str]] = {}
        for word in vocab:
            if word.isalpha() and len(word) >= 4:
                self.by_length.setdefault(len(word), []).append(word)

    def correct(self, word: str) -> str:
        """``word`` if indexed (or too short to judge), else its closest indexed word (or itself).

        Entity-name words are tried first, then every indexed word of about the same length; among
        near ties the candidate keeping the first and last letter wins (typos rarely change those).
        """
        if word in self.vocab or len(word) < 4 or not word.isalpha():
            return word
        for pool, cutoff in ((self.name_words, 0.7), (self._near_length(len(word)), 0.75)):
            hits = process.extract(
                word, pool, scorer=DamerauLevenshtein.normalized_similarity, score_cutoff=cutoff, limit=8
            )
            if hits:
                best = max(
                    hits, key=lambda h: (h[1] + 0.06 * (h[0][0] == word[0]) + 0.03 * (h[0][-1] == word[-1]), h[0])
                )
                return best[0]
        return word

    def _near_length(self, n: int) -> list[str]:
        return [w for m in range(n - 1, n + 2) for w in self.by_length.get(m, ())]

    def named(self, words: Sequence[str]) -> list[int]:
        """Pages that runs of ``words`` name exactly (longest names first; a name shared by more than
        three pages names none of them), in order of first mention."""
        entities: list[int] = []
        covered = [False] * len(words)
        for n in range(min(self.max_len, len(words)), 0, -1):
            for start in range(len(words) - n + 1):
                if any(covered[start : start + n]):
                    continue
                pages = self.phrases.get(tuple(words[start : start + n]))
                if pages and len(pages) <= 3:
                    entities.extend(p for p in pages if p not in entities)
                    covered[start : start + n] = [True] * n
        return entities

    def analyze(self, query: str) -> QueryAnalysis:
        words = [self.correct(w) for w in bm25_tokenize(query)]
        entities = self.named(words)
        raw = _WORD_RE.findall(_fold(query))
        if any(w.lower() in _SYMBOL_CUE for w in raw):
            for w in raw[1:]:  # case-sensitive, never the first word ("In which…", "I…")
                page = self.symbols.get(w)
                # "I" is a word too: only the query's last word is taken as iodine's symbol
                if page is not None and page not in entities and (w != "I" or w == raw[-1]):
                    entities.insert(0, page)
        tokens = list(words)
        for page in entities:
            tokens.extend(t for t in self.titles.get(page, ()) if t not in tokens)
        for w in words:
            tokens.extend(s for s in SYNONYMS.get(w, ()) if s not in tokens)
        return QueryAnalysis(tokens, entities, tokens)


def other_names(corpus: Corpus, names: dict[str, list[str]], page: int) -> Sequence[str]:
    """Every name of ``page`` (title, aliases, other names) — for tests and the benchmark."""
    p = corpus.pages[page]
    return [p.title, *(p.facts.get("aliases") or []), *names.get(p.id, [])]
