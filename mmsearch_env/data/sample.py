"""The built-in sample: a small fictional world, its web pages and its visual questions.

Sixteen invented countries, each with a procedurally drawn flag and a few facts. Because the countries
are invented, no model can know them: questions about a flag's country or that country's capital
genuinely need image search (and then text search); questions that name the country need text search;
questions about the flag's emblem are answerable from the image alone. Everything is generated
deterministically from the tables below, so no data file ships and every run sees the same pixels.

Question images are *perturbed* views of the flag (crop, rescale, colour shift), never the page's
own image, so image search has to match, not look up.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

from mmsearch_env.data.schema import Example

__all__ = ["COUNTRIES", "SPLITS", "URL_BASE", "Country", "draw_flag", "flags", "sample_examples"]

URL_BASE = "https://sample.mmsearch.invalid/wiki/"  # .invalid: reserved, can never resolve

COLOURS = {
    "red": (200, 30, 45),
    "white": (245, 245, 245),
    "blue": (25, 60, 160),
    "green": (20, 130, 60),
    "yellow": (245, 200, 30),
    "black": (20, 20, 20),
    "orange": (240, 120, 20),
    "purple": (110, 40, 140),
    "sky blue": (100, 180, 230),
}


@dataclass(frozen=True)
class Country:
    name: str
    capital: str
    currency: str
    founded: int
    region: str
    layout: str  # "horizontal" | "vertical" | "cross"
    stripes: tuple[str, ...]
    emblem: str  # "star" | "circle" | "triangle" | "diamond"
    emblem_colour: str


COUNTRIES: tuple[Country, ...] = (
    Country(
        "Arvenia",
        "Velmont",
        "arven crown",
        1712,
        "the Veskan archipelago",
        "horizontal",
        ("red", "white", "green"),
        "star",
        "yellow",
    ),
    Country(
        "Belmora",
        "Sarogh",
        "belmoran lira",
        1788,
        "the Ochre Coast",
        "vertical",
        ("blue", "yellow", "blue"),
        "circle",
        "red",
    ),
    Country(
        "Caldoria", "Kelbridge", "caldor", 1804, "the Pale Mountains", "cross", ("green", "white"), "diamond", "red"
    ),
    Country(
        "Dravenna",
        "Ostmere",
        "drava mark",
        1821,
        "the Veskan archipelago",
        "horizontal",
        ("black", "orange"),
        "triangle",
        "white",
    ),
    Country(
        "Elunor",
        "Tirrin",
        "lune",
        1836,
        "the Silent Steppe",
        "vertical",
        ("purple", "white", "purple"),
        "star",
        "yellow",
    ),
    Country(
        "Ferovia",
        "Paloque",
        "ferro",
        1849,
        "the Ochre Coast",
        "horizontal",
        ("sky blue", "white", "sky blue"),
        "circle",
        "yellow",
    ),
    Country(
        "Gorsland", "Marnhold", "gorse pound", 1862, "the Northern Fjords", "cross", ("blue", "yellow"), "star", "white"
    ),
    Country(
        "Hestria",
        "Esk Varda",
        "hestri",
        1877,
        "the Pale Mountains",
        "horizontal",
        ("green", "yellow", "red"),
        "diamond",
        "black",
    ),
    Country(
        "Ilvaria", "Lunaro", "ilvar", 1890, "the Glass Lakes", "vertical", ("red", "black", "red"), "circle", "white"
    ),
    Country(
        "Juvenna",
        "Brisca",
        "juvo",
        1903,
        "the Silent Steppe",
        "horizontal",
        ("orange", "white", "green"),
        "triangle",
        "blue",
    ),
    Country(
        "Korvath", "Dunmarch", "korva dinar", 1918, "the Northern Fjords", "cross", ("red", "white"), "circle", "blue"
    ),
    Country(
        "Lumeria", "Aurelle", "lumen", 1931, "the Glass Lakes", "horizontal", ("blue", "white", "red"), "star", "red"
    ),
    Country(
        "Marovia",
        "Quillon",
        "marov",
        1945,
        "the Ochre Coast",
        "vertical",
        ("green", "orange", "green"),
        "diamond",
        "white",
    ),
    Country(
        "Nerith",
        "Zeraph",
        "nerith shell",
        1952,
        "the Veskan archipelago",
        "horizontal",
        ("purple", "yellow"),
        "circle",
        "green",
    ),
    Country(
        "Oskarra", "Haldvik", "oskar", 1967, "the Northern Fjords", "cross", ("sky blue", "white"), "triangle", "red"
    ),
    Country(
        "Pravona", "Temsa", "pravo", 1974, "the Pale Mountains", "vertical", ("black", "yellow", "black"), "star", "red"
    ),
)

#: Split of the countries (disjoint: test questions are about countries training never saw).
SPLITS = {"train": range(0, 10), "validation": range(10, 12), "test": range(12, 16)}

_EMBLEM_ALIASES = {
    "star": ["a star", "five-pointed star", "star shape"],
    "circle": ["a circle", "disc", "disk", "round"],
    "triangle": ["a triangle", "triangular"],
    "diamond": ["a diamond", "rhombus", "lozenge"],
}

_PARAPHRASES = {
    "image": ("Which country's flag is shown in the image?", "This is the flag of which country?"),
    "image+text": (
        "What is the capital city of the country whose flag is shown?",
        "Name the capital of the country this flag belongs to.",
    ),
    "text": ("What currency is used in {name}?", "In which year was {name} founded?"),
    "none": ("What shape is the emblem in the middle of this flag?", "Which shape appears at the centre of this flag?"),
}


def draw_flag(country: Country, width: int = 192, height: int = 128) -> Image.Image:
    """Draw ``country``'s flag (deterministic for a given Pillow version)."""
    image = Image.new("RGB", (width, height), COLOURS[country.stripes[0]])
    draw = ImageDraw.Draw(image)
    n = len(country.stripes)
    if country.layout == "horizontal":
        for i, colour in enumerate(country.stripes):
            draw.rectangle([0, i * height // n, width, (i + 1) * height // n], fill=COLOURS[colour])
    elif country.layout == "vertical":
        for i, colour in enumerate(country.stripes):
            draw.rectangle([i * width // n, 0, (i + 1) * width // n, height], fill=COLOURS[colour])
    else:  # a Nordic cross in the second colour
        bar = height // 6
        cx = width // 3
        draw.rectangle([cx - bar // 2, 0, cx + bar // 2, height], fill=COLOURS[country.stripes[1]])
        draw.rectangle([0, height // 2 - bar // 2, width, height // 2 + bar // 2], fill=COLOURS[country.stripes[1]])
    cx, cy, r = width // 2, height // 2, height // 5
    fill = COLOURS[country.emblem_colour]
    if country.emblem == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif country.emblem == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    elif country.emblem == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    else:
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.45
            angle = -np.pi / 2 + k * np.pi / 5
            points.append((cx + radius * np.cos(angle), cy + radius * np.sin(angle)))
        draw.polygon(points, fill=fill)
    return image


def _perturb(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A re-photographed view: random crop (≤8% per side), rescale, brightness/colour shift."""
    w, h = image.size
    left, top = (int(rng.integers(0, max(1, int(s * 0.08)))) for s in (w, h))
    right, bottom = (int(s - rng.integers(0, max(1, int(s * 0.08)))) for s in (w, h))
    view = image.crop((left, top, right, bottom))
    scale = float(rng.uniform(0.6, 1.4))
    view = view.resize((max(16, int(view.width * scale)), max(16, int(view.height * scale))), Image.Resampling.BILINEAR)
    view = ImageEnhance.Brightness(view).enhance(float(rng.uniform(0.85, 1.15)))
    return ImageEnhance.Color(view).enhance(float(rng.uniform(0.85, 1.15)))


@lru_cache(maxsize=1)
def flags() -> tuple[Image.Image, ...]:
    """Each country's flag, drawn once (the questions show perturbed copies; the sample web the originals)."""
    return tuple(draw_flag(c) for c in COUNTRIES)


@cache
def sample_examples(split: str | None) -> tuple[Example, ...]:
    """The questions of ``split`` ("train", "validation", "test", or None for all), four per country."""
    indices = range(len(COUNTRIES)) if split is None else SPLITS[split]
    examples = []
    for i in indices:
        country, flag = COUNTRIES[i], flags()[i]
        rng = np.random.default_rng(1000 + i)  # per country, so splits do not shift each other's pixels
        slot = i % 2
        facts = {
            "image": (country.name, [f"Flag of {country.name}"]),
            "image+text": (country.capital, []),
            "text": (country.currency if slot == 0 else str(country.founded), []),
            "none": (country.emblem, _EMBLEM_ALIASES[country.emblem]),
        }
        queries = {
            "image+text": f"capital of {country.name}",
            "text": _PARAPHRASES["text"][slot].format(name=country.name),
        }
        for need, (answer, aliases) in facts.items():
            template = _PARAPHRASES[need][slot if need == "text" else int(rng.integers(2))]
            examples.append(
                Example(
                    id=f"sample-{country.name.lower()}-{need.replace('+', '-')}",
                    question=template.format(name=country.name),
                    image=_perturb(flag, rng),
                    answer=answer,
                    candidate_answers=tuple(aliases),
                    category="flag" if need in ("image", "none") else "country-fact",
                    search_need=need,
                    metadata={"entity": country.name, "text_query": queries.get(need)},
                )
            )
    return tuple(examples)
