"""Time per GRPO step of the main job on the CPU: TRL's log-probs over every position vs the completion's only.

    python benchmarks/grpo_cpu_scoring.py            # writes benchmarks/results/grpo_cpu_scoring.{json,md}
    python benchmarks/grpo_cpu_scoring.py --steps 6 --rounds 3

TRL's chunked log-prob head scores only the labelled (completion) positions on Triton devices but every
position elsewhere; :func:`agents.grpo.trainer.score_completions_only_on_cpu` makes the CPU score only
the completion too. Both runs are the README's main job as it trains GRPO: the shipped fine-tuned model
(``experiments/multimodal/start/main-seed0``, or the freshly built tiny VLM where it is missing), the
main job's training questions, environment, batch (32 rollouts, groups of 8) and LoRA, same seed. They
differ only in which positions the head scores, so they must compute the same losses: the benchmark
checks that, step by step, before it reports a time.

Timing is the CPU time of this process per training step on one torch thread (on a shared machine wall
time mostly measures the other processes; wall time is reported too). The runs alternate (every
position, completion only, …); per round, each run's median step (first step dropped: warm-up) gives
one ratio, and the reported ratio is the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file: the experiments package lives at the repository root
    sys.path.insert(0, str(ROOT))

import trl.trainer.utils as trl_utils  # noqa: E402
from grpo_step import StepTimer, save_step_timing  # noqa: E402  (benchmarks/, the script's folder)
from trl.kernels.chunked_logprob import _use_triton as trl_every_position_on_cpu  # noqa: E402

from agents.grpo import build_trainer  # noqa: E402
from agents.grpo.trainer import score_completions_only_on_cpu  # noqa: E402
from agents.tiny_vlm import build_tiny_vlm  # noqa: E402
from experiments.multimodal.config import ARMS, PROMPTS, RECIPE_ARM, MultimodalConfig  # noqa: E402
from experiments.multimodal.data import countries, questions, write_questions  # noqa: E402
from experiments.multimodal.run import shipped_start  # noqa: E402
from experiments.on_demand.training import grpo_config  # noqa: E402

RESULTS = Path(__file__).parent / "results"
KINDS = ("every position", "completion only")


def run(kind: str, steps: int, work: Path, model: Path, config: MultimodalConfig) -> dict[str, list[float]]:
    """``steps`` GRPO steps of the main job's on-demand arm scored ``kind``; per-step times and losses."""
    prompts = work / "prompts.json"
    prompts.write_text(json.dumps(PROMPTS, ensure_ascii=False), encoding="utf-8")
    train = [q for q in questions(countries(config)) if q.metadata["split"] == "train"]
    data = write_questions(train, work / "train.parquet")
    env = config.env.replace(prompts=str(prompts))
    config = config.replace(grpo_steps=steps, eval_every=steps)
    settings = grpo_config(RECIPE_ARM, data, ARMS[RECIPE_ARM], model, work / kind.replace(" ", "-"), env, config)
    timer = StepTimer()
    trainer = build_trainer(settings, callbacks=[timer])  # patches TRL: the completion only
    if kind == "every position":
        trl_utils._use_triton = trl_every_position_on_cpu  # TRL's own decision: every position on the CPU
    try:
        trainer.train()
    finally:
        score_completions_only_on_cpu()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    return {"cpu": timer.times[1:], "wall": timer.wall[1:], "loss": losses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="GRPO steps per run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating (every position, completion only) pairs")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # one thread: CPU time is then the step's work, not thread spinning
    config = MultimodalConfig.main(seed=0)
    start = shipped_start(config)
    model = start / "sft" if start is not None else build_tiny_vlm(seed=0)
    times: dict[str, list[float]] = {k: [] for k in KINDS}
    wall: dict[str, list[float]] = {k: [] for k in KINDS}
    ratios: list[float] = []
    from tqdm import tqdm

    with tempfile.TemporaryDirectory() as tmp:
        for _ in tqdm(range(args.rounds), desc="rounds"):
            done = {kind: run(kind, args.steps, Path(tmp), model, config) for kind in KINDS}
            a, b = (done[k]["loss"] for k in KINDS)
            if len(a) != len(b) or any(abs(x - y) > 1e-4 * max(1.0, abs(x)) for x, y in zip(a, b, strict=True)):
                raise RuntimeError(f"the two runs computed different losses: {a} vs {b}")
            for kind in KINDS:
                times[kind] += done[kind]["cpu"]
                wall[kind] += done[kind]["wall"]
            ratios.append(statistics.median(done["completion only"]["cpu"]) / statistics.median(done[KINDS[0]]["cpu"]))
    meta = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "model": str(model.relative_to(ROOT)) if model.is_relative_to(ROOT) else "tiny VLM (built)",
        "steps_per_run": args.steps,
        "rounds": args.rounds,
        "rollouts_per_step": config.grpo_batch,
        "group_size": config.grpo_generations,
    }
    saved = save_step_timing("grpo_cpu_scoring", meta, times, wall, ratios)
    medians, wall_medians, ratio = saved["median_step_cpu_s"], saved["median_step_wall_s"], saved["ratio"]
    lines = [
        "# GRPO step time on the CPU: log-probs over every position vs the completion's only",
        "",
        f"`python benchmarks/grpo_cpu_scoring.py --steps {args.steps} --rounds {args.rounds}` · the main job's "
        f"GRPO ({meta['model']}, {config.grpo_batch} rollouts/step in groups of {config.grpo_generations}) · CPU "
        f"({meta['cpus']} cores), one torch thread · Python {meta['python']} · the same losses in both runs (checked)",
        "",
        "| TRL's log-prob head scores | median step, CPU time (s) | median step, wall (s) | steps timed |",
        "|---|---:|---:|---:|",
    ]
    for kind in KINDS:
        lines.append(f"| {kind} | {medians[kind]:.2f} | {wall_medians[kind]:.2f} | {len(times[kind])} |")
    lines += [
        "",
        f"Ratio completion only / every position, CPU time (median of per-round ratios): **{ratio:.3f}×**; "
        f"per round: {', '.join(f'{r:.3f}' for r in ratios)}.",
    ]
    (RESULTS / "grpo_cpu_scoring.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
