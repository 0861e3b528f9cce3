"""The experiment's countries, what the model is taught about each, and its questions.

Countries: the embedded corpus's, with a flag no other country shares, a capital, and a name and capital
that cannot be mistaken for each other in a text (neither contains the other). Each country belongs to
one split for good, by a hash of its id (``train`` 60%, ``validation`` 20%, ``test`` 20%): GRPO trains on
train countries only, every choice is made on validation countries, and the test countries are
evaluated once per frozen recipe. What the model is taught is drawn per seed, independently: whether it
*recognises* the flag (it learns the flag's name) and whether it *knows* the capital.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from PIL import Image

from experiments.multimodal.config import KINDS, PHRASING, MultimodalConfig
from mmsearch_env.corpus import load_corpus
from mmsearch_env.data import Example
from mmsearch_env.data.parquet import write_parquet

__all__ = [
    "SPLITS",
    "Country",
    "blank_image",
    "coin",
    "countries",
    "questions",
    "split_of",
    "write_questions",
]

SPLITS = ("train", "validation", "test")


def coin(*parts: object) -> float:
    """A uniform number in [0, 1) from a hash of ``parts`` (seeded draws that never depend on order).

    >>> coin("a", 1) == coin("a", 1) != coin("a", 2)
    True
    """
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(entity: str) -> str:
    """The country's split, the same for every seed: 60% train, 20% validation, 20% test."""
    u = coin("split", entity)
    return "train" if u < 0.6 else "validation" if u < 0.8 else "test"


@dataclass(frozen=True)
class Country:
    """One country of the experiment and what the model is taught about it."""

    entity: str
    name: str
    capital: str
    aliases: tuple[str, ...]
    flag: int  # corpus image index
    split: str
    recognised: bool
    known: bool


@cache
def _candidates() -> tuple[tuple[str, str, str, tuple[str, ...], int], ...]:
    corpus = load_corpus()
    groups: dict[int, int] = {}
    for index in range(corpus.n_images):
        groups[int(corpus.dup_group[index])] = groups.get(int(corpus.dup_group[index]), 0) + 1
    out = []
    for page in corpus.pages:
        if not page.id.startswith("country/"):
            continue
        flags = [i for i in page.images if corpus.image_kind[i] == "flag"]
        capitals = page.facts.get("capital") or []
        if len(flags) != 1 or len(capitals) != 1 or groups[int(corpus.dup_group[flags[0]])] > 1:
            continue
        name, capital = page.title, capitals[0]
        if name.lower() in capital.lower() or capital.lower() in name.lower():
            continue
        aliases = tuple(a for a in page.facts.get("aliases", []) if a != name)
        out.append((page.id, name, capital, aliases, flags[0]))
    return tuple(out)


def countries(config: MultimodalConfig) -> list[Country]:
    """The experiment's countries with the seed's knowledge drawn (``max_countries``: the first that many
    in a seed-independent hash order, so a smaller run is a subset of a larger one)."""
    chosen = sorted(_candidates(), key=lambda c: coin("order", c[0]))
    if config.max_countries is not None:
        chosen = chosen[: config.max_countries]
    return [
        Country(
            entity=entity,
            name=name,
            capital=capital,
            aliases=aliases,
            flag=flag,
            split=split_of(entity),
            recognised=coin(config.seed, "flag", entity) < config.recognised_fraction,
            known=coin(config.seed, "fact", entity) < config.known_fraction,
        )
        for entity, name, capital, aliases, flag in sorted(chosen)
    ]


@cache
def blank_image() -> Image.Image:
    """The picture shown with a question that names its country: plain grey, no country in it."""
    return Image.new("RGB", (64, 64), (200, 200, 200))


def questions(selected: Sequence[Country]) -> list[Example]:
    """The three questions (:data:`KINDS`) about each country, with ``metadata``: ``entity``, ``kind``,
    ``recognised`` and ``known``. Only the ``name`` question's answer is a name (with its aliases)."""
    corpus = load_corpus()
    out = []
    for country in selected:
        flag = corpus.thumbnail(country.flag)
        for kind in KINDS:
            meta = {
                "entity": country.entity,
                "kind": kind,
                "split": country.split,
                "recognised": country.recognised,
                "known": country.known,
                "text_query": f"{country.name} capital",
            }
            is_name = kind == "name"
            out.append(
                Example(
                    id=f"{country.entity.split('/')[1]}-{kind}",
                    question=PHRASING[kind].format(name=country.name),
                    image=blank_image() if kind == "named-capital" else flag,
                    answer=country.name if is_name else country.capital,
                    candidate_answers=country.aliases if is_name else (),
                    category=kind,
                    search_need={"name": "image", "flag-capital": "image+text", "named-capital": "text"}[kind],
                    metadata=meta,
                )
            )
    return out


def write_questions(examples: Sequence[Example], path: Path) -> Path:
    """``examples`` as a parquet question file (readable as an env ``dataset``)."""
    return write_parquet(examples, path)
