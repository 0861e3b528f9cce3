"""Text printed in a query picture (OCR) fused with the visual match: naming rules and the real engine."""

from __future__ import annotations

import sys

import pytest
from PIL import Image, ImageDraw, ImageFont

from mmsearch_env.corpus.picture_text import PictureTextReader, named_pages
from mmsearch_env.errors import ConfigError
from mmsearch_env.search import make_search


@pytest.fixture(scope="module")
def plain():
    return make_search("corpus")


@pytest.fixture(scope="module")
def reading():
    return make_search("corpus", {"read_text": True})


def page_id(search, index: int) -> str:
    return search.corpus.pages[index].id


def title_page(search, title: str) -> int:
    return next(i for i, p in enumerate(search.corpus.pages) if p.title == title)


def test_lines_name_pages_by_any_of_their_names(plain):
    idx = plain.index
    names = named_pages(["Krypton", "the flag of Deutschland", "36"], idx.analyzer, idx.atomic_numbers)
    assert [plain.corpus.pages[p].title for p in names] == ["Krypton", "Germany"]


def test_symbols_name_elements_only_when_unambiguous(plain):
    idx = plain.index
    kr, k = title_page(plain, "Krypton"), title_page(plain, "Potassium")
    assert named_pages(["Kr"], idx.analyzer, idx.atomic_numbers) == [kr]  # two letters, exact case
    assert named_pages(["kr", "KR"], idx.analyzer, idx.atomic_numbers) == []
    assert named_pages(["K"], idx.analyzer, idx.atomic_numbers) == []  # one letter alone is noise
    assert named_pages(["19", "K"], idx.analyzer, idx.atomic_numbers) == [k]  # with its atomic number
    assert named_pages(["20", "K"], idx.analyzer, idx.atomic_numbers) == []


def test_watermark_noise_names_nothing(plain):
    idx = plain.index
    noise = ["SAMPLESAMPLES", "MPLESAM", "og", "@ photo", "login price share", "5.1", "+"]
    assert named_pages(noise, idx.analyzer, idx.atomic_numbers) == []


def word_picture(text: str) -> Image.Image:
    canvas = Image.new("RGB", (360, 140), (250, 250, 250))
    ImageDraw.Draw(canvas).text((20, 40), text, fill=(10, 10, 10), font=ImageFont.load_default(size=48))
    return canvas


def test_the_picture_text_decides_when_the_visual_match_is_weak(plain, reading):
    picture = word_picture("Krypton")
    visual = plain.rank_images(picture, 5)
    # a word on a blank page matches every wordmark logo about equally well
    assert visual[0][2] - visual[1][2] < reading.read_text_margin
    fused = reading.rank_images(picture, 5)
    assert page_id(reading, fused[0][0]) == "element/krypton"
    assert page_id(plain, visual[0][0]) != "element/krypton"
    assert reading.reader.read(picture) == ["Krypton"]


def test_a_strong_visual_match_is_never_read(plain, reading):
    flag = plain.corpus.thumbnail(plain.corpus.pages[title_page(plain, "Japan")].images[0])
    calls = []
    real_read = reading.reader.read
    reading.reader.read = lambda image: calls.append(image) or real_read(image)
    try:
        assert reading.rank_images(flag, 5) == plain.rank_images(flag, 5)
    finally:
        del reading.reader.read
    assert calls == []  # the OCR pass runs only under read_text_below


def test_a_missing_ocr_engine_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)  # as on an install without the extra
    with pytest.raises(ConfigError, match=r"mmsearch-env\[ocr\]"):
        PictureTextReader().read(Image.new("RGB", (40, 40)))
