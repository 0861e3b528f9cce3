"""Screenshot scenes: each question's picture drawn small inside a busy page, among other pictures.

A screenshot-style question image is where choosing an image-search region matters: the whole page
matches nothing, or one of the other pictures on it, while the question's own picture, cut out, is
found. :func:`screenshot_scenes` wraps a dataset so that every question image becomes such a scene
(640×480: a header bar, coloured boxes, captions, and four picture cards — the question's and three
other questions' pictures), seeded by ``(seed, index)``, and keeps the true region of the question's
picture in ``example.metadata["true_box"]`` (``[left, top, right, bottom]`` pixels), so a policy's
crop can be scored against it and an oracle can search it.

>>> from mmsearch_env.data import load_dataset
>>> scenes = screenshot_scenes(load_dataset("sample", "test"), seed=0)
>>> example = scenes[0]
>>> example.image.size, example.metadata["scene"]
((640, 480), 'screenshot')
>>> left, top, right, bottom = example.metadata["true_box"]
>>> 96 <= right - left <= 128 and right - left == bottom - top  # a small square card
True
>>> scenes[0].image.tobytes() == example.image.tobytes()  # seeded: the same scene every time
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mmsearch_env.data.schema import Example, ImageRef
from mmsearch_env.errors import ConfigError

__all__ = ["SCENE_SIZE", "ScreenshotScenes", "screenshot_scenes"]

#: Width and height of a scene.
SCENE_SIZE = (640, 480)
_HEADER = 40
_COLUMNS, _ROWS = 3, 2
_CARD_SIDES = (96, 128)  # a picture card's side in pixels: 15-20 % of the page's width
_PICTURES = 4  # the question's picture and three distractors
_WORDS = (
    "home", "news", "photo", "gallery", "login", "share", "more", "about", "contact", "latest",
    "travel", "sports", "weather", "shop", "profile", "search", "trending", "video", "comments", "top",
)  # fmt: skip


class ScreenshotScenes(Sequence):  # type: ignore[type-arg]
    """A dataset whose question images are screenshot scenes (see the module docstring).

    Indexing builds the example (its image is drawn when first read); ``ids`` lists the ids without
    building anything. Distractor pictures are other examples' images of the same dataset.
    """

    def __init__(self, examples: Sequence[Example], *, seed: int = 0) -> None:
        if len(examples) < 2:
            raise ConfigError("screenshot scenes need a dataset of at least 2 questions (distractor pictures)")
        self.base = examples
        self.seed = int(seed)
        base_ids = getattr(examples, "ids", None)
        self.ids = tuple(base_ids) if isinstance(base_ids, tuple) else tuple(e.id for e in examples)
        self._index_of = {example_id: i for i, example_id in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = range(len(self))[index]  # negative indices, and IndexError past the end
        example = self.base[index]
        slots, true_slot, others = self._layout(index)
        box = slots[true_slot]
        image = ImageRef(lambda: self._render(index), where=f"screenshot scene of question {example.id!r}")
        return Example(
            id=example.id,
            question=example.question,
            image=image,
            answer=example.answer,
            candidate_answers=example.candidate_answers,
            category=example.category,
            search_need=example.search_need,
            image_url=None,  # the page is not the image at the URL
            metadata={**example.metadata, "scene": "screenshot", "true_box": list(box), "distractors": others},
        )

    def _layout(self, index: int) -> tuple[list[tuple[int, int, int, int]], int, list[str]]:
        """The cards' boxes, which one holds the question's picture, and the distractors' ids."""
        rng = np.random.default_rng([self.seed, index])
        width, height = SCENE_SIZE
        cell_w, cell_h = width // _COLUMNS, (height - _HEADER) // _ROWS
        cells = rng.choice(_COLUMNS * _ROWS, size=_PICTURES, replace=False)
        slots = []
        for cell in cells:
            side = int(rng.integers(_CARD_SIDES[0], _CARD_SIDES[1] + 1))
            col, row = divmod(int(cell), _ROWS)
            x = col * cell_w + int(rng.integers(6, cell_w - side - 5))
            y = _HEADER + row * cell_h + int(rng.integers(6, cell_h - side - 40))  # room for a caption below
            slots.append((x, y, x + side, y + side))
        true_slot = int(rng.integers(_PICTURES))
        pool = [i for i in rng.choice(len(self.base), size=min(len(self.base), 16), replace=False) if i != index]
        others = [self.ids[int(i)] for i in pool[: _PICTURES - 1]]
        return slots, true_slot, others

    def _render(self, index: int) -> Image.Image:
        slots, true_slot, others = self._layout(index)
        rng = np.random.default_rng([self.seed, index, 1])
        width, height = SCENE_SIZE
        page = Image.new("RGB", SCENE_SIZE, tuple(int(c) for c in rng.integers(215, 256, 3)))
        draw = ImageDraw.Draw(page)
        draw.rectangle([0, 0, width, _HEADER - 8], fill=tuple(int(c) for c in rng.integers(20, 120, 3)))
        font = ImageFont.load_default(size=13)
        draw.text((12, 8), " · ".join(rng.choice(_WORDS, 5)), fill=(250, 250, 250), font=font)
        for _ in range(10):  # a busy page: coloured boxes and bars behind everything
            x, y = int(rng.integers(width)), int(rng.integers(_HEADER, height))
            w, h = int(rng.integers(20, 160)), int(rng.integers(6, 40))
            draw.rectangle([x, y, x + w, y + h], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        pictures = [self.base[self._index_of[other]].image for other in others]
        pictures.insert(true_slot, self.base[index].image)
        for (left, top, right, bottom), picture in zip(slots, pictures, strict=False):
            side = right - left
            card = Image.new("RGB", (side, side), (255, 255, 255))
            shown = picture.convert("RGB")
            shown.thumbnail((side - 8, side - 8))
            card.paste(shown, ((side - shown.width) // 2, (side - shown.height) // 2))
            page.paste(card, (left, top))
            caption = " ".join(rng.choice(_WORDS, 3))
            draw.text((left, bottom + 6), caption, fill=(30, 30, 30), font=font)
            draw.text((left, bottom + 22), " ".join(rng.choice(_WORDS, 2)), fill=(90, 90, 90), font=font)
        return page


def screenshot_scenes(examples: Sequence[Example], *, seed: int = 0) -> ScreenshotScenes:
    """``examples`` with every question image drawn as a screenshot scene (see the module docstring).

    Scenes of scenes are never drawn: given scenes (an env pool hands its first env's dataset to the
    others), the plain pictures underneath are used.
    """
    if isinstance(examples, ScreenshotScenes):
        examples = examples.base
    return ScreenshotScenes(examples, seed=seed)
