"""Evaluation: the policies, greedy episodes on the held-out questions, and the metrics, known and
unknown questions apart.

Every metric comes from :func:`agents.evaluate.policy_metrics` (:func:`group_metrics`), plus
:func:`search_probability`, which reads the policy's probability of choosing to search where it decides:
the greedy episodes show only which side of 1/2 it is on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agents.baselines import ForcedSearchPolicy
from agents.evaluate import policy_metrics
from agents.hf_policy import HFPolicy
from agents.rollout import rollout
from experiments.on_demand.config import REASON_DIRECT, REASON_SEARCH, OnDemandConfig
from experiments.on_demand.data import country_names
from mmsearch_env.config import EnvConfig
from mmsearch_env.data import Example, load_dataset
from mmsearch_env.env import MMSearchEnv
from mmsearch_env.records import EpisodeRecord

__all__ = [
    "checkpoints",
    "evaluate_model",
    "group_metrics",
    "label_agreement",
    "model_policy",
    "rag_policy",
    "run_policy",
    "search_probability",
    "window_reward",
]


def model_policy(
    model_dir: Path,
    config: OnDemandConfig,
    adapter: Path | None = None,
    *,
    temperature: float = 0.0,
    seed: int | None = None,
) -> HFPolicy:
    """The tiny model as an MMSearch-v0 policy (greedy unless ``temperature`` > 0; seeded sampling does not
    depend on how the concurrent episodes are batched). ``config``: any experiment config with ``env``
    and ``max_turn_tokens`` (the multimodal experiment's too)."""
    return HFPolicy(
        model_dir,
        protocol=config.env.protocol,
        adapter=adapter,
        max_new_tokens=config.max_turn_tokens,
        batch_size=64,
        temperature=temperature,
        seed=seed,
    )


def rag_policy(sft_dir: Path, config: OnDemandConfig) -> ForcedSearchPolicy:
    """The RAG workflow: always text-search the question first, then the fine-tuned model answers."""
    return ForcedSearchPolicy(model_policy(sft_dir, config), protocol=config.env.protocol)


def run_policy(policy: Any, dataset: Path, env_config: EnvConfig, *, search: bool = True) -> list[EpisodeRecord]:
    """One episode per question of ``dataset``; the episode records, in dataset order."""
    env = env_config.replace(dataset=str(dataset), split=None)
    if not search:
        env = env.search_disabled()
    result = rollout(policy, env_config=env, concurrency=64, progress=False, batch_wait_s=0.05)
    return sorted(result.records, key=lambda r: r.index)


def group_metrics(records: Sequence[EpisodeRecord], known: Mapping[str, bool], env_config: EnvConfig) -> dict[str, Any]:
    """Accuracy, both search ratios, mean reward and format rate on ``all`` questions and on the ``known``
    and ``unknown`` ones (a group without questions is left out). ``known``: example id -> known."""
    groups = {
        "all": list(records),
        "known": [r for r in records if known[r.example_id]],
        "unknown": [r for r in records if not known[r.example_id]],
    }
    out: dict[str, Any] = {}
    for name, rows in groups.items():
        if not rows:
            continue
        m = policy_metrics(rows, max_searches_per_episode=env_config.max_searches_per_episode)
        out[name] = {
            "n": m["episodes"],
            "accuracy": m["accuracy"],
            "search_ratio_episodes": m["search_ratio_episodes"],
            "search_ratio_calls": m["search_ratio_calls"],
            "mean_reward": m["mean_reward"],
            "format_rate": m["format_rate"],
        }
    return out


def evaluate_model(
    model_dir: Path,
    adapter: Path | None,
    test: Path,
    env_config: EnvConfig,
    known: Mapping[str, bool],
    config: OnDemandConfig,
) -> dict[str, Any]:
    """Greedy episodes on ``test`` (:func:`group_metrics`), plus each group's mean ``search_probability``."""
    policy = model_policy(model_dir, config, adapter)
    metrics = group_metrics(run_policy(policy, test, env_config), known, env_config)
    probability = search_probability(policy.model, policy.processing_class, test, env_config)
    for name, group in metrics.items():
        chosen = [p for example_id, p in probability.items() if name == "all" or known[example_id] == (name == "known")]
        group["search_probability"] = sum(chosen) / len(chosen)
    return metrics


def search_probability(model: Any, processor: Any, dataset: Path, env_config: EnvConfig) -> dict[str, float]:
    """Per question of ``dataset``: the policy's probability of choosing to search in its first turn, i.e.
    of the search reason's first token right after ``<reason>{country}:``."""
    import torch

    tokenizer = processor.tokenizer
    direct, search = (
        tokenizer.encode(r.split(":", 1)[1], add_special_tokens=False)[0] for r in (REASON_DIRECT, REASON_SEARCH)
    )
    if direct == search:
        raise RuntimeError("the two reasons must differ in their first token after the country")
    examples = load_dataset(str(dataset), None)
    names = country_names(examples)
    env = MMSearchEnv(env_config.replace(dataset=str(dataset), split=None))
    out: dict[str, float] = {}
    for example in examples:
        observation, _ = env.reset(options={"example_id": example.id})
        text = processor.apply_chat_template([observation["messages"]], tokenize=False, add_generation_prompt=True)[0]
        ids = tokenizer(text + f"<reason>{names[example.metadata['entity']]}:", return_tensors="pt").input_ids
        with torch.no_grad():
            out[example.id] = model(input_ids=ids.to(model.device)).logits[0, -1].softmax(-1)[search].item()
    env.close()
    return out


def label_agreement(labels: Sequence[Mapping[str, Any]], train: Sequence[Example]) -> dict[str, dict[str, int]]:
    """How the curation labels line up with the known / unknown countries (counts)."""
    table: dict[str, dict[str, int]] = {}
    for row in labels:
        group = "known" if train[row["index"]].metadata["known"] else "unknown"
        table.setdefault(group, {}).setdefault(row["label"], 0)
        table[group][row["label"]] += 1
    return table


def checkpoints(arm_dir: Path) -> list[tuple[int, Path]]:
    """The arm's saved LoRA checkpoints, ``(step, folder)`` by step."""
    found = [
        (int(p.name.split("-")[1]), p) for p in arm_dir.glob("checkpoint-*") if (p / "adapter_config.json").is_file()
    ]
    return sorted(found)


def window_reward(arm_dir: Path, step: int, width: int) -> float | None:
    """Mean training reward over the ``width`` logged steps up to ``step`` (``None`` before training)."""
    path = arm_dir / "metrics.jsonl"
    if step == 0 or not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    values = [r["reward"] for r in rows if "reward" in r and step - width < r.get("step", -1) <= step]
    return sum(values) / len(values) if values else None
