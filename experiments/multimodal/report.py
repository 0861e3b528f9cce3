"""The results page and the curves of one run (the pooled, multi-seed page is :mod:`experiments.multimodal.pool`).

>>> curve = [{"step": s, "eval": {"accuracy": a}} for s, a in ((0, 0.1), (10, 0.5), (20, 0.7))]
>>> endpoint(curve, 2)["accuracy"]
0.6
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "COLUMNS",
    "MEASURED_COLUMNS",
    "MEASURED_INTRO",
    "PANELS",
    "before_after",
    "endpoint",
    "finetune_summary",
    "knowledge_change",
    "markdown",
    "plot_curves",
    "run_time",
    "style_panel",
    "table",
]

#: The metrics of every table, in order: (key, column title).
COLUMNS = (
    ("accuracy", "accuracy"),
    ("searches", "searches / question"),
    ("image_search_unrecognised", "image search, unrecognised flag"),
    ("image_search_recognised", "image search, recognised flag"),
    ("text_search_unknown", "text search, unknown capital"),
    ("text_search_known", "text search, known capital"),
    ("chain", "image→text, neither taught"),
    ("right_shape", "right action"),
)


#: The same search rates by what the model knows, measured (the direct policy names the flag, gives the
#: capital), not by what it was taught: the paper's definition of a search-free question.
MEASURED_COLUMNS = (
    ("image_search_unnamed", "image search, flag not named"),
    ("image_search_named", "image search, flag named"),
    ("text_search_not_given", "text search, capital not given"),
    ("text_search_given", "text search, capital given"),
)
MEASURED_INTRO = (
    "By what the model knows, measured (the direct policy names the flag / gives the named country's capital), "
    "not by what it was taught:"
)


def endpoint(curve: Sequence[Mapping[str, Any]], last: int) -> dict[str, Any]:
    """Each metric averaged over the last ``last`` evaluated checkpoints (not one step); ``None`` stays
    ``None`` when every one of them is."""
    rows = [point["eval"] for point in curve[1:][-last:]] or [curve[-1]["eval"]]
    out: dict[str, Any] = {"checkpoints": [p["step"] for p in curve[1:][-last:]]}
    for key in rows[0]:
        values = [r[key] for r in rows if r.get(key) is not None]
        out[key] = sum(values) / len(values) if values else None
    return out


def cell(value: Any, key: str) -> str:
    if value is None:
        return "–"
    if key == "searches":
        return f"{value:.2f}"
    return f"{100 * value:.1f}%"


def table(rows: Mapping[str, Mapping[str, Any]], columns: Sequence[tuple[str, str]] = COLUMNS) -> str:
    """A markdown table of ``rows`` (name -> metrics) over ``columns`` (:data:`COLUMNS`)."""
    lines = ["| policy | " + " | ".join(title for _, title in columns) + " |"]
    lines.append("|---" * (len(columns) + 1) + "|")
    for name, m in rows.items():
        lines.append(f"| {name} | " + " | ".join(cell(m.get(key), key) for key, _ in columns) + " |")
    return "\n".join(lines)


def measured_table(rows: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The lines of the by-measured-knowledge table, or none when the rows lack it (older runs)."""
    if not any(m.get(MEASURED_COLUMNS[0][0]) is not None for m in rows.values()):
        return []
    return [
        MEASURED_INTRO,
        "",
        table(rows, MEASURED_COLUMNS),
        "",
    ]


def reused_line(reused: dict[str, float | None]) -> str:
    """The stages an earlier call finished, with the seconds they took then (where recorded).

    >>> reused_line({"fine-tuning": 1249.2, "curation": None})
    ' Reused from an earlier call (seconds when made): fine-tuning 1249, curation (not recorded).'
    """
    if not reused:
        return ""
    told = [f"{k} {v:.0f}" if v is not None else f"{k} (not recorded)" for k, v in reused.items()]
    return " Reused from an earlier call (seconds when made): " + ", ".join(told) + "."


