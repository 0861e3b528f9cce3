"""Where in a query image is the picture? Region proposals for image search on screenshots and photos.

A screenshot shows the picture at a fraction of the canvas, beside text, boxes and a busy background;
the whole canvas matches nothing. :func:`propose_regions` finds axis-aligned rectangles whose four
sides lie on long straight colour edges (a pasted or displayed picture has such a frame; text, icons
and gradients do not), scored by how much of each side is an edge, so the search can score the query
as the best of the whole image and these crops. numpy only; ~1 ms on a 640×480 screenshot.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["propose_regions"]

#: long side of the analysed copy (proposals are mapped back to the original's pixels)
_ANALYSIS_SIDE = 192
#: a colour step larger than this (max over RGB channels, 0-255) is an edge pixel
_EDGE_STEP = 14
#: every side of a proposed frame must be at least this fraction edge pixels
_MIN_COVER = 0.85
#: a proposal whose colours vary less than this (std over its pixels, per channel) is a plain patch
_MIN_STD = 12.0


def _peaks(profile: np.ndarray, count: int, spacing: int) -> list[int]:
    """Indices of the ``count`` largest values, at least ``spacing`` apart (greedy)."""
    order = np.argsort(-profile, kind="stable")
    out: list[int] = []
    for i in order:
        if profile[i] <= 0 or len(out) == count:
            break
        if all(abs(int(i) - j) >= spacing for j in out):
            out.append(int(i))
    return sorted(out)


def propose_regions(
    image: Image.Image, *, max_regions: int = 3, min_side: float = 0.12, max_area: float = 0.85
) -> list[tuple[int, int, int, int]]:
    """Up to ``max_regions`` boxes ``(left, top, right, bottom)`` in ``image``'s pixels, best first.

    A box must span at least ``min_side`` of the image in both directions and at most ``max_area`` of
    its area (the whole image is searched anyway). Empty when nothing looks like a framed picture.

    >>> canvas = Image.new("RGB", (400, 300), (230, 230, 230))
    >>> picture = Image.new("RGB", (120, 80), (200, 30, 40)); picture.paste((255, 255, 255), (0, 30, 120, 50))
    >>> canvas.paste(picture, (60, 100))
    >>> box = propose_regions(canvas)[0]
    >>> all(abs(got - true) <= 2 for got, true in zip(box, (60, 100, 180, 180)))  # the picture, ±2 px
    True
    """
    rgb = image.convert("RGB")
    w, h = rgb.size
    scale = _ANALYSIS_SIDE / max(w, h)
    if scale < 1:
        rgb = rgb.resize((max(8, round(w * scale)), max(8, round(h * scale))), Image.Resampling.BOX)
    else:
        scale = 1.0
    a = np.asarray(rgb, dtype=np.int16)
    sh, sw = a.shape[:2]
    if sh < 16 or sw < 16:
        return []
    # vertical edges between columns c and c+1; horizontal edges between rows r and r+1
    # Edge between columns c and c+1 (rows likewise), found as a step between c-1 and c+1: downsampling
    # blends a frame's edge over two pixels, halving a one-pixel step. Index c-1 of ``vert`` is that
    # boundary, so a box's left side at x0 starts the picture at x0 + 1.
    vert = np.zeros((sh, sw - 1), np.int32)
    vert[:, 1:] = np.abs(a[:, 2:] - a[:, :-2]).max(axis=2) > _EDGE_STEP
    horiz = np.zeros((sh - 1, sw), np.int32)
    horiz[1:] = np.abs(a[2:] - a[:-2]).max(axis=2) > _EDGE_STEP
    vcum = np.vstack([np.zeros((1, vert.shape[1]), np.int32), np.cumsum(vert, axis=0)])  # (sh+1, sw-1)
    hcum = np.hstack([np.zeros((horiz.shape[0], 1), np.int32), np.cumsum(horiz, axis=1)])  # (sh-1, sw+1)
    # candidate sides: columns / rows with the longest edge runs (a picture's frame is long and straight)
    xs = _peaks(_longest_runs(vert.T), 14, 3)
    ys = _peaks(_longest_runs(horiz), 14, 3)
    if len(xs) < 2 or len(ys) < 2:
        return []
    xs_a, ys_a = np.asarray(xs), np.asarray(ys)
    x0, x1, y0, y1 = np.meshgrid(xs_a, xs_a, ys_a, ys_a, indexing="ij")
    x0, x1, y0, y1 = x0.ravel(), x1.ravel(), y0.ravel(), y1.ravel()
    ok = (x1 - x0 >= min_side * sw) & (y1 - y0 >= min_side * sh)
    ok &= (x1 - x0) * (y1 - y0) <= max_area * sw * sh
    x0, x1, y0, y1 = x0[ok], x1[ok], y0[ok], y1[ok]
    if len(x0) == 0:
        return []
    # fraction of each side that is edge: left/right columns over rows y0..y1, top/bottom rows over x0..x1
    y1c, x1c = np.minimum(y1 + 1, sh), np.minimum(x1 + 1, sw)
    left = (vcum[y1c, x0] - vcum[y0, x0]) / (y1c - y0)
    right = (vcum[y1c, x1] - vcum[y0, x1]) / (y1c - y0)
    top = (hcum[y0, x1c] - hcum[y0, x0]) / (x1c - x0)
    bottom = (hcum[y1, x1c] - hcum[y1, x0]) / (x1c - x0)
    sides = np.stack([left, right, top, bottom])
    # the weakest side decides (a frame is closed); larger frames win ties (a picture beats its parts)
    score = sides.min(axis=0) + 0.25 * sides.mean(axis=0) + 0.15 * np.sqrt((x1 - x0) * (y1 - y0) / (sw * sh))
    order = np.argsort(-score, kind="stable")
    framed: list[tuple[int, int, int, int]] = []
    for i in order[: 40 * max_regions]:
        if sides[:, i].min() < _MIN_COVER:
            break
        box = (int(x0[i]) + 1, int(y0[i]) + 1, int(x1[i]) + 1, int(y1[i]) + 1)
        region = a[box[1] : box[3], box[0] : box[2]]
        if region.size and float(region.std(axis=(0, 1)).max()) >= _MIN_STD:  # a plain patch names nothing
            framed.append(box)
    # A picture's own stripes and panels are framed too: keep the outermost frame of nested ones.
    outer = [b for b in framed if not any(o != b and _inside(b, o) for o in framed)]
    boxes: list[tuple[int, int, int, int]] = []
    for box in outer:
        if len(boxes) == max_regions:
            break
        if all(_iou(box, b) < 0.6 for b in boxes):
            boxes.append(box)
    inv = 1.0 / scale
    return [
        (round(x0 * inv), round(y0 * inv), min(w, round(x1 * inv)), min(h, round(y1 * inv))) for x0, y0, x1, y1 in boxes
    ]


def _longest_runs(mask: np.ndarray) -> np.ndarray:
    """For each row of ``mask`` (0/1), the length of its longest run of ones."""
    padded = np.pad(mask, ((0, 0), (1, 1)))
    diff = np.diff(padded, axis=1)
    best = np.zeros(mask.shape[0], np.int32)
    rows_start, cols_start = np.nonzero(diff == 1)
    _, cols_end = np.nonzero(diff == -1)
    if len(rows_start):
        lengths = cols_end - cols_start  # starts and ends pair up row by row, in order
        np.maximum.at(best, rows_start, lengths)
    return best


def _inside(inner: tuple[int, int, int, int], outer: tuple[int, int, int, int]) -> bool:
    """Whether ``inner`` lies (up to a 2-pixel slack) within ``outer``."""
    return (
        inner[0] >= outer[0] - 2 and inner[1] >= outer[1] - 2 and inner[2] <= outer[2] + 2 and inner[3] <= outer[3] + 2
    )


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0
