"""The box syntax of region image search: one table per rule, each case with its reason."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from mmsearch_env.errors import BoxError
from mmsearch_env.regions import MIN_REGION_PIXELS, Box, crop_region, parse_box, region_pixels

SIZE = (640, 480)

READ = [
    ("0.1,0.2,0.5,0.6", Box(0.1, 0.2, 0.5, 0.6), "fractions"),
    (" 0.1 , 0.2 ,0.5, 0.6 ", Box(0.1, 0.2, 0.5, 0.6), "spaces around numbers"),
    ("[10, 20, 300, 400]", Box(10, 20, 300, 400), "square brackets, pixels"),
    ("(10,20,300,400)", Box(10, 20, 300, 400), "round brackets"),
    ("-5,+3,.5,7.", Box(-5, 3, 0.5, 7), "signs, leading and trailing dots"),
    ([0, 0, 1, 1], Box(0, 0, 1, 1), "a JSON array of ints"),
    ((0.25, 0.25, 0.75, 0.75), Box(0.25, 0.25, 0.75, 0.75), "a tuple"),
]


@pytest.mark.parametrize(("value", "box", "reason"), READ, ids=[r for *_, r in READ])
def test_boxes_that_read(value, box, reason):
    assert parse_box(value) == box


REFUSED = [
    ("1,2,3", "got 3", "three numbers"),
    ("1,2,3,4,5", "got 5", "five numbers"),
    ("", "got 1", "empty"),
    ("nan,0,1,1", "not a decimal number", "nan"),
    ("inf,0,1,1", "not a decimal number", "inf"),
    ("1e3,0,1,1", "not a decimal number", "exponent"),
    ("\u0661,0,1,1", "not a decimal number", "Arabic-Indic digit"),
    ("\uff11,0,1,1", "not a decimal number", "full-width digit"),
    ("0x10,0,1,1", "not a decimal number", "hex"),
    ("1 2,0,1,1", "not a decimal number", "space inside a number"),
    ("[1,2,3,4", "does not end with ']'", "unclosed bracket"),
    ("9" * 400 + ",0,1,1", "characters long", "too long to be a box"),
    ("1;2;3;4", "got 1", "semicolons"),
    ([0, 0, 1], "got 3", "short array"),
    ([0, 0, True, 1], "numbers, got bool", "a bool is not a number"),
    ([0, 0, "1", 1], "numbers, got str", "a string inside an array"),
    ([0, 0, float("nan"), 1], "finite", "NaN from JSON"),
    ([0, 0, float("inf"), 1], "finite", "Infinity from JSON"),
    ({"x1": 0}, "got dict", "an object"),
    (None, "got NoneType", "null"),
]


@pytest.mark.parametrize(("value", "message", "reason"), REFUSED, ids=[r for *_, r in REFUSED])
def test_boxes_refused_with_a_reason(value, message, reason):
    with pytest.raises(BoxError, match=re.escape(message)):
        parse_box(value)


PIXELS = [
    (Box(0.5, 0, 1, 0.5), (320, 0, 640, 240), "fractions scale by width and height"),
    (Box(0, 0, 1, 1), (0, 0, 640, 480), "the whole image"),
    (Box(10.4, 20.6, 99.2, 100.1), (10, 20, 100, 101), "pixels round outwards"),
    (Box(-50, -50, 5000, 100), (0, 0, 640, 100), "clipped to the image"),
]


@pytest.mark.parametrize(("box", "pixels", "reason"), PIXELS, ids=[r for *_, r in PIXELS])
def test_region_pixels(box, pixels, reason):
    assert region_pixels(box, SIZE) == pixels


BAD_REGIONS = [
    (Box(0.5, 0, 0.2, 1), "reversed or empty", "x2 < x1"),
    (Box(0, 0.5, 1, 0.5), "reversed or empty", "zero height"),
    (Box(0, 0, 1, 2), "at least", "pixels 1x2: too small"),
    (Box(700, 10, 900, 300), "0x290", "entirely right of the image"),
    (Box(0, 0, MIN_REGION_PIXELS - 1, 100), "at least", "one pixel under the minimum"),
]


@pytest.mark.parametrize(("box", "message", "reason"), BAD_REGIONS, ids=[r for *_, r in BAD_REGIONS])
def test_bad_regions(box, message, reason):
    with pytest.raises(BoxError, match=re.escape(message)):
        region_pixels(box, SIZE)


def test_crop_region_cuts_those_pixels():
    image = Image.new("RGB", (64, 48), (0, 0, 0))
    image.paste((255, 0, 0), (16, 8, 32, 24))
    crop = crop_region(image, region_pixels(parse_box("16,8,32,24"), image.size))
    assert crop.size == (16, 16)
    assert (np.asarray(crop) == (255, 0, 0)).all()


@pytest.mark.parametrize("box", [Box(0.1, 0.2, 0.3, 0.4), Box(265, 298, 381, 414), Box(1e-7, 0, 1234567.5, 2e9)])
def test_a_box_written_as_text_reads_back_to_the_same_numbers(box):
    assert "e" not in str(box).lower() and parse_box(str(box)) == box
