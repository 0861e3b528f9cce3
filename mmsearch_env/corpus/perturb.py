"""Perturbed views of corpus images: what a re-photographed, cropped, re-encoded copy looks like.

Question images are never the stored file: :func:`perturb` applies seeded perturbations (crop, resize,
rotation, colour shift, JPEG, padding/background, small overlays), so image search has to *recognise*
the picture, as reverse image search must.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

__all__ = ["PERTURBATIONS", "apply_perturbation", "ink_kept", "perturb"]

PERTURBATIONS = ("crop", "resize", "rotate", "colour", "jpeg", "pad", "overlay")


def _crop_box(size: tuple[int, int], rng: np.random.Generator) -> tuple[int, int, int, int]:
    w, h = size
    keep = rng.uniform(0.8, 0.92)
    cw, ch = max(8, round(w * keep)), max(8, round(h * keep))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return x, y, x + cw, y + ch


def _crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return image.crop(_crop_box(image.size, rng))


def _resize(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    scale = rng.choice([rng.uniform(0.45, 0.8), rng.uniform(1.3, 2.2)])
    size = (max(8, round(image.width * scale)), max(8, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


def _rotate(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    angle = float(rng.uniform(5, 15)) * (1 if rng.random() < 0.5 else -1)
    return image.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=(255, 255, 255))


def _colour(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.8, 1.2))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.8, 1.2))
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.75, 1.25))
    tint = rng.uniform(-12, 12, size=3)
    arr = np.clip(np.asarray(image, dtype=np.float32) + tint, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def _jpeg(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=int(rng.integers(20, 45)))
    out = Image.open(io.BytesIO(buf.getvalue()))
    return out.convert("RGB")


def _pad(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = image.size
    margin = rng.uniform(0.08, 0.25, size=4) * np.array([w, h, w, h])
    colour = tuple(int(c) for c in rng.integers(150, 256, size=3))
    canvas = Image.new("RGB", (w + int(margin[0] + margin[2]), h + int(margin[1] + margin[3])), colour)
    canvas.paste(image, (int(margin[0]), int(margin[1])))
    return canvas


def _overlay(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    image = image.copy()
    draw = ImageDraw.Draw(image)
    w, h = image.size
    for _ in range(int(rng.integers(1, 3))):
        bw, bh = rng.uniform(0.08, 0.18) * w, rng.uniform(0.05, 0.12) * h
        x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            draw.rectangle([x, y, x + bw, y + bh], fill=colour)
        else:
            draw.text((x, y), "© photo", fill=colour)
    return image


_FUNCS = {
    "crop": _crop,
    "resize": _resize,
    "rotate": _rotate,
    "colour": _colour,
    "jpeg": _jpeg,
    "pad": _pad,
    "overlay": _overlay,
}


def apply_perturbation(image: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """Apply one named perturbation (one of :data:`PERTURBATIONS`)."""
    if kind not in _FUNCS:
        raise ValueError(f"unknown perturbation {kind!r}; expected one of {PERTURBATIONS}")
    return _FUNCS[kind](image.convert("RGB"), rng)


def perturb(image: Image.Image, seed: int, *, n: int = 2) -> tuple[Image.Image, tuple[str, ...]]:
    """``n`` distinct random perturbations (seeded) in a fixed order; returns the image and their names.

    Every perturbation changes the pixels, so the result is never the stored image.

    >>> from PIL import Image
    >>> a, kinds = perturb(Image.new("RGB", (64, 48), "red"), seed=3)
    >>> b, _ = perturb(Image.new("RGB", (64, 48), "red"), seed=3)
    >>> len(kinds) == 2 and a.tobytes() == b.tobytes()
    True
    """
    rng = np.random.default_rng(seed)
    names = _names(rng, n)
    out = image.convert("RGB")
    for name in names:
        out = _FUNCS[name](out, rng)
    return out, names


def _names(rng: np.random.Generator, n: int) -> tuple[str, ...]:
    kinds = tuple(sorted(rng.choice(len(PERTURBATIONS), size=n, replace=False).tolist()))
    return tuple(PERTURBATIONS[k] for k in kinds)


def ink_kept(image: Image.Image, seed: int, *, n: int = 2) -> float:
    """The share of ``image``'s ink (pixels far from white) that :func:`perturb` with ``seed`` keeps
    through its crop (1.0 when it does not crop): a crop that cuts a frame logo to an "L" leaves too
    little to recognise.

    >>> from PIL import Image
    >>> ink_kept(Image.new("RGB", (64, 64), "white"), seed=0)
    1.0
    """
    rng = np.random.default_rng(seed)
    if "crop" not in _names(rng, n):  # crop is first in the fixed order, so the rng is where it starts
        return 1.0
    x0, y0, x1, y1 = _crop_box(image.size, rng)
    ink = np.abs(np.asarray(image.convert("RGB"), dtype=np.int16) - 255).sum(axis=2) > 60
    total = int(ink.sum())
    return 1.0 if total == 0 else float(ink[y0:y1, x0:x1].sum()) / total
