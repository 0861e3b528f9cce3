"""Run policies over MMSearch-v0 episodes: many at once, streamed to disk, resumable.

:func:`rollout` is the engine the evaluation harness and curation use. It runs on a pool of
``concurrency`` environment copies (:func:`agents.pool.make_env_pool`: the dataset and the search
backend are built once and shared, so a large corpus is indexed once; or your own ``envs=``), and

* calls the policy with **one batch of every episode waiting for a turn** (a policy call waits for
  stragglers at most ``batch_wait_s``, and never longer than recent policy calls took; policy calls
  never overlap, so a local model is never run twice at once);
* runs the **searches concurrently**: natively async backends through ``env.astep`` on the event loop,
  sync backends through ``env.step`` in a thread pool of ``concurrency`` workers, so slow backends
  overlap;
* **streams each finished episode** as one JSON line (append-only, flushed and fsync'ed per line) with
  the images in a side folder ``images/`` named by the SHA-256 of their PNG bytes; a rerun with the same
  output file skips the ``(policy, split, index)`` episodes already written (when the line's
  ``example_id`` still matches that index's question), so an interrupted run loses
  no finished episode;
* shows a progress bar with live accuracy and search ratio (:class:`agents.metrics.RunningMetrics`).

Trajectory record (what the HTML viewer, the evaluator and curation read; see :func:`read_trajectories`):
an :class:`~mmsearch_env.records.EpisodeRecord` from ``env.unwrapped.episode_record()`` with the
rollout's fields set: ``policy`` (name), ``index`` (dataset index), ``split``, ``reward``, ``info``
(terminal info, JSON values only), ``image`` (``"<sha256>.png"``, the question image), ``usage``
(``{"prompt_tokens", "completion_tokens"}`` summed over the episode's turns, or ``None`` when the policy
does not report usage), ``latency_s`` (wall time of the episode); every search result gets
``thumbnail``: ``"<sha256>.png"`` or ``None``. One record is one JSON line (:meth:`EpisodeRecord.to_json`;
files: :mod:`agents.trajectories`).

The policy gets the env's own ``info``, whose ``can_image_search`` / ``can_text_search`` say which
searches the turn being written may make, so workflow policies respect a run with search disabled.

Token usage hook (optional). After each ``act_batch`` / ``aact_batch`` call the engine reads
``policy.last_usage``: ``None``, or a list with one entry per observation of the batch, each ``None`` or
a dict ``{"prompt_tokens": int, "completion_tokens": int}``. Policies that do not know their usage need
do nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
from tqdm.auto import tqdm

import mmsearch_env  # noqa: F401  (registers MMSearch-v0)
from agents.metrics import EpisodeSummary, Outcome, RunningMetrics, summarize
from agents.pool import EnvPool, make_env_pool
from agents.trajectories import TrajectoryWriter, build_record, read_trajectories
from mmsearch_env.config import EnvConfig
from mmsearch_env.errors import ConfigError
from mmsearch_env.records import EpisodeRecord
from mmsearch_env.search import SearchBackendBase

__all__ = [
    "EnvPool",
    "EpisodeSummary",
    "RolloutResult",
    "TextPolicy",
    "TrajectoryWriter",
    "arollout",
    "env_config_argument",
    "make_env_pool",
    "read_trajectories",
    "rollout",
    "run_episodes",
    "summarize",
]

logger = logging.getLogger(__name__)


class TextPolicy(Protocol):
    """Anything that writes the next assistant turn from the observation and info."""

    name: str

    def act(self, observation: dict[str, Any], info: dict[str, Any]) -> str: ...


# -- the simple sequential loop (kept for the demo command and the quickstart) -------------------------
def run_episodes(
    env: gym.Env,
    policy: TextPolicy,
    indices: Iterable[int],
    *,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """One episode per dataset index, one after the other; returns each episode's terminal ``info``.

    The progress bar shows live accuracy and search ratio; :func:`agents.metrics.summarize` reads the
    returned infos. For many episodes, or for full trajectory records, use :func:`rollout`.
    """
    indices = list(indices)
    finals: list[dict[str, Any]] = []
    live = RunningMetrics()
    bar = tqdm(indices, desc=policy.name, disable=not progress, leave=False)
    for index in bar:
        observation, info = env.reset(options={"index": index})
        while True:
            action = policy.act(observation, info)
            observation, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
        finals.append(info)
        live.update(Outcome.from_info(info))
        bar.set_postfix(live.postfix(), refresh=False)
    return finals


# -- the concurrent engine ----------------------------------------------------------------------------
_THREADS: concurrent.futures.ThreadPoolExecutor | None = None
_THREADS_SIZE = 0
_THREADS_LOCK = threading.Lock()


def _thread_pool(size: int) -> concurrent.futures.ThreadPoolExecutor:
    """A process-wide pool of at least ``size`` threads for sync env steps.

    Reused across rollouts because starting threads is not free (tens of ms for 64 on a busy machine,
    paid again by every rollout of an evaluation otherwise). Steps never wait on each other, so
    rollouts sharing it cannot deadlock; they only queue when it is smaller than their sum.
    """
    global _THREADS, _THREADS_SIZE
    with _THREADS_LOCK:
        if _THREADS is None or size > _THREADS_SIZE:
            # The smaller pool is dropped, not shut down: a rollout still running may submit to it.
            _THREADS = concurrent.futures.ThreadPoolExecutor(max_workers=size, thread_name_prefix="mmsearch-step")
            _THREADS_SIZE = size
        return _THREADS


def _native_async(search: Any) -> bool:
    """True when the backend has real async methods (so ``astep`` on the loop overlaps its calls)."""
    if isinstance(search, SearchBackendBase):
        kind = type(search)
        return (
            kind.aimage_search is not SearchBackendBase.aimage_search
            or kind.atext_search is not SearchBackendBase.atext_search
        )
    return hasattr(search, "aimage_search") or hasattr(search, "atext_search")


@dataclass
class RolloutResult:
    """What :func:`rollout` did.

    Attributes:
        records: the trajectory record of every requested episode (resumed ones included), by index.
        path: the trajectory file (``None`` when not writing one).
        new_episodes: episodes run by this call (the rest were already in the file).
        elapsed_s: wall time of this call.
        max_searches_per_episode: from the environment, for the search-ratio (calls) definition.
    """

    records: list[EpisodeRecord]
    path: Path | None
    new_episodes: int
    elapsed_s: float
    max_searches_per_episode: int
    policy_calls: int = 0

    def summary(self) -> EpisodeSummary:
        return summarize(self.records, self.max_searches_per_episode)


class _Batcher:
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
                actions, usage = await self._call([b[0] for b in batch], [b[1] for b in batch])
            except Exception as exc:
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for (_, _, future), action, used in zip(batch, actions, usage, strict=True):
                    if not future.done():
                        future.set_result((action, used))
            if self.queue or self.closed:
                self.wake.set()

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


def _done_keys(path: Path | None, policy: str, split: str | None, examples: Sequence[Any]) -> dict[int, EpisodeRecord]:
    """Episodes of ``policy`` on ``split`` already in the file (a line counts only if its question matches)."""
    if path is None:
        return {}
    done = {}
    for r in read_trajectories(path):
        index = r.index
        if r.policy != policy or r.split != split or not isinstance(index, int):
            continue
        if 0 <= index < len(examples) and r.example_id == examples[index].id:
            done[index] = r
    return done


async def arollout(
    policy: Any,
    indices: Iterable[int] | None = None,
    *,
    env_config: EnvConfig | Mapping[str, Any] | None = None,
    envs: Sequence[gym.Env] | None = None,
    concurrency: int = 16,
    out: str | os.PathLike[str] | None = None,
    split: str | None = None,
    progress: bool = True,
    batch_wait_s: float = 0.02,
    max_batch_size: int | None = None,
    desc: str | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
) -> RolloutResult:
    """The async twin of :func:`rollout` (same arguments); run it on your own event loop."""
    started = time.perf_counter()
    config = env_config_argument(env_config, env_kwargs)
    if envs is not None:
        return await _arollout(policy, indices, envs, out, split, progress, batch_wait_s, max_batch_size, desc, started)
    with make_env_pool(config, concurrency) as pool:
        return await _arollout(policy, indices, pool, out, split, progress, batch_wait_s, max_batch_size, desc, started)


def env_config_argument(
    env_config: EnvConfig | Mapping[str, Any] | None, env_kwargs: Mapping[str, Any] | None
) -> EnvConfig:
    """The ``EnvConfig`` of an ``env_config=`` argument, or of ``env_kwargs=``, its older name (deprecated)."""
    if env_kwargs is not None:
        if env_config is not None:
            raise ConfigError("give env_config or env_kwargs (its older name), not both")
        warnings.warn("env_kwargs= is deprecated: pass env_config= (an EnvConfig or a dict)", DeprecationWarning, 3)
        env_config = env_kwargs
    return EnvConfig.coerce(env_config)


async def _arollout(
    policy: Any,
    indices: Iterable[int] | None,
    pool: Sequence[gym.Env],
    out: str | os.PathLike[str] | None,
    split: str | None,
    progress: bool,
    batch_wait_s: float,
    max_batch_size: int | None,
    desc: str | None,
    started: float,
) -> RolloutResult:
    first = pool[0].unwrapped
    if split is None:
        split = first.config.split
    all_indices = list(range(len(first.examples)) if indices is None else indices)
    for index in all_indices:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(first.examples):
            raise ConfigError(f"episode index must be an int in [0, {len(first.examples)}), got {index!r}")
    path = Path(out) if out is not None else None
    writer = TrajectoryWriter(path) if path is not None else None
    done = _done_keys(path, policy.name, split, first.examples)
    todo = [i for i in dict.fromkeys(all_indices) if i not in done]
    finished: dict[int, EpisodeRecord] = {i: done[i] for i in all_indices if i in done}
    if done and todo:
        logger.info("%s: resuming, %d of %d episodes already in %s", policy.name, len(finished), len(all_indices), path)

    loop = asyncio.get_running_loop()
    threads = _thread_pool(len(pool))
    batcher = _Batcher(policy, max_batch_size or len(pool), batch_wait_s)
    bar = tqdm(
        total=len(all_indices), initial=len(finished), desc=desc or policy.name, disable=not progress, leave=False
    )
    next_index = iter(todo)
    max_searches = first.max_searches_per_episode

    live = RunningMetrics(max_searches)  # O(1) per episode: the bar's postfix never rescans the records

    def refresh(record: EpisodeRecord) -> None:
        live.update(record)
        bar.set_postfix(live.postfix(), refresh=False)

    for record in finished.values():
        refresh(record)

    async def worker(env: gym.Env) -> None:
        batcher.episode_started()  # live until this worker runs out of episodes: it will ask again soon
        try:
            for index in next_index:
                await one_episode(env, index)
        finally:
            batcher.episode_ended()

    async def one_episode(env: gym.Env, index: int) -> None:
        base = env.unwrapped
        native = _native_async(base.search)
        t0 = time.perf_counter()
        observation, info = base.reset(options={"index": index})
        usage: dict[str, int] | None = None
        while True:
            action, used = await batcher.request(observation, info)
            if used:
                usage = usage or {"prompt_tokens": 0, "completion_tokens": 0}
                for key in ("prompt_tokens", "completion_tokens"):
                    usage[key] += int(used.get(key) or 0)
            if native:
                step = await base.astep(action)
            else:
                step = await loop.run_in_executor(threads, base.step, action)
            observation, reward, terminated, truncated, info = step
            if terminated or truncated:
                break
        make = partial(
            build_record,
            env,
            policy=policy.name,
            index=index,
            split=split,
            reward=float(reward),
            info=info,
            usage=usage,
            latency_s=time.perf_counter() - t0,
            writer=writer,
        )
        record = await loop.run_in_executor(threads, make)
        if writer is not None:
            await loop.run_in_executor(threads, writer.write, record)
        finished[index] = record
        bar.update(1)
        refresh(record)

    dispatcher = asyncio.create_task(batcher.run())
    workers = [asyncio.create_task(worker(env)) for env in pool[: max(1, min(len(pool), len(todo)))]]
    try:
        if todo:
            await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
        batcher.close()
        await asyncio.gather(dispatcher, *workers, return_exceptions=True)
        bar.refresh()  # the final numbers reach the log even when the run was faster than a redraw
        bar.close()
    return RolloutResult(
        records=[finished[i] for i in dict.fromkeys(all_indices)],
        path=path,
        new_episodes=len(todo),
        elapsed_s=time.perf_counter() - started,
        max_searches_per_episode=max_searches,
        policy_calls=batcher.calls,
    )


def rollout(
    policy: Any,
    indices: Iterable[int] | None = None,
    *,
    env_config: EnvConfig | Mapping[str, Any] | None = None,
    envs: Sequence[gym.Env] | None = None,
    concurrency: int = 16,
    out: str | os.PathLike[str] | None = None,
    split: str | None = None,
    progress: bool = True,
    batch_wait_s: float = 0.02,
    max_batch_size: int | None = None,
    desc: str | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
) -> RolloutResult:
    """Run ``policy`` on the episodes ``indices`` (default: the whole dataset), many at once.

    Args:
        policy: a :class:`agents.policy.Policy` (``name`` and ``act_batch``; ``aact_batch`` when async).
        indices: dataset indices, one episode each (duplicates run once).
        env_config: the environment's settings, an :class:`~mmsearch_env.config.EnvConfig` or a dict of
            ``gym.make("MMSearch-v0", ...)`` arguments (ignored when ``envs`` is given). The engine builds
            ``concurrency`` envs sharing one dataset and backend (:func:`make_env_pool`) and closes them.
        envs: your own environments instead, e.g. an :class:`EnvPool` (one episode at a time per env; all
            must share the dataset). They are not closed.
        concurrency: environment copies, i.e. episodes in flight at once.
        out: trajectory JSONL file to append to (images go to ``images/`` beside it); episodes of this
            policy and split already in it are skipped (resume).
        split: recorded in each record (default: the environments' ``config.split``).
        batch_wait_s: the longest a policy call waits for other episodes to join its batch (never longer
            than the policy's recent calls took: a cheap policy is not held back).
        max_batch_size: largest batch per policy call (default: ``concurrency``).
        env_kwargs: the older name of ``env_config`` (deprecated).

    Returns:
        A :class:`RolloutResult` with every requested episode's :class:`EpisodeRecord`.

    Policy exceptions stop the run and propagate; the episodes finished so far are already on disk.
    Works from inside a running event loop too (notebooks): the engine then runs in a worker thread.
    """

    config = env_config_argument(env_config, env_kwargs)

    async def main() -> RolloutResult:
        # Sync backends called through astep's worker threads need as many threads as episodes.
        asyncio.get_running_loop().set_default_executor(
            concurrent.futures.ThreadPoolExecutor(max_workers=max(4, concurrency))
        )
        return await arollout(
            policy,
            indices,
            env_config=config,
            envs=envs,
            concurrency=concurrency,
            out=out,
            split=split,
            progress=progress,
            batch_wait_s=batch_wait_s,
            max_batch_size=max_batch_size,
            desc=desc,
        )

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    # Called from a running loop (a notebook, an async app): run ours in a worker thread instead.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmsearch-rollout") as pool:
        return pool.submit(asyncio.run, main()).result()
