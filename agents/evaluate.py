"""The evaluation harness: the paper's Table 1 for any policy, plus the search utility no benchmark reports.

From Python::

    from agents.evaluate import evaluate
    report = evaluate(["direct", "rag", "oracle"], split="test", out="eval_out")
    print(report.to_markdown())

From the shell: ``mmsearch eval --policy rag --policy oracle --split test --out eval_out``.

For each policy it runs one :func:`agents.rollout.rollout` over the questions and computes:

* exact-match accuracy (the reward's scorer) and, with ``judge=``, LLM-judge accuracy
  (:class:`agents.judge.LLMJudge`);
* both search ratios, named: ``search_ratio_episodes`` (share of episodes that searched) and
  ``search_ratio_calls`` (searches made / the most the limits allow);
* image / text search counts, failures (search errors, malformed turns, truncations), accuracy by
  category and by ``search_need`` label, tokens, latency and the search backends' cost;
* **search utility** (opt-in; on by default for built-in datasets): the policy is rerun with search
  disabled (both search limits 0 — the prompt tells it so, and a search it still asks for ends the
  episode unanswered) and with the search plan forced (:class:`agents.baselines.ForcedSearchPolicy`:
  image search, then text search, then the policy answers). Per question, with *searched* meaning the
  normal run made a search: ``needed`` = searched, right, and wrong without search; ``wasted`` =
  searched, and right without search anyway; ``missed`` = did not search, was wrong, and is right when
  search is forced.

Outputs in ``out``: ``trajectories.jsonl`` (+ ``.no_search`` / ``.forced_search`` runs, images in
``images/``), ``report.md`` and ``report.json`` (the same table), ``accuracy_vs_search.png``, and
``viewer.html`` when :mod:`agents.viewer` is installed. Runs resume: rerun with the same ``out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

import mmsearch_env  # noqa: F401  (registers MMSearch-v0)
from mmsearch_env.data import BUILTIN_DATASETS
from mmsearch_env.env import TRUNCATION_REASONS
from mmsearch_env.errors import ConfigError, did_you_mean

__all__ = [
    "BASELINE_NAMES",
    "EvalReport",
    "add_eval_subparser",
    "evaluate",
    "policy_metrics",
    "resolve_policy",
    "search_disabled_kwargs",
    "search_utility",
]

logger = logging.getLogger(__name__)

#: Policy names ``resolve_policy`` knows, besides ``openai:MODEL@URL`` and ``hf:PATH``.
BASELINE_NAMES = ("direct", "rag", "random", "oracle")


def search_disabled_kwargs(env_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``env_kwargs`` with search disabled: no backend (and none of its ``search_options``) and both search
    limits 0 (the prompt says so, and a search the policy still asks for ends the episode)."""
    kwargs = {k: v for k, v in env_kwargs.items() if k != "search_options"}
    return {**kwargs, "search": "disabled", "max_image_searches": 0, "max_text_searches": 0}


