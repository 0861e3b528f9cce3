"""The results as Markdown: the final policies and baselines, and each GRPO arm over its steps.

Works on the ``results.json`` that :func:`experiments.on_demand.run.run` writes (and on the committed
ones under ``experiments/on_demand/results/``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from experiments.on_demand.config import CATEGORIES

__all__ = ["command_line", "markdown", "summary_rows"]


def summary_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per baseline and per arm's final checkpoint: accuracy and search ratios, known and unknown
    questions apart (NaN where a group is missing)."""

    def row(name: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "policy": name,
            "accuracy": metrics["all"]["accuracy"],
            "search_episodes": metrics["all"]["search_ratio_episodes"],
            "search_calls": metrics["all"]["search_ratio_calls"],
            "search_known": metrics.get("known", {}).get("search_ratio_episodes", math.nan),
            "search_unknown": metrics.get("unknown", {}).get("search_ratio_episodes", math.nan),
            "accuracy_known": metrics.get("known", {}).get("accuracy", math.nan),
            "accuracy_unknown": metrics.get("unknown", {}).get("accuracy", math.nan),
        }

    rows = [row(name, m) for name, m in results["baselines"].items()]
    rows += [row(f"GRPO {name}", arm["curve"][-1]["test"]) for name, arm in results["arms"].items()]
    return rows


def command_line(results: Mapping[str, Any]) -> str:
    """The command that makes these results."""
    seed = results["settings"].get("seed", 0)
    return (
        "python -m experiments.on_demand.run"
        + (" --quick" if results["quick"] else "")
        + (f" --seed {seed}" if seed else "")
    )


def _pct(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def markdown(results: Mapping[str, Any]) -> str:
    """The results page: the run, the fine-tuning and curation, the final table, one table per arm."""
    pct = _pct
    cfg = results["settings"]
    sft = results["sft"]

    def slots(acc: Mapping[str, float]) -> str:
        return ", ".join(f"{slot} {pct(value)}" for slot, value in acc.items())

    reading_at = "; ".join(f"step {c['step']}: {slots({k: c[k] for k in ('query', 'answer') if k in c})}"
                           for c in sft["reading_checks"]) or "not checked"  # fmt: skip
    lines = [
        "# On-demand search in miniature",
        "",
        f"`{command_line(results)}` on {results['machine']}; "
        f"total {results['seconds_total'] / 60:.1f} min (stages: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in results["seconds"].items())
        + ")"
        + (
            ", the fine-tuning's time as measured when its model was built (this run reused it)"
            if results.get("sft_reused")
            else ""
        )
        + ".",
        "",
        f"Questions: {results['questions']['train']} training / {results['questions']['test']} held-out test "
        f"(categories {', '.join(CATEGORIES)}); known countries: {results['questions']['train_known']} of the "
        f"training and {results['questions']['test_known']} of the test questions. Fine-tuning: "
        f"a reading pass of {sft['reading_steps']} steps × {cfg['reading_batch_size']} drills (copy loss "
        f"{sft['reading_first_loss']:.2f} → {sft['reading_last_loss']:.2f}; copy accuracy on {cfg.get('reading_check_drills', 64)} held-out drills "
        f"{reading_at}), then {sft['episodes']} episodes ({sft['per_epoch']} per epoch × {cfg['sft_epochs']}; "
        f"loss {sft['first_loss']:.2f} → {sft['last_loss']:.2f}; held-out drills afterwards: "
        f"{slots(sft['after_sft']['reading'])}).",
        "",
        f"Curation (K = {cfg['curate_rollouts']}): {results['curation']['counts']}; balanced set "
        f"{results['curation']['balanced']} questions, search-required only {results['curation']['required_only']}.",
        "",
        "## Final policies on the held-out test questions (greedy)",
        "",
        "| policy | accuracy | search ratio (episodes) | search ratio (calls / max) | search, known | search, unknown "
        "| accuracy, known | accuracy, unknown |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary_rows(results):
        lines.append(
            f"| {r['policy']} | {pct(r['accuracy'])} | {pct(r['search_episodes'])} | {pct(r['search_calls'])} | "
            f"{pct(r['search_known'])} | {pct(r['search_unknown'])} | {pct(r['accuracy_known'])} | "
            f"{pct(r['accuracy_unknown'])} |"
        )
    lines += ["", "## Over GRPO steps (test questions)", ""]
    for name, arm in results["arms"].items():
        lines += [
            f"### {name}: {arm['data']} data, search penalty {arm['search_penalty']} ({arm['train_seconds']:.0f} s)",
            "",
            "| step | accuracy | search ratio | search, known | search, unknown | P(search), known | P(search), unknown "
            "| training reward |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for p in arm["curve"]:
            t = p["test"]
            reward = "–" if p.get("train_reward") is None else f"{p['train_reward']:.3f}"
            lines.append(
                f"| {p['step']} | {pct(t['all']['accuracy'])} | {pct(t['all']['search_ratio_episodes'])} | "
                f"{pct(t.get('known', {}).get('search_ratio_episodes'))} | "
                f"{pct(t.get('unknown', {}).get('search_ratio_episodes'))} | "
                f"{pct(t.get('known', {}).get('search_probability'))} | "
                f"{pct(t.get('unknown', {}).get('search_probability'))} | {reward} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"
