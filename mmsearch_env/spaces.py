"""Gymnasium spaces for free text, PIL images and chat transcripts.

Gymnasium's ``Text`` space only admits a fixed character set, and nothing in Gymnasium describes an
image of any size or a list of chat messages, so we declare honest spaces of our own: ``contains``
accepts exactly what the environment can produce, and ``sample`` draws from ``self.np_random``.
Vector environments batch them as tuples (Gymnasium's rule for custom spaces).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces
from PIL import Image

from mmsearch_env.protocol import ActionProtocol
from mmsearch_env.regions import Box

__all__ = ["AssistantTurn", "ChatMessages", "PILImage", "StructuredAction", "UnicodeText"]

_ROLES = frozenset({"system", "user", "assistant", "tool"})
_WORDS = ("capital", "flag", "country", "river", "founded", "currency", "city", "year", "Arvenia", "Velmont")


class _OpaqueSpace(spaces.Space[Any]):
    """A space of Python objects: no shape, no dtype, not flattenable; equal to others of its type."""

    def __init__(self, seed: int | np.random.Generator | None = None):
        super().__init__(shape=None, dtype=None, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)


class UnicodeText(_OpaqueSpace):
    """Any ``str`` (of at most ``max_length`` characters when given)."""

    def __init__(self, max_length: int | None = None, seed: int | np.random.Generator | None = None):
        self.max_length = max_length
        super().__init__(seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and (self.max_length is None or len(x) <= self.max_length)

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        n = int(self.np_random.integers(1, 6))
        text = " ".join(_WORDS[int(i)] for i in self.np_random.integers(0, len(_WORDS), n))
        return text[: self.max_length] if self.max_length else text

    def __repr__(self) -> str:
        return f"UnicodeText(max_length={self.max_length})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnicodeText) and other.max_length == self.max_length


class PILImage(_OpaqueSpace):
    """Any RGB ``PIL.Image.Image``."""

    def contains(self, x: Any) -> bool:
        return isinstance(x, Image.Image) and x.mode == "RGB"

    def sample(self, mask: Any = None, probability: Any = None) -> Image.Image:
        h, w = (int(v) for v in self.np_random.integers(8, 64, 2))
        return Image.fromarray(self.np_random.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


class ChatMessages(_OpaqueSpace):
    """A conversation in the Hugging Face multimodal chat format.

    A list of ``{"role": ..., "content": [blocks]}`` where each block is ``{"type": "text", "text":
    str}`` or ``{"type": "image", "image": PIL.Image}``, roles among system/user/assistant/tool.
    """

    def contains(self, x: Any) -> bool:
        if not isinstance(x, list):
            return False
        for message in x:
            if not isinstance(message, dict) or message.get("role") not in _ROLES:
                return False
            content = message.get("content")
            if not isinstance(content, list):
                return False
            for block in content:
                if not isinstance(block, dict):
                    return False
                kind = block.get("type")
                if kind == "text" and isinstance(block.get("text"), str):
                    continue
                if kind == "image" and isinstance(block.get("image"), Image.Image):
                    continue
                return False
        return True

    def sample(self, mask: Any = None, probability: Any = None) -> list:
        image = PILImage(seed=int(self.np_random.integers(2**31))).sample()
        text = UnicodeText(seed=int(self.np_random.integers(2**31))).sample()
        return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}]


class AssistantTurn(UnicodeText):
    """The action space of ``MMSearch-v0``: any assistant turn (a ``str``).

    Every string is a legal action (a malformed one ends the episode with its reward). ``sample()``
    returns a well-formed turn of the environment's protocol — an answer, an image search or a text
    search with random words — which is what a random baseline needs. With a protocol built with
    ``crops=True`` an image search may carry a box ``x1,y1,x2,y2`` (fractions of the image's width and
    height when all four are in [0, 1], else pixels: :mod:`mmsearch_env.regions`); half the sampled
    image searches then name a random region.
    """

    def __init__(self, protocol: ActionProtocol, seed: int | np.random.Generator | None = None):
        self.protocol = protocol
        super().__init__(max_length=None, seed=seed)

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        kind = ("answer", "image_search", "text_search")[int(self.np_random.integers(3))]
        words = super().sample()
        if kind == "image_search" and self.protocol.crops and self.np_random.random() < 0.5:
            x1, y1 = (round(float(v), 2) for v in self.np_random.uniform(0.0, 0.5, 2))
            box = Box(x1, y1, x1 + 0.5, y1 + 0.5)
            return self.protocol.format_action(kind, reason="Sampled turn.", box=box)
        return self.protocol.format_action(kind, words if kind != "image_search" else None, reason="Sampled turn.")

    def __repr__(self) -> str:
        return f"AssistantTurn(protocol={self.protocol.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AssistantTurn) and other.protocol == self.protocol


class StructuredAction(_OpaqueSpace):
    """Actions as dicts: ``{"type": "answer", "answer": str}``, ``{"type": "image_search"}`` or
    ``{"type": "text_search", "query": str}``; an optional ``"reason": str`` on any of them, and an
    optional ``"box"`` (a str or a list of four numbers) on an image search (``image_crops`` envs)."""

    KEYS: ClassVar[dict[str, tuple[str, ...]]] = {"answer": ("answer",), "image_search": (), "text_search": ("query",)}

    def contains(self, x: Any) -> bool:
        if not isinstance(x, dict) or x.get("type") not in self.KEYS:
            return False
        required: Sequence[str] = self.KEYS[x["type"]]
        allowed = {"type", "reason", *required} | ({"box"} if x["type"] == "image_search" else set())
        return (
            all(isinstance(x.get(k), str) for k in required)
            and set(x) <= allowed
            and isinstance(x.get("reason", ""), str)
            and isinstance(x.get("box", ""), (str, list))
        )

    def sample(self, mask: Any = None, probability: Any = None) -> dict:
        kind = ("answer", "image_search", "text_search")[int(self.np_random.integers(3))]
        words = UnicodeText(seed=int(self.np_random.integers(2**31))).sample()
        action: dict[str, str] = {"type": kind}
        for key in self.KEYS[kind]:
            action[key] = words
        return action
