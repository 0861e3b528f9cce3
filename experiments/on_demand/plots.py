"""The two figures: each arm over its GRPO steps, and the final policies side by side."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from experiments.on_demand.report import summary_rows

__all__ = ["plot_curves", "plot_summary"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(results: Mapping[str, Any], path: Path) -> Path:
    """Per arm, over GRPO steps: accuracy, and the search ratio and P(search) on known vs unknown test
    questions."""
    plt = _pyplot()
    arms = results["arms"]
    fig, axes = plt.subplots(1, len(arms), figsize=(4.6 * len(arms), 3.8), sharey=True, squeeze=False)
    for ax, (name, arm) in zip(axes[0], arms.items(), strict=True):
        steps = [point["step"] for point in arm["curve"]]
        for group, colour in (("known", "tab:green"), ("unknown", "tab:red")):
            ax.plot(steps, [p["test"][group]["search_ratio_episodes"] for p in arm["curve"]], "-o", color=colour,
                    label=f"search ratio, {group}")  # fmt: skip
            ax.plot(steps, [p["test"][group]["search_probability"] for p in arm["curve"]], ":", color=colour,
                    label=f"P(search), {group}")  # fmt: skip
        ax.plot(
            steps, [p["test"]["all"]["accuracy"] for p in arm["curve"]], "--s", color="black", label="accuracy (test)"
        )
        ax.set_title(f"{name} (penalty {arm['search_penalty']}, {arm['data']})", fontsize=10)
        ax.set_xlabel("GRPO step")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("rate on held-out test questions")
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_summary(results: Mapping[str, Any], path: Path) -> Path:
    """Final accuracy and search ratio (known, unknown) of every policy on the test questions."""
    plt = _pyplot()
    rows = summary_rows(results)
    names = [r["policy"] for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(8.5, 3.8))
    width = 0.27
    ax.bar([i - width for i in x], [r["accuracy"] for r in rows], width, label="accuracy", color="black")
    ax.bar(list(x), [r["search_known"] for r in rows], width, label="search ratio, known", color="tab:green")
    ax.bar([i + width for i in x], [r["search_unknown"] for r in rows], width, label="search ratio, unknown",
           color="tab:red")  # fmt: skip
    ax.set_xticks(list(x), names, rotation=15, fontsize=9)
    ax.set_ylim(0, 1.05)
    ax.set_title("Held-out test questions: final policies and baselines", fontsize=10)
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.22))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
