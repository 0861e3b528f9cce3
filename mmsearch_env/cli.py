"""The ``mmsearch`` command line.

``mmsearch demo``: run scripted policies over a built-in question set (the corpus test split by default) and print accuracy and search
ratios — the quickest check that an install works end to end.
``mmsearch view TRAJECTORIES.jsonl --out viewer.html``: the HTML trajectory viewer (:mod:`agents.viewer`).
``mmsearch eval``: evaluate policies side by side (:mod:`agents.evaluate`).
``mmsearch curate``: label questions search-free / search-required, write a balanced subset (:mod:`agents.curate`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import gymnasium as gym

from mmsearch_env import __version__
from mmsearch_env.errors import MMSearchError

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from agents.rollout import run_episodes, summarize
    from agents.scripted import OraclePolicy

    split = None if args.split == "all" else args.split
    search = "corpus" if args.dataset == "corpus" else "sample"
    env = gym.make("MMSearch-v0", dataset=args.dataset, split=split, search=search, protocol=args.protocol)
    base = env.unwrapped
    indices = range(len(base.examples)) if args.episodes is None else range(min(args.episodes, len(base.examples)))
    rows: list[dict[str, Any]] = []
    for use_search in (True, False):
        policy = OraclePolicy(base.examples, use_search=use_search, protocol=args.protocol)
        finals = run_episodes(env, policy, indices, progress=not args.quiet)
        summary = summarize(finals, base.max_searches_per_episode)
        by_need: dict[str, list[bool]] = {}
        for index, final in zip(indices, finals, strict=True):
            by_need.setdefault(base.examples[index].search_need or "?", []).append(bool(final["correct"]))
        rows.append(
            {
                "policy": policy.name,
                **summary.as_row(),
                "accuracy_by_search_need": {k: sum(v) / len(v) for k, v in sorted(by_need.items())},
            }
        )
    env.close()

    print(
        f"MMSearch-v0 demo · dataset={args.dataset} split={args.split} protocol={args.protocol} episodes={len(indices)}"
    )
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
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=2)
        print(f"wrote {args.json}")
    return 0


def _view(args: argparse.Namespace) -> int:
    from agents.viewer import write_viewer

    out = write_viewer(args.trajectories, args.out, images_dir=args.images, max_episodes=args.max_episodes)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmsearch", description="MMSearch-v0: teach multimodal models when to search."
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
    view = sub.add_parser("view", help="write a self-contained HTML viewer for a trajectory JSONL file")
    view.add_argument("trajectories", help="the JSONL of episode records (images/ next to it)")
    view.add_argument("--out", default="viewer.html", help="the HTML file to write (default: viewer.html)")
    view.add_argument("--images", default=None, help="images folder (default: images/ next to the JSONL)")
    view.add_argument("--max-episodes", type=int, default=None, help="render only the first N episodes")
    view.set_defaults(func=_view)
    from mmsearch_env.search.service import add_serve_arguments, serve_main

    serve = sub.add_parser("serve", help="HTTP search service (cache + rate limit + retries) for many trainers")
    add_serve_arguments(serve)
    serve.set_defaults(func=serve_main)
    from agents.evaluate import add_eval_subparser  # the eval logic lives in agents/evaluate.py

    add_eval_subparser(sub)
    from agents.curate import add_curate_subparser  # the curation logic lives in agents/curate.py

    add_curate_subparser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except MMSearchError as exc:
        print(f"mmsearch: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
