"""Pool several seeds' runs into the findings page: each seed, the mean with a 95% interval, and which
findings hold, per seed and pooled; plus the curves over steps with seed bands.

    python -m experiments.multimodal.pool runs/multimodal-full-test-seed*/results.json --out DIR

Runs of one seed made in parts (the on-demand arm in one run, the ablations in another that reused its
fine-tuning: ``--reuse``) are merged into one seed (:func:`merge_seeds`).

>>> mean_interval([0.8, 0.9, 1.0])[0]
0.9
>>> FINDINGS[0].holds({"image_search_unrecognised": 0.85})
True
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import json
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from experiments.multimodal.config import RECIPE_ARM, MultimodalConfig
from experiments.multimodal.report import COLUMNS, MEASURED_COLUMNS, MEASURED_INTRO, PANELS, cell, style_panel

__all__ = [
    "ABLATION_FINDING",
    "FINDINGS",
    "PER_RUN_SETTINGS",
    "Finding",
    "findings_table",
    "made_minutes",
    "main",
    "mean_interval",
    "merge_seeds",
    "plot_bands",
    "pooled_markdown",
]

#: Two-sided 95% t quantiles by degrees of freedom (1..10); larger samples use 1.96.
_T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23}


def mean_interval(values: Sequence[float]) -> tuple[float, float]:
    """The mean of ``values`` and the half-width of its 95% t interval (0 for one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0
    half = _T95.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    return round(mean, 12), half


def made_minutes(run: Mapping[str, Any]) -> float:
    """Minutes the run's stages took when they were made: this call's time plus what each stage reused
    from an earlier call took then (where recorded; curation is not)."""
    reused = sum(v for v in (run.get("reused_seconds") or {}).values() if v is not None)
    return (run["seconds_total"] + reused) / 60


#: Settings that may differ between the runs of one pooled recipe: the seed, and how a seed was made in
#: parts (which arms each part trained, for how many GRPO steps).
PER_RUN_SETTINGS = frozenset({"seed", "arms", "grpo_steps", "grpo_ablation_steps"})


def merge_seeds(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One run per seed, in order of first appearance: the arms of runs with the same seed are merged
    (the baselines and settings are the first part's; the seconds add up, a reused stage counted once).
    Raises ``ValueError`` when the runs are not one recipe (settings beyond :data:`PER_RUN_SETTINGS`
    differ), two parts of a seed trained the same arm, or a seed has no on-demand arm."""
    recipe = MultimodalConfig.from_dict(runs[0]["settings"]) if runs else None
    merged: dict[int, dict[str, Any]] = {}
    for run in runs:
        other = [k for k in recipe.differences(run["settings"]) if k not in PER_RUN_SETTINGS] if recipe else []
        if other:
            raise ValueError(
                f"seed {run['settings']['seed']} was made with other settings than seed "
                f"{runs[0]['settings']['seed']}: {other}; pool the runs of one recipe"
            )
        seed = run["settings"]["seed"]
        if seed not in merged:
            merged[seed] = {**run, "arms": dict(run["arms"]), "parts": 1}
            continue
        whole = merged[seed]
        twice = sorted(set(whole["arms"]) & set(run["arms"]))
        if twice:
            raise ValueError(f"seed {seed}: two results files both trained {twice}; give each arm once")
        whole["arms"].update(run["arms"])
        whole["seconds_total"] += run["seconds_total"]
        # a stage both parts reused (the fine-tuning) was made once: count it once
        whole["reused_seconds"] = {**(run.get("reused_seconds") or {}), **(whole.get("reused_seconds") or {})}
        whole["parts"] += 1
    for seed, whole in merged.items():
        if RECIPE_ARM not in whole["arms"]:
            raise ValueError(f"seed {seed}: no results file has the {RECIPE_ARM} arm, which the findings are about")
    return list(merged.values())


@dataclass(frozen=True)
class Finding:
    """One of the paper's findings as a bar a run's endpoint metrics pass or fail."""

    name: str
    test: Callable[[Mapping[str, Any]], bool]

    def holds(self, m: Mapping[str, Any]) -> bool:
        try:
            return bool(self.test(m))
        except (TypeError, KeyError):  # a metric without questions
            return False


FINDINGS = (
    Finding("image search on unrecognised flags ≥ 80%", lambda m: m["image_search_unrecognised"] >= 0.8),
    Finding("image search on recognised flags ≤ 20%", lambda m: m["image_search_recognised"] <= 0.2),
    Finding("text search on unknown capitals ≥ 80%", lambda m: m["text_search_unknown"] >= 0.8),
    Finding("text search on known capitals ≤ 20%", lambda m: m["text_search_known"] <= 0.2),
    Finding("image → text chain where neither is known ≥ 80%", lambda m: m["chain"] >= 0.8),
)

#: The ablations' finding: without the penalty or without search-free data, GRPO searches (nearly) always.
ABLATION_FINDING = Finding("searches on ≥ 90% of the questions", lambda m: m["search_ratio"] >= 0.9)


def rag_finding(m: Mapping[str, Any], rag: Mapping[str, Any]) -> bool:
    """Accuracy within 2 points of RAG (or better) with at least 30% fewer searches."""
    return m["accuracy"] >= rag["accuracy"] - 0.02 and m["searches"] <= 0.7 * rag["searches"]


def findings_table(runs: Sequence[Mapping[str, Any]], arm: str = RECIPE_ARM) -> str:
    """Which findings hold for ``arm``, per seed and on the pooled means."""
    seeds = [r["settings"]["seed"] for r in runs]
    ends = [r["arms"][arm]["endpoint"] for r in runs]
    rags = [r["baselines"]["RAG (image, text, answer)"] for r in runs]
    pooled = {
        key: statistics.fmean([e[key] for e in ends if e.get(key) is not None] or [math.nan]) for key, _ in COLUMNS
    }
    pooled_rag = {key: statistics.fmean([e[key] for e in rags]) for key in ("accuracy", "searches")}
    lines = ["| finding | " + " | ".join(f"seed {s}" for s in seeds) + " | pooled |", "|---" * (len(seeds) + 2) + "|"]
    mark = {True: "yes", False: "**no**"}
    for finding in FINDINGS:
        cells = [mark[finding.holds(e)] for e in ends] + [mark[finding.holds(pooled)]]
        lines.append(f"| {finding.name} | " + " | ".join(cells) + " |")
    cells = [mark[rag_finding(e, g)] for e, g in zip(ends, rags, strict=True)] + [mark[rag_finding(pooled, pooled_rag)]]
    lines.append("| accuracy ≥ RAG − 2 pts with ≥ 30% fewer searches | " + " | ".join(cells) + " |")
    for ablation in ("no-penalty", "unbalanced"):
        if all(ablation in r["arms"] for r in runs):
            arm_ends = [r["arms"][ablation]["endpoint"] for r in runs]
            mean = statistics.fmean(e["search_ratio"] for e in arm_ends)
            cells = [mark[ABLATION_FINDING.holds(e)] for e in arm_ends] + [
                mark[ABLATION_FINDING.holds({"search_ratio": mean})]
            ]
            lines.append(f"| {ablation} arm {ABLATION_FINDING.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _row(values: Sequence[Mapping[str, Any]], key: str) -> str:
    present = [v[key] for v in values if v.get(key) is not None]
    if not present:
        return "–"
    mean, half = mean_interval(present)
    if key == "searches":
        return f"{mean:.2f} ± {half:.2f}"
    return f"{100 * mean:.1f} ± {100 * half:.1f}%"


def _pooled_table(policies: Mapping[str, Sequence[Mapping[str, Any]]], columns: Sequence[tuple[str, str]]) -> list[str]:
    lines = ["| policy | " + " | ".join(title for _, title in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, values in policies.items():
        lines.append(f"| {name} | " + " | ".join(_row(values, key) for key, _ in columns) + " |")
    return lines


def pooled_markdown(runs: Sequence[Mapping[str, Any]]) -> str:
    """The findings page of several seeds (all made with one recipe, on one split)."""
    split = runs[0]["eval_split"]
    seeds = [r["settings"]["seed"] for r in runs]
    policies: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        for name, m in r["baselines"].items():
            policies.setdefault(name, []).append(m)
        for name, arm in r["arms"].items():
            policies.setdefault(f"GRPO {name}", []).append(arm["endpoint"])
    lines = [
        f"# Multimodal on-demand search: {len(runs)} seed{'s' if len(runs) > 1 else ''} "
        f"({', '.join(map(str, seeds))}), held-out {split} split",
        "",
        "Mean over seeds ± the half-width of a 95% t interval; each GRPO arm's value is its mean over the last "
        f"{len(runs[0]['arms'][next(iter(runs[0]['arms']))]['endpoint']['checkpoints'])} evaluated checkpoints.",
        "",
        *_pooled_table(policies, COLUMNS),
    ]
    if any(m.get(MEASURED_COLUMNS[0][0]) is not None for values in policies.values() for m in values):
        lines += [
            "",
            MEASURED_INTRO,
            "",
            *_pooled_table(policies, MEASURED_COLUMNS),
        ]
    lines += [
        "",
        "## Findings (the on-demand arm; the last rows: the ablation arms)",
        "",
        findings_table(runs),
        "",
        "## Each seed",
        "",
    ]
    for r in runs:
        lines.append(
            f"Seed {r['settings']['seed']} ({made_minutes(r):.0f} min of stages, as long as each took when made):"
        )
        lines.append("")
        lines.append("| policy | " + " | ".join(title for _, title in COLUMNS) + " |")
        lines.append("|---" * (len(COLUMNS) + 1) + "|")
        rows = dict(r["baselines"]) | {f"GRPO {n}": a["endpoint"] for n, a in r["arms"].items()}
        for name, m in rows.items():
            lines.append(f"| {name} | " + " | ".join(cell(m.get(key), key) for key, _ in COLUMNS) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_bands(runs: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Each arm's held-out metrics over GRPO steps: the mean over seeds and a band from min to max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(16, 7), sharex=True)
    arms = list(runs[0]["arms"])
    for ax, key in zip(axes.flat, PANELS, strict=False):
        for name in arms:
            curves = [r["arms"][name]["curve"] for r in runs if name in r["arms"]]
            steps = [p["step"] for p in curves[0]]
            scale = 1 if key == "searches" else 100
            table = [[scale * (c[i]["eval"].get(key) or 0.0) for c in curves] for i in range(len(steps))]
            mean = [statistics.fmean(v) for v in table]
            line = ax.plot(steps, mean, label=name)[0]
            ax.fill_between(steps, [min(v) for v in table], [max(v) for v in table], alpha=0.15, color=line.get_color())
        style_panel(ax, key)
    for ax in axes[-1]:
        ax.set_xlabel("GRPO step")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"held-out {runs[0]['eval_split']} split, {len(runs)} seeds: mean and min–max band")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = argparse.ArgumentParser(allow_abbrev=False, prog="python -m experiments.multimodal.pool")
    parser.add_argument("results", nargs="+", type=Path, help="results.json of each seed (one recipe, one split)")
    parser.add_argument("--out", type=Path, required=True, help="folder for findings.md and curves.png")
    args = parser.parse_args(argv)
    runs = [json.loads(p.read_text()) for p in args.results]
    if len({r["eval_split"] for r in runs}) != 1:
        parser.error("the runs were evaluated on different splits")
    try:
        runs = merge_seeds(runs)
    except ValueError as exc:
        parser.error(str(exc))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "findings.md").write_text(pooled_markdown(runs))
    plot_bands(runs, args.out / "curves.png")
    print(f"{args.out / 'findings.md'}\n{args.out / 'curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
