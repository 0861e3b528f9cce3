"""Search-balanced curation (``mmsearch curate``): label questions by whether they need search, then keep
a balanced subset.

The paper's finding: the *balance* of search-required and search-free training questions is what makes
on-demand search emerge; trained on unbalanced data the model searches every time. The recipe:

1. Roll every question out ``K`` times with search **disabled** and ``K`` times with search **enabled**
   (through the concurrent rollout engine; each of the ``2K`` passes streams to its own JSONL file under
   ``OUT/rollouts/`` — ``no_search.rK.jsonl`` / ``search.rK.jsonl`` — so an interrupted run resumes,
   and the engine's ``(policy, split, index)`` resume key never sees two rollouts of one question in
   one file).
2. Label each question: **search-free** — correct at least once without search; **search-required** —
   never correct without search, correct at least once with it; **dropped** — never correct.
   Also a **search type**: ``none`` for search-free questions; for search-required ones, the kind of
   search (``image``, ``text``, ``image+text``) used by most of the correct search-enabled rollouts
   (ties go to the cheaper kind, in that order); ``unknown`` when the correct ones made no search.
3. Keep a balanced subset: ``ratio`` (paper: 0.68) of it search-required, the rest search-free. The
   scarcer label is kept whole and the other one is sampled down to hit the ratio (sampling is seeded
   and round-robin over categories, so no category is starved). ``on_shortfall="keep-all"`` keeps every
   labelled question instead (the report states the ratio reached). A label with no question at all
   cannot be balanced: the labels and report are written, then :class:`~mmsearch_env.errors.DatasetError`
   says so.

Outputs in ``OUT``: ``curated.parquet`` (our schema, :func:`mmsearch_env.data.loaders.write_parquet`;
``gym.make("MMSearch-v0", dataset="OUT/curated.parquet")`` loads it; ``search_need`` is filled from the
search type where the input had none; columns ``curation_label``, ``search_type``,
``correct_no_search``, ``correct_search``, ``rollouts`` come back in ``metadata``), ``labels.jsonl``
(every question, dropped ones too), ``report.json``, ``report.md`` and ``label_counts.png``.

``K`` rollouts mean something only with a stochastic policy. A real curation uses a model policy
(``hf:PATH`` or ``openai:MODEL@URL``): given as a spec string, its ``temperature`` is set to
``temperature`` (default 1.0, the paper's rollout temperature; those policies default to greedy
decoding, which would make the ``K`` rollouts identical), and an ``hf:`` policy's sampling is seeded
with ``seed``, so the labels repeat from run to run. Policy *objects* keep their own settings.
``random[:SEED]`` gets the seed ``SEED + k`` in rollout ``k`` (the cheap stochastic baseline the tests
use); ``oracle``, ``direct`` and ``rag`` are deterministic (``K`` identical rollouts).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import gymnasium as gym

import mmsearch_env  # noqa: F401  (registers MMSearch-v0)
from mmsearch_env.data import Example
from mmsearch_env.data.schema import image_source
from mmsearch_env.errors import ConfigError, DatasetError

__all__ = [
    "LABELS",
    "SEARCH_TYPES",
    "CurationResult",
    "add_curate_subparser",
    "balance",
    "curate",
    "label_question",
]

logger = logging.getLogger(__name__)

LABELS = ("search_free", "search_required", "dropped")
SEARCH_TYPES = ("none", "image", "text", "image+text", "unknown")
SHORTFALL = ("shrink", "keep-all")


def _kind(info: Mapping[str, Any]) -> str:
    image, text = info.get("image_searches", 0) > 0, info.get("text_searches", 0) > 0
    return {(False, False): "none", (True, False): "image", (False, True): "text", (True, True): "image+text"}[
        (image, text)
    ]


def label_question(no_search: Sequence[Mapping[str, Any]], search: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Label one question from the terminal ``info`` of its search-disabled and search-enabled rollouts."""
    free_ok = sum(bool(i.get("correct")) for i in no_search)
    kinds = Counter(_kind(i) for i in search if i.get("correct"))
    search_ok = sum(kinds.values())
    if free_ok:
        label, stype = "search_free", "none"
    elif search_ok:
        label = "search_required"
        searched = {k: n for k, n in kinds.items() if k != "none"}
        order = ("image", "text", "image+text")
        stype = max(order, key=lambda k: (searched.get(k, 0), -order.index(k))) if searched else "unknown"
    else:
        label, stype = "dropped", None
    return {
        "label": label,
        "search_type": stype,
        "correct_no_search": free_ok,
        "correct_search": search_ok,
        "correct_search_by_type": dict(sorted(kinds.items())),
    }


