"""The evaluation harness: the paper's Table 1 for any policy, plus the search utility no benchmark reports.

From Python::

    from agents.evaluate import evaluate
    report = evaluate(["direct", "rag", "oracle"], split="test", out="runs/eval")
    print(report.to_markdown())

From the shell: ``mmsearch eval --policy rag --policy oracle --split test --out runs/eval`` (every
environment setting is a flag too: ``--max-turns``, ``--search``, ``--search-options JSON``...).

For each policy it runs one :func:`agents.rollout.rollout` over the questions and computes (with
:mod:`agents.metrics`, where every number is defined):

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

import json
import logging
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents import baselines
from agents.judge import JudgeItem, LLMJudge
from agents.metrics import policy_metrics, search_utility
from agents.pool import make_env_pool
from agents.resolve import BASELINE_NAMES, resolve_policy
from agents.rollout import env_config_argument, rollout
from agents.viewer import write_viewer
from mmsearch_env.config import EnvConfig
from mmsearch_env.data import BUILTIN_DATASETS
from mmsearch_env.errors import ConfigError, MMSearchError
from mmsearch_env.records import EpisodeRecord

__all__ = [
    "BASELINE_NAMES",
    "EvalReport",
    "evaluate",
    "policy_metrics",
    "resolve_judge",
    "resolve_policy",
    "search_disabled_kwargs",
    "search_utility",
]

logger = logging.getLogger(__name__)


def search_disabled_kwargs(env_config: EnvConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The ``gym.make`` arguments of :meth:`EnvConfig.search_disabled`: no backend (and none of its
    ``search_options``) and both search limits 0 (the prompt says so, and a search the policy still asks
    for ends the episode). Prefer ``EnvConfig.search_disabled()``."""
    return EnvConfig.coerce(env_config).search_disabled().to_dict()


def resolve_judge(spec: Any) -> Any:
    """``None``, an object with ``judge_batch``, or ``"openai:MODEL@BASE_URL"`` → a judge."""
    if spec is None or hasattr(spec, "judge_batch"):
        return spec
    if isinstance(spec, str):
        return LLMJudge.from_spec(spec)
    raise ConfigError(f"judge must be 'openai:MODEL@BASE_URL' or an LLMJudge, got {type(spec).__name__}")


# -- the report ----------------------------------------------------------------------------------------
#: Under the table whenever a row used no model (a policy whose ``model_free`` is true).
PLUMBING_NOTE = (
    "**Plumbing checks, not baselines:** {names} use no model: scripted search plans, and answers from the "
    "model-free extractive reader (it cannot see the image and knows nothing). They show that the environment, "
    "search and scoring work; a floor or a Table 1 needs a model policy (`hf:PATH`, `openai:MODEL@BASE_URL`)."
)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


