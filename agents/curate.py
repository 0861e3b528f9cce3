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

import importlib.util
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

from agents.curate_report import LABELS, SEARCH_TYPES, curation_report, plot_label_counts, report_markdown
from agents.evaluate import resolve_policy
from agents.metrics import Episode, outcome
from agents.pool import make_env_pool
from agents.rollout import env_config_argument, rollout
from mmsearch_env.config import EnvConfig
from mmsearch_env.data import Example
from mmsearch_env.data.loaders import write_parquet
from mmsearch_env.data.schema import image_source
from mmsearch_env.errors import ConfigError, DatasetError
from mmsearch_env.records import EpisodeRecord

__all__ = [
    "LABELS",
    "SEARCH_TYPES",
    "SHORTFALL",
    "CurationResult",
    "balance",
    "curate",
    "label_question",
    "report_markdown",
]

logger = logging.getLogger(__name__)

SHORTFALL = ("shrink", "keep-all")


def _kind(episode: Episode) -> str:
    o = outcome(episode)
    image, text = o.image_searches > 0, o.text_searches > 0
    return {(False, False): "none", (True, False): "image", (False, True): "text", (True, True): "image+text"}[
        (image, text)
    ]


def label_question(no_search: Sequence[Episode], search: Sequence[Episode]) -> dict[str, Any]:
    """Label one question from its search-disabled and search-enabled rollouts.

    Each rollout is an :class:`~mmsearch_env.records.EpisodeRecord` (or an :class:`agents.metrics.Outcome`).
    """
    free_ok = sum(outcome(e).correct for e in no_search)
    kinds = Counter(_kind(e) for e in search if outcome(e).correct)
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
    env_config: EnvConfig | Mapping[str, Any] | None = None,
    concurrency: int = 16,
    seed: int = 0,
    on_shortfall: str = "shrink",
    max_size: int | None = None,
    limit: int | None = None,
    temperature: float | None = 1.0,
    generation: Mapping[str, Any] | None = None,
    plot: bool = True,
    progress: bool = True,
    on_error: str = "skip",
    env_kwargs: Mapping[str, Any] | None = None,
) -> CurationResult:
    """Label ``dataset`` by search need with ``policy`` and write a balanced subset (see the module docstring).

    Args:
        policy: a policy object or spec (:func:`agents.evaluate.resolve_policy`).
        dataset: the questions (``gym.make``'s ``dataset``); ``None``: ``env_config``'s (by default the
            embedded data).
        split: dataset split (``None``: all); it overrides ``env_config``'s.
        out: output folder; rerun with the same folder to resume the rollouts.
        rollouts: ``K``, rollouts per question per pass.
        ratio: search-required share of the subset.
        env_config: every other environment setting of the search-enabled pass (``search``,
            ``protocol``, limits, ...): an :class:`~mmsearch_env.config.EnvConfig` or a dict of ``gym.make``
            arguments. The search-disabled pass uses :meth:`EnvConfig.search_disabled` of it.
        concurrency: episodes in flight per pass.
        seed: seeds the subset sampling, and the sampling of a model policy given as a spec string
            that takes a seed (``hf:PATH``: the labels then repeat from run to run).
        on_shortfall: ``"shrink"`` (keep the ratio) or ``"keep-all"``.
        max_size: cap on the subset size (the ratio kept).
        limit: only the first ``limit`` questions.
        temperature: sampling temperature of a model policy given as a spec string (``None``: its default).
        generation: other generation settings of such a policy (``max_tokens``, ``top_p``, ``stop``,
            ``timeout``, ``max_retries``; see :func:`agents.resolve.resolve_policy`).
        on_error: ``"skip"`` (default) or ``"stop"`` (see :func:`agents.rollout.rollout`). A question with
            a skipped rollout is not labelled (it is neither kept nor counted) and is listed in the report.
        env_kwargs: the older name of ``env_config`` (deprecated).
    """
    if isinstance(rollouts, bool) or not isinstance(rollouts, int) or rollouts < 1:
        raise ConfigError(f"rollouts must be an int >= 1, got {rollouts!r}")
    if not 0 < ratio < 1:
        raise ConfigError(f"ratio must be the search-required share, strictly between 0 and 1, got {ratio!r}")
    if on_shortfall not in SHORTFALL:
        raise ConfigError(f"on_shortfall must be one of {SHORTFALL}, got {on_shortfall!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive number of questions, got {limit!r}")
    if importlib.util.find_spec("pyarrow") is None:  # checked now, not after hours of rollouts
        raise ConfigError(
            "curation writes its subset as curated.parquet, which needs pyarrow: pip install 'mmsearch-env[data]'"
        )
    config = env_config_argument(env_config, env_kwargs)
    config = config.replace(split=split, **({} if dataset is None else {"dataset": dataset}))
    out_dir = Path(out)
    (out_dir / "rollouts").mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict[int, list[EpisodeRecord]]] = {"no_search": defaultdict(list), "search": defaultdict(list)}
    skipped: dict[int, dict[str, Any]] = {}
    names = set()
    # Both passes share one dataset and (the search pass) one backend, built once and closed once.
    with make_env_pool(config, concurrency) as pool, pool.search_disabled() as off:
        examples: Sequence[Example] = pool.examples
        indices = list(range(len(examples)))[:limit]
        protocol = pool[0].unwrapped.protocol
        # Sampled rollouts (temperature): K greedy ones would all be the same. Seeded: a local model's
        # samples then repeat, however its episodes are batched.
        resolved = resolve_policy(
            policy, examples=examples, protocol=protocol, temperature=temperature, seed=seed, generation=generation
        )
        for k in range(rollouts):
            agent = _policy_for_rollout(policy, k, resolved, examples, protocol)
            names.add(agent.name)
            for mode, envs in (("no_search", off), ("search", pool)):
                result = rollout(
                    agent,
                    indices,
                    envs=envs,
                    out=out_dir / "rollouts" / f"{mode}.r{k}.jsonl",
                    split=split,
                    concurrency=concurrency,
                    progress=progress,
                    on_error=on_error,
                    desc=f"{agent.name} {mode.replace('_', ' ')} {k + 1}/{rollouts}",
                )
                for record in result.records:
                    runs[mode][record.index].append(record)
                for skip in result.skipped:
                    skipped.setdefault(skip.index, skip.to_dict())

    labels = []
    for index in indices:
        if index in skipped:
            continue
        example = examples[index]
        row = label_question(runs["no_search"][index], runs["search"][index])
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
    report = curation_report(
        labels,
        selected,
        selection,
        by_index,
        policy_names=sorted(names),
        config={"dataset": config.dataset, "split": split},
        rollouts=rollouts,
        skipped=[skipped[i] for i in sorted(skipped)],
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
