"""Run the on-demand search experiment end to end (see README.md in this folder).

    python -m experiments.on_demand.run              # full run (35 min on 2 CPU cores), writes the results
    python -m experiments.on_demand.run --seed 1     # the same with another seed (results get a _seed1 suffix)
    python -m experiments.on_demand.run --quick      # minutes: checks the pipeline and the metrics

Stages: questions and the knowledge split, the policy that knows some facts (fine-tuning), curation,
the baselines, the three GRPO arms, and the evaluation of every checkpoint on the held-out questions.
A rerun in the same ``--out`` folder reuses its finished stages, and refuses a folder made with other
settings. The full run writes ``experiments/on_demand/results/on_demand_search[_seedN].{json,md}`` and
the plots ``docs/images/on_demand_search[_seedN]_{curves,summary}.png``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a file (python experiments/on_demand/run.py): the experiments package lives at the repository
    # root, which is then not on the path.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import json
import logging
import os
import platform
import shutil
from collections.abc import Sequence
from typing import Any

from agents.progress import quiet_dependencies
from agents.threads import available_cores, configure_threads
from experiments.on_demand.config import ARMS, PROMPTS, OnDemandConfig
from experiments.on_demand.data import cut_to, select_questions, write_questions
from experiments.on_demand.evaluation import (
    checkpoints,
    evaluate_model,
    group_metrics,
    label_agreement,
    model_policy,
    rag_policy,
    run_policy,
    window_reward,
)
from experiments.on_demand.finetune import build_base_model, finetune
from experiments.on_demand.plots import plot_curves, plot_summary
from experiments.on_demand.report import markdown
from experiments.on_demand.training import CURATED_SETS, curate_train, train_arm
from experiments.settings import StageClock
from mmsearch_env.errors import ConfigError

__all__ = ["IMAGES", "RESULTS", "claim_work_folder", "main", "run", "what_it_means"]

ROOT = Path(__file__).resolve().parents[2]
#: Where a full run writes its results (.json, .md) and its plots.
RESULTS = Path(__file__).resolve().parent / "results"
IMAGES = ROOT / "docs" / "images"
logger = logging.getLogger("experiments.on_demand")


def claim_work_folder(out: Path, config: OnDemandConfig) -> dict[str, Any]:
    """Make ``out`` the work folder of a run with ``config`` (its settings in ``out/settings.json``) and
    return those settings. A rerun in the same folder reuses its finished stages, so a folder made with
    other settings is refused with a :class:`~mmsearch_env.errors.ConfigError` and left as it is."""
    settings = config.to_dict()
    stamp = out / "settings.json"
    if stamp.is_file() and config.differences(json.loads(stamp.read_text())):
        raise ConfigError(f"{out} holds a run with other settings ({stamp}); pass another --out, or delete it")
    out.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(settings, indent=2))
    return settings


def run(config: OnDemandConfig, out: Path, *, write_results: bool = False) -> dict[str, Any]:
    """Every stage of the experiment in the work folder ``out``; returns the results (also written to
    ``out/results.{json,md}`` with the plots ``out/{curves,summary}.png``). ``write_results``: also write
    them to :data:`RESULTS` and :data:`IMAGES` (named after the seed).

    Raises :class:`~mmsearch_env.errors.ConfigError` when ``out`` holds a run made with other settings.
    """
    import torch

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.manual_seed(config.seed)
    configure_threads(min(2, available_cores()))  # the committed results were measured on 2 threads
    settings = claim_work_folder(out, config)
    clock = StageClock()
    lap, seconds = clock.lap, clock.seconds

    # 1. questions and the knowledge split
    prompts = out / "prompts.json"
    prompts.write_text(json.dumps(PROMPTS, ensure_ascii=False, indent=2), encoding="utf-8")
    env = config.env.replace(prompts=str(prompts))
    limits = {"train": config.max_train_questions, "test": config.max_test_questions}
    splits = {split: cut_to(select_questions(split, config), limit) for split, limit in limits.items()}
    paths = {split: write_questions(examples, out / f"{split}.parquet") for split, examples in splits.items()}
    everything = [e for examples in splits.values() for e in examples]
    write_questions(everything, out / "sft.parquet")
    known_of = {e.id: e.metadata["known"] for e in everything}
    lap("questions")

    # 2. the policy that knows some facts
    base = build_base_model(out / "base", everything, config)
    sft_dir = out / "sft"
    reused = (sft_dir / "sft_stats.json").is_file()
    sft_stats = finetune(base, sft_dir, everything, env.replace(dataset=str(out / "sft.parquet"), split=None), config)
    lap("fine-tuning")
    if reused:  # a rerun in the same folder: the fine-tuned model is kept, with the time it took to build
        seconds["fine-tuning"] = sft_stats["seconds"]

    # 3. curation
    curation = curate_train(sft_dir, paths["train"], out / "curate", env, config)
    data = {name: out / "curate" / f"{name}.parquet" for name in CURATED_SETS}
    lap("curation")

    # baselines on the test questions (the fine-tuned model before GRPO)
    test = paths["test"]
    baselines = {
        "direct answer": group_metrics(
            run_policy(model_policy(sft_dir, config), test, env, search=False), known_of, env
        ),
        "RAG workflow": group_metrics(run_policy(rag_policy(sft_dir, config), test, env), known_of, env),
        "fine-tuned, before GRPO": evaluate_model(sft_dir, None, test, env, known_of, config),
    }
    lap("baselines")

    # 4-5. GRPO arms and their curves
    arms: dict[str, Any] = {}
    for name, arm in ARMS.items():
        arm_dir = out / "grpo" / name
        stats = train_arm(name, data[arm.data], arm, sft_dir, arm_dir, env, config)
        lap(f"GRPO {name}")
        curve = [{"step": 0, "test": baselines["fine-tuned, before GRPO"], "train_reward": None}]
        for step, ckpt in checkpoints(arm_dir):
            curve.append(
                {
                    "step": step,
                    "test": evaluate_model(sft_dir, ckpt, test, env, known_of, config),
                    "train_reward": window_reward(arm_dir, step, config.eval_every),
                }
            )
        arms[name] = {
            "data": arm.data,
            "search_penalty": arm.search_penalty,
            "train_seconds": stats["seconds"],
            "curve": curve,
        }
        lap("evaluation")

    labels = [row["label"] for row in curation["labels"]]
    results = {
        "quick": config.is_quick,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()}",
        "settings": settings,
        "env": {k: v for k, v in env.to_dict().items() if k not in ("dataset", "split")} | {"prompts": PROMPTS},
        "questions": {
            "train": len(splits["train"]),
            "test": len(splits["test"]),
            "train_known": sum(e.metadata["known"] for e in splits["train"]),
            "test_known": sum(e.metadata["known"] for e in splits["test"]),
        },
        "sft": sft_stats,
        "sft_reused": reused,
        "curation": {
            "counts": {label: labels.count(label) for label in sorted(set(labels))},
            "balanced": curation["selected"],
            "required_only": labels.count("search_required"),
            "fallback_to_all": curation["fallback"],
            "label_vs_known": label_agreement(curation["labels"], splits["train"]),
        },
        "baselines": baselines,
        "arms": arms,
        "seconds": seconds,
        "seconds_total": sum(seconds.values()),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown(results))
    plot_curves(results, out / "curves.png")
    plot_summary(results, out / "summary.png")
    if write_results:
        stem = "on_demand_search" + (f"_seed{config.seed}" if config.seed else "")
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
        (RESULTS / f"{stem}.md").write_text(markdown(results))
        shutil.copy(out / "curves.png", IMAGES / f"{stem}_curves.png")
        shutil.copy(out / "summary.png", IMAGES / f"{stem}_summary.png")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (``--help``); returns the exit status."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python -m experiments.on_demand.run",
        description="On-demand search in miniature: does GRPO in MMSearch-v0 teach a model when to search?",
    )
    parser.add_argument("--quick", action="store_true", help="a few minutes: checks the pipeline and the metrics")
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: runs/on-demand[-quick][-seedN])")
    parser.add_argument(
        "--no-write",
        action="store_true",
        help="do not write experiments/on_demand/results and docs/images (the default for --quick)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds everything: which countries are known, the model, fine-tuning, curation, GRPO "
        "(results of a seed other than 0 are written with a _seedN suffix)",
    )
    args = parser.parse_args(argv)
    try:
        config = (OnDemandConfig.quick if args.quick else OnDemandConfig.full)(seed=args.seed)
    except ConfigError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    quiet_dependencies()
    out = args.out or ROOT / "runs" / (
        ("on-demand-quick" if args.quick else "on-demand") + (f"-seed{args.seed}" if args.seed else "")
    )
    try:
        claim_work_folder(out, config)
    except ConfigError as exc:
        parser.error(str(exc))
    results = run(config, out, write_results=not (args.quick or args.no_write))
    sys.stdout.write(markdown(results))
    print(what_it_means(results, out))
    return 0


def what_it_means(results: dict[str, Any], out: Path) -> str:
    """The closing lines: whether these numbers are results, and where everything went."""
    if results["quick"]:
        q = results["questions"]
        note = (
            f"--quick checks the pipeline, it measures nothing: {q['train']} training / {q['test']} test questions, "
            f"{results['settings']['grpo_steps']} GRPO steps per arm and a briefly fine-tuned model, so accuracies "
            "near 0% and flat curves are expected here"
        )
        if results["curation"]["fallback_to_all"]:
            note += "; curation kept too few questions for one GRPO step, so the arms trained on all of them"
        note += ". The findings come from the full run (experiments/on_demand/README.md)."
    else:
        note = "A full run: compare with experiments/on_demand/results/ (the README's table is seed 0)."
    return f"{note}\nWork folder: {out} (results.md, results.json, curves.png, summary.png)."


if __name__ == "__main__":
    sys.exit(main())
