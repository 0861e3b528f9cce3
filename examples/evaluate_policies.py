"""python examples/evaluate_policies.py --policies direct,rag,random,oracle --split test --out runs/eval

Evaluate policies side by side on MMSearch-v0, like the paper's Table 1: exact-match accuracy (and
LLM-judge accuracy with --judge), both search ratios, search utility (needed / wasted / missed),
tokens, latency and cost. Writes runs/eval/report.md, report.json, accuracy_vs_search.png and the
trajectories (rerun to resume). Policies: direct, rag, random[:SEED], oracle,
openai:MODEL@BASE_URL (e.g. a vLLM server), hf:PATH (a local transformers model). Every environment
setting is a flag too (--dataset, --split, --max-turns, --search, --search-penalty, ...). The four
model-free policies are plumbing checks, not baselines (the report says so). All 1,013 test questions,
each policy also rerun without and with forced search, take 4 minutes on an idle 2-core machine
(234 s measured; progress lines with an ETA go to stderr); --limit 50 gives a first table in about a
minute (52 s on 2 shared cores).

Same as: mmsearch eval --policy direct --policy rag --policy random --policy oracle --out runs/eval
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

from agents.evaluate import evaluate
from agents.threads import configure_threads
from mmsearch_env.config import EnvConfig, add_env_arguments, env_config_from_args


@dataclass
class Args:
    # Parameters that choose what is evaluated
    policies: str = field(default="direct,rag,random,oracle", metadata={"help": "comma-separated policy specs"})
    limit: int | None = field(default=None, metadata={"help": "only the first N questions"})
    # Parameters that control how
    judge: str | None = field(default=None, metadata={"help": "LLM judge, openai:MODEL@BASE_URL"})
    search_utility: str = field(
        default="auto", metadata={"help": "auto | on | off: rerun without / with forced search"}
    )
    concurrency: int = field(default=16, metadata={"help": "episodes in flight at once"})
    out: str = field(default="runs/eval", metadata={"help": "output folder"})


def parse_args() -> tuple[Args, EnvConfig]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2], allow_abbrev=False)
    for f in dataclasses.fields(Args):
        kind = int if f.name in ("limit", "concurrency") else str
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default, help=f.metadata["help"])
    add_env_arguments(parser)  # one flag per environment setting
    namespace = parser.parse_args()
    args = Args(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(Args)})
    return args, env_config_from_args(namespace, split="test")


def main() -> None:
    args, env_config = parse_args()
    configure_threads()

    # ---- run every policy (plus the search-disabled / forced-search reruns) ---------------------------
    report = evaluate(
        args.policies.split(","),
        split=env_config.split,
        env_config=env_config,
        limit=args.limit,
        judge=args.judge,
        search_utility_runs={"auto": None, "on": True, "off": False}[args.search_utility],
        concurrency=args.concurrency,
        out=args.out,
    )

    # ---- the table, and where everything went -------------------------------------------------------
    print(report.to_markdown())
    best = max(report.rows, key=lambda row: (row["accuracy"], -row["search_ratio_calls"]))
    print(
        f"most accurate: {best['policy']} ({100 * best['accuracy']:.1f}% at {100 * best['search_ratio_episodes']:.0f}% searched)"
    )
    if all(row["model_free"] for row in report.rows):
        print("No model in this run: every row is a plumbing check (see the note under the table), not a baseline.")
    for name, path in report.paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
