"""Run the multimodal on-demand search experiment end to end (see README.md in this folder).

    python -m experiments.multimodal.run --seed 0                      # one seed, every arm, validation
    python -m experiments.multimodal.run --seed 0 --eval-split test    # the frozen recipe, once, on test
    python -m experiments.multimodal.run --main                        # the README's main job
    python -m experiments.multimodal.run --short                       # 96 countries, the on-demand arm
    python -m experiments.multimodal.run --quick                       # checks the pipeline, measures nothing
    python -m experiments.multimodal.run --main --save-start           # rebuild the shipped fine-tuned model

Stages: countries, questions and what the model is taught; the model (frozen EfficientNet-Lite0
encoder) and its fine-tuning; curation; the baselines (direct with the answer turn forced, RAG, the
fine-tuned model); the GRPO arms; the evaluation of every checkpoint on the held-out countries of
``--eval-split``. A rerun in the same ``--out`` folder reuses its finished stages, and refuses a folder
made with other settings. A run whose model and data settings match a shipped starting point
(:data:`STARTS`: the main job's fine-tuned model, seed 0) starts from it unless ``--from-scratch``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
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
from experiments.multimodal.config import (
    ARMS,
    KNOWLEDGE_DATA,
    PASS_ORDERS,
    PROMPTS,
    RECOGNITION_LOSSES,
    MultimodalConfig,
)
from experiments.multimodal.data import countries, questions, write_questions
from experiments.multimodal.evaluation import (
    direct_policy,
    measured_knowledge,
    metrics,
    model_policy,
    rag_policy,
    run_policy,
)
from experiments.multimodal.model import build_base_model, finetune
from experiments.multimodal.report import endpoint, finetune_summary, markdown, plot_curves
from experiments.on_demand.evaluation import checkpoints, window_reward
from experiments.on_demand.run import claim_work_folder
from experiments.on_demand.training import train_arm
from experiments.settings import StageClock
from mmsearch_env.errors import ConfigError, DatasetError

__all__ = ["RESULTS", "STARTS", "curate_sets", "main", "run", "save_start", "shipped_start"]

ROOT = Path(__file__).resolve().parents[2]
#: Where runs write their results when asked to (``--write``).
RESULTS = Path(__file__).resolve().parent / "results"
logger = logging.getLogger("experiments.multimodal")


def curate_sets(sft_dir: Path, train: Path, out: Path, env, config: MultimodalConfig) -> dict[str, Any]:
    """``agents.curate.curate`` with the fine-tuned model, sampled and seeded, once for the labels: writes
    ``out/{balanced,balanced_2to1,required_only}.parquet`` (1:1, 2:1 search-required : search-free, and
    search-required only). A set smaller than one GRPO step falls back to every training question."""
    import torch

    from agents.curate import curate
    from mmsearch_env.data import load_dataset

    torch.manual_seed(config.seed)
    policy = model_policy(sft_dir, config, temperature=1.0, seed=config.seed)
    selected: dict[str, list[int]] = {}
    labels: list[dict[str, Any]] = []
    for name, ratio in (("balanced", 0.5), ("balanced_2to1", 2 / 3)):
        try:  # the second call reuses the first one's rollouts (same folder)
            result = curate(
                policy, str(train), None, out=out, rollouts=config.curate_rollouts, ratio=ratio,
                env_config=env, concurrency=64, seed=config.seed,
                on_shortfall="keep-all" if config.is_quick else "shrink", progress=True, plot=False,
            )  # fmt: skip
            labels, selected[name] = result.labels, list(result.selected)
        except DatasetError:
            labels = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
            selected[name] = []
    examples = load_dataset(str(train), None)
    selected["required_only"] = [row["index"] for row in labels if row["label"] == "search_required"]
    needed = config.grpo_batch // config.grpo_generations
    fallback = []
    for name, chosen in selected.items():
        if len(chosen) < needed:
            logger.warning("curation left the %s set %d question(s); training on all questions", name, len(chosen))
            chosen = list(range(len(examples)))
            fallback.append(name)
        write_questions([examples[i] for i in chosen], out / f"{name}.parquet")
        selected[name] = chosen
    counts: dict[str, int] = {}
    for row in labels:
        counts[row["label"]] = counts.get(row["label"], 0) + 1
    return {"labels": counts, "sizes": {k: len(v) for k, v in selected.items()}, "fallback": fallback}


#: Settings that do not change the fine-tuned model or the curation (a run differing only in these can
#: reuse another's fine-tuning and curation: ``--reuse``).
LATE_SETTINGS = frozenset(
    {"arms", "eval_split", "eval_every", "last_checkpoints", "lora_target_modules"}
    | {f for f in MultimodalConfig.__dataclass_fields__ if f.startswith("grpo_")}
)


def reuse_stages(source: Path, out: Path, config: MultimodalConfig) -> list[str]:
    """Copy the fine-tuned model and the curation of the run in ``source`` into ``out``, after checking
    that it was made with the same settings except :data:`LATE_SETTINGS`; returns what was copied."""
    stamp = source / "settings.json"
    if not stamp.is_file():
        raise ConfigError(f"--reuse {source}: no settings.json there; give the work folder of an earlier run")
    differ = [k for k in config.differences(json.loads(stamp.read_text())) if k not in LATE_SETTINGS]
    if differ:
        raise ConfigError(f"--reuse {source}: made with other settings that shape the model or data: {differ}")
    copied = []
    for name in ("base", "sft", "curate"):
        if (source / name).is_dir() and not (out / name).exists():
            shutil.copytree(source / name, out / name)
            copied.append(name)
    return copied


#: Fine-tuned starting points shipped with the project: ``STARTS/<preset>-seed<N>/`` holds ``sft/`` (the
#: fine-tuned model and its ``sft_stats.json``) and the ``settings.json`` of the run that made it
#: (:func:`save_start`). A run with the same settings but :data:`LATE_SETTINGS` starts from it
#: (:func:`shipped_start`) unless told to fine-tune from scratch: the main job then trains GRPO only.
STARTS = Path(__file__).resolve().parent / "start"


def shipped_start(config: MultimodalConfig, starts: Path = STARTS) -> Path | None:
    """The shipped starting point made with ``config``'s settings (all but :data:`LATE_SETTINGS`), or None."""
    for stamp in sorted(starts.glob("*/settings.json")):
        try:
            made = json.loads(stamp.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"{stamp} is not valid JSON ({exc}): rebuild that starting point with "
                "'python -m experiments.multimodal.run --main --save-start', or delete its folder"
            ) from exc
        if (stamp.parent / "sft" / "sft_stats.json").is_file() and not [
            k for k in config.differences(made) if k not in LATE_SETTINGS
        ]:
            return stamp.parent
    return None