@dataclass
class EvalReport:
    """The evaluation's result: one row per policy, and where the files went.

    Attributes:
        rows: per policy, ``{"policy": name, **policy_metrics(...), "search_utility": {...} | None,
            "model_free": bool}`` (``model_free``: the policy used no model, see :data:`PLUMBING_NOTE`).
        config: dataset, split, episodes, limits: what was evaluated.
        paths: ``trajectories`` (+ ``trajectories_no_search``, ``trajectories_forced_search``),
            ``report_md``, ``report_json``, ``plot``, ``viewer`` (those written).
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
        plumbing = [r["policy"] for r in self.rows if r.get("model_free")]
        # without a model the table compares scripts: it must not read as a results table
        kind = "plumbing check (no model evaluated)" if len(plumbing) == len(self.rows) else "evaluation"
        lines = [
            f"# MMSearch-v0 {kind}: dataset `{c['dataset']}`, split `{c['split'] or 'all'}`, {c['episodes']} questions",
            "",
            "Accuracy and search ratios in %. *search % episodes*: share of episodes that searched; "
            f"*search % calls*: searches made / the most allowed ({c['max_searches_per_episode']} per episode). "
            "*format %*: episodes whose every turn was well formed; *cut-off replies*: turns that hit the "
            "token cap (`finish_reason` length) / turns written.",
            "",
            "| policy | accuracy (exact) | accuracy (judge) | format % | cut-off replies | search % episodes | "
            "search % calls | image / text searches | search errors / malformed / truncated | mean reward | "
            "tokens in / out | latency s (mean / p95) | search cost $ |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            f = r["failures"]
            tokens = "–" if r["prompt_tokens"] is None else f"{r['prompt_tokens']} / {r['completion_tokens']}"
            cut = f"{r.get('truncated_replies', 0)} / {r.get('replies', 0)}"
            lines.append(
                f"| {r['policy']} | {_pct(r['accuracy'])} | {_pct(r['judge_accuracy'])} | "
                f"{_pct(r.get('format_rate'))} | {cut} | {_pct(r['search_ratio_episodes'])} | {_pct(r['search_ratio_calls'])} | "
                f"{r['image_searches']} / {r['text_searches']} | {f['search_errors']} / {f['malformed']} / "
                f"{f['truncated']} | {r['mean_reward']:.3f} | {tokens} | {r['mean_latency_s']:.3f} / "
                f"{r['p95_latency_s']:.3f} | {r['search_cost_usd']:.4f} |"
            )
        if plumbing:
            lines += ["", PLUMBING_NOTE.format(names=", ".join(plumbing))]
        skipped = [(r["policy"], s) for r in self.rows for s in r.get("skipped") or []]
        if skipped:
            lines += [
                "",
                f"## Skipped episodes ({len(skipped)})",
                "",
                "Not counted above: these episodes could not be played (rerun the same command to retry them).",
                "",
                "| policy | index | question id | error |",
                "|---|---|---|---|",
            ]
            for policy, s in skipped:
                error = str(s["error"]).replace("|", "\\|").replace("\n", " ")[:300]
                lines.append(f"| {policy} | {s['index']} | {s['example_id'] or '–'} | {error} |")
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
        regions = [r for r in self.rows if r.get("region_searches")]
        if regions:
            lines += [
                "",
                "## Region image searches",
                "",
                "| policy | image searches | with a region | episodes with a region |",
            ]
            lines.append("|---|---|---|---|")
            for r in regions:
                g = r["region_searches"]
                lines.append(
                    f"| {r['policy']} | {g['image_searches']} | {g['region_searches']} | {g['episodes_with_region']} |"
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
def _judge_records(judge: Any, records: Sequence[EpisodeRecord]) -> list[bool | None]:
    items = [
        JudgeItem(
            question=r.question,
            answer=r.answer,
            ground_truth=r.ground_truth,
            candidate_answers=tuple(r.candidate_answers),
        )
        for r in records
    ]
    return judge.judge_batch(items)


def evaluate(
    policies: Sequence[Any] | Any,
    dataset: Any = None,
    split: str | None = "test",
    *,
    env_config: EnvConfig | Mapping[str, Any] | None = None,
    limit: int | None = None,
    indices: Sequence[int] | None = None,
    out: str | os.PathLike[str] | None = None,
    concurrency: int = 16,
    judge: Any = None,
    search_utility_runs: bool | None = None,
    plot: bool = True,
    viewer: bool = True,
    progress: bool = True,
    on_error: str = "skip",
    env_kwargs: Mapping[str, Any] | None = None,
    generation: Mapping[str, Any] | None = None,
) -> EvalReport:
    """Evaluate policies side by side and write the report (see the module docstring).

    Args:
        policies: policy objects or names (:func:`resolve_policy`), or one of them.
        dataset: the questions (``gym.make``'s ``dataset``); ``None``: ``env_config``'s (by default the
            embedded data).
        split: the dataset split (``None``: all); it overrides ``env_config``'s.
        env_config: every other environment setting (``search``, ``protocol``, limits, reward weights...):
            an :class:`~mmsearch_env.config.EnvConfig` or a dict of ``gym.make`` arguments.
        limit: evaluate only the first ``limit`` questions; ``indices``: exactly these dataset indices.
        out: output folder for trajectories, report, plot and viewer (``None``, the default: write
            nothing, no resume).
        concurrency: episodes in flight at once (see :func:`agents.rollout.rollout`).
        judge: ``"openai:MODEL@BASE_URL"`` or an :class:`agents.judge.LLMJudge` for judged accuracy.
        search_utility_runs: rerun with search disabled and forced; ``None``: on for built-in datasets.
        plot, viewer: write the PNG plot / the HTML viewer (when ``agents.viewer`` can be imported).
        on_error: ``"skip"`` (default) or ``"stop"``: what an episode that cannot be played (a bad dataset
            row, a failed model request) does to the run (see :func:`agents.rollout.rollout`). Skipped
            episodes are counted per policy and listed in the report; a rerun retries them.
        env_kwargs: the older name of ``env_config`` (deprecated).
        generation: generation settings of the model policies named by spec (``max_tokens``,
            ``temperature``, ``top_p``, ``stop``, ``timeout``, ``max_retries``, ``concurrency``), winning over
            an ``openai:`` spec's query (see :func:`resolve_policy`). Text-only models: set the environment's
            ``image_position="none"`` (its prompt says the image is not shown; ``openai:`` then sends no images).
    """
    started = time.perf_counter()
    config = env_config_argument(env_config, env_kwargs)
    config = config.replace(split=split, **({} if dataset is None else {"dataset": dataset}))
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive number of questions, got {limit!r}")
    if search_utility_runs is None:
        search_utility_runs = isinstance(config.dataset, str) and config.dataset in BUILTIN_DATASETS
    judge = resolve_judge(judge)
    out_dir = Path(out) if out is not None else None
    files = {
        kind: (out_dir / f"trajectories{suffix}.jsonl" if out_dir else None)
        for kind, suffix in (("main", ""), ("no_search", ".no_search"), ("forced", ".forced_search"))
    }
    # One pool for every run (and its search-disabled twin): the dataset is loaded and the backend built
    # once, and closed once at the end.
    with (
        make_env_pool(config, concurrency) as pool,
        pool.search_disabled() if search_utility_runs else nullcontext() as off,
    ):
        base = pool[0].unwrapped
        indices = list(range(len(pool.examples)) if indices is None else indices)[:limit]
        policy_objects = [
            resolve_policy(
                p,
                examples=pool.examples,
                protocol=base.protocol,
                generation=generation,
                concurrency=concurrency,
                text_only=config.image_position == "none",
            )
            for p in (policies if isinstance(policies, (list, tuple)) else [policies])
        ]
        names = [p.name for p in policy_objects]
        if len(set(names)) != len(names):
            raise ConfigError(f"policy names must be unique in one evaluation (they key the results), got {names}")
        forced_possible = base.max_turns >= 2 and pool.max_searches_per_episode > 0
        common = {"concurrency": concurrency, "split": split, "progress": progress, "on_error": on_error}
        rows = []
        for policy in policy_objects:
            run = rollout(policy, indices, envs=pool, out=files["main"], desc=policy.name, **common)
            main = run.records
            judged = _judge_records(judge, main) if judge is not None else None
            row = {"policy": policy.name, **policy_metrics(main, pool.max_searches_per_episode, judged)}
            row["model_free"] = bool(getattr(policy, "model_free", False))
            row["skipped"] = [s.to_dict() for s in run.skipped]
            row["search_utility"] = None
            if search_utility_runs:
                no_search = rollout(
                    policy, indices, envs=off, out=files["no_search"], desc=f"{policy.name} (no search)", **common
                ).records
                forced = None
                if forced_possible:
                    wrapped = baselines.ForcedSearchPolicy(policy, protocol=base.protocol)
                    forced = rollout(
                        wrapped, indices, envs=pool, out=files["forced"], desc=wrapped.name, **common
                    ).records
                row["search_utility"] = search_utility(main, no_search, forced)
            rows.append(row)

    protocol = base.protocol
    report = EvalReport(
        rows,
        {
            "dataset": config.dataset if isinstance(config.dataset, str) else type(config.dataset).__name__,
            "split": split,
            "episodes": len(indices),
            "protocol": protocol.name if hasattr(protocol, "name") else str(protocol),
            "max_searches_per_episode": config.max_searches_per_episode,
            "max_turns": config.max_turns,
            "search_utility": bool(search_utility_runs),
            "judge": getattr(judge, "name", None),
            "judge_usage": dict(getattr(judge, "usage", {}) or {}) or None,
            "elapsed_s": round(time.perf_counter() - started, 3),
        },
    )
    if out_dir is not None:
        _write_outputs(report, out_dir, files["main"], plot=plot, viewer=viewer)
    return report


def _write_outputs(report: EvalReport, out_dir: Path, trajectories: Path, *, plot: bool, viewer: bool) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    report.paths["trajectories"] = str(trajectories)
    for run in ("no_search", "forced_search"):  # the search-utility reruns, when they ran
        rerun = trajectories.with_name(f"trajectories.{run}.jsonl")
        if rerun.is_file():
            report.paths[f"trajectories_{run}"] = str(rerun)
    if plot:
        try:
            plot_accuracy_vs_search(report, out_dir / "accuracy_vs_search.png")
        except ConfigError as exc:  # the rollouts are done: keep the tables, say what is missing
            warnings.warn(f"no plot written: {exc}", stacklevel=3)
        else:
            report.paths["plot"] = str(out_dir / "accuracy_vs_search.png")
    if viewer:
        try:
            write_viewer(trajectories, out_dir / "viewer.html")
        except MMSearchError as exc:  # like the plot: the rollouts are done, keep the tables
            warnings.warn(f"no viewer written: {exc}", stacklevel=3)
        else:
            report.paths["viewer"] = str(out_dir / "viewer.html")
    report.save(out_dir)
