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
a dict ``{"prompt_tokens": int, "completion_tokens": int, "finish_reason": str}`` (missing or ``None``:
not known). Tokens are summed into ``usage``; each turn's ``finish_reason`` goes to the record's
``finish_reasons``. Policies that do not know their usage need do nothing.

A policy call that fails for some episodes only (:class:`agents.policy.PartialBatchError`) fails those
episodes; the others of its batch go on with their turns. Skipped episodes are listed beside ``out``
as they happen, so an interrupted run leaves its list on disk too.
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
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym

import mmsearch_env  # noqa: F401  (registers MMSearch-v0)
from agents.batcher import EPISODE_ERRORS, PolicyBatcher
from agents.metrics import EpisodeSummary, Outcome, RunningMetrics, summarize
from agents.pool import EnvPool, make_env_pool
from agents.progress import progress_bar
from agents.resolve import resolve_policy
from agents.trajectories import SkippedEpisode, TrajectoryWriter, build_record, read_trajectories, write_skipped
from mmsearch_env.config import EnvConfig
from mmsearch_env.errors import ConfigError
from mmsearch_env.records import EpisodeRecord
from mmsearch_env.search import SearchBackendBase

__all__ = [
    "EPISODE_ERRORS",
    "ON_ERROR",
    "EnvPool",
    "EpisodeSummary",
    "RolloutResult",
    "SkippedEpisode",
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

#: ``on_error`` choices: skip an episode that cannot be played, or stop the run.
ON_ERROR = ("skip", "stop")


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
    bar = progress_bar(len(indices), policy.name, enabled=progress, unit="episodes")
    for index in indices:
        observation, info = env.reset(options={"index": index})
        while True:
            action = policy.act(observation, info)
            observation, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
        finals.append(info)
        live.update(Outcome.from_info(info))
        bar.set_postfix(live.postfix(), refresh=False)
        bar.update(1)
    bar.close()
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
        skipped: episodes this call could not play (``on_error="skip"``), with the reason; not in ``records``.
    """

    records: list[EpisodeRecord]
    path: Path | None
    new_episodes: int
    elapsed_s: float
    max_searches_per_episode: int
    policy_calls: int = 0
    skipped: list[SkippedEpisode] = field(default_factory=list)

    def summary(self) -> EpisodeSummary:
        return summarize(self.records, self.max_searches_per_episode)


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
    on_error: str = "skip",
    env_kwargs: Mapping[str, Any] | None = None,
) -> RolloutResult:
    """The async twin of :func:`rollout` (same arguments); run it on your own event loop."""
    started = time.perf_counter()
    if on_error not in ON_ERROR:
        raise ConfigError(f"on_error must be one of {list(ON_ERROR)}, got {on_error!r}")
    config = env_config_argument(env_config, env_kwargs)
    options = _Options(out, split, progress, batch_wait_s, max_batch_size, desc, on_error, started)
    if envs is not None:
        return await _arollout(policy, indices, envs, options)
    with make_env_pool(config, concurrency) as pool:
        return await _arollout(policy, indices, pool, options)


def _example_id(examples: Sequence[Any], index: int) -> str | None:
    ids = getattr(examples, "ids", None)
    if ids is not None:
        return ids[index]
    try:
        return examples[index].id
    except Exception:  # the row itself is what failed to load
        return None


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


@dataclass(frozen=True)
class _Options:
    out: str | os.PathLike[str] | None
    split: str | None
    progress: bool
    batch_wait_s: float
    max_batch_size: int | None
    desc: str | None
    on_error: str
    started: float


async def _arollout(
    policy: Any, indices: Iterable[int] | None, pool: Sequence[gym.Env], options: _Options
) -> RolloutResult:
    out, split, progress, desc = options.out, options.split, options.progress, options.desc
    batch_wait_s, max_batch_size, started = options.batch_wait_s, options.max_batch_size, options.started
    first = pool[0].unwrapped
    # a name ("oracle", "rag", "hf:PATH"...) means what it means to evaluate()
    policy = resolve_policy(policy, examples=first.examples, protocol=first.protocol)
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
    skipped: list[SkippedEpisode] = []
    if done and todo:
        logger.info("%s: resuming, %d of %d episodes already in %s", policy.name, len(finished), len(all_indices), path)

    loop = asyncio.get_running_loop()
    threads = _thread_pool(len(pool))
    batcher = PolicyBatcher(policy, max_batch_size or len(pool), batch_wait_s)
    bar = progress_bar(len(all_indices), desc or policy.name, enabled=progress, initial=len(finished), unit="episodes")
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
        try:
            await play(env, index)
        except EPISODE_ERRORS as exc:
            example_id = _example_id(first.examples, index)
            message = f"{type(exc).__name__}: {exc}"
            if options.on_error == "stop":
                if hasattr(exc, "add_note"):  # Python 3.11+
                    exc.add_note(f"while playing episode {index} ({example_id}); on_error='skip' goes on instead")
                raise
            logger.warning("%s: skipping episode %d (%s): %s", policy.name, index, example_id, message)
            skipped.append(SkippedEpisode(index=index, example_id=example_id, error=message, policy=policy.name))
            if path is not None:
                await loop.run_in_executor(threads, write_skipped, path, list(skipped))
            bar.update(1)

    async def play(env: gym.Env, index: int) -> None:
        base = env.unwrapped
        native = _native_async(base.search)
        t0 = time.perf_counter()
        observation, info = base.reset(options={"index": index})
        usage: dict[str, int] | None = None
        finish_reasons: list[str | None] = []
        while True:
            action, used = await batcher.request(observation, info)
            used = used if isinstance(used, Mapping) else {}
            if used.get("prompt_tokens") is not None or used.get("completion_tokens") is not None:
                usage = usage or {"prompt_tokens": 0, "completion_tokens": 0}
                for key in ("prompt_tokens", "completion_tokens"):
                    usage[key] += int(used.get(key) or 0)
            reason = used.get("finish_reason")
            finish_reasons.append(reason if isinstance(reason, str) else None)
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
            finish_reasons=finish_reasons,
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
    if path is not None:
        write_skipped(path, skipped)
    return RolloutResult(
        skipped=sorted(skipped, key=lambda s: s.index),
        records=[finished[i] for i in dict.fromkeys(all_indices) if i in finished],
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
    on_error: str = "skip",
    env_kwargs: Mapping[str, Any] | None = None,
) -> RolloutResult:
    """Run ``policy`` on the episodes ``indices`` (default: the whole dataset), many at once.

    Args:
        policy: a :class:`agents.policy.Policy` (``name`` and ``act_batch``; ``aact_batch`` when async),
            or a name :func:`agents.resolve.resolve_policy` knows (``"oracle"``, ``"rag"``, ``"hf:PATH"``...).
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
        on_error: what an episode that cannot be played does to the run — a dataset row that fails to
            load (:class:`DatasetError`) or a model request that fails after its retries
            (:class:`EndpointError`, timeouts, lost connections): ``"skip"`` (default, what a long run
            wants) records it in :attr:`RolloutResult.skipped` and in ``NAME.skipped.jsonl`` beside
            ``out`` and goes on (a rerun retries it); ``"stop"`` raises, naming the episode.
        env_kwargs: the older name of ``env_config`` (deprecated).

    Returns:
        A :class:`RolloutResult` with every played episode's :class:`EpisodeRecord`.

    Other exceptions (a bug in a policy, a policy returning the wrong number of turns) stop the run and
    propagate; the episodes finished so far are already on disk.
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
            on_error=on_error,
        )

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    # Called from a running loop (a notebook, an async app): run ours in a worker thread instead.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmsearch-rollout") as pool:
        return pool.submit(asyncio.run, main()).result()
