"""The experiment's questions and which of them the model is taught (the knowledge split).

The embedded corpus's country questions that name their country in the text and need one text lookup
(capital, calling code, web domain), reworded to one phrasing per kind. Each country is "known" or
"unknown" by a seeded coin flip (:func:`is_known`), recorded as ``metadata["known"]``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from experiments.on_demand.config import CATEGORIES, PHRASING, OnDemandConfig
from mmsearch_env.corpus import load_corpus
from mmsearch_env.data import Example, load_dataset
from mmsearch_env.data.loaders import write_parquet

__all__ = ["country_names", "cut_to", "is_known", "select_questions", "write_questions"]


def is_known(entity: str, seed: int, fraction: float) -> bool:
    """The seeded coin flip that decides whether the model is taught a country's facts.

    >>> is_known("x", 0, 1.0), is_known("x", 0, 1e-12)
    (True, False)
    """
    digest = hashlib.sha256(f"{seed}:{entity}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def select_questions(split: str, config: OnDemandConfig) -> list[Example]:
    """The split's text-lookup country questions, reworded, with ``metadata["known"]`` set."""
    corpus = load_corpus()
    out = []
    for example in load_dataset("corpus", split):
        if example.category in CATEGORIES and example.search_need == "text":
            entity = example.metadata["entity"]
            known = is_known(entity, config.seed, config.known_fraction)
            question = PHRASING[example.category].format(name=corpus.page(entity).title)
            out.append(replace(example, question=question, metadata={**example.metadata, "known": known}))
    return out


def cut_to(examples: Sequence[Example], limit: int | None) -> list[Example]:
    """The first ``limit // 2`` known questions and as many unknown ones as fill ``limit`` (``None``: all):
    the quick preset's even mix."""
    if not limit:
        return list(examples)
    known = [e for e in examples if e.metadata["known"]][: limit // 2]
    unknown = [e for e in examples if not e.metadata["known"]][: limit - len(known)]
    return known + unknown


def write_questions(examples: Sequence[Example], path: Path) -> Path:
    """``examples`` as a parquet question file with a ``known`` column (readable as an env ``dataset``)."""
    return write_parquet(examples, path, extra_columns={"known": [e.metadata["known"] for e in examples]})


def country_names(examples: Sequence[Example]) -> dict[str, str]:
    """Entity id -> the country's name (its corpus page title), for every question of ``examples``."""
    corpus = load_corpus()
    return {e.metadata["entity"]: corpus.page(e.metadata["entity"]).title for e in examples}
