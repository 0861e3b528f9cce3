"""The ``mmsearch`` command line: thin subcommands over library functions.

* ``mmsearch demo``: scripted policies over a built-in question set (the corpus test split by default),
  accuracy and search ratios printed: the quickest check that an install works end to end.
* ``mmsearch eval``: policies side by side (:func:`agents.evaluate.evaluate`).
* ``mmsearch curate``: label questions search-free / search-required, write a balanced subset
  (:func:`agents.curate.curate`).
* ``mmsearch view TRAJECTORIES.jsonl --out viewer.html``: the HTML trajectory viewer
  (:func:`agents.viewer.write_viewer`).
* ``mmsearch serve``: the HTTP search service (:func:`mmsearch_env.search.service.serve_main`).
* ``mmsearch serve-model PATH``: a local text-only chat model behind an OpenAI-compatible endpoint
  (:mod:`agents.serve_model`), for ``mmsearch eval --policy openai:NAME@http://127.0.0.1:8000/v1``.

``eval`` and ``curate`` take every environment setting as a flag (``--max-turns``, ``--search``,
``--search-options JSON``, ``--protocol``...: :func:`mmsearch_env.config.add_env_arguments`) and hand
the resulting :class:`~mmsearch_env.config.EnvConfig` down. ``python -m agents.cli`` is the same
program as the ``mmsearch`` console script.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from agents.curate import SHORTFALL, curate, report_markdown
from agents.evaluate import evaluate
from agents.metrics import accuracy_by
from agents.pool import make_env_pool
from agents.rollout import ON_ERROR, rollout
from agents.scripted import OraclePolicy
from agents.serve_model import add_serve_model_arguments, serve_model_main
from agents.threads import configure_threads
from agents.viewer import write_viewer
from mmsearch_env import __version__
from mmsearch_env.config import EnvConfig, add_env_arguments, env_config_from_args
from mmsearch_env.errors import MMSearchError
from mmsearch_env.search.service import add_serve_arguments, serve_main

__all__ = ["build_parser", "main"]


# -- demo ----------------------------------------------------------------------------------------------
def _demo(args: argparse.Namespace) -> int:
    search = "corpus" if args.dataset == "corpus" else "sample"
    config = EnvConfig(dataset=args.dataset, split=args.split, search=search, protocol=args.protocol)
    rows: list[dict[str, Any]] = []
    with make_env_pool(config, size=1) as pool:
        count = len(pool.examples) if args.episodes is None else min(args.episodes, len(pool.examples))
        for use_search in (True, False):
            policy = OraclePolicy(pool.examples, use_search=use_search, protocol=args.protocol)
            result = rollout(policy, range(count), envs=pool, progress=not args.quiet)
            by_need = accuracy_by(result.records, "search_need")
            rows.append(
                {
                    "policy": policy.name,
                    **result.summary().as_row(),
                    "accuracy_by_search_need": {k: v["accuracy"] for k, v in by_need.items()},
                }
            )

    print(f"MMSearch-v0 demo · dataset={args.dataset} split={args.split} protocol={args.protocol} episodes={count}")
    header = f"{'policy':<18}{'accuracy':>9}{'reward':>8}{'format':>8}{'search%ep':>10}{'search%calls':>13}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['policy']:<18}{row['accuracy']:>9.3f}{row['mean_reward']:>8.3f}{row['format_rate']:>8.3f}"
            f"{100 * row['search_ratio_episodes']:>10.1f}{100 * row['search_ratio_calls']:>13.1f}"
        )
    for row in rows:
        parts = ", ".join(f"{k}={v:.2f}" for k, v in row["accuracy_by_search_need"].items())
        print(f"  {row['policy']} accuracy by search need: {parts}")
    print(
        "Both rows are scripted checks, not models: oracle-plan follows each question's ideal search plan, so its "
        "accuracy is the share of questions the offline search can answer (near 1.0 expected); oracle-no-search "
        "answers only what the picture shows (far lower). Models: mmsearch eval --policy hf:PATH (docs/evaluation.md)."
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=2)
        print(f"wrote {args.json}")
    return 0


# -- eval ----------------------------------------------------------------------------------------------
def _eval(args: argparse.Namespace) -> int:
    config = env_config_from_args(args)
    report = evaluate(
        args.policy,
        split=config.split,
        env_config=config,
        limit=args.limit,
        out=args.out,
        concurrency=args.concurrency,
        judge=args.judge,
        search_utility_runs={"auto": None, "on": True, "off": False}[args.search_utility],
        plot=not args.no_plot,
        progress=not args.quiet,
        on_error=args.on_error,
        generation=_generation(args),
    )
    print(report.to_markdown())
    for key, path in report.paths.items():
        print(f"{key}: {path}")
    return 0


def _add_generation_arguments(
    parser: argparse.ArgumentParser, *, temperature: float | None, temperature_help: str
) -> None:
    """Generation settings of the model policies (``openai:``, ``hf:``); they win over an openai: spec's
    ``?settings``."""
    gen = parser.add_argument_group("generation (openai: and hf: policies; override the spec's ?settings)")
    gen.add_argument("--max-tokens", type=int, default=None, help="cap on tokens per reply (default: 2048; hf: 256)")
    gen.add_argument("--temperature", type=float, default=temperature, help=temperature_help)
    gen.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass (openai:)")
    gen.add_argument("--stop", action="append", default=None, help="stop string (openai:; repeatable)")
    gen.add_argument(
        "--request-timeout", type=float, default=None, help="seconds per request before it is abandoned (default: 120)"
    )
    gen.add_argument("--retries", type=int, default=None, help="retries of a failed request (openai:; default: 2)")


def _generation(args: argparse.Namespace, *, with_temperature: bool = True) -> dict[str, Any]:
    return {
        "max_tokens": args.max_tokens,
        "temperature": args.temperature if with_temperature else None,
        "top_p": args.top_p,
        "stop": tuple(args.stop) if args.stop else None,
        "timeout": args.request_timeout,
        "max_retries": args.retries,
    }


# -- curate --------------------------------------------------------------------------------------------
def _curate(args: argparse.Namespace) -> int:
    config = env_config_from_args(args)
    result = curate(
        args.policy,
        split=config.split,
        env_config=config,
        out=args.out,
        rollouts=args.rollouts,
        ratio=args.ratio,
        concurrency=args.concurrency,
        seed=args.seed,
        on_shortfall=args.on_shortfall,
        max_size=args.max_size,
        limit=args.limit,
        temperature=args.temperature,
        generation=_generation(args, with_temperature=False),
        progress=not args.quiet,
        on_error=args.on_error,
    )
    print(report_markdown(result.report))
    for key, path in result.paths.items():
        print(f"{key}: {path}")
    return 0


# -- view ----------------------------------------------------------------------------------------------
def _view(args: argparse.Namespace) -> int:
    out = write_viewer(args.trajectories, args.out, images_dir=args.images, max_episodes=args.max_episodes)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0


# -- the parser ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``mmsearch`` argument parser (each subcommand's handler is its ``func`` default)."""
    parser = argparse.ArgumentParser(
        prog="mmsearch", description="MMSearch-v0: teach multimodal models when to search.", allow_abbrev=False
    )
    parser.add_argument("--version", action="version", version=f"mmsearch-env {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="run scripted policies on a built-in question set and print accuracy and search ratios"
    )
    demo.add_argument("--dataset", default="corpus", choices=["corpus", "sample"], help="built-in question set")
    demo.add_argument("--split", default="test", choices=["train", "validation", "test", "all"])
    demo.add_argument("--protocol", default="tags", choices=["tags", "tool_calls"])
    demo.add_argument("--episodes", type=int, default=None, help="at most this many questions (default: all)")
    demo.add_argument("--json", default=None, help="also write the results to this JSON file")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=_demo)

    ev = sub.add_parser("eval", help="evaluate policies side by side: table (Markdown + JSON), plot, trajectories")
    ev.add_argument(
        "--policy",
        action="append",
        required=True,
        help="direct | rag | random[:SEED] | oracle[:box] | openai:MODEL@BASE_URL[?max_tokens=..&temperature=..] | "
        "hf:PATH[@ADAPTER] (repeatable)",
    )
    ev.add_argument("--out", default="runs/eval", help="output folder; rerun with the same folder to resume")
    ev.add_argument("--limit", type=int, default=None, help="only the first N questions")
    ev.add_argument(
        "--concurrency",
        type=int,
        default=16,
        help="episodes in flight at once, and requests in flight of an openai: policy unless its spec sets "
        "concurrency= (default: 16)",
    )
    _add_generation_arguments(ev, temperature=None, temperature_help="sampling temperature (default: 0, greedy)")
    ev.add_argument("--judge", default=None, help="LLM judge: openai:MODEL@BASE_URL (key from $OPENAI_API_KEY)")
    ev.add_argument(
        "--search-utility",
        choices=["auto", "on", "off"],
        default="auto",
        help="rerun with search disabled / forced for needed, wasted, missed (auto: on for built-in data)",
    )
    ev.add_argument("--no-plot", action="store_true", help="do not write the PNG plot")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    ev.add_argument(
        "--on-error",
        choices=ON_ERROR,
        default="skip",
        help="an episode that cannot be played (bad data row, failed model request): skip it and list it in "
        "the report (default; a rerun retries it), or stop",
    )
    # Evaluation's own default split is test; every other setting is the environment's default.
    ev.add_argument("--split", dest="env_split", default="test", help="dataset split, or 'all' (default: test)")
    add_env_arguments(ev, skip=("split",))
    ev.set_defaults(func=_eval)

    cu = sub.add_parser("curate", help="label questions search-free / search-required and write a balanced subset")
    cu.add_argument(
        "--policy", required=True, help="hf:PATH[@ADAPTER] | openai:MODEL@BASE_URL | random[:SEED] | oracle | ..."
    )
    cu.add_argument("--rollouts", type=int, default=8, help="K rollouts per question per pass (default: 8)")
    cu.add_argument("--ratio", type=float, default=0.68, help="search-required share of the subset (default: 0.68)")
    cu.add_argument("--out", default="runs/curate", help="output folder; rerun with the same folder to resume")
    cu.add_argument("--concurrency", type=int, default=16, help="episodes in flight at once (default: 16)")
    cu.add_argument("--on-shortfall", choices=SHORTFALL, default="shrink", help="keep the ratio, or keep all")
    cu.add_argument("--max-size", type=int, default=None, help="at most this many questions in the subset")
    cu.add_argument("--limit", type=int, default=None, help="only the first N questions")
    cu.add_argument("--seed", type=int, default=0, help="seed of the subset sampling and of an hf: policy's sampling")
    _add_generation_arguments(
        cu, temperature=1.0, temperature_help="sampling temperature (default: 1.0, the paper's rollouts)"
    )
    cu.add_argument("--quiet", action="store_true", help="no progress bars")
    cu.add_argument(
        "--on-error",
        choices=ON_ERROR,
        default="skip",
        help="an episode that cannot be played (bad data row, failed model request): skip it and list it in "
        "the report (default; a rerun retries it), or stop",
    )
    add_env_arguments(cu)  # --search is the search-enabled pass's backend; the other pass has none
    cu.set_defaults(func=_curate)

    view = sub.add_parser("view", help="write a self-contained HTML viewer for a trajectory JSONL file")
    view.add_argument("trajectories", help="the JSONL of episode records (images/ next to it)")
    view.add_argument("--out", default="viewer.html", help="the HTML file to write (default: viewer.html)")
    view.add_argument("--images", default=None, help="images folder (default: images/ next to the JSONL)")
    view.add_argument("--max-episodes", type=int, default=None, help="render only the first N episodes")
    view.set_defaults(func=_view)

    serve = sub.add_parser("serve", help="HTTP search service (cache + rate limit + retries) for many trainers")
    add_serve_arguments(serve)
    serve.set_defaults(func=serve_main)

    serve_model = sub.add_parser(
        "serve-model", help="serve a local text-only chat model on an OpenAI-compatible endpoint (CPU, tests)"
    )
    add_serve_model_arguments(serve_model)
    serve_model.set_defaults(func=serve_model_main)

    for command in sub.choices.values():
        command.allow_abbrev = False  # a mistyped --max-turn must not pass for --max-turns
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``mmsearch`` command line; returns the exit status (2 on a usage or configuration error)."""
    args = build_parser().parse_args(argv)
    configure_threads()
    try:
        return int(args.func(args))
    except MMSearchError as exc:
        print(f"mmsearch: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
