"""Curation with the fine-tuned model, and the GRPO + LoRA arms (TRL ``GRPOTrainer`` through
:mod:`agents.grpo`)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from agents.curate import curate
from experiments.on_demand.config import Arm, OnDemandConfig
from experiments.on_demand.data import write_questions
from experiments.on_demand.evaluation import model_policy
from mmsearch_env.config import EnvConfig
from mmsearch_env.data import load_dataset
from mmsearch_env.errors import DatasetError

__all__ = ["CURATED_SETS", "curate_train", "grpo_config", "train_arm"]

logger = logging.getLogger(__name__)

#: The curated training sets, as :attr:`Arm.data` names them.
CURATED_SETS = ("balanced", "required_only")


def curate_train(
    sft_dir: Path, train: Path, out: Path, env_config: EnvConfig, config: OnDemandConfig
) -> dict[str, Any]:
    """``mmsearch curate`` with the fine-tuned model, sampled and seeded: writes ``out/balanced.parquet``
    and ``out/required_only.parquet`` (see :data:`CURATED_SETS`).

    Returns the labels, the size of the balanced set and the sets that fell back to every question
    (when curation leaves a set with fewer questions than one GRPO step draws, as it can with the quick
    preset's barely trained model).
    """
    import torch

    torch.manual_seed(config.seed)
    try:
        result = curate(
            model_policy(sft_dir, config, temperature=1.0, seed=config.seed),
            str(train),
            None,
            out=out,
            rollouts=config.curate_rollouts,
            ratio=config.curate_ratio,
            env_config=env_config,
            concurrency=64,
            seed=config.seed,
            on_shortfall="keep-all" if config.is_quick else "shrink",
            progress=True,
        )
        labels, selected = result.labels, result.selected
    except DatasetError:
        # No balanced set is possible (e.g. the quick preset's model gets every question wrong): go on with
        # the labels curate wrote and the whole training set as the fallback, recorded in the results.
        labels = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
        selected = []
    examples = load_dataset(str(train), None)
    sets = {
        "balanced": [examples[i] for i in selected],
        "required_only": [examples[row["index"]] for row in labels if row["label"] == "search_required"],
    }
    fallback = []
    # One GRPO step draws grpo_batch / grpo_generations distinct questions; a smaller set trains no step
    # at all (TRL's sampler yields no full batch) and the arm would end with no checkpoint.
    needed = config.grpo_batch // config.grpo_generations
    for name, chosen in sets.items():
        if len(chosen) < needed:
            logger.warning(
                "curation left the %s set %d question(s), fewer than one GRPO step needs (%d); training on all "
                "questions instead",
                name,
                len(chosen),
                needed,
            )
            chosen, sets[name] = list(examples), list(examples)
            fallback.append(name)
        write_questions(chosen, out / f"{name}.parquet")
    return {"labels": labels, "selected": len(sets["balanced"]), "fallback": fallback}


def grpo_config(
    name: str, dataset: Path, arm: Arm, sft_dir: Path, out: Path, env_config: EnvConfig, config: OnDemandConfig
) -> Any:
    """The arm's ``agents.grpo.MMSearchGRPOConfig``: the experiment's environment with the arm's data and
    search penalty, LoRA on the fine-tuned model, a checkpoint every ``eval_every`` steps, on the CPU."""
    from agents.grpo import MMSearchGRPOConfig  # imports TRL

    env = env_config.replace(dataset=str(dataset), split=None, search_penalty=arm.search_penalty)
    seed = getattr(config, "grpo_seed", None)  # the multimodal experiment may rerun GRPO alone
    seed = config.seed if seed is None else seed
    return MMSearchGRPOConfig(
        **env.to_dict(),
        output_dir=str(out),
        model_path=str(sft_dir),
        warm_start_epochs=0,
        learning_rate=config.grpo_lr,
        per_device_train_batch_size=config.grpo_batch,
        num_generations=config.grpo_generations,
        max_completion_length=config.grpo_max_completion_length,
        max_turn_tokens=config.max_turn_tokens,
        max_steps=config.grpo_steps,
        logging_steps=1,
        save_steps=config.eval_every,
        save_total_limit=None,
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        report_to=[],
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        lora_target_modules=list(config.lora_target_modules),
        metrics_plot=True,
        disable_tqdm=False,
        run_name=name,
        # the multimodal experiment's setting; the on-demand experiment keeps TRL's default
        scale_rewards=getattr(config, "grpo_scale_rewards", "group"),
    )


def train_arm(
    name: str, dataset: Path, arm: Arm, sft_dir: Path, out: Path, env_config: EnvConfig, config: OnDemandConfig
) -> dict[str, Any]:
    """GRPO + LoRA from the fine-tuned model into ``out``; checkpoints every ``eval_every`` steps. A
    finished ``out`` is reused (its ``train_stats.json``)."""
    from agents.grpo import train  # imports TRL

    done = out / "train_stats.json"
    if done.is_file():
        return json.loads(done.read_text())
    start = time.perf_counter()
    train(grpo_config(name, dataset, arm, sft_dir, out, env_config, config))
    stats = {"seconds": time.perf_counter() - start, "steps": config.grpo_steps}
    done.write_text(json.dumps(stats))
    return stats
