"""Images for the HTML trajectory viewer (:mod:`agents.viewer`): decoded once, downscaled, inlined once.

An :class:`ImageStore` turns the file names that episode records carry (``image``, each result's
``thumbnail``: bare names in an images folder) into CSS classes, one :class:`ImageRule` per distinct
encoded image, so a page shows an image that many episodes share while storing its bytes once.
"""

from __future__ import annotations

import base64
import concurrent.futures
import io
import logging
import math
import numbers
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from agents.progress import progress_bar

__all__ = [
    "MAX_IMAGE_BYTES",
    "MAX_REGIONS",
    "REGION_PX",
    "ImageRule",
    "ImageStore",
    "finite_number",
    "region_boxes",
    "region_crops",
]

logger = logging.getLogger(__name__)

#: Image files larger than this are not decoded (they are the engine's own PNGs, normally a few kB).
MAX_IMAGE_BYTES = 50_000_000

# An image reference must be a bare file name inside the images folder: no separators, no "..".
_IMAGE_NAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,254}$")


@dataclass(frozen=True)
class ImageRule:
    """One inlined image: the CSS class ``cls`` shows ``data_url`` at ``width`` × ``height`` pixels."""

    cls: str
    data_url: str
    width: int
    height: int


class ImageStore:
    """Image files of one ``folder`` (``None``: no images), each downscaled and encoded at most once.

    ``rules`` lists the distinct encoded images in the order they were first stored; ``missing``
    counts the references :meth:`css_class` could not show.
    """

    def __init__(self, folder: Path | None):
        self.folder = folder.resolve() if folder is not None else None
        self.rules: list[ImageRule] = []
        self.missing = 0
        self._classes: dict[tuple[str, int], str | None] = {}
        self._by_data: dict[str, str] = {}

    def css_class(self, name: str, max_px: int) -> str | None:
        """The class showing file ``name`` with its long side ≤ ``max_px``; ``None`` (counted) when it
        is missing, unreadable, too large or not a bare file name."""
        key = (name, max_px)
        if key not in self._classes:
            self._store(key, self._encode(name, max_px))
        cls = self._classes[key]
        if cls is None:
            self.missing += 1
        return cls

    def preload(self, keys: Iterable[tuple[str | None, int]], progress: bool) -> None:
        """Decode and encode every ``(name, max_px)`` up front, on threads (PIL releases the GIL).

        Rules are stored in the order of ``keys``, whatever order the threads finish in, so the same
        records give the same page.
        """
        todo = list(dict.fromkeys(k for k in keys if k[0] and k not in self._classes))
        if not todo or self.folder is None:
            return
        workers = max(1, min(8, os.cpu_count() or 1))
        bar = progress_bar(len(todo), "viewer images", enabled=progress, unit="images")
        encoded = []
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for result in pool.map(lambda key: self._encode(*key), todo):
                encoded.append(result)
                bar.update(1)
        bar.close()
        for key, result in zip(todo, encoded, strict=True):
            self._store(key, result)

    def _store(self, key: tuple[str, int], encoded: tuple[str, int, int] | None) -> None:
        if encoded is None:
            self._classes[key] = None
            return
        data_url, width, height = encoded
        # Keyed by the encoded bytes: two files with the same pixels (or one file under two names) share
        # one rule. Short names numbered in storing order (which preload fixes): they repeat per use.
        if data_url not in self._by_data:
            cls = f"i{len(self.rules)}"
            self._by_data[data_url] = cls
            self.rules.append(ImageRule(cls, data_url, width, height))
        self._classes[key] = self._by_data[data_url]

    def _encode(self, name: str, max_px: int) -> tuple[str, int, int] | None:
        if self.folder is None or not _IMAGE_NAME_RE.match(name) or ".." in name:
            return None
        path = self.folder / name
        try:
            if not path.is_file() or path.stat().st_size > MAX_IMAGE_BYTES:
                return None
            with Image.open(path) as image:
                image.draft("RGB", (max_px, max_px))
                image.thumbnail((max_px, max_px))
                has_alpha = image.mode in ("RGBA", "LA") or "transparency" in image.info
                image = image.convert("RGBA" if has_alpha else "RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            logger.warning("viewer: cannot read image %s (%s)", path, exc)
            return None
        # Flags, charts and screenshots (few colours) are smaller as PNG, photos as JPEG: keep whichever
        # is smaller. A photo is not even tried as PNG, whose encoder is slow on noisy pixels.
        candidates = []
        if has_alpha or image.getcolors(1024) is not None:
            png = io.BytesIO()
            image.save(png, format="PNG", optimize=True)
            candidates.append(("image/png", png.getvalue()))
        if not has_alpha:
            jpeg = io.BytesIO()
            image.save(jpeg, format="JPEG", quality=75, optimize=True)
            candidates.append(("image/jpeg", jpeg.getvalue()))
        mime, data = min(candidates, key=lambda c: len(c[1]))
        return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}", image.width, image.height


