"""Wall time of the README's main job, end to end, as a new user runs it.

    python benchmarks/main_job.py                 # writes benchmarks/results/main_job.{json,md}
    python benchmarks/main_job.py --threads 1     # the same with OMP_NUM_THREADS=1

Runs ``python examples/train_grpo.py`` (its defaults: the multimodal experiment's main job from the
shipped fine-tuned model) in a fresh work folder as a child process, and records its wall time, the
time of each stage (from its ``results.json``), the child's peak memory and the numbers it printed
before and after GRPO (accuracy, searches, the four search rates), so that a time is never reported
without the result it bought. The target is ≤ 10 minutes on 2 CPU cores; run it with nothing else on
the machine, since the time is wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
#: The endpoint metrics reported beside the time (``experiments.multimodal.evaluation.metrics`` keys).
METRICS = (
    "accuracy",
    "searches",
    "image_search_unrecognised",
    "image_search_recognised",
    "text_search_unknown",
    "text_search_known",
    "chain",
)


def run_main_job(work: Path, threads: int | None) -> dict:
    """Run the main job into ``work``; its wall time, peak memory, stage times and before / after metrics."""
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "examples/train_grpo.py", "--output_dir", str(work)]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"the main job failed (exit status {done.returncode}): {' '.join(command)}")
    results = json.loads((work / "results.json").read_text())
    arm = results["arms"]["on-demand"]
    before = results["baselines"]["fine-tuned, before GRPO"]
    return {
        "wall_s": wall,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20,
        "stage_s": results["seconds"],
        "grpo_s_per_step": arm["train_seconds"] / arm["curve"][-1]["step"],
        "torch_threads": results["machine"],  # "x86_64, 2 cores, torch threads N"
        "before": {k: before[k] for k in METRICS},
        "after": {k: arm["endpoint"][k] for k in METRICS},
        "rag": {k: results["baselines"]["RAG (image, text, answer)"][k] for k in ("accuracy", "searches")},
    }


def markdown(result: dict, argv: str) -> str:
    """The results page."""
    r = result["run"]
    stages = ", ".join(f"{name} {seconds / 60:.1f}" for name, seconds in r["stage_s"].items() if seconds >= 1)
    lines = [
        "# The main job, end to end",
        "",
        f"`python benchmarks/main_job.py{argv}` · `python examples/train_grpo.py` in a fresh work folder · "
        f"{r['torch_threads']} · Python {result['meta']['python']}",
        "",
        "| wall time | GRPO per step | peak memory | target |",
        "|---:|---:|---:|---|",
        f"| **{r['wall_s'] / 60:.1f} min** | {r['grpo_s_per_step']:.2f} s | {r['peak_rss_gib']:.1f} GiB | "
        f"≤ 10 min on 2 cores: {'met' if r['wall_s'] <= 600 else '**not met**'} |",
        "",
        f"Stages (min): {stages}.",
        "",
        "| held-out validation (seed 0) | accuracy | searches / q | image search, unrecognised / recognised | "
        "text search, unknown / known | image→text |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in ("before", "after"):
        m = r[name]
        lines.append(
            f"| {name} GRPO | {100 * m['accuracy']:.1f}% | {m['searches']:.2f} | "
            f"{100 * m['image_search_unrecognised']:.0f} / {100 * m['image_search_recognised']:.1f}% | "
            f"{100 * m['text_search_unknown']:.0f} / {100 * m['text_search_known']:.1f}% | {100 * m['chain']:.0f}% |"
        )
    lines.append(f"| RAG | {100 * r['rag']['accuracy']:.1f}% | {r['rag']['searches']:.2f} | | | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the job (default: its own)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = run_main_job(Path(tmp) / "run", args.threads)
    result = {
        "meta": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()},
        "threads": args.threads,
        "run": run,
    }
    name = "main_job" if args.threads is None else f"main_job_threads{args.threads}"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    page = markdown(result, "" if args.threads is None else f" --threads {args.threads}")
    (RESULTS / f"{name}.md").write_text(page, encoding="utf-8")
    print(page)


if __name__ == "__main__":
    main()