# -- policies by name ----------------------------------------------------------------------------------
def resolve_policy(spec: Any, *, examples: Sequence[Any] = (), protocol: Any = "tags") -> Any:
    """A policy from a spec: a Policy object (returned as is) or one of these strings:

    ``direct``, ``rag``, ``random`` (``random:SEED``), ``oracle`` (needs ``examples``: the scripted
    plan of each question), ``openai:MODEL@BASE_URL`` (key from ``$OPENAI_API_KEY``), ``hf:PATH``
    or ``hf:PATH@ADAPTER`` (a local transformers model, optional LoRA adapter; needs the ``train`` extra).
    """
    if not isinstance(spec, str):
        if not (hasattr(spec, "act_batch") and hasattr(spec, "name")):
            raise ConfigError(f"a policy must have 'name' and 'act_batch' (agents.policy.Policy), got {spec!r}")
        return spec
    from agents import baselines

    kind, _, arg = spec.partition(":")
    if kind == "direct" and not arg:
        return baselines.DirectAnswerPolicy(protocol=protocol)
    if kind == "rag" and not arg:
        return baselines.RAGWorkflowPolicy(protocol=protocol)
    if kind == "random":
        if arg and not arg.isdigit():
            raise ConfigError(f"policy {spec!r}: the seed after 'random:' must be an integer, e.g. 'random:3'")
        return baselines.RandomPolicy(int(arg or 0), protocol=protocol)
    if kind == "oracle" and not arg:
        from agents.scripted import OraclePolicy

        return OraclePolicy(examples, protocol=protocol)
    if kind == "openai":
        from agents.openai_policy import OpenAIPolicy, parse_endpoint_spec

        model, base_url = parse_endpoint_spec(arg)
        return OpenAIPolicy(model, base_url)
    if kind == "hf" and arg:
        try:
            from agents.hf_policy import HFPolicy
        except ImportError as exc:
            raise ConfigError(
                f"policy {spec!r} needs agents.hf_policy and its dependencies ({exc}); "
                "install them with: pip install torch==2.13.0 'mmsearch-env[train]'"
            ) from exc
        path, adapter = arg, None
        if "@" in arg and not os.path.exists(arg):
            path, _, adapter = arg.rpartition("@")
        return HFPolicy(path, protocol=protocol, adapter=adapter)
    names = [*BASELINE_NAMES, "openai:MODEL@BASE_URL", "hf:PATH"]
    raise ConfigError(f"unknown policy {spec!r}; expected one of {names}." + did_you_mean(kind, BASELINE_NAMES))


def resolve_judge(spec: Any) -> Any:
    """``None``, an object with ``judge_batch``, or ``"openai:MODEL@BASE_URL"`` → a judge."""
    if spec is None or hasattr(spec, "judge_batch"):
        return spec
    if isinstance(spec, str):
        from agents.judge import LLMJudge

        return LLMJudge.from_spec(spec)
    raise ConfigError(f"judge must be 'openai:MODEL@BASE_URL' or an LLMJudge, got {type(spec).__name__}")


# -- metrics -------------------------------------------------------------------------------------------
def _rate(values: Sequence[bool]) -> float:
    return sum(values) / len(values) if values else 0.0


def _searched(record: Mapping[str, Any]) -> bool:
    info = record["info"]
    return info["image_searches"] + info["text_searches"] > 0


def policy_metrics(
    records: Sequence[Mapping[str, Any]],
    max_searches_per_episode: int,
    judged: Sequence[bool | None] | None = None,
) -> dict[str, Any]:
    """One row of the report from a policy's trajectory lines (see the module docstring for each field)."""
    n = len(records)
    infos = [r["info"] for r in records]
    correct = [bool(i.get("correct")) for i in infos]
    searches = [i["image_searches"] + i["text_searches"] for i in infos]
    by_category: dict[str, list[bool]] = defaultdict(list)
    by_need: dict[str, list[bool]] = defaultdict(list)
    for record, ok in zip(records, correct, strict=True):
        by_category[str(record.get("category") or "-")].append(ok)
        by_need[str(record.get("search_need") or "-")].append(ok)
    usages = [r.get("usage") for r in records]
    known = [u for u in usages if u]
    latencies = sorted(float(r.get("latency_s") or 0.0) for r in records)
    row: dict[str, Any] = {
        "episodes": n,
        "accuracy": _rate(correct),
        "judge_accuracy": None,
        "judge_unparsed": None,
        "mean_reward": sum(float(r["reward"]) for r in records) / n if n else 0.0,
        "format_rate": _rate([bool(i.get("format_ok")) for i in infos]),
        "search_ratio_episodes": _rate([s > 0 for s in searches]),
        "search_ratio_calls": sum(searches) / (n * max_searches_per_episode) if n and max_searches_per_episode else 0.0,
        "image_searches": sum(i["image_searches"] for i in infos),
        "text_searches": sum(i["text_searches"] for i in infos),
        "failures": {
            "search_errors": sum(i.get("search_failures", 0) for i in infos),
            "malformed": sum(i.get("end_reason") == "malformed" for i in infos),
            "truncated": sum(i.get("end_reason") in TRUNCATION_REASONS for i in infos),
        },
        "accuracy_by_category": {k: {"accuracy": _rate(v), "n": len(v)} for k, v in sorted(by_category.items())},
        "accuracy_by_search_need": {k: {"accuracy": _rate(v), "n": len(v)} for k, v in sorted(by_need.items())},
        "prompt_tokens": sum(u.get("prompt_tokens", 0) for u in known) if known else None,
        "completion_tokens": sum(u.get("completion_tokens", 0) for u in known) if known else None,
        "mean_latency_s": sum(latencies) / n if n else 0.0,
        "p95_latency_s": latencies[min(n - 1, int(0.95 * n))] if n else 0.0,
        "search_cost_usd": sum(float(i.get("search_cost_usd") or 0.0) for i in infos),
    }
    if judged is not None:
        verdicts = [bool(v) for v in judged]
        row["judge_accuracy"] = _rate(verdicts)
        row["judge_unparsed"] = sum(v is None for v in judged)
    return row