#: Searched regions drawn on one question image, at most.
MAX_REGIONS = 16
#: Long side, in pixels, of a searched region shown in its tool turn.
REGION_PX = 96


def region_boxes(info: dict[str, Any]) -> list[str]:
    """The searched regions (``info["image_regions"]`` in pixels of ``info["image_size"]``) as CSS
    percentages of the question image; anything malformed in a stored record is skipped."""
    size, regions = _pixel_regions(info)
    out = []
    for region in regions:
        if region is None:
            continue
        scaled = [100.0 * v / d for v, d in zip(region, size * 2, strict=True)]
        left, top, right, bottom = (min(max(v, 0.0), 100.0) for v in scaled)
        out.append(f"left:{left:.2f}%;top:{top:.2f}%;width:{right - left:.2f}%;height:{bottom - top:.2f}%")
    return out


def region_crops(info: dict[str, Any]) -> list[str | None]:
    """Per image search run, in ``info["image_regions"]`` order: inline CSS that shows only its region
    of the question image (long side :data:`REGION_PX`), or ``None`` for a whole-image search or a
    malformed entry."""
    size, regions = _pixel_regions(info)
    out: list[str | None] = []
    for region in regions:
        if region is None:
            out.append(None)
            continue
        width, height = size
        left, top = min(max(region[0], 0.0), width), min(max(region[1], 0.0), height)
        right, bottom = min(max(region[2], left), width), min(max(region[3], top), height)
        if right - left < 1 or bottom - top < 1:
            out.append(None)
            continue
        scale = REGION_PX / max(right - left, bottom - top)
        out.append(
            f"width:{(right - left) * scale:.0f}px;height:{(bottom - top) * scale:.0f}px;"
            f"background-size:{width * scale:.1f}px {height * scale:.1f}px;"
            f"background-position:{-left * scale:.1f}px {-top * scale:.1f}px"
        )
    return out


def _pixel_regions(info: dict[str, Any]) -> tuple[tuple[float, float], list[tuple[float, ...] | None]]:
    """``((width, height), regions)`` from an episode's info: each region four finite numbers or
    ``None`` (whole image, or malformed); no regions when the size is missing or malformed."""
    size, regions = info.get("image_size"), info.get("image_regions")
    if not (isinstance(size, list) and len(size) == 2 and isinstance(regions, list)):
        return (0.0, 0.0), []
    width, height = (finite_number(v) for v in size)
    if not width or not height or width < 0 or height < 0:
        return (0.0, 0.0), []
    out: list[tuple[float, ...] | None] = []
    for region in regions[:MAX_REGIONS]:
        values = [finite_number(v) for v in region] if isinstance(region, list) and len(region) == 4 else []
        out.append(tuple(values) if len(values) == 4 and all(v is not None for v in values) else None)  # type: ignore[arg-type]
    return (width, height), out


def finite_number(value: Any) -> float | None:
    """``value`` as a float when it is a finite real number (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None
