"""Measure the rollout engine's concurrency: 64 episodes against a search backend that sleeps 100 ms per call.

    python benchmarks/rollout_concurrency.py     # writes benchmarks/results/rollout_concurrency.{json,md}
    python benchmarks/rollout_concurrency.py --episodes 128 --delay 0.2 --repeats 5

The policy is the model-free RAG workflow (image search → text search → answer: two searches per
episode), so one episode alone takes about two backend delays. The target: 64 episodes run with
``concurrency=64`` finish in well under 2× one episode's time, for a sync backend (searches in the
engine's thread pool) and an async one (``asyncio.sleep``, searches on the event loop). For scale, the
same 64 episodes also run one at a time (``concurrency=1``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from pathlib import Path

from agents.baselines import RAGWorkflowPolicy
from agents.rollout import rollout
from mmsearch_env.search import SearchBackendBase, SearchResponse, SearchResult

RESULTS = Path(__file__).parent / "results"


def _results(tool: str) -> SearchResponse:
    return SearchResponse(
        tool,
        tuple(SearchResult(f"Flag of Arvenia ({i})", f"https://x.invalid/{i}", summary="Velmont.") for i in range(5)),
    )


class SleepySearch(SearchBackendBase):
    """Sync backend: ``time.sleep(delay)`` per call."""

    name = "sleepy-sync"

    def __init__(self, delay: float):
        self.delay = delay

    def image_search(self, request):
        time.sleep(self.delay)
        return _results("image_search")

    def text_search(self, request):
        time.sleep(self.delay)
        return _results("text_search")


class AsyncSleepySearch(SearchBackendBase):
    """Async backend: ``await asyncio.sleep(delay)`` per call."""

    name = "sleepy-async"

    def __init__(self, delay: float):
        self.delay = delay

    async def aimage_search(self, request):
        await asyncio.sleep(self.delay)
        return _results("image_search")

    async def atext_search(self, request):
        await asyncio.sleep(self.delay)
        return _results("text_search")


def timed(backend: SearchBackendBase, episodes: int, concurrency: int) -> float:
    started = time.perf_counter()
    result = rollout(
        RAGWorkflowPolicy(),
        range(episodes),
        env_config={"split": None, "search": backend},
        concurrency=concurrency,
        progress=False,
    )
    elapsed = time.perf_counter() - started
    assert len(result.records) == episodes and all(r.num_searches == 2 for r in result.records)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--delay", type=float, default=0.1, help="seconds the backend sleeps per call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-sequential", action="store_true", help="skip the one-at-a-time reference run")
    args = parser.parse_args()

    rows = []
    for backend_cls in (SleepySearch, AsyncSleepySearch):
        backend = backend_cls(args.delay)
        one = statistics.median(timed(backend, 1, 1) for _ in range(args.repeats))
        many = statistics.median(timed(backend, args.episodes, args.episodes) for _ in range(args.repeats))
        sequential = None if args.skip_sequential else timed(backend, args.episodes, 1)
        rows.append(
            {
                "backend": backend.name,
                "one_episode_s": round(one, 4),
                "episodes": args.episodes,
                "concurrent_s": round(many, 4),
                "ratio_to_one_episode": round(many / one, 3),
                "sequential_s": None if sequential is None else round(sequential, 3),
                "speedup_vs_sequential": None if sequential is None else round(sequential / many, 1),
            }
        )
        print(rows[-1])

    RESULTS.mkdir(exist_ok=True)
    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}",
        "load_average_1min": round(os.getloadavg()[0], 2),
        "delay_s": args.delay,
        "repeats": args.repeats,
        "policy": "rag (model-free RAG workflow: 2 searches per episode)",
    }
    (RESULTS / "rollout_concurrency.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [
        "# Rollout concurrency",
        "",
        f"{args.episodes} episodes of the RAG workflow (2 searches each) against a backend that sleeps "
        f"{1000 * args.delay:.0f} ms per call; median of {args.repeats} runs. Machine: {meta['machine']} "
        f"(load average {meta['load_average_1min']} while measuring: shared with other jobs).",
        "",
        "| backend | one episode (s) | 64 concurrent (s) | ratio | one at a time (s) | speedup |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['one_episode_s']:.3f} | {r['concurrent_s']:.3f} | {r['ratio_to_one_episode']:.2f}× "
            f"| {r['sequential_s'] if r['sequential_s'] is not None else '–'} | "
            f"{r['speedup_vs_sequential'] if r['speedup_vs_sequential'] is not None else '–'}× |"
        )
    lines.append("")
    lines.append(
        "Target: ratio well under 2× (the searches of all episodes overlap). The concurrent time includes "
        "building the 64 environment copies; engine threads are reused across rollouts."
    )
    (RESULTS / "rollout_concurrency.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / 'rollout_concurrency.md'}")


if __name__ == "__main__":
    main()