def search_utility(
    main: Sequence[Mapping[str, Any]],
    no_search: Sequence[Mapping[str, Any]],
    forced: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Needed / wasted / missed searches, matching the three runs by dataset ``index``.

    ``missed`` is ``None`` without a forced-search run.
    """
    free = {r["index"]: bool(r["info"].get("correct")) for r in no_search}
    forced_ok = {r["index"]: bool(r["info"].get("correct")) for r in forced} if forced is not None else None
    needed = wasted = missed = 0
    for record in main:
        index, ok = record["index"], bool(record["info"].get("correct"))
        if index not in free:
            continue
        if _searched(record):
            needed += ok and not free[index]
            wasted += free[index]
        elif forced_ok is not None and not ok and forced_ok.get(index, False):
            missed += 1
    return {
        "accuracy_no_search": _rate(list(free.values())),
        "accuracy_forced_search": _rate(list(forced_ok.values())) if forced_ok is not None else None,
        "needed": needed,
        "wasted": wasted,
        "missed": missed if forced_ok is not None else None,
        "searched_episodes": sum(_searched(r) for r in main),
    }


# -- the report ----------------------------------------------------------------------------------------
def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


@dataclass
class EvalReport:
    """The evaluation's result: one row per policy, and where the files went.

    Attributes:
        rows: per policy, ``{"policy": name, **policy_metrics(...), "search_utility": {...} | None}``.
        config: dataset, split, episodes, limits: what was evaluated.
        paths: ``trajectories``, ``report_md``, ``report_json``, ``plot``, ``viewer`` (those written).
    """

    rows: list[dict[str, Any]]
    config: dict[str, Any]
    paths: dict[str, str] = field(default_factory=dict)

    def row(self, policy: str) -> dict[str, Any]:
        for row in self.rows:
            if row["policy"] == policy:
                return row
        raise KeyError(f"no policy {policy!r} in this report; it has {[r['policy'] for r in self.rows]}")

    def to_json(self) -> dict[str, Any]:
        return {"config": self.config, "rows": self.rows, "paths": self.paths}

    def to_markdown(self) -> str:
        c = self.config
        lines = [
            f"# MMSearch-v0 evaluation: dataset `{c['dataset']}`, split `{c['split'] or 'all'}`, {c['episodes']} questions",
            "",
            "Accuracy and search ratios in %. *search % episodes*: share of episodes that searched; "
            f"*search % calls*: searches made / the most allowed ({c['max_searches_per_episode']} per episode).",
            "",
            "| policy | accuracy (exact) | accuracy (judge) | search % episodes | search % calls | image / text "
            "searches | search errors / malformed / truncated | mean reward | tokens in / out | latency s (mean / p95) "
            "| search cost $ |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            f = r["failures"]
            tokens = "–" if r["prompt_tokens"] is None else f"{r['prompt_tokens']} / {r['completion_tokens']}"
            lines.append(
                f"| {r['policy']} | {_pct(r['accuracy'])} | {_pct(r['judge_accuracy'])} | "
                f"{_pct(r['search_ratio_episodes'])} | {_pct(r['search_ratio_calls'])} | "
                f"{r['image_searches']} / {r['text_searches']} | {f['search_errors']} / {f['malformed']} / "
                f"{f['truncated']} | {r['mean_reward']:.3f} | {tokens} | {r['mean_latency_s']:.3f} / "
                f"{r['p95_latency_s']:.3f} | {r['search_cost_usd']:.4f} |"
            )
        utility = [r for r in self.rows if r.get("search_utility")]
        if utility:
            lines += [
                "",
                "## Search utility",
                "",
                "Per question: *needed* = searched, right, and wrong with search disabled; *wasted* = searched, "
                "but right with search disabled anyway; *missed* = did not search, wrong, and right when the "
                "search plan (image → text) is forced.",
                "",
                "| policy | searched episodes | needed | wasted | missed | accuracy, search disabled | "
                "accuracy, search forced |",
                "|---|---|---|---|---|---|---|",
            ]
            for r in utility:
                u = r["search_utility"]
                missed = "–" if u["missed"] is None else u["missed"]
                lines.append(
                    f"| {r['policy']} | {u['searched_episodes']} | {u['needed']} | {u['wasted']} | {missed} | "
                    f"{_pct(u['accuracy_no_search'])} | {_pct(u['accuracy_forced_search'])} |"
                )
        for key, title in (("accuracy_by_search_need", "search need"), ("accuracy_by_category", "category")):
            groups = sorted({g for r in self.rows for g in r[key]})
            lines += ["", f"## Accuracy by {title}", ""]
            lines.append(
                "| policy | " + " | ".join(f"{g} (n={self.rows[0][key].get(g, {}).get('n', 0)})" for g in groups) + " |"
            )
            lines.append("|---|" + "---|" * len(groups))
            for r in self.rows:
                cells = [_pct(r[key][g]["accuracy"]) if g in r[key] else "–" for g in groups]
                lines.append(f"| {r['policy']} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def save(self, out: str | os.PathLike[str]) -> None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.paths["report_md"] = str(out / "report.md")
        self.paths["report_json"] = str(out / "report.json")
        (out / "report.md").write_text(self.to_markdown(), encoding="utf-8")
        (out / "report.json").write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")


def plot_accuracy_vs_search(report: EvalReport, path: str | os.PathLike[str]) -> None:
    """PNG: accuracy vs search ratio, one point per policy (filled: episodes ratio; hollow: calls ratio)."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ConfigError("the plot needs matplotlib: pip install 'mmsearch-env[eval]' (or pass plot=False)") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for k, row in enumerate(report.rows):
        colour = f"C{k % 10}"
        y = 100 * row["accuracy"]
        xe, xc = 100 * row["search_ratio_episodes"], 100 * row["search_ratio_calls"]
        ax.plot([xc, xe], [y, y], color=colour, linewidth=1, alpha=0.5)
        ax.scatter([xe], [y], color=colour, s=50, label=row["policy"], zorder=3)
        ax.scatter([xc], [y], facecolors="none", edgecolors=colour, s=50, zorder=3)
        ax.annotate(row["policy"], (xe, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    c = report.config
    ax.set(
        xlim=(-5, 105),
        ylim=(-5, 105),
        xlabel="search ratio % (filled: episodes that searched; hollow: calls / max)",
        ylabel="accuracy % (exact match)",
        title=f"MMSearch-v0 · {c['dataset']} / {c['split'] or 'all'} · {c['episodes']} questions",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# -- the harness ---------------------------------------------------------------------------------------
def _judge_records(judge: Any, records: Sequence[Mapping[str, Any]]) -> list[bool | None]:
    from agents.judge import JudgeItem

    items = [
        JudgeItem(
            question=r["question"],
            answer=r["info"].get("answer"),
            ground_truth=r["ground_truth"],
            candidate_answers=tuple(r.get("candidate_answers") or ()),
        )
        for r in records
    ]
    return judge.judge_batch(items)


def evaluate(
    policies: Sequence[Any] | Any,
    dataset: Any = None,
    split: str | None = "test",
    *,
    env_kwargs: Mapping[str, Any] | None = None,
    limit: int | None = None,
    indices: Sequence[int] | None = None,
    out: str | os.PathLike[str] | None = None,
    concurrency: int = 16,
    judge: Any = None,
    search_utility_runs: bool | None = None,
    plot: bool = True,
    viewer: bool = True,
    progress: bool = True,
) -> EvalReport:
    """Evaluate policies side by side and write the report (see the module docstring).

    Args:
        policies: policy objects or names (:func:`resolve_policy`), or one of them.
        dataset: ``gym.make`` ``dataset`` (``None``: the environment's default, the embedded data).
        split: the dataset split (``None``: all).
        env_kwargs: other ``gym.make("MMSearch-v0", ...)`` arguments (``search``, ``protocol``, limits...).
        limit: evaluate only the first ``limit`` questions; ``indices``: exactly these dataset indices.
        out: output folder for trajectories, report, plot and viewer (``None``, the default: write
            nothing, no resume).
        concurrency: episodes in flight at once (see :func:`agents.rollout.rollout`).
        judge: ``"openai:MODEL@BASE_URL"`` or an :class:`agents.judge.LLMJudge` for judged accuracy.
        search_utility_runs: rerun with search disabled and forced; ``None``: on for built-in datasets.
        plot, viewer: write the PNG plot / the HTML viewer (when ``agents.viewer`` exists).
    """
    from agents.rollout import rollout

    started = time.perf_counter()
    kwargs = dict(env_kwargs or {})
    if dataset is not None:
        kwargs["dataset"] = dataset
    kwargs["split"] = split
    probe = gym.make("MMSearch-v0", **kwargs)
    base = probe.unwrapped
    protocol = base.protocol
    # Every run shares the probe's dataset and search backend: a corpus is loaded and indexed once.
    shared = {k: v for k, v in kwargs.items() if k not in ("dataset", "search", "search_options")}
    shared.update(dataset=base.examples, search=base.search)
    try:
        if indices is None:
            indices = list(range(len(base.examples)))
        if limit is not None:
            if limit < 1:
                raise ConfigError(f"limit must be a positive number of questions, got {limit!r}")
            indices = list(indices)[:limit]
        if search_utility_runs is None:
            search_utility_runs = dataset is None or (isinstance(dataset, str) and dataset in BUILTIN_DATASETS)
        forced_possible = base.max_turns >= 2 and base.max_searches_per_episode > 0
        policy_objects = [
            resolve_policy(p, examples=base.examples, protocol=protocol)
            for p in (policies if isinstance(policies, (list, tuple)) else [policies])
        ]
        names = [p.name for p in policy_objects]
        if len(set(names)) != len(names):
            raise ConfigError(f"policy names must be unique in one evaluation (they key the results), got {names}")
        judge = resolve_judge(judge)
        out_dir = Path(out) if out is not None else None
        files = {
            kind: (out_dir / f"trajectories{suffix}.jsonl" if out_dir else None)
            for kind, suffix in (("main", ""), ("no_search", ".no_search"), ("forced", ".forced_search"))
        }

        rows = []
        for policy in policy_objects:
            common = {"concurrency": concurrency, "split": split, "progress": progress}
            main = rollout(policy, indices, env_kwargs=shared, out=files["main"], desc=policy.name, **common).records
            judged = _judge_records(judge, main) if judge is not None else None
            row = {"policy": policy.name, **policy_metrics(main, base.max_searches_per_episode, judged)}
            row["search_utility"] = None
            if search_utility_runs:
                disabled = search_disabled_kwargs(shared)
                no_search = rollout(
                    policy,
                    indices,
                    env_kwargs=disabled,
                    out=files["no_search"],
                    desc=f"{policy.name} (no search)",
                    **common,
                ).records
                forced = None
                if forced_possible:
                    from agents.baselines import ForcedSearchPolicy

                    wrapped = ForcedSearchPolicy(policy, protocol=protocol)
                    forced = rollout(
                        wrapped, indices, env_kwargs=shared, out=files["forced"], desc=wrapped.name, **common
                    ).records
                row["search_utility"] = search_utility(main, no_search, forced)
            rows.append(row)
    finally:
        probe.close()  # closes the shared search backend too

    config = {
        "dataset": dataset if isinstance(dataset, str) or dataset is None else type(dataset).__name__,
        "split": split,
        "episodes": len(indices),
        "protocol": protocol.name if hasattr(protocol, "name") else str(protocol),
        "max_searches_per_episode": base.max_searches_per_episode,
        "max_turns": base.max_turns,
        "search_utility": bool(search_utility_runs),
        "judge": getattr(judge, "name", None),
        "judge_usage": dict(getattr(judge, "usage", {}) or {}) or None,
        "elapsed_s": round(time.perf_counter() - started, 3),
    }
    if config["dataset"] is None:  # name what the environment's default resolved to
        default = base.config.dataset
        config["dataset"] = default if isinstance(default, str) else "default"
    report = EvalReport(rows, config)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        report.paths["trajectories"] = str(files["main"])
        if plot:
            try:
                plot_accuracy_vs_search(report, out_dir / "accuracy_vs_search.png")
            except ConfigError as exc:  # the rollouts are done: keep the tables, say what is missing
                warnings.warn(f"no plot written: {exc}", stacklevel=2)
            else:
                report.paths["plot"] = str(out_dir / "accuracy_vs_search.png")
        if viewer:
            try:
                from agents.viewer import write_viewer
            except ImportError:
                logger.info("agents.viewer is not available: no HTML viewer written")
            else:
                write_viewer(files["main"], out_dir / "viewer.html")
                report.paths["viewer"] = str(out_dir / "viewer.html")
        report.save(out_dir)
    return report


# -- command line (``mmsearch eval``) ------------------------------------------------------------------
def add_eval_subparser(sub: Any) -> None:
    """Add the ``eval`` subcommand to the ``mmsearch`` parser."""
    p = sub.add_parser("eval", help="evaluate policies side by side: table (Markdown + JSON), plot, trajectories")
    p.add_argument(
        "--policy",
        action="append",
        required=True,
        help="direct | rag | random[:SEED] | oracle | openai:MODEL@BASE_URL | hf:PATH[@ADAPTER] (repeatable)",
    )
    p.add_argument(
        "--dataset",
        default=None,
        help="built-in name, .parquet/.jsonl path, folder or hf:NAME (default: the embedded data)",
    )
    p.add_argument("--split", default="test", help="dataset split, or 'all' (default: test)")
    p.add_argument("--out", default="eval_out", help="output folder; rerun with the same folder to resume")
    p.add_argument("--limit", type=int, default=None, help="only the first N questions")
    p.add_argument("--concurrency", type=int, default=16, help="episodes in flight at once (default: 16)")
    p.add_argument("--protocol", default="tags", choices=["tags", "tool_calls"])
    p.add_argument("--judge", default=None, help="LLM judge: openai:MODEL@BASE_URL (key from $OPENAI_API_KEY)")
    p.add_argument(
        "--search-utility",
        choices=["auto", "on", "off"],
        default="auto",
        help="rerun with search disabled / forced for needed, wasted, missed (auto: on for built-in data)",
    )
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG plot")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_eval_command)


def _eval_command(args: argparse.Namespace) -> int:
    report = evaluate(
        args.policy,
        dataset=args.dataset,
        split=None if args.split == "all" else args.split,
        env_kwargs={"protocol": args.protocol},
        limit=args.limit,
        out=args.out,
        concurrency=args.concurrency,
        judge=args.judge,
        search_utility_runs={"auto": None, "on": True, "off": False}[args.search_utility],
        plot=not args.no_plot,
        progress=not args.quiet,
    )
    print(report.to_markdown())
    for key, path in report.paths.items():
        print(f"{key}: {path}")
    return 0