def _round_half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


def _targets(n_req: int, n_free: int, ratio: Fraction, max_size: int | None) -> tuple[int, int]:
    """How many required / free questions a subset at ``ratio`` can have (the scarce label kept whole)."""
    if n_req == 0 or n_free == 0:
        return 0, 0
    if Fraction(n_req, n_free) >= ratio / (1 - ratio):  # free questions are the scarce ones
        take_free, take_req = n_free, min(n_req, _round_half_up(n_free * ratio / (1 - ratio)))
    else:
        take_req, take_free = n_req, min(n_free, _round_half_up(n_req * (1 - ratio) / ratio))
    if max_size is not None and take_req + take_free > max_size:
        take_req = min(take_req, _round_half_up(max_size * ratio))
        take_free = min(take_free, max_size - take_req)
    return take_req, take_free


def _pick(indices: list[int], categories: Mapping[int, str], count: int, rng: random.Random) -> list[int]:
    """``count`` of ``indices``, seeded, round-robin over categories (no category starved)."""
    by_category: dict[str, list[int]] = defaultdict(list)
    for index in indices:
        by_category[categories[index]].append(index)
    queues = []
    for category in sorted(by_category):
        queue = list(by_category[category])
        rng.shuffle(queue)
        queues.append(queue)
    chosen: list[int] = []
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop())
    return sorted(chosen)


def balance(
    labels: Mapping[int, str],
    categories: Mapping[int, str],
    *,
    ratio: float = 0.68,
    seed: int = 0,
    on_shortfall: str = "shrink",
    max_size: int | None = None,
) -> tuple[list[int], dict[str, Any]]:
    """The indices of the balanced subset and a note on how it was chosen (see the module docstring)."""
    if not 0 < ratio < 1:
        raise ConfigError(f"ratio must be the search-required share, strictly between 0 and 1, got {ratio!r}")
    if on_shortfall not in SHORTFALL:
        raise ConfigError(f"on_shortfall must be one of {SHORTFALL}, got {on_shortfall!r}")
    if max_size is not None and max_size < 1:
        raise ConfigError(f"max_size must be a positive number of questions, got {max_size!r}")
    required = sorted(i for i, lab in labels.items() if lab == "search_required")
    free = sorted(i for i, lab in labels.items() if lab == "search_free")
    r = Fraction(str(ratio))
    rng = random.Random(seed)
    if on_shortfall == "keep-all":
        take_req, take_free = len(required), len(free)
        if max_size is not None and take_req + take_free > max_size:
            take_req, take_free = _targets(len(required), len(free), r, max_size)
        note = "keep-all: every labelled question kept; the ratio is what the data gave"
    else:
        take_req, take_free = _targets(len(required), len(free), r, max_size)
        if not required or not free:
            missing = "search-required" if not required else "search-free"
            note = f"no {missing} question: a subset at ratio {ratio} is impossible"
        elif take_free == len(free) and take_req < len(required):
            note = f"search-free is the scarce label: all {len(free)} kept, search-required sampled down"
        elif take_req == len(required) and take_free < len(free):
            note = f"search-required is the scarce label: all {len(required)} kept, search-free sampled down"
        else:
            note = "both labels kept whole (the data already had the ratio)"
    chosen = _pick(required, categories, take_req, rng) + _pick(free, categories, take_free, rng)
    total = take_req + take_free
    return sorted(chosen), {
        "target_ratio": ratio,
        "ratio": take_req / total if total else None,
        "search_required": take_req,
        "search_free": take_free,
        "total": total,
        "on_shortfall": on_shortfall,
        "max_size": max_size,
        "note": note,
    }


