"""Questions over the corpus's Wikipedia summaries: facts a conservative extractor reads off the text.

Only two patterns are trusted, both from the page's own first lines:

* a person's life years from the short description, ``"Ada Lovelace: English mathematician (1815–1852)."``
  (a page whose summary says he or she; ranges of periods and wars are not lives) → the years of
  birth and death;
* ``"<title> is the capital (and largest city) of <X>"`` where ``X`` is a country page's title → the
  country a capital city belongs to.

Anything looser (founding years, locations in free text) misreads too often to be asked. These are
``text`` questions: the question names the entity, the answer is in its page. Wikipedia pages have no
picture, so each question's image is a card printing the entity's name (:func:`title_card`), perturbed
like every other question image. Splits are by entity, seeded separately from the other questions so
that adding these never moves an existing question's split, image or id.
"""

from __future__ import annotations

import re
import textwrap
import zlib
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mmsearch_env.corpus import Corpus

__all__ = ["WIKI_FACTS", "title_card", "wiki_candidates", "wiki_facts"]

_LIFE = re.compile(r"^(?P<title>[^:]+): (?P<desc>[^()]+?) \((?P<born>\d{3,4})–(?P<died>\d{3,4})\)\. ")
_PERSON = re.compile(r"\b(he|she)\b", re.IGNORECASE)
#: first words of a description that name a period, a state or a family, not a person
_NOT_A_LIFE = frozenset(
    {
        "territory",
        "expansion",
        "period",
        "monarchy",
        "imperial",
        "dynasty",
        "empire",
        "former",
        "historical",
        "state",
        "kingdom",
        "war",
        "era",
        "house",
        "royal",
        "family",
        "series",
    }
)
_CAPITAL = (
    r"(?:^|\. ){title} is the capital (?:and (?:the )?largest city )?of (?:the )?(?P<country>[A-Z][A-Za-z' -]+?)[,.;]"
)

#: fact -> (train/validation phrasings, test-only phrasings, text-query template)
WIKI_FACTS = {
    "born": (("In which year was {s} born?", "What year was {s} born in?"),
             ("{s} was born in which year?", "Give the year of birth of {s}."), "{e} born year"),
    "died": (("In which year did {s} die?", "What year did {s} die in?"),
             ("{s} died in which year?", "Give the year of death of {s}."), "{e} died year"),
    "capital_of": (("{s} is the capital of which country?", "Which country has {s} as its capital?"),
                   ("Of which country is {s} the capital city?", "{s} is the seat of government of which country?"),
                   "{e} capital of country"),
}  # fmt: skip
_SPLIT_SHARES = {"test": 0.15, "validation": 0.10}


def wiki_facts(title: str, text: str, countries: dict[str, list[str]]) -> list[tuple[str, str, list[str]]]:
    """``(fact, answer, aliases)`` triples the extractor trusts in one page (``countries``: country title
    → its other names).

    >>> wiki_facts("Ada Lovelace", "Ada Lovelace: English mathematician (1815–1852). She was ...", {})
    [('born', '1815', []), ('died', '1852', [])]
    >>> wiki_facts("Renaissance philosophy", "Renaissance philosophy: Period of thought (1355–1650). It ...", {})
    []
    >>> wiki_facts("Lima", "Lima: Capital of Peru. Lima is the capital and largest city of Peru, ...", {"Peru": []})
    [('capital_of', 'Peru', [])]
    """
    out: list[tuple[str, str, list[str]]] = []
    life = _LIFE.match(text)
    if (
        life
        and life["title"] == title
        and _PERSON.search(text)
        and int(life["born"]) < int(life["died"])
        and life["desc"].split()[0].lower() not in _NOT_A_LIFE
    ):
        out += [("born", life["born"], []), ("died", life["died"], [])]
    capital = re.search(_CAPITAL.format(title=re.escape(title)), text)
    if capital and capital["country"] in countries:
        out.append(("capital_of", capital["country"], countries[capital["country"]]))
    return out


def _splits(entities: list[str], rng: np.random.Generator) -> dict[str, str]:
    order = rng.permutation(len(entities))
    n_test = round(len(entities) * _SPLIT_SHARES["test"])
    n_val = round(len(entities) * _SPLIT_SHARES["validation"])
    return {
        entities[i]: "test" if rank < n_test else "validation" if rank < n_test + n_val else "train"
        for rank, i in enumerate(order)
    }


def wiki_candidates(corpus: Corpus, seed: int) -> list[dict[str, Any]]:
    """Every Wikipedia question, in page order, as rows without an id (the caller numbers them)."""
    rng = np.random.default_rng([seed, zlib.crc32(b"wiki")])
    countries = {p.title: [a for a in p.facts.get("aliases", []) if a != p.title] for p in corpus.pages
                 if p.kind == "country"}  # fmt: skip
    found = [(page, wiki_facts(page.title, page.text, countries)) for page in corpus.pages if page.kind == "wiki"]
    found = [(page, facts) for page, facts in found if facts]
    splits = _splits(sorted(page.id for page, _ in found), rng)
    rows = []
    for page, facts in found:
        for fact, answer, aliases in facts:
            train_phrasings, test_phrasings, query = WIKI_FACTS[fact]
            options = test_phrasings if splits[page.id] == "test" else train_phrasings
            rows.append({
                "question": options[int(rng.integers(len(options)))].format(s=page.title),
                "answer": answer, "aliases": aliases, "category": f"wiki-{fact}", "search_need": "text",
                "split": splits[page.id], "image_ref": {"card": page.title, "seed": int(rng.integers(2**31))},
                "entity": page.id, "entity_title": page.title, "text_query": query.format(e=page.title),
            })  # fmt: skip
    return rows


def title_card(title: str, size: int = 160) -> Image.Image:
    """A plain card printing ``title`` (the picture of a question about a page that has no image)."""
    card = Image.new("RGB", (size, size), (250, 248, 240))
    draw = ImageDraw.Draw(card)
    font = ImageFont.load_default(size=18)
    lines = textwrap.wrap(title, width=14)[:5]
    y = (size - 22 * len(lines)) // 2
    for line in lines:
        width = draw.textlength(line, font=font)
        draw.text(((size - width) / 2, y), line, fill=(20, 20, 20), font=font)
        y += 22
    draw.rectangle((2, 2, size - 3, size - 3), outline=(120, 120, 120), width=2)
    return card
