"""Why the tiny VLM does not learn to copy when the question's image is shown first.

    python benchmarks/image_first_copy.py                         # writes benchmarks/results/image_first_copy.md
    python benchmarks/image_first_copy.py --steps 300 --seeds 0 1 --conditions none first first-no-image

The reading pass of ``experiments/on_demand`` (drills where the model copies the country's name from
the question into its text search and the answer from the results; loss on the two copied tokens
only) is run under several conditions with the same budget, and the held-out copy accuracy of both
slots (teacher-forced, :func:`~experiments.on_demand.finetune.slot_accuracy`) is recorded every
``--check-every`` steps. The conditions are the env's ``image_position`` (``none``, ``first``,
``last``) and ``first`` with one candidate cause removed at a time (see :data:`CONDITIONS`).

Every condition of one seed trains on the same drills in the same order from the same initial
weights: only what the image contributes differs. The reading pass is
:func:`experiments.on_demand.finetune.fit` as the experiment runs it; the only change is that the
loss is computed on the labelled positions alone (``fit`` uses
:func:`experiments.on_demand.finetune.labelled_loss`, which calls the inner ``model.model``: the
interventions therefore patch the inner model, so that training and checks both see them).
``--report-only`` rewrites the page from the JSON beside it, with ``--summary`` (the finding, in a
markdown file) at the top.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file: the experiments package lives at the repository root
    sys.path.insert(0, str(ROOT))

from experiments.on_demand.config import PROMPTS, OnDemandConfig  # noqa: E402
from experiments.on_demand.data import country_names, cut_to, select_questions, write_questions  # noqa: E402
from experiments.on_demand.episodes import Episode, sft_episodes  # noqa: E402
from experiments.on_demand.finetune import build_base_model, copy_labeler, fit, slot_accuracy  # noqa: E402
from mmsearch_env.data import Example  # noqa: E402

RESULTS = Path(__file__).parent / "results"
logger = logging.getLogger("benchmarks.image_first_copy")


@dataclass(frozen=True)
class Condition:
    """One arm: where the env puts the question's image, and what is done to it inside the model."""

    image_position: str
    #: ``None``, or the name of a model intervention of :func:`intervened`.
    intervention: str | None
    description: str


#: The arms. Every ``first-*`` arm removes one thing the image brings to the sequence.
CONDITIONS: dict[str, Condition] = {
    "none": Condition("none", None, "no image (the experiment's setting)"),
    "first": Condition("first", None, "image before the question text"),
    "last": Condition("last", None, "image after the question text"),
    "first-1d-positions": Condition(
        "first", "1d_positions", "image first, plain sequential 1-D positions instead of M-RoPE's 3-D ones"
    ),
    "first-frozen-vision": Condition("first", "frozen_vision", "image first, vision tower frozen (not trained)"),
    "first-scaled-image": Condition(
        "first", "scaled_image", "image first, image features rescaled to the mean text-embedding norm"
    ),
    "first-zero-image": Condition("first", "zero_image", "image first, image features replaced by zeros"),
    "none-shifted-positions": Condition(
        "none",
        "shifted_positions",
        "no image, every position id + 4: the same function under RoPE (which sees only relative positions) "
        "up to rounding, a control for how much the emergence step moves on a perturbation that changes nothing",
    ),
    "first-text-pads": Condition(
        "first",
        "text_pads",
        "image first, but no vision tower: its placeholder tokens stay plain text tokens (same length, 1-D positions)",
    ),
}


