"""The curation report: label counts per category, agreement between rollouts, Markdown and a PNG."""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from mmsearch_env.errors import ConfigError

__all__ = ["LABELS", "SEARCH_TYPES", "curation_report", "plot_label_counts", "report_markdown"]

#: A question's curation label: correct without search at least once, only with search, or never.
LABELS = ("search_free", "search_required", "dropped")
#: Which searches the correct searching rollouts used.
SEARCH_TYPES = ("none", "image", "text", "image+text", "unknown")


def curation_report(
    labels: Sequence[Mapping[str, Any]],
    selected: Sequence[int],
    selection: Mapping[str, Any],
    by_index: Mapping[int, Mapping[str, Any]],
    *,
    policy_names: Sequence[str],
    config: Mapping[str, Any],
    rollouts: int,
    skipped: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    def counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        per_category: dict[str, Counter[str]] = defaultdict(Counter)
        types: Counter[str] = Counter()
        for row in rows:
            per_category[str(row["category"] or "-")][row["label"]] += 1
            if row["search_type"] is not None:
                types[row["search_type"]] += 1
        total: Counter[str] = Counter(row["label"] for row in rows)
        return {
            "total": len(rows),
            "labels": {label: total.get(label, 0) for label in LABELS},
            "search_types": {t: types.get(t, 0) for t in SEARCH_TYPES if types.get(t, 0)},
            "by_category": {
                c: {label: per_category[c].get(label, 0) for label in LABELS} for c in sorted(per_category)
            },
        }

    dataset = config.get("dataset")
    return {
        "config": {
            "policy": list(policy_names),
            "dataset": dataset if isinstance(dataset, str) or dataset is None else type(dataset).__name__,
            "split": config.get("split"),
            "rollouts": rollouts,
            "questions": len(labels),
        },
        "all": counts(labels),
        "selection": dict(selection),
        "curated": counts([by_index[i] for i in selected]),
        "agreement": _agreement(labels),
        "skipped": [dict(s) for s in skipped],
    }


def _agreement(labels: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Input label x curated label counts, when the dataset had its own labels (FVQA, the sample)."""
    known = [row for row in labels if row.get("input_label")]
    if not known:
        return None
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for row in known:
        table[row["input_label"]][row["label"]] += 1
    same = sum(row["input_label"] == row["label"] for row in known)
    return {
        "questions": len(known),
        "same_label": same,
        "table": {k: {label: table[k].get(label, 0) for label in LABELS} for k in sorted(table)},
    }


def report_markdown(report: Mapping[str, Any]) -> str:
    """``report.md``: label counts overall and per category, search types, and the subset chosen."""
    c = report["config"]
    lines = [
        "# Search-balanced curation",
        "",
        f"Policy {', '.join(c['policy'])} · dataset {c['dataset']} / {c['split'] or 'all'} · {c['questions']} questions"
        f" · {c['rollouts']} rollouts per question with search disabled and {c['rollouts']} with search enabled.",
        "",
    ]
    skipped = report.get("skipped") or []
    if skipped:
        lines += [
            f"**{len(skipped)} question(s) skipped** (a rollout could not be played; not labelled; rerun to retry):",
            "",
            *(f"- {s['index']} ({s['example_id'] or '–'}): {str(s['error'])[:300]}" for s in skipped),
            "",
        ]
    for title, part in (("All questions", report["all"]), ("Curated subset", report["curated"])):
        lines += [f"## {title} ({part['total']})", "", "| category | " + " | ".join(LABELS) + " |"]
        lines.append("|---|" + "---:|" * len(LABELS))
        for category, row in part["by_category"].items():
            lines.append(f"| {category} | " + " | ".join(str(row[label]) for label in LABELS) + " |")
        lines.append("| **total** | " + " | ".join(f"**{part['labels'][label]}**" for label in LABELS) + " |")
        types = ", ".join(f"{t}: {n}" for t, n in part["search_types"].items()) or "-"
        lines += ["", f"Search types: {types}.", ""]
    agreement = report.get("agreement")
    if agreement:
        lines += [
            f"## Against the dataset's own labels ({agreement['same_label']} of {agreement['questions']} agree)",
            "",
            "| dataset label \\ curated | " + " | ".join(LABELS) + " |",
            "|---|" + "---:|" * len(LABELS),
        ]
        for input_label, row in agreement["table"].items():
            lines.append(f"| {input_label} | " + " | ".join(str(row[label]) for label in LABELS) + " |")
        lines.append("")
    s = report["selection"]
    ratio = "-" if s["ratio"] is None else f"{100 * s['ratio']:.1f}%"
    lines += [
        "## Selection",
        "",
        f"Target {100 * s['target_ratio']:.0f}% search-required; kept {s['search_required']} search-required + "
        f"{s['search_free']} search-free = {s['total']} ({ratio} required). {s['note']}.",
        "",
    ]
    return "\n".join(lines)


def plot_label_counts(report: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """PNG: per category, stacked bars of search-free / search-required / dropped (all vs curated)."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ConfigError("the plot needs matplotlib: pip install 'mmsearch-env[eval]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110, sharey=True)
    colours = {"search_free": "#4c9f70", "search_required": "#3b6ea8", "dropped": "#bbbbbb"}
    for ax, (title, part) in zip(axes, (("all questions", report["all"]), ("curated", report["curated"])), strict=True):
        categories = list(part["by_category"]) or ["-"]
        bottom = [0] * len(categories)
        for label in LABELS:
            values = [part["by_category"].get(c, {}).get(label, 0) for c in categories]
            ax.bar(categories, values, bottom=bottom, color=colours[label], label=label.replace("_", "-"))
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        ax.set_title(f"{title} ({part['total']})")
        ax.tick_params(axis="x", rotation=30)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("questions")
    axes[1].legend(fontsize=8)
    c = report["config"]
    fig.suptitle(f"search-balanced curation · {c['dataset']} / {c['split'] or 'all'} · K={c['rollouts']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
