"""Image-search regions: the box an agent writes, read, checked, clipped and cut from the question image.

With ``image_crops=True`` an image search may name a region of the question's image, and the search
runs on that region alone (DeepMMSearch-R1's cropped image search): a picture shown small inside a
screenshot is found once it is cut out, while the whole screenshot matches nothing, or the wrong thing.

**Box syntax** (both protocols, one rule): four numbers ``x1,y1,x2,y2`` — left, top, right, bottom —
separated by commas, spaces allowed, optionally inside ``[ ]`` or ``( )``. When all four lie in
``[0, 1]`` they are fractions of the image's width and height; otherwise they are pixels of the
question's image (origin at the top-left corner, ``info["image_size"]`` gives its size). Numbers are
ASCII decimals with an optional sign and fraction (``12``, ``-3``, ``0.25``, ``.5``): no exponents,
``nan``/``inf`` or other scripts' digits. The box is clipped to the image and must then cover at least
:data:`MIN_REGION_PIXELS` pixels each way. Anything else is a malformed turn whose
``info["action_error"]`` says what was wrong; nothing here raises out of ``env.step``.

>>> box = parse_box("0.5, 0, 1, 0.5")
>>> box.is_fraction, region_pixels(box, (640, 480))
(True, (320, 0, 640, 240))
>>> region_pixels(parse_box("[-20, 100, 700, 300]"), (640, 480))  # pixels, clipped to the image
(0, 100, 640, 300)
>>> parse_box("1,2,3")
Traceback (most recent call last):
mmsearch_env.errors.BoxError: a box has four numbers x1,y1,x2,y2, got 3 in '1,2,3'
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from PIL import Image

from mmsearch_env.errors import BoxError

__all__ = ["BOX_SYNTAX", "MAX_BOX_CHARS", "MIN_REGION_PIXELS", "Box", "crop_region", "parse_box", "region_pixels"]

#: A box written as text longer than this is not read (a box needs a few dozen characters).
MAX_BOX_CHARS = 100
#: The smallest region an image search accepts, in pixels on each side (smaller says nothing to search).
MIN_REGION_PIXELS = 8
#: The box syntax in one line, for prompts and tool schemas.
BOX_SYNTAX = (
    "x1,y1,x2,y2 (left, top, right, bottom): fractions of the image's width and height when all four are "
    "between 0 and 1, else pixels"
)
_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)
_BRACKETS = {"[": "]", "(": ")"}


@dataclass(frozen=True)
class Box:
    """A box as the agent wrote it (finite numbers; fractions or pixels, see the module docstring)."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def is_fraction(self) -> bool:
        """True when all four numbers lie in [0, 1]: fractions of the image's width and height."""
        return all(0.0 <= v <= 1.0 for v in (self.x1, self.y1, self.x2, self.y2))

    def __str__(self) -> str:
        """The box in the syntax :func:`parse_box` reads back to the same numbers (no exponents)."""
        return ",".join(_plain(v) for v in (self.x1, self.y1, self.x2, self.y2))


def _plain(value: float) -> str:
    text = format(Decimal(repr(float(value))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _shown(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def parse_box(value: Any) -> Box:
    """Read a box from text (``"x1,y1,x2,y2"``) or a sequence of four numbers (a JSON array).

    Raises :class:`~mmsearch_env.errors.BoxError` saying what is wrong (the caller turns it into a
    malformed turn); never anything else, whatever ``value`` is.
    """
    if isinstance(value, str):
        return _parse_text(value)
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        if len(value) != 4:
            raise BoxError(f"a box has four numbers [x1, y1, x2, y2], got {len(value)}")
        numbers_ = []
        for v in value:
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise BoxError(f"a box holds numbers, got {type(v).__name__} {_shown(str(v))}")
            try:
                number = float(v)
            except OverflowError:  # a JSON integer with hundreds of digits
                raise BoxError(f"box numbers must be finite, got a {len(str(v))}-digit integer") from None
            if not math.isfinite(number):
                raise BoxError(f"box numbers must be finite, got {v!r}")
            numbers_.append(number)
        return Box(*numbers_)
    raise BoxError(f"a box is a string 'x1,y1,x2,y2' or an array of four numbers, got {type(value).__name__}")


def _parse_text(text: str) -> Box:
    if len(text) > MAX_BOX_CHARS:
        raise BoxError(f"the box text is {len(text)} characters long; write four numbers x1,y1,x2,y2")
    body = text.strip()
    if body[:1] in _BRACKETS:
        if not body.endswith(_BRACKETS[body[0]]):
            raise BoxError(f"the box {_shown(text)} opens {body[0]!r} but does not end with {_BRACKETS[body[0]]!r}")
        body = body[1:-1]
    parts = body.split(",")
    if len(parts) != 4:
        raise BoxError(f"a box has four numbers x1,y1,x2,y2, got {len(parts)} in {_shown(text)}")
    values = []
    for part in parts:
        part = part.strip(" \t")
        if not _NUMBER_RE.fullmatch(part):
            raise BoxError(f"box number {_shown(part)} is not a decimal number like 12 or 0.25 (in {_shown(text)})")
        number = float(part)
        if not math.isfinite(number):
            raise BoxError(f"box number {_shown(part)} is too large")
        values.append(number)
    return Box(*values)


def region_pixels(box: Box, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The box in pixels of an image of ``size`` (width, height), clipped to it: ``(left, top, right, bottom)``.

    Raises :class:`~mmsearch_env.errors.BoxError` when the box is reversed or empty, or covers fewer
    than :data:`MIN_REGION_PIXELS` pixels either way once clipped.

    >>> region_pixels(Box(0.0, 0.0, 1.0, 1.0), (64, 48))
    (0, 0, 64, 48)
    >>> region_pixels(Box(30, 10, 20, 40), (64, 48))
    Traceback (most recent call last):
    mmsearch_env.errors.BoxError: the box 30,10,20,40 is reversed or empty: x2 must be greater than x1 and y2 greater than y1
    """
    width, height = size
    x1, y1, x2, y2 = box.x1, box.y1, box.x2, box.y2
    if not (x2 > x1 and y2 > y1):
        raise BoxError(f"the box {box} is reversed or empty: x2 must be greater than x1 and y2 greater than y1")
    if box.is_fraction:
        x1, x2, y1, y2 = x1 * width, x2 * width, y1 * height, y2 * height
    left = math.floor(min(max(x1, 0.0), width))
    top = math.floor(min(max(y1, 0.0), height))
    right = math.ceil(min(max(x2, 0.0), width))
    bottom = math.ceil(min(max(y2, 0.0), height))
    if right - left < MIN_REGION_PIXELS or bottom - top < MIN_REGION_PIXELS:
        raise BoxError(
            f"the box {box} covers {right - left}x{bottom - top} pixels of the {width}x{height} image once clipped; "
            f"a region needs at least {MIN_REGION_PIXELS} pixels each way"
        )
    return left, top, right, bottom


def crop_region(image: Image.Image, pixels: tuple[int, int, int, int]) -> Image.Image:
    """The region ``pixels`` (from :func:`region_pixels`) cut from ``image``, as a new RGB image."""
    region = image.crop(pixels)
    return region if region.mode == "RGB" else region.convert("RGB")
