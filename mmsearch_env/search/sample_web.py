"""The sample world's "web": per invented country a flag page, a country page and a capital page.

The questions are :mod:`mmsearch_env.data.sample`; this module writes the pages that answer them, for
``search="sample"`` (:class:`~mmsearch_env.search.local.LocalSearch` over them).
"""

from __future__ import annotations

from functools import lru_cache

from mmsearch_env.data.sample import COUNTRIES, URL_BASE, Country, flags
from mmsearch_env.search.local import Page

__all__ = ["sample_pages"]


def _flag_text(c: Country) -> str:
    if c.layout == "cross":
        design = f"a {c.stripes[1]} Nordic cross on a {c.stripes[0]} field"
    else:
        design = f"{len(c.stripes)} {c.layout} stripes of {', '.join(c.stripes[:-1])} and {c.stripes[-1]}"
    return (
        f"The flag of {c.name} is the national flag of {c.name}. It shows {design}, "
        f"with a {c.emblem_colour} {c.emblem} in the centre. The flag was adopted when {c.name} was founded in "
        f"{c.founded}. Vexillologists list it among the flags of {c.region}."
    )


def _country_text(c: Country) -> str:
    return (
        f"{c.name} is a country in {c.region}. The capital and largest city of {c.name} is {c.capital}. "
        f"The currency of {c.name} is the {c.currency}. {c.name} was founded in {c.founded}. "
        f"Its flag carries a {c.emblem_colour} {c.emblem}."
    )


def _capital_text(c: Country) -> str:
    return (
        f"{c.capital} is a city in {c.region}. It is the capital of {c.name}. "
        f"Travellers to {c.capital} pay in the {c.currency}."
    )


@lru_cache(maxsize=1)
def sample_pages() -> tuple[Page, ...]:
    """The sample "web": per country a flag page, a country page and a capital page."""
    pages = []
    for country, flag in zip(COUNTRIES, flags(), strict=True):
        slug = country.name
        pages.append(Page(URL_BASE + f"Flag_of_{slug}", f"Flag of {slug}", _flag_text(country), (flag,)))
        pages.append(
            Page(URL_BASE + slug, f"{slug} - country profile", _country_text(country), (flag.resize((96, 64)),))
        )
        pages.append(Page(URL_BASE + country.capital.replace(" ", "_"), country.capital, _capital_text(country)))
    return tuple(pages)
