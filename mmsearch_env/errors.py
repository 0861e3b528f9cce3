"""Exceptions raised by mmsearch-env.

Agent text never raises (a malformed assistant turn is a value the reward scores); these are for
programmer misuse and broken inputs, and every message says what was wrong and how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "BoxError",
    "ConfigError",
    "DatasetError",
    "InvalidActionError",
    "MMSearchError",
    "ResetNeededError",
    "SearchBackendError",
    "SearchRateLimitedError",
    "SearchTransientError",
    "did_you_mean",
]


class MMSearchError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(MMSearchError, ValueError):
    """A constructor argument or keyword of ``gym.make`` has a wrong type or value."""


class DatasetError(MMSearchError, ValueError):
    """A dataset row or data file is malformed (the message names the row and field)."""


class InvalidActionError(MMSearchError, TypeError):
    """``step()`` got something that is not an action (a non-``str`` for the text env)."""


class ResetNeededError(MMSearchError, RuntimeError):
    """``step()`` was called before ``reset()`` or after the episode ended."""


class BoxError(MMSearchError, ValueError):
    """An image-search box the agent wrote is unreadable or covers too little of the image.

    Agent text: the protocol and the environment turn it into a malformed turn (its message becomes
    ``info["action_error"]``); it never leaves ``step``.
    """


class SearchBackendError(MMSearchError, RuntimeError):
    """A search backend failed; the environment turns this into a tool-error turn, never raises it."""


class SearchTransientError(SearchBackendError):
    """A failure worth retrying: timeout, connection reset, HTTP 5xx. Retry wrappers back off and retry."""


class SearchRateLimitedError(SearchTransientError):
    """The backend said "too many requests" (HTTP 429); ``retry_after`` is its Retry-After in seconds."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest choice, or ``""`` when none is close.

    >>> did_you_mean("tag", ["tags", "tool_calls"])
    " Did you mean 'tags'?"
    """
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""
