"""The one interface every policy implements, and a base class that fills in the rest.

A policy maps observations (the env's chat ``messages`` so far, plus ``info``) to the next assistant
turn, a ``str`` the environment parses. Policies are stateless between calls: the observation holds
the whole conversation, so the same policy object can serve many concurrent episodes.

Optional token-usage hook: after each ``act_batch`` a policy may set ``self.last_usage`` to a list
with one entry per observation, each ``None`` or ``{"prompt_tokens": int, "completion_tokens": int,
"finish_reason": str}`` (any key may be missing or ``None``: not known); the rollout engine
(:mod:`agents.rollout`) sums the tokens per episode and records each turn's ``finish_reason``
(``"length"``: cut at the token cap).

A batch some of whose turns failed (a request that failed after its retries) is reported by raising
:class:`PartialBatchError` with the turns that were written and the errors of the rest, so the rollout
engine fails only the episodes whose turn failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["PartialBatchError", "Policy", "PolicyBase"]


class PartialBatchError(Exception):
    """Some turns of a batch could not be written; ``results`` holds, per observation in order, the turn
    (``str``) or the exception that stopped it; ``usage`` the batch's ``last_usage`` (or ``None``)."""

    def __init__(self, results: Sequence[str | BaseException], usage: Sequence[Any] | None = None):
        failed = [r for r in results if isinstance(r, BaseException)]
        first = f": {type(failed[0]).__name__}: {failed[0]}" if failed else ""
        super().__init__(f"{len(failed)} of {len(results)} turns of the batch failed{first}")
        self.results = list(results)
        self.usage = list(usage) if usage is not None else None


@runtime_checkable
class Policy(Protocol):
    """Writes assistant turns for a batch of episodes at once."""

    name: str

    def act_batch(self, observations: Sequence[Mapping[str, Any]], infos: Sequence[Mapping[str, Any]]) -> list[str]:
        """One assistant turn per observation, in order."""
        ...


class PolicyBase:
    """Implement either :meth:`act` (one episode) or :meth:`act_batch` (a batch); get the other free.

    :meth:`aact_batch` runs :meth:`act_batch` in a worker thread so async rollout loops never block;
    network policies override it with real async I/O.
    """

    name: str = "policy"

    def act(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> str:
        if type(self).act_batch is PolicyBase.act_batch:
            raise NotImplementedError(f"{type(self).__name__} must implement act() or act_batch()")
        return self.act_batch([observation], [info])[0]

    def act_batch(self, observations: Sequence[Mapping[str, Any]], infos: Sequence[Mapping[str, Any]]) -> list[str]:
        if type(self).act is PolicyBase.act:
            raise NotImplementedError(f"{type(self).__name__} must implement act() or act_batch()")
        return [self.act(o, i) for o, i in zip(observations, infos, strict=True)]

    async def aact_batch(
        self, observations: Sequence[Mapping[str, Any]], infos: Sequence[Mapping[str, Any]]
    ) -> list[str]:
        return await asyncio.to_thread(self.act_batch, observations, infos)