# -- the pipeline ------------------------------------------------------------------------------------------
@dataclass
class CurationResult:
    """What :func:`curate` wrote: ``labels`` (one dict per question), ``selected`` (dataset indices) and the
    report dict (``report.json``); ``paths`` of the files."""

    labels: list[dict[str, Any]]
    selected: list[int]
    report: dict[str, Any]
    paths: dict[str, str] = field(default_factory=dict)


def _policy_for_rollout(spec: Any, k: int, resolved: Any, examples: Sequence[Any], protocol: Any) -> Any:
    """Rollout ``k``'s policy: ``random[:S]`` gets seed ``S + k``; anything else is the one resolved object."""
    if isinstance(spec, str) and spec.partition(":")[0] == "random":
        from agents.evaluate import resolve_policy

        seed = spec.partition(":")[2] or "0"
        if not seed.isdigit():
            raise ConfigError(f"policy {spec!r}: the seed after 'random:' must be an integer, e.g. 'random:3'")
        return resolve_policy(f"random:{int(seed) + k}", examples=examples, protocol=protocol)
    return resolved


def curate(
    policy: Any,
    dataset: Any = None,
    split: str | None = "train",
    *,
    out: str | os.PathLike[str],
    rollouts: int = 8,
    ratio: float = 0.68,
    env_kwargs: Mapping[str, Any] | None = None,
    concurrency: int = 16,
    seed: int = 0,
    on_shortfall: str = "shrink",
    max_size: int | None = None,
    limit: int | None = None,
    temperature: float | None = 1.0,
    plot: bool = True,
    progress: bool = True,
) -> CurationResult:
    """Label ``dataset`` by search need with ``policy`` and write a balanced subset (see the module docstring).

    Args:
        policy: a policy object or spec (:func:`agents.evaluate.resolve_policy`).
        dataset: ``gym.make`` ``dataset`` (``None``: the environment's default).
        split: dataset split (``None``: all).
        out: output folder; rerun with the same folder to resume the rollouts.
        rollouts: ``K``, rollouts per question per pass.
        ratio: search-required share of the subset.
        env_kwargs: other ``gym.make`` arguments (``search``, ``protocol``, limits, ...).
        concurrency: episodes in flight per pass.
        seed: seeds the subset sampling, and the sampling of a model policy given as a spec string
            that takes a seed (``hf:PATH``: the labels then repeat from run to run).
        on_shortfall: ``"shrink"`` (keep the ratio) or ``"keep-all"``.
        max_size: cap on the subset size (the ratio kept).
        limit: only the first ``limit`` questions.
        temperature: sampling temperature set on a model policy given as a spec string (``None``: leave it).
    """
    from agents.evaluate import resolve_policy, search_disabled_kwargs
    from agents.rollout import rollout
    from mmsearch_env.data.loaders import write_parquet

    if isinstance(rollouts, bool) or not isinstance(rollouts, int) or rollouts < 1:
        raise ConfigError(f"rollouts must be an int >= 1, got {rollouts!r}")
    if not 0 < ratio < 1:
        raise ConfigError(f"ratio must be the search-required share, strictly between 0 and 1, got {ratio!r}")
    if on_shortfall not in SHORTFALL:
        raise ConfigError(f"on_shortfall must be one of {SHORTFALL}, got {on_shortfall!r}")
    out_dir = Path(out)
    (out_dir / "rollouts").mkdir(parents=True, exist_ok=True)
    kwargs = dict(env_kwargs or {})
    if dataset is not None:
        kwargs["dataset"] = dataset
    kwargs["split"] = split
    probe = gym.make("MMSearch-v0", **kwargs)
    base = probe.unwrapped
    examples: list[Example] = list(base.examples)
    shared = {k: v for k, v in kwargs.items() if k not in ("dataset", "search", "search_options")}
    shared.update(dataset=examples, search=base.search)
    indices = list(range(len(examples) if limit is None else min(limit, len(examples))))
    if not indices:
        probe.close()
        raise ConfigError(f"limit must be a positive number of questions, got {limit!r}")
    resolved = resolve_policy(policy, examples=examples, protocol=base.protocol)
    if isinstance(policy, str) and temperature is not None and hasattr(resolved, "temperature"):
        if temperature < 0:
            probe.close()
            raise ConfigError(f"temperature must be >= 0, got {temperature!r}")
        resolved.temperature = float(temperature)  # sampled rollouts: K greedy ones would all be the same
    if isinstance(policy, str) and getattr(resolved, "seed", False) is None:
        resolved.seed = seed  # a local model's samples then repeat, however its episodes are batched
    infos: dict[str, dict[int, list[dict[str, Any]]]] = {"no_search": defaultdict(list), "search": defaultdict(list)}
    names = set()
    try:
        for k in range(rollouts):
            agent = _policy_for_rollout(policy, k, resolved, examples, base.protocol)
            names.add(agent.name)
            for mode, env_args in (("no_search", search_disabled_kwargs(shared)), ("search", shared)):
                result = rollout(
                    agent,
                    indices,
                    env_kwargs=env_args,
                    out=out_dir / "rollouts" / f"{mode}.r{k}.jsonl",
                    split=split,
                    concurrency=concurrency,
                    progress=progress,
                    desc=f"{agent.name} {mode.replace('_', ' ')} {k + 1}/{rollouts}",
                )
                for record in result.records:
                    infos[mode][record["index"]].append(record["info"])
    finally:
        probe.close()

    labels = []
    for index in indices:
        example = examples[index]
        row = label_question(infos["no_search"][index], infos["search"][index])
        labels.append(
            {
                "index": index,
                "id": example.id,
                "category": example.category,
                "search_need": example.search_need,
                "input_label": _input_label(example),
                **row,
                "rollouts": rollouts,
            }
        )
    by_index = {row["index"]: row for row in labels}
    selected, selection = balance(
        {i: r["label"] for i, r in by_index.items()},
        {i: str(r["category"] or "-") for i, r in by_index.items()},
        ratio=ratio,
        seed=seed,
        on_shortfall=on_shortfall,
        max_size=max_size,
    )
    report = _report(
        labels, selected, selection, by_index, policy_names=sorted(names), config=kwargs, rollouts=rollouts
    )
    paths = {}
    with (out_dir / "labels.jsonl").open("w", encoding="utf-8") as handle:
        for row in labels:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    paths["labels"] = str(out_dir / "labels.jsonl")
    if selected:
        chosen = [_with_search_need(examples[i], by_index[i]) for i in selected]
        extra = {
            key: [by_index[i][source] for i in selected]
            for key, source in (
                ("curation_label", "label"),
                ("search_type", "search_type"),
                ("correct_no_search", "correct_no_search"),
                ("correct_search", "correct_search"),
                ("rollouts", "rollouts"),
            )
        }
        write_parquet(chosen, out_dir / "curated.parquet", extra_columns=extra)
        paths["curated"] = str(out_dir / "curated.parquet")
    if plot:
        try:
            plot_label_counts(report, out_dir / "label_counts.png")
        except ConfigError as exc:
            logger.warning("no plot written: %s", exc)
        else:
            paths["plot"] = str(out_dir / "label_counts.png")
    report["paths"] = paths
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    (out_dir / "report.md").write_text(report_markdown(report), encoding="utf-8")
    paths["report"] = str(out_dir / "report.md")
    if not selected:
        raise DatasetError(
            f"curation kept no question: {selection['note']}. Labels and report are in {out_dir}; try more "
            "--rollouts, a stronger policy, or --on-shortfall keep-all"
        )
    return CurationResult(labels=labels, selected=selected, report=report, paths=paths)