# -- the model side ---------------------------------------------------------------------------------
@contextlib.contextmanager
def intervened(model: Any, intervention: str | None) -> Iterator[None]:
    """``model`` (a Qwen2.5-VL ``ForConditionalGeneration``) with ``intervention`` applied inside it,
    undone on exit.

    * ``1d_positions``: ``model.model.compute_3d_position_ids`` returns ``None``, so the text model
      uses ``arange(seq_len)`` in all three M-RoPE sections, as for a text-only batch.
    * ``frozen_vision``: ``model.model.visual.requires_grad_(False)`` (set before :func:`fit` builds
      its optimizer).
    * ``scaled_image`` / ``zero_image``: the vision tower's output (``get_image_features``'s
      ``pooler_output``) rescaled per token to the mean norm of the text embeddings / set to zero.
    * ``shifted_positions``: ``position_ids`` ``arange(seq_len) + 4`` in all three sections (text-only
      batches; without the intervention they are ``arange(seq_len)``).
    * ``text_pads``: ``pixel_values`` and ``image_grid_thw`` dropped from every forward: the image's
      placeholder tokens keep their own (learned, example-independent) token embeddings and positions
      are 1-D. The sequence is token for token that of ``first``.
    """
    import torch

    inner = model.model
    saved: dict[str, Any] = {}

    def patch(owner: Any, name: str, value: Any) -> None:
        saved[(id(owner), name)] = (owner, name, owner.__dict__.get(name))
        setattr(owner, name, value)

    if intervention == "1d_positions":
        patch(inner, "compute_3d_position_ids", lambda *a, **k: None)
    elif intervention == "frozen_vision":
        inner.visual.requires_grad_(False)
    elif intervention in ("scaled_image", "zero_image"):
        original = inner.get_image_features
        with torch.no_grad():
            text_norm = model.get_input_embeddings().weight.norm(dim=-1).mean()

        def features(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            if intervention == "zero_image":
                out.pooler_output = tuple(torch.zeros_like(f) for f in out.pooler_output)
            else:
                out.pooler_output = tuple(
                    f * (text_norm / f.norm(dim=-1, keepdim=True).clamp_min(1e-6)) for f in out.pooler_output
                )
            return out

        patch(inner, "get_image_features", features)
    elif intervention == "shifted_positions":
        current = inner.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            batch, length = kwargs["input_ids"].shape
            kwargs["position_ids"] = (torch.arange(length) + 4).view(1, 1, -1).expand(3, batch, -1)
            return current(*args, **kwargs)

        patch(inner, "forward", forward)
    elif intervention == "text_pads":
        current = inner.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            for key in ("pixel_values", "image_grid_thw"):
                kwargs.pop(key, None)
            return current(*args, **kwargs)

        patch(inner, "forward", forward)
    elif intervention is not None:
        raise ValueError(f"unknown intervention {intervention!r}")
    try:
        yield
    finally:
        for owner, name, value in saved.values():
            if value is None:
                delattr(owner, name)
            else:
                setattr(owner, name, value)
        if intervention == "frozen_vision":
            inner.visual.requires_grad_(True)


# -- the data side ----------------------------------------------------------------------------------
@dataclass
class Prepared:
    """One seed's questions, base model and environment, shared by every condition."""

    config: OnDemandConfig
    examples: list[Example]
    base: Path
    env: Any  # EnvConfig with dataset set, image_position "none"


def prepare(work: Path, seed: int, config: OnDemandConfig | None = None) -> Prepared:
    """The experiment's questions (all training and test ones, as its fine-tuning uses; ``config``'s
    ``max_*_questions`` cut them) and its base model for ``seed`` in ``work`` (reused when already
    built there). ``config``: the model's sizes (default :meth:`OnDemandConfig.full`)."""
    config = (config or OnDemandConfig.full()).replace(seed=seed)
    work.mkdir(parents=True, exist_ok=True)
    prompts = work / "prompts.json"
    prompts.write_text(json.dumps(PROMPTS, ensure_ascii=False, indent=2), encoding="utf-8")
    limits = {"train": config.max_train_questions, "test": config.max_test_questions}
    examples = [e for split, limit in limits.items() for e in cut_to(select_questions(split, config), limit)]
    write_questions(examples, work / "sft.parquet")
    base = build_base_model(work / "base", examples, config)
    env = config.env.replace(prompts=str(prompts), dataset=str(work / "sft.parquet"), split=None)
    return Prepared(config=config, examples=examples, base=base, env=env)


def drills(prepared: Prepared, image_position: str, seed: int, n: int) -> list[Episode]:
    """``n`` reading drills drawn with ``seed`` as :func:`experiments.on_demand.finetune.finetune` draws
    them, rendered with the env's ``image_position``: the draws do not depend on it, so every
    position gets the same drills."""
    env = prepared.env.replace(image_position=image_position)
    names = country_names(prepared.examples)
    per_epoch = sft_episodes(prepared.examples, names, env, epochs=1, seed=seed).drills_per_epoch
    epochs = -(-n // max(1, per_epoch))
    return sft_episodes(prepared.examples, names, env, epochs=epochs, seed=seed).drills()[:n]


def run_condition(
    prepared: Prepared,
    condition: Condition,
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    check_every: int = 100,
    check_drills: int = 64,
) -> dict[str, Any]:
    """The reading pass of ``finetune()`` under ``condition``: ``steps`` AdamW steps of ``batch_size``
    drills (loss on the two copied tokens), the copy accuracy of both slots on ``check_drills``
    held-out drills at step 0 and every ``check_every`` steps (and at the last). Returns
    ``{"curve": [{"step", "query", "answer"}, ...], "seconds", "first_loss", "last_loss"}``."""
    import torch

    from agents.grpo import prepare_processing_class  # imports TRL
    from agents.hf_policy import load_pretrained

    seed = prepared.config.seed
    torch.manual_seed(seed)
    model, processor, _ = load_pretrained(prepared.base)
    prepare_processing_class(processor, prepared.env.protocol)
    held_out = drills(prepared, condition.image_position, seed + 2, check_drills)
    train = drills(prepared, condition.image_position, seed + 1, batch_size * steps)
    curve: list[dict[str, Any]] = []

    def check(step: int) -> bool:
        if step % check_every == 0 or step == steps:
            curve.append({"step": step, **slot_accuracy(model, processor, held_out)})
            logger.info("%s, step %d: %s", condition.description, step, curve[-1])
        return False

    start = time.perf_counter()
    with intervened(model, condition.intervention):
        check(0)
        result = fit(
            model,
            processor,
            train,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
            desc=condition.image_position + (f"+{condition.intervention}" if condition.intervention else ""),
            labeler=copy_labeler(processor.tokenizer),
            on_step=check,
        )
    return {
        "curve": curve,
        "seconds": time.perf_counter() - start,
        "first_loss": result.first_loss,
        "last_loss": result.last_loss,
    }


def position_mismatch(model: Any, batch: Mapping[str, Any]) -> Any:
    """Per token of ``batch`` (a processed batch with images), whether the 3-D M-RoPE position ids that
    ``model.model.get_rope_index`` gives differ from plain sequential positions (``0, 1, 2, ...`` over
    the row's unpadded tokens) in any of the three sections. A bool tensor shaped like ``input_ids``
    (False on padding)."""

    positions, _ = model.model.get_rope_index(
        batch["input_ids"],
        mm_token_type_ids=batch["mm_token_type_ids"],
        image_grid_thw=batch["image_grid_thw"],
        attention_mask=batch["attention_mask"],
    )
    mask = batch["attention_mask"].bool()
    sequential = (mask.long().cumsum(-1) - 1).clamp_min(0)
    return (positions != sequential[None]).any(0) & mask


def diagnostics(prepared: Prepared, n: int = 32) -> dict[str, Any]:
    """What the image brings at the start of the reading pass, on ``n`` held-out drills with the image
    first: the vision tower's output norm against the text embeddings', how alike the images' features
    are, and which tokens get non-sequential M-RoPE positions."""
    import torch

    from agents.grpo import prepare_processing_class
    from agents.hf_policy import load_pretrained

    model, processor, _ = load_pretrained(prepared.base)
    prepare_processing_class(processor, prepared.env.protocol)
    episodes = drills(prepared, "first", prepared.config.seed + 2, n)
    batch = processor.apply_chat_template(
        episodes, tokenize=True, return_dict=True, return_tensors="pt", processor_kwargs={"padding": True}
    )
    with torch.no_grad():
        features = torch.cat(
            model.model.get_image_features(batch["pixel_values"], batch["image_grid_thw"]).pooler_output
        )
        text = model.get_input_embeddings()(batch["input_ids"][batch["attention_mask"].bool()])
    cosine = torch.nn.functional.cosine_similarity(features[:, None], features[None], dim=-1)
    off_diagonal = cosine[~torch.eye(len(features), dtype=torch.bool)]
    mismatch = position_mismatch(model, batch)
    image_token = batch["input_ids"] == model.config.image_token_id
    return {
        "image_tokens_per_image": int(image_token.sum()) // len(episodes),
        "image_feature_norm": features.norm(dim=-1).mean().item(),
        "text_embedding_norm": text.norm(dim=-1).mean().item(),
        "image_feature_cosine": off_diagonal.mean().item(),
        "tokens_with_3d_positions_off_sequential": int(mismatch.sum()),
        "of_them_image_tokens": int((mismatch & image_token).sum()),
        "text_tokens_off_sequential": int((mismatch & ~image_token).sum()),
    }


# -- the report -------------------------------------------------------------------------------------
#: The accuracy at which a slot counts as learnt (copying emerges abruptly: 0 to 0.8-1.0 within 100 steps).
EMERGED = 0.5


def _emerged(curve: Sequence[Mapping[str, Any]], slot: str) -> str:
    """The first checked step of ``curve`` at which ``slot`` reached :data:`EMERGED`, or "–"."""
    return next((str(p["step"]) for p in curve if p[slot] >= EMERGED), "–")


def markdown(results: dict[str, Any], summary: str) -> str:
    """The results page: ``summary`` (the root cause, written by hand from the numbers), the table, and
    the :func:`diagnostics` when ``results`` holds them."""
    settings = results["settings"]
    steps = sorted({p["step"] for runs in results["runs"].values() for run in runs.values() for p in run["curve"]})
    lines = [
        "# Does the question image stop the tiny VLM from learning to copy?",
        "",
        f"`{results['command']}` · {results['machine']}",
        "",
        summary.strip(),
        "",
        f"Reading pass of `experiments/on_demand` (tiny VLM, hidden 128, 4 layers): {settings['steps']} steps, "
        f"batch {settings['batch_size']}, lr {settings['lr']}, copy accuracy teacher-forced on "
        f"{settings['check_drills']} held-out drills, **query / answer** (country name copied into the search "
        "/ answer copied from the results). Same drills, order and initial weights in every condition of a seed.",
        "",
    ]
    seeds = sorted({seed for runs in results["runs"].values() for seed in runs}, key=int)
    lines += [
        f"**First checked step at which a slot's accuracy reached {EMERGED:.0%}**, query / answer (– : not within "
        "the budget):",
        "",
        "| condition | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---|" + "---:|" * len(seeds),
    ]
    for name, runs in results["runs"].items():
        cells = []
        for seed in seeds:
            run = runs.get(seed)
            cells.append(" / ".join(_emerged(run["curve"], slot) for slot in ("query", "answer")) if run else "")
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Curves, query / answer accuracy at each check (the last column: minutes of the run):",
        "",
        "| condition | seed | " + " | ".join(f"step {s}" for s in steps) + " | min |",
        "|---|---:|" + "---:|" * len(steps) + "---:|",
    ]
    for name, runs in results["runs"].items():
        for seed, run in runs.items():
            at = {p["step"]: p for p in run["curve"]}
            cells = [f"{at[s]['query']:.2f} / {at[s]['answer']:.2f}" if s in at else "" for s in steps]
            lines.append(f"| `{name}` | {seed} | " + " | ".join(cells) + f" | {run['seconds'] / 60:.1f} |")
    lines += ["", "Conditions:", ""]
    lines += [f"- `{name}`: {CONDITIONS[name].description}" for name in results["runs"]]
    if "diagnostics" in results:
        d = results["diagnostics"]
        lines += [
            "",
            f"At the start (seed {d['seed']}, 32 held-out drills, image first): {d['image_tokens_per_image']} image "
            f"tokens per image; vision-tower output norm {d['image_feature_norm']:.3f} against "
            f"{d['text_embedding_norm']:.3f} for the text tokens' embeddings; mean cosine between the image "
            f"tokens' features {d['image_feature_cosine']:.3f}; M-RoPE 3-D positions that differ from "
            f"sequential 1-D ones: {d['tokens_with_3d_positions_off_sequential']} tokens, "
            f"{d['of_them_image_tokens']} of them image tokens, {d['text_tokens_off_sequential']} text tokens.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (``--help``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="reading steps per condition")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="seeds (each: its own questions split, model)"
    )
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--check-every", type=int, default=100)
    parser.add_argument("--check-drills", type=int, default=64)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "image-first-copy", help="work folder")
    parser.add_argument("--out", type=Path, default=RESULTS / "image_first_copy.md", help="results page")
    parser.add_argument("--report-only", action="store_true", help="no runs: rewrite the page from the JSON beside it")
    parser.add_argument("--summary", type=Path, default=None, help="a markdown paragraph to put at the top")
    args = parser.parse_args(argv)

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import platform

    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    json_path = args.out.with_suffix(".json")
    results = {
        "command": "python benchmarks/image_first_copy.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}",
        "settings": {k: getattr(args, k) for k in ("steps", "batch_size", "lr", "check_drills")},
        "runs": {},
    }
    if json_path.is_file():  # a rerun with the same settings adds to (and keeps) the runs already there
        earlier = json.loads(json_path.read_text())
        earlier_settings = {k: v for k, v in earlier.get("settings", {}).items() if k != "check_every"}
        if earlier_settings == results["settings"]:
            results["runs"] = earlier["runs"]
            if not args.report_only:
                results["command"] = earlier["command"] + " ; " + results["command"]
            else:
                results["command"] = earlier["command"]
    for seed in [] if args.report_only else args.seeds:
        prepared = prepare(args.work / f"seed{seed}", seed)
        for name in args.conditions:
            if str(seed) in results["runs"].get(name, {}):
                logger.info("%s, seed %d: done already in %s", name, seed, json_path)
                continue
            run = run_condition(
                prepared,
                CONDITIONS[name],
                steps=args.steps,
                batch_size=args.batch_size,
                lr=args.lr,
                check_every=args.check_every,
                check_drills=args.check_drills,
            )
            results["runs"].setdefault(name, {})[str(seed)] = {"check_every": args.check_every, **run}
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(results, indent=2) + "\n")  # after every condition: partial results
    results["diagnostics"] = {
        "seed": args.seeds[0],
        **diagnostics(prepare(args.work / f"seed{args.seeds[0]}", args.seeds[0])),
    }
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    summary = args.summary.read_text() if args.summary else ""
    args.out.write_text(markdown(results, summary))
    print(markdown(results, summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