def finetune_summary(sft: Mapping[str, Any]) -> str:
    """The fine-tuning's training-time checks, pass by pass in the order they ran: the share of the taught
    flags named (recognition) and of held-out drills copied (reading), at each check.

    >>> print(finetune_summary({"pass_order": "reading-first", "pass_began": {"reading": 0, "recognition": 9},
    ...     "reading_checks": [{"step": 50, "query": 1.0,
    ...     "answer": 0.5}], "recognition_checks": [{"step": 50, "named": 0.25}], "seconds": 60,
    ...     "after_sft": {"reading": {"query": 1.0, "answer": 0.75}, "named": 0.5}}), end="")
    Fine-tuning, reading-first (1.0 min):
    - reading (query / answer copied): step 50 100/50%
    - recognition (taught flags named): step 50 25%
    - after the whole episodes: copied 100/75%, named 50%
    """
    passes = {
        "reading": ("reading (query / answer copied)", [
            f"step {c['step']} {c['query']:.0%}/{c['answer']:.0%}".replace("%/", "/") for c in sft["reading_checks"]
        ]),
        "recognition": ("recognition (taught flags named)", [
            f"step {c['step']} {c['named']:.0%}" for c in sft["recognition_checks"]
        ]),
    }  # fmt: skip
    began = sft.get("pass_began") or {"recognition": 0, "reading": 1}  # stats made before it: recognition first
    lines = [f"Fine-tuning, {sft.get('pass_order', 'recognition-first')} ({sft['seconds'] / 60:.1f} min):"]
    for name in sorted(passes, key=began.__getitem__):
        label, checks = passes[name]
        lines.append(f"- {label}: " + (", ".join(checks) or "no check"))
    after = sft["after_sft"]
    copied = f"{after['reading']['query']:.0%}/{after['reading']['answer']:.0%}".replace("%/", "/")
    lines.append(f"- after the whole episodes: copied {copied}, named {after['named']:.0%}")
    if "knowledge" in after:  # stats made before it was measured have none
        lines.append(
            "- taught flags named / capitals given, answer forced, before → after the whole episodes: "
            + knowledge_change(sft["knowledge_before_whole"], sft.get("knowledge_after_whole", after["knowledge"]))
        )
    if sft.get("knowledge_checks"):
        checks = ", ".join(
            f"step {c['step']} "
            + "/".join(f"{c[w]:.0%}" for w in ("flags", "capitals") if w in c).replace("%/", "/", 1)
            for c in sft["knowledge_checks"]
        )
        lines.append(f"- knowledge (taught flags named / capitals given, all splits): {checks}")
        lines.append(
            "- after the knowledge pass: " + knowledge_change(sft["knowledge_after_whole"], after["knowledge"])
        )
    return "\n".join(lines) + "\n"


