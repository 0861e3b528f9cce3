"""Image search over the corpus on what users actually send: screenshots, big crops, mirrored,
inverted and padded copies, element tiles, and flags whose stripes share the border colour."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from mmsearch_env.corpus.features import autocrop
from mmsearch_env.corpus.localise import propose_regions
from mmsearch_env.search import make_search


@pytest.fixture(scope="module")
def search():
    return make_search("corpus")


def page_of(search, image: Image.Image) -> str:
    return search.corpus.pages[search.rank_images(image, 1)[0][0]].id


def screenshot(picture: Image.Image, seed: int) -> Image.Image:
    """The picture at ~40 % of a 640×480 page with coloured boxes and text lines beside it."""
    rng = np.random.default_rng(seed)
    canvas = Image.new("RGB", (640, 480), (236, 240, 245))
    draw = ImageDraw.Draw(canvas)
    for _ in range(8):
        x, y = int(rng.integers(330, 600)), int(rng.integers(0, 440))
        draw.rectangle([x, y, x + 40, y + 14], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    for line in range(10):
        draw.text((340, 30 + 40 * line), "search results for this picture", fill=(30, 30, 30))
    w = 256
    h = round(picture.height * w / picture.width)
    canvas.paste(picture.resize((w, h)), (40, int(rng.integers(20, max(21, 460 - h)))))
    return canvas


@pytest.mark.parametrize("country", ["aut", "lva", "arg", "nga"])
def test_a_stripe_in_the_border_colour_is_not_cropped_away(search, country):
    flag = search.corpus.thumbnail(search.corpus.page(f"country/{country}").images[0])
    assert autocrop(flag).size == flag.size
    assert page_of(search, flag) == f"country/{country}"


def test_screenshots_are_localised(search):
    corpus = search.corpus
    ids = ["country/fra", "country/jpn", "country/bra", "country/ken", "country/can", "country/ind"]
    hits = 0
    for seed, page_id in enumerate(ids):
        flag = corpus.thumbnail(corpus.page(page_id).images[0])
        shot = screenshot(flag, seed)
        assert propose_regions(shot), page_id  # the pasted picture is framed by straight edges
        hits += page_of(search, shot) == page_id
    assert hits >= 5, f"{hits}/6 screenshots found"


def test_mirrored_inverted_cropped_and_tiles(search):
    corpus = search.corpus
    brazil = corpus.thumbnail(corpus.page("country/bra").images[0])
    assert page_of(search, ImageOps.mirror(brazil)) == "country/bra"
    assert page_of(search, ImageOps.invert(brazil)) == "country/bra"
    w, h = brazil.size
    assert page_of(search, brazil.crop((w // 5, h // 5, w - w // 5, h - h // 5))) == "country/bra"
    iron = corpus.page("element/iron")
    assert page_of(search, corpus.thumbnail(iron.images[0])) == "element/iron"
