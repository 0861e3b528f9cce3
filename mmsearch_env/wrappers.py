"""Gymnasium wrappers for MMSearch-v0."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from mmsearch_env.errors import BoxError, InvalidActionError
from mmsearch_env.protocol import Action
from mmsearch_env.regions import parse_box
from mmsearch_env.spaces import StructuredAction

__all__ = ["StructuredActions"]


class StructuredActions(gym.ActionWrapper):
    """Accept actions as dicts (or :class:`~mmsearch_env.protocol.Action`) instead of text.

    For non-LLM policies (scripted, tabular, bandits): ``{"type": "image_search"}``,
    ``{"type": "text_search", "query": "capital of Arvenia"}``, ``{"type": "answer", "answer":
    "Velmont"}``, each with an optional ``"reason"``; with ``image_crops`` an image search may carry
    ``"box": "x1,y1,x2,y2"`` (or a list of four numbers). The wrapper writes the well-formed turn of the
    environment's protocol, so rewards (format included) mean exactly what they mean for text agents.
    A dict that does not fit raises :class:`InvalidActionError` naming what is wrong.

    >>> import gymnasium as gym, mmsearch_env
    >>> env = StructuredActions(gym.make("MMSearch-v0", dataset="sample", search="sample"))
    >>> _ = env.reset(seed=0, options={"example_id": "sample-arvenia-none"})
    >>> env.step({"type": "answer", "answer": "star"})[1]
    1.0
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.action_space = StructuredAction()

    def action(self, action: dict[str, Any] | Action) -> str:
        protocol = self.env.unwrapped.protocol
        if isinstance(action, Action):
            if not action.is_search and action.kind != "answer":
                raise InvalidActionError(
                    f"cannot send an Action of kind {action.kind!r}; use answer, image_search or text_search"
                )
            return protocol.format_action(action.kind, action.content, box=action.box)
        if not isinstance(action, dict):
            raise InvalidActionError(
                f"StructuredActions expects a dict such as {{'type': 'answer', 'answer': '...'}}, got {type(action).__name__}"
            )
        if action not in self.action_space:
            kind = action.get("type")
            if kind not in StructuredAction.KEYS:
                raise InvalidActionError(
                    f"action type {kind!r} is not one of {sorted(StructuredAction.KEYS)}: {action!r:.120}"
                )
            needed = StructuredAction.KEYS[kind]
            raise InvalidActionError(
                f"a {kind!r} action takes the string key(s) {list(needed)} and optionally 'reason'; got {action!r:.120}"
            )
        content = action.get("answer", action.get("query"))
        if action["type"] != "image_search" and not content.strip():
            raise InvalidActionError(f"the {action['type']!r} action's text is empty: {action!r:.120}")
        box = None
        if action.get("box") is not None:
            try:
                box = parse_box(action["box"])
            except BoxError as exc:
                raise InvalidActionError(f"the image search's box cannot be read: {exc}") from None
        return protocol.format_action(action["type"], content, reason=action.get("reason"), box=box)