def _input_label(example: Example) -> str | None:
    """The dataset's own search label, if it has one: FVQA's ``search_label``, else from ``search_need``."""
    label = example.metadata.get("search_label")
    if label in ("search_free", "search_required"):
        return str(label)
    if example.search_need is None:
        return None
    return "search_free" if example.search_need == "none" else "search_required"


def _with_search_need(example: Example, row: Mapping[str, Any]) -> Example:
    """``example`` with ``search_need`` filled from the curated search type when it had none (image kept lazy)."""
    need = example.search_need
    if need is None and row["search_type"] in ("none", "image", "text", "image+text"):
        need = row["search_type"]
    return Example(
        id=example.id,
        question=example.question,
        image=image_source(example),
        answer=example.answer,
        candidate_answers=example.candidate_answers,
        category=example.category,
        search_need=need,
        image_url=example.image_url,
        metadata=dict(example.metadata),
    )


def _report(
    labels: Sequence[Mapping[str, Any]],
    selected: Sequence[int],
    selection: Mapping[str, Any],
    by_index: Mapping[int, Mapping[str, Any]],
    *,
    policy_names: Sequence[str],
    config: Mapping[str, Any],
    rollouts: int,
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


# -- command line ------------------------------------------------------------------------------------------
def add_curate_subparser(sub: Any) -> None:
    """Add the ``curate`` subcommand to the ``mmsearch`` parser."""
    p = sub.add_parser("curate", help="label questions search-free / search-required and write a balanced subset")
    p.add_argument(
        "--policy", required=True, help="hf:PATH[@ADAPTER] | openai:MODEL@BASE_URL | random[:SEED] | oracle | ..."
    )
    p.add_argument("--dataset", default=None, help="built-in name, .parquet/.jsonl path, folder or hf:NAME")
    p.add_argument("--split", default="train", help="dataset split, or 'all' (default: train)")
    p.add_argument("--rollouts", type=int, default=8, help="K rollouts per question per pass (default: 8)")
    p.add_argument("--ratio", type=float, default=0.68, help="search-required share of the subset (default: 0.68)")
    p.add_argument("--out", default="curate_out", help="output folder; rerun with the same folder to resume")
    p.add_argument("--concurrency", type=int, default=16, help="episodes in flight at once (default: 16)")
    p.add_argument("--on-shortfall", choices=SHORTFALL, default="shrink", help="keep the ratio, or keep all")
    p.add_argument("--max-size", type=int, default=None, help="at most this many questions in the subset")
    p.add_argument("--limit", type=int, default=None, help="only the first N questions")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset sampling and of an hf: policy's sampling")
    p.add_argument(
        "--temperature", type=float, default=1.0, help="sampling temperature of hf:/openai: policies (default: 1.0)"
    )
    p.add_argument("--protocol", default="tags", choices=["tags", "tool_calls"])
    p.add_argument("--search", default=None, help="search backend for the search-enabled pass (env default)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_curate_command)


def _curate_command(args: argparse.Namespace) -> int:
    env_kwargs: dict[str, Any] = {"protocol": args.protocol}
    if args.search is not None:
        env_kwargs["search"] = args.search
    result = curate(
        args.policy,
        dataset=args.dataset,
        split=None if args.split == "all" else args.split,
        out=args.out,
        rollouts=args.rollouts,
        ratio=args.ratio,
        env_kwargs=env_kwargs,
        concurrency=args.concurrency,
        seed=args.seed,
        on_shortfall=args.on_shortfall,
        max_size=args.max_size,
        limit=args.limit,
        temperature=args.temperature,
        progress=not args.quiet,
    )
    print(report_markdown(result.report))
    for key, path in result.paths.items():
        print(f"{key}: {path}")
    return 0