def save_start(out: Path, name: str, starts: Path = STARTS) -> Path:
    """Copy the fine-tuned model of the run in ``out`` (``sft/`` and ``settings.json``) to ``starts/name``,
    replacing what was there; returns that folder."""
    if not (out / "sft" / "sft_stats.json").is_file():
        raise ConfigError(f"{out} holds no finished fine-tuning (sft/sft_stats.json) to save as a starting point")
    target = starts / name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    shutil.copy(out / "settings.json", target / "settings.json")
    shutil.copytree(out / "sft", target / "sft")
    return target


def run(
    config: MultimodalConfig,
    out: Path,
    *,
    reuse: Path | None = None,
    finetune_only: bool = False,
) -> dict[str, Any]:
    """Every stage in the work folder ``out``; returns the results (also ``out/results.{json,md}`` and
    ``out/curves.png``). ``reuse``: an earlier run's folder whose fine-tuning and curation to start from
    (:func:`reuse_stages`). ``finetune_only``: stop after the fine-tuning and return its stats (also
    ``out/sft/sft_stats.json``: the passes' training-time checks). Raises :class:`ConfigError` when ``out``
    holds a run made with other settings."""
    import torch

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.manual_seed(config.seed)
    configure_threads(min(2, available_cores()))  # 2 threads, unless OMP_NUM_THREADS says otherwise
    settings = claim_work_folder(out, config)
    if reuse is not None:
        logger.info("reusing %s from %s", reuse_stages(reuse, out, config), reuse)
    clock = StageClock()
    lap, seconds = clock.lap, clock.seconds

    # 1. countries, what the model is taught, questions
    prompts = out / "prompts.json"
    prompts.write_text(json.dumps(PROMPTS, ensure_ascii=False, indent=2), encoding="utf-8")
    env = config.env.replace(prompts=str(prompts))
    chosen = countries(config)
    every = questions(chosen)
    meta = {e.id: dict(e.metadata) for e in every}
    paths = {
        "all": write_questions(every, out / "all.parquet"),
        "train": write_questions([e for e in every if e.metadata["split"] == "train"], out / "train.parquet"),
        "eval": write_questions(
            [e for e in every if e.metadata["split"] == config.eval_split], out / f"{config.eval_split}.parquet"
        ),
    }
    lap("questions")

    # 2. the model and its fine-tuning (on every country: what it is taught covers held-out ones too)
    sft_dir = out / "sft"
    # stages finished by an earlier call (this folder or --reuse): their time is what they took then
    reused: dict[str, float | None] = {}
    sft_made = (sft_dir / "sft_stats.json").is_file()
    base = out / "base" if sft_made else build_base_model(out / "base", chosen, config)  # only to fine-tune
    sft_stats = finetune(base, sft_dir, every, chosen, env.replace(dataset=str(paths["all"]), split=None), config)
    lap("fine-tuning")
    if sft_made:
        reused["fine-tuning"] = sft_stats["seconds"]
    if finetune_only:
        return sft_stats

    # 3. curation on the training countries
    if (out / "curate" / "labels.jsonl").is_file():
        reused["curation"] = None  # not recorded
    curation = curate_sets(sft_dir, paths["train"], out / "curate", env, config)
    lap("curation")

    # 4. baselines on the held-out countries
    held_out = paths["eval"]
    direct = run_policy(direct_policy(sft_dir, config), held_out, env)
    known = measured_knowledge(direct, meta)  # what the model knows, measured, not what it was taught
    baselines = {
        "direct (answer turn forced)": metrics(direct, meta, known),
        "RAG (image, text, answer)": metrics(run_policy(rag_policy(sft_dir, config), held_out, env), meta, known),
        "fine-tuned, before GRPO": metrics(run_policy(model_policy(sft_dir, config), held_out, env), meta, known),
    }
    lap("baselines")

    # 5. GRPO arms, every checkpoint evaluated
    arms: dict[str, Any] = {}
    for name in config.arms:
        arm = ARMS[name]
        arm_dir = out / "grpo" / name.replace(":", "to")
        if (arm_dir / "train_stats.json").is_file():
            reused[f"GRPO {name}"] = None
        arm_config = config.replace(grpo_steps=config.arm_steps(name), grpo_ablation_steps=None)
        stats = train_arm(name, out / "curate" / f"{arm.data}.parquet", arm, sft_dir, arm_dir, env, arm_config)
        lap(f"GRPO {name}")
        if f"GRPO {name}" in reused:
            reused[f"GRPO {name}"] = stats["seconds"]
        curve = [{"step": 0, "eval": baselines["fine-tuned, before GRPO"], "train_reward": None}]
        for step, ckpt in checkpoints(arm_dir):
            records = run_policy(model_policy(sft_dir, config, ckpt), held_out, env)
            curve.append(
                {
                    "step": step,
                    "eval": metrics(records, meta, known),
                    "train_reward": window_reward(arm_dir, step, config.eval_every),
                }
            )
        arms[name] = {
            "data": arm.data,
            "search_penalty": arm.search_penalty,
            "train_seconds": stats["seconds"],
            "curve": curve,
            "endpoint": endpoint(curve, config.last_checkpoints),
        }
        lap("evaluation")

    split_counts = {
        split: {
            "countries": sum(c.split == split for c in chosen),
            "recognised": sum(c.split == split and c.recognised for c in chosen),
            "known": sum(c.split == split and c.known for c in chosen),
        }
        for split in ("train", "validation", "test")
    }
    results = {
        "quick": config.is_quick,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()}",
        "settings": settings,
        "eval_split": config.eval_split,
        "countries": split_counts,
        "sft": sft_stats,
        "curation": curation,
        "baselines": baselines,
        "arms": arms,
        "seconds": seconds,
        "seconds_total": sum(seconds.values()),
        "reused_seconds": reused,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown(results))
    plot_curves(results, out / "curves.png")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (``--help``); returns the exit status."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python -m experiments.multimodal.run",
        description="Multimodal on-demand search in miniature: does GRPO teach a model that sees when to search "
        "the image, the web, both or neither?",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="seconds per stage: checks the pipeline, measures nothing")
    size.add_argument("--main", action="store_true", help="the README's main job: the short configuration")
    size.add_argument("--short", action="store_true", help="96 countries, 150 steps (on-demand arm only)")
    parser.add_argument("--seed", type=int, default=0, help="seeds everything (what is taught, model, data, GRPO)")
    parser.add_argument(
        "--eval-split",
        choices=("validation", "test"),
        default="validation",
        help="held-out countries to evaluate: validation (every choice is made here) or test (once per recipe)",
    )
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: runs/multimodal-...)")
    parser.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="an earlier run's work folder: start from its fine-tuned model and curation (same settings but GRPO's)",
    )
    parser.add_argument(
        "--pass-order",
        choices=PASS_ORDERS,
        default=None,
        help="order of the recognition and reading passes of the fine-tuning (default: the preset's)",
    )
    parser.add_argument(
        "--recognition-steps", type=int, default=None, help="most steps of the recognition pass (default: the preset's)"
    )
    parser.add_argument(
        "--recognition-draw",
        type=int,
        default=None,
        help="which draw of the recognition pass's episodes (default: the preset's, 3)",
    )
    parser.add_argument(
        "--recognition-loss",
        choices=RECOGNITION_LOSSES,
        default=None,
        help="tokens of the recognition pass that carry the loss: the whole turn or the name (default: the preset's)",
    )
    parser.add_argument(
        "--knowledge-steps",
        type=int,
        default=None,
        help="most steps of the knowledge pass after the whole episodes, 0 for none (default: the preset's, 0)",
    )
    parser.add_argument(
        "--knowledge-data",
        choices=KNOWLEDGE_DATA,
        default=None,
        help="what the knowledge pass trains on: the taught answers or whole episodes about taught countries "
        "(default: the preset's, answers)",
    )
    parser.add_argument(
        "--from-scratch",
        action="store_true",
        help="fine-tune even where a shipped starting point has this run's settings (experiments/multimodal/start)",
    )
    parser.add_argument(
        "--save-start",
        action="store_true",
        help="fine-tune from scratch, then ship the fine-tuned model as the starting point of runs with these "
        "settings (experiments/multimodal/start/PRESET-seedN); implies --finetune-only",
    )
    parser.add_argument(
        "--finetune-only",
        action="store_true",
        help="stop after the fine-tuning and print its training-time checks (sft/sft_stats.json)",
    )
    parser.add_argument("--grpo-steps", type=int, default=None, help="GRPO steps per arm (default: the preset's)")
    parser.add_argument(
        "--grpo-ablation-steps",
        type=int,
        default=None,
        help="GRPO steps of every arm but on-demand (default: the preset's; full: 60)",
    )
    parser.add_argument("--grpo-lr", type=float, default=None, help="GRPO learning rate (default: the preset's)")
    parser.add_argument(
        "--grpo-seed",
        type=int,
        default=None,
        help="seed of GRPO alone, to rerun it from one fine-tuned model (default: --seed)",
    )
    parser.add_argument(
        "--grpo-scale-rewards",
        choices=("group", "batch", "none"),
        default=None,
        help="TRL's advantage scaling (default: the preset's, 'group')",
    )
    parser.add_argument("--arms", nargs="+", default=None, choices=list(ARMS), help="GRPO arms (default: the preset's)")
    parser.add_argument("--write", action="store_true", help="also copy results.{json,md} and curves.png to results/")
    args = parser.parse_args(argv)
    label = next((name for name in ("quick", "main", "short") if getattr(args, name)), "full")
    preset = getattr(MultimodalConfig, label)
    overrides: dict[str, Any] = {"seed": args.seed, "eval_split": args.eval_split}
    tunable = (
        "pass_order",
        "recognition_steps",
        "recognition_draw",
        "recognition_loss",
        "knowledge_steps",
        "knowledge_data",
        "grpo_steps",
        "grpo_ablation_steps",
        "grpo_lr",
        "grpo_seed",
        "grpo_scale_rewards",
    )
    for name in (*tunable, "arms"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    try:
        config = preset(**overrides)
    except ConfigError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    quiet_dependencies()
    tuned = "".join(f"-{k.replace('_', '')}{v}" for k, v in overrides.items() if k in tunable)
    stem = f"{label}-{args.eval_split}-seed{args.seed}{tuned}"  # results/STEM.*, runs/multimodal-STEM
    out = args.out or ROOT / "runs" / f"multimodal-{stem}"
    try:
        claim_work_folder(out, config)
    except ConfigError as exc:
        parser.error(str(exc))
    reuse = args.reuse
    if reuse is None and not (args.from_scratch or args.save_start):
        reuse = shipped_start(config)
        if reuse is not None:
            print(f"Starting from the shipped fine-tuned model in {reuse} (--from-scratch fine-tunes anew).")
    finetune_only = args.finetune_only or args.save_start
    try:
        results = run(config, out, reuse=reuse, finetune_only=finetune_only)
    except ConfigError as exc:
        parser.error(str(exc))
    if finetune_only:
        sys.stdout.write(finetune_summary(results))
        print(f"Work folder: {out} (sft/sft_stats.json).")
        if args.save_start:
            print(f"Starting point saved: {save_start(out, f'{label}-seed{args.seed}')}")
        return 0
    sys.stdout.write(markdown(results))
    if args.write and not args.quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
        (RESULTS / f"{stem}.md").write_text(markdown(results))
        shutil.copy(out / "curves.png", RESULTS / f"{stem}.png")
    print(f"Work folder: {out} (results.md, results.json, curves.png).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
