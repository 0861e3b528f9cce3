"""Measure MMSearch-v0's own cost: reset + step time per episode with an instant search backend.

    python benchmarks/env_overhead.py            # writes benchmarks/results/env_overhead.{json,md}
    python benchmarks/env_overhead.py --episodes 200

The search backend returns fixed results at once (5 thumbnails for image search, 5 summaries for
text search), so what is timed is the environment: parsing, limits, rendering the tool-result turn
(thumbnail copies included), observations and the reward. For reference the same episodes also run
against the built-in sample engine (real retrieval). Aim: well under 1 ms per step.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import gymnasium as gym
from PIL import Image
from tqdm import tqdm

import mmsearch_env  # noqa: F401
from mmsearch_env.search import SearchResult, StaticSearch

RESULTS = Path(__file__).parent / "results"

EPISODES = {
    "direct answer (1 step)": ["<reason>I know it.</reason><answer>Velmont</answer>"],
    "image → text → answer (3 steps)": [
        "<reason>Unknown flag.</reason><search><img></search>",
        "<reason>Need the capital.</reason><text_search>capital of Arvenia</text_search>",
        "<reason>Found it.</reason><answer>Velmont</answer>",
    ],
    "malformed (1 step)": ["I am not sure what this is."],
}


def instant_backend() -> StaticSearch:
    thumb = Image.new("RGB", (96, 64), (200, 30, 45))
    return StaticSearch(
        image_results=[
            SearchResult(f"Flag of Place {i}", f"https://example.invalid/{i}", thumbnail=thumb) for i in range(5)
        ],
        text_results=[
            SearchResult(
                f"Page {i}", f"https://example.invalid/p{i}", summary="Velmont is the capital of Arvenia. " * 3
            )
            for i in range(5)
        ],
    )


def time_episodes(env: gym.Env, actions: list[str], n: int, desc: str) -> list[float]:
    base = env.unwrapped  # time the environment itself, not Gymnasium's checking wrappers
    times = []
    for i in tqdm(range(n), desc=desc, leave=False):
        started = time.perf_counter()
        base.reset(options={"index": i % len(base.examples)})
        for action in actions:
            _, _, terminated, truncated, _ = base.step(action)
            if terminated or truncated:
                break
        times.append(time.perf_counter() - started)
    return times


def summarise(times: list[float], steps: int) -> dict[str, float]:
    times = sorted(times)
    p50 = statistics.median(times)
    return {
        "episodes": len(times),
        "steps_per_episode": steps,
        "episode_p50_ms": 1e3 * p50,
        "episode_p90_ms": 1e3 * times[int(0.9 * (len(times) - 1))],
        "step_p50_ms": 1e3 * p50 / steps,
        "episodes_per_s": len(times) / sum(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=2000)
    args = parser.parse_args()

    rows = []
    for backend_name, backend in (("instant", instant_backend()), ("sample engine", "sample")):
        env = gym.make("MMSearch-v0", dataset="sample", search=backend, split=None)
        for name, actions in EPISODES.items():
            time_episodes(env, actions, 50, "warm-up")
            times = time_episodes(env, actions, args.episodes, f"{backend_name}: {name}")
            rows.append({"backend": backend_name, "episode": name, **summarise(times, len(actions))})
        env.close()

    RESULTS.mkdir(exist_ok=True)
    meta = {"python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor()}
    (RESULTS / "env_overhead.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2), encoding="utf-8")
    lines = [
        "# MMSearch-v0 environment overhead",
        "",
        f"`python benchmarks/env_overhead.py --episodes {args.episodes}` · Python {meta['python']} · {meta['machine']}",
        "",
        "| backend | episode | step p50 (ms) | episode p50 (ms) | episode p90 (ms) | episodes/s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['episode']} | {r['step_p50_ms']:.3f} | {r['episode_p50_ms']:.3f} | "
            f"{r['episode_p90_ms']:.3f} | {r['episodes_per_s']:.0f} |"
        )
    (RESULTS / "env_overhead.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
