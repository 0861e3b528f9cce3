"""Batched policy calls for the rollout engine: every episode waiting for a turn goes into one call."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from agents.policy import PartialBatchError
from mmsearch_env.errors import ConfigError, DatasetError
from mmsearch_env.search.openai_chat import EndpointError

__all__ = ["EPISODE_ERRORS", "PolicyBatcher"]

#: Failures that belong to one episode, not to the run: a dataset row that does not load, a model
#: request that failed after its own retries, a lost connection (a batch with some failed turns).
EPISODE_ERRORS = (DatasetError, EndpointError, TimeoutError, ConnectionError, PartialBatchError)


class PolicyBatcher:
    """Collects policy requests from the episodes and answers them with one batched policy call."""

    def __init__(self, policy: Any, max_batch: int, wait_s: float):
        self.policy = policy
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.queue: list[tuple[dict[str, Any], dict[str, Any], asyncio.Future[Any]]] = []
        self.live = 0  # episodes running (waiting on the policy or on a search)
        self.calls = 0
        self.call_s = wait_s  # running mean duration of a policy call
        self.closed = False
        self.wake = asyncio.Event()

    async def request(self, observation: dict[str, Any], info: dict[str, Any]) -> tuple[str, dict[str, int] | None]:
        future = asyncio.get_running_loop().create_future()
        self.queue.append((observation, info, future))
        self.wake.set()
        return await future

    def episode_started(self) -> None:
        self.live += 1

    def episode_ended(self) -> None:
        self.live -= 1
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            if not self.queue:
                if self.closed:
                    return
                continue
            # Wait (bounded) until every running episode is waiting: one big batch, not many small ones.
            # Never wait longer than a policy call takes: for a cheap policy, small batches cost less.
            deadline = loop.time() + min(self.wait_s, self.call_s)
            while len(self.queue) < min(self.live, self.max_batch) and not self.closed:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch, self.queue = self.queue[: self.max_batch], self.queue[self.max_batch :]
            try:
                await self._answer(batch)
            except EPISODE_ERRORS:
                # One episode's failure (a request that failed after its retries) must not fail the
                # others of its batch: ask again one by one, so only the episode that fails gets the error.
                for item in batch:
                    await self._answer([item], isolate=True)
            if self.queue or self.closed:
                self.wake.set()

    async def _answer(self, batch: list[tuple[Any, Any, asyncio.Future[Any]]], *, isolate: bool = False) -> None:
        """Answer ``batch`` with one policy call. A per-episode failure of a batch of several is raised (the
        caller then asks one by one); any other failure goes to every episode of the batch."""
        try:
            actions, usage = await self._call([b[0] for b in batch], [b[1] for b in batch])
        except PartialBatchError as partial:
            if len(partial.results) != len(batch):  # from a policy inside a wrapper: which episode is unknown
                if len(batch) > 1 and not isolate:
                    raise
                self._fail(batch, partial)
                return
            # The policy says which turns failed: those episodes get their error, the others their turn.
            used = partial.usage if partial.usage is not None and len(partial.usage) == len(batch) else None
            for k, ((_, _, future), result) in enumerate(zip(batch, partial.results, strict=True)):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result((result, used[k] if used else None))
            return
        except EPISODE_ERRORS as exc:
            if len(batch) > 1 and not isolate:
                raise
            self._fail(batch, exc)
            return
        except Exception as exc:
            self._fail(batch, exc)
            return
        for (_, _, future), action, used in zip(batch, actions, usage, strict=True):
            if not future.done():
                future.set_result((action, used))

    @staticmethod
    def _fail(batch: list[tuple[Any, Any, asyncio.Future[Any]]], exc: BaseException) -> None:
        for _, _, future in batch:
            if not future.done():
                future.set_exception(exc)

    async def _call(self, observations: list[dict[str, Any]], infos: list[dict[str, Any]]) -> tuple[list[str], list]:
        self.calls += 1
        started = time.perf_counter()
        if hasattr(self.policy, "aact_batch"):
            actions = await self.policy.aact_batch(observations, infos)
        else:
            actions = await asyncio.to_thread(self.policy.act_batch, observations, infos)
        actions = list(actions)
        self.call_s = 0.5 * self.call_s + 0.5 * (time.perf_counter() - started)
        if len(actions) != len(observations):
            raise ConfigError(
                f"policy {self.policy.name!r} returned {len(actions)} turns for a batch of {len(observations)} "
                "observations; act_batch must return exactly one str per observation, in order"
            )
        usage = getattr(self.policy, "last_usage", None)
        if not isinstance(usage, list) or len(usage) != len(actions):
            usage = [None] * len(actions)
        return actions, usage