def knowledge_change(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """Per split, the taught flags named and capitals given before → after the whole-episode pass.

    >>> knowledge_change({"test": {"flags": 1.0, "capitals": 0.5}}, {"test": {"flags": 0.5, "capitals": 0.5}})
    'test 100/50% → 50/50%'
    """

    def pair(known: Mapping[str, float]) -> str:
        got = [f"{known[w]:.0%}" if w in known else "–" for w in ("flags", "capitals")]
        return "/".join(got).replace("%/", "/", 1)

    return ", ".join(f"{split} {pair(before[split])} → {pair(after.get(split, {}))}" for split in before)


def markdown(results: Mapping[str, Any]) -> str:
    """The results page of one run."""
    s = results["settings"]
    c = results["countries"][results["eval_split"]]
    rows = dict(results["baselines"])
    for name, arm in results["arms"].items():
        rows[f"GRPO {name} (mean of steps {', '.join(map(str, arm['endpoint']['checkpoints']))})"] = arm["endpoint"]
    lines = [
        f"# Multimodal on-demand search, seed {s['seed']}"
        + (" (quick: checks the pipeline only)" if results["quick"] else ""),
        "",
        f"Held out: the {results['eval_split']} split, {c['countries']} countries × 3 questions "
        f"({c['recognised']} flags recognised, {c['known']} capitals known). Machine: {results['machine']}; "
        f"{results['seconds_total'] / 60:.1f} min" + (" this call" if results.get("reused_seconds") else "") + ".",
        "",
        table(rows),
        "",
        *measured_table(rows),
        f"Fine-tuning: {results['sft']['episodes']} episodes, {results['sft']['reading_steps']} reading steps, "
        f"copy accuracy after {results['sft']['after_sft']['reading']}. Curation labels {results['curation']['labels']}, "
        f"sets {results['curation']['sizes']}"
        + (
            f", fell back to all questions: {results['curation']['fallback']}"
            if results["curation"]["fallback"]
            else ""
        )
        + ".",
        "",
        "Time per stage (s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in results["seconds"].items())
        + "."
        + reused_line(results.get("reused_seconds") or {}),
        "",
    ]
    return "\n".join(lines)


def before_after(results: Mapping[str, Any], arm: str = "on-demand") -> str:
    """The main job's closing table: held-out metrics before and after GRPO, with both baselines."""
    split = results["eval_split"]
    c = results["countries"][split]
    rows = {
        "before GRPO (fine-tuned)": results["baselines"]["fine-tuned, before GRPO"],
        f"after GRPO ({arm})": results["arms"][arm]["endpoint"],
        "RAG (always image + text)": results["baselines"]["RAG (image, text, answer)"],
        "direct (answer forced)": results["baselines"]["direct (answer turn forced)"],
    }
    cols = (
        ("accuracy", "accuracy"), ("searches", "searches/q"),
        ("image_search_unrecognised", "img unrec"), ("image_search_recognised", "img rec"),
        ("text_search_unknown", "txt unknown"), ("text_search_known", "txt known"),
    )  # fmt: skip
    steps = ", ".join(map(str, results["arms"][arm]["endpoint"]["checkpoints"]))
    lines = [
        f"held-out {split} countries: {c['countries']} × 3 questions; 'after' = mean of GRPO steps {steps}",
        f"{'':28}" + "".join(f"{title:>12}" for _, title in cols),
    ]
    for name, m in rows.items():
        lines.append(f"{name:28}" + "".join(f"{cell(m.get(key), key):>12}" for key, _ in cols))
    lines.append(
        "img unrec / img rec: image search on flags the model was not / was taught; txt unknown / known: text "
        "search on capitals it was not / was taught. On-demand search means high unrec and unknown, low rec and known."
    )
    if "seconds" in results:
        lines.append(run_time(results))
    return "\n".join(lines)


def run_time(results: Mapping[str, Any]) -> str:
    """How long the run took, by stage (those of half a minute or more), and what it reused.

    >>> run_time({"seconds": {"fine-tuning": 2.0, "GRPO on-demand": 360.0, "evaluation": 30.0},
    ...           "seconds_total": 392.0, "reused_seconds": {"fine-tuning": 1122.0}})
    'this run: 6.5 min (GRPO on-demand 6.0, evaluation 0.5); fine-tuning reused (made in 18.7 min)'
    """
    stages = ", ".join(f"{name} {s / 60:.1f}" for name, s in results["seconds"].items() if s >= 30)
    line = f"this run: {results['seconds_total'] / 60:.1f} min ({stages})"
    reused = [
        f"{name} reused" + (f" (made in {s / 60:.1f} min)" if s is not None else "")
        for name, s in (results.get("reused_seconds") or {}).items()
    ]
    return "; ".join([line, *reused])


#: The panels of the curve plots, in order: every metric, searches per question last.
PANELS = [k for k, _ in COLUMNS if k != "searches"] + ["searches"]


def style_panel(ax: Any, key: str) -> None:
    """Title, y range and grid of the panel of metric ``key`` (rates in %, searches per question raw)."""
    ax.set_title(dict(COLUMNS)[key] + ("" if key == "searches" else " (%)"), fontsize=10)
    ax.set_ylim(*((-0.05, 2.1) if key == "searches" else (-3, 103)))
    ax.grid(alpha=0.3)


def plot_curves(results: Mapping[str, Any], path: Path) -> Path:
    """The arms' held-out search rates and accuracy over GRPO steps (one panel per metric)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(16, 7), sharex=True)
    for ax, key in zip(axes.flat, PANELS, strict=False):
        for name, arm in results["arms"].items():
            steps = [p["step"] for p in arm["curve"]]
            values = [p["eval"].get(key) for p in arm["curve"]]
            scale = 1 if key == "searches" else 100
            ax.plot(steps, [float("nan") if v is None else scale * v for v in values], marker=".", label=name)
        style_panel(ax, key)
    for ax in axes[-1]:
        ax.set_xlabel("GRPO step")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"held-out {results['eval_split']} countries, seed {results['settings']['seed']}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
