"""GRPO's run-to-run spread: reruns of GRPO from the same fine-tuned models, grouped by a setting.

    python -m experiments.multimodal.spread results/main-validation-seed*-grpo*.json --by grpo_lr

Each run (a ``results.json``) gets a row: its seed and GRPO seed, the on-demand arm's endpoint, how many
of the findings it meets (:data:`~experiments.multimodal.pool.FINDINGS` and accuracy against RAG), its
lowest held-out accuracy from step :data:`DIP_FROM_STEP` on and the checkpoints where it *dips*
(:func:`dips`). Then, per value of ``--by``: runs, runs that dip, findings met in all.

>>> curve = [{"step": 10, "eval": {"accuracy": 0.5}}, {"step": 20, "eval": {"accuracy": 0.8}}]
>>> dips(curve)
[20]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import json
from collections.abc import Mapping, Sequence
from typing import Any

from experiments.multimodal.config import RECIPE_ARM, MultimodalConfig
from experiments.multimodal.pool import FINDINGS, rag_finding

__all__ = ["DIP_FROM_STEP", "DIP_LIMITS", "dips", "findings_met", "main", "spread_markdown"]

#: Checkpoints before this step are the start of GRPO, not a dip.
DIP_FROM_STEP = 20
#: A checkpoint dips when any of these held-out metrics is below its limit (the recipe's own bars).
DIP_LIMITS = {"accuracy": 0.9, "image_search_unrecognised": 0.8, "text_search_unknown": 0.8}


def dips(curve: Sequence[Mapping[str, Any]]) -> list[int]:
    """The steps (from :data:`DIP_FROM_STEP` on) whose held-out metrics fall below :data:`DIP_LIMITS`."""
    return [
        point["step"]
        for point in curve
        if point["step"] >= DIP_FROM_STEP
        and any(point["eval"].get(k) is not None and point["eval"][k] < limit for k, limit in DIP_LIMITS.items())
    ]


def findings_met(run: Mapping[str, Any]) -> int:
    """How many of the six findings the on-demand arm's endpoint meets (five rates, accuracy against RAG)."""
    end = run["arms"][RECIPE_ARM]["endpoint"]
    return sum(f.holds(end) for f in FINDINGS) + rag_finding(end, run["baselines"]["RAG (image, text, answer)"])


def _settings(run: Mapping[str, Any]) -> MultimodalConfig:
    return MultimodalConfig.from_dict(run["settings"])


def spread_markdown(runs: Sequence[Mapping[str, Any]], by: str, names: Sequence[str]) -> str:
    """The rows and the per-``by`` summary as markdown; ``names``: each run's file, for the table."""
    settings = [_settings(r) for r in runs]
    order = sorted(range(len(runs)), key=lambda i: (str(getattr(settings[i], by)), settings[i].seed, names[i]))
    lines = [
        f"| {by} | seed | GRPO seed | accuracy (RAG) | searches / q | image search, unrecognised / recognised | "
        f"text search, unknown / known | findings met | lowest accuracy from step {DIP_FROM_STEP} | dips at | file |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[str, dict[str, int]] = {}
    for i in order:
        run, config = runs[i], settings[i]
        arm = run["arms"][RECIPE_ARM]
        end, rag = arm["endpoint"], run["baselines"]["RAG (image, text, answer)"]
        late = [p["eval"]["accuracy"] for p in arm["curve"] if p["step"] >= DIP_FROM_STEP]
        dipped, met = dips(arm["curve"]), findings_met(run)
        grpo_seed = config.seed if config.grpo_seed is None else config.grpo_seed
        lines.append(
            f"| {getattr(config, by)} | {config.seed} | {grpo_seed} | {100 * end['accuracy']:.1f}% "
            f"({100 * rag['accuracy']:.1f}%) | {end['searches']:.2f} | {100 * end['image_search_unrecognised']:.0f} "
            f"/ {100 * end['image_search_recognised']:.1f}% | {100 * end['text_search_unknown']:.0f} / "
            f"{100 * end['text_search_known']:.1f}% | {met} of 6 | "
            f"{100 * min(late):.1f}% | {', '.join(map(str, dipped)) or '–'} | {names[i]} |"
            if late
            else f"| {getattr(config, by)} | {config.seed} | {grpo_seed} | (no checkpoint from step "
            f"{DIP_FROM_STEP}) | | | | {met} of 6 | – | – | {names[i]} |"
        )
        group = groups.setdefault(str(getattr(config, by)), {"runs": 0, "dipped": 0, "met": 0})
        group["runs"] += 1
        group["dipped"] += bool(dipped)
        group["met"] += met
    lines += ["", f"| {by} | runs | runs that dip | findings met (of 6 per run) |", "|---|---|---|---|"]
    for value, g in groups.items():
        lines.append(f"| {value} | {g['runs']} | {g['dipped']} | {g['met']} of {6 * g['runs']} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = argparse.ArgumentParser(allow_abbrev=False, prog="python -m experiments.multimodal.spread")
    parser.add_argument("results", nargs="+", type=Path, help="results.json of each run")
    parser.add_argument("--by", default="grpo_lr", help="the setting whose values group the runs (default grpo_lr)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    if args.by not in MultimodalConfig.__dataclass_fields__:
        parser.error(f"--by {args.by!r} is not a MultimodalConfig setting")
    runs = [json.loads(p.read_text()) for p in args.results]
    if len({r["eval_split"] for r in runs}) != 1:
        parser.error("the runs were evaluated on different splits")
    page = spread_markdown(runs, args.by, [p.name for p in args.results])
    if args.out is not None:
        args.out.write_text(page)
    print(page, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
