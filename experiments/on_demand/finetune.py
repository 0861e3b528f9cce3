"""The policy that knows some facts: the scaled-up tiny VLM, and its supervised fine-tuning.

Fine-tuning runs in two passes over :func:`~experiments.on_demand.episodes.sft_episodes`: a reading pass
on the drills with the loss on the copied tokens only (:func:`copy_labeler`), stopped early once a
held-out copy check passes, then whole episodes with the loss on every assistant token. Both use
:func:`fit`, this experiment's own small training loop.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agents.added_tokens import add_word_tokens
from agents.grpo import assistant_header_ids, assistant_token_labels, end_of_turn_id
from agents.hf_policy import load_pretrained
from agents.progress import progress_bar
from agents.tiny_vlm import TinyVLMConfig, build_tiny_vlm, load_tiny_vlm
from experiments.on_demand.config import OnDemandConfig
from experiments.on_demand.data import country_names
from experiments.on_demand.episodes import Episode, sft_episodes
from mmsearch_env.config import EnvConfig
from mmsearch_env.data import Example

__all__ = [
    "FitResult",
    "build_base_model",
    "copy_labeler",
    "finetune",
    "fit",
    "labelled_loss",
    "reading_pass",
    "slot_accuracy",
    "slot_labeler",
]

logger = logging.getLogger(__name__)


def build_base_model(out: Path, examples: Sequence[Example], config: OnDemandConfig) -> Path:
    """The tiny VLM scaled up: a tokenizer trained on the corpus texts, plus every country name and answer
    of ``examples`` as one token each (copying an answer from the results is then one attention step,
    which a small model learns in minutes; spelling it out piece by piece it does not). Reused if built."""
    if (out / "config.json").is_file():
        return out
    built = build_tiny_vlm(out.parent / "tiny-vlm", config=TinyVLMConfig(**config.tiny_vlm_kwargs()))
    model, processor = load_tiny_vlm(built)
    names = set(country_names(examples).values())
    add_word_tokens(processor.tokenizer, names | {e.answer for e in examples})
    model.resize_token_embeddings(len(processor.tokenizer), mean_resizing=False)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    processor.tokenizer.save_pretrained(out)
    shutil.copy(built / "tiny_vlm.json", out / "tiny_vlm.json")
    shutil.rmtree(built, ignore_errors=True)
    return out


@dataclass
class FitResult:
    """What :func:`fit` did: the first and last batch loss and the optimizer steps run."""

    first_loss: float
    last_loss: float
    steps: int


def fit(
    model: Any,
    processor: Any,
    episodes: Sequence[Episode],
    *,
    lr: float,
    batch_size: int,
    seed: int,
    desc: str,
    group_by_turns: bool = False,
    labeler: Callable[[Any], Any] | None = None,
    on_step: Callable[[int], bool] | None = None,
    split_by_turns: bool = False,
    banned: Sequence[int] = (),
) -> FitResult:
    """One pass of AdamW over ``episodes`` (chat message lists) in an order shuffled with ``seed``, the
    loss on assistant tokens only.

    The episodes are rendered by the processor's chat template exactly as training and inference see
    them. ``group_by_turns`` batches episodes with the same number of messages together (the batch order
    stays shuffled). ``labeler`` maps the assistant-token labels of one row (a tensor, -100 elsewhere) to
    the labels to train on, e.g. :func:`copy_labeler`. ``on_step`` is called after each optimizer step
    with the number of steps done; returning True stops the pass there (the model is put back in train
    mode after the call). ``split_by_turns`` computes each (mixed) batch as micro-batches of one episode
    length, so short episodes are not padded to the longest: the same gradient (the mean over the batch's
    labelled tokens), less padding. ``banned`` tokens are left out of the loss's softmax (see
    :func:`labelled_loss`). The model is left in eval mode.
    """
    import torch

    tokenizer = getattr(processor, "tokenizer", processor)
    header_ids = assistant_header_ids(tokenizer)
    end_id = end_of_turn_id(tokenizer)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(episodes), generator=generator).tolist()
    if group_by_turns:
        order.sort(key=lambda i: len(episodes[i]))  # stable: shuffled within each length
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    if group_by_turns:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    losses: list[float] = []
    bar = progress_bar(len(batches), desc, unit="batches")  # lines with an ETA when stderr is a log file
    for chosen in batches:
        parts = []
        for part in _micro_batches(chosen, episodes, split_by_turns):
            batch = processor.apply_chat_template(
                [episodes[i] for i in part],
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
                processor_kwargs={"padding": True},
            )
            labels = [assistant_token_labels(row, header_ids, end_id) for row in batch["input_ids"]]
            batch["labels"] = torch.stack([labeler(row) for row in labels] if labeler else labels)
            parts.append({k: v.to(model.device) if hasattr(v, "to") else v for k, v in batch.items()})
        labelled = sum(int((p["labels"][:, 1:] != -100).sum()) for p in parts)
        loss = 0.0
        for batch in parts:
            part_loss = labelled_loss(model, batch, reduction="sum", banned=banned) / max(1, labelled)
            part_loss.backward()
            loss += part_loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss)
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        if on_step is not None:
            stop = on_step(len(losses))
            model.train()
            if stop:
                break
    bar.close()
    model.eval()
    return FitResult(
        first_loss=losses[0] if losses else math.nan, last_loss=losses[-1] if losses else math.nan, steps=len(losses)
    )


def _micro_batches(chosen: list[int], episodes: Sequence[Episode], split: bool) -> list[list[int]]:
    """``chosen`` as one batch, or (``split``) as one micro-batch per episode length, in first-seen order."""
    if not split:
        return [chosen]
    groups: dict[int, list[int]] = {}
    for i in chosen:
        groups.setdefault(len(episodes[i]), []).append(i)
    return list(groups.values())


def labelled_loss(model: Any, batch: dict[str, Any], reduction: str = "mean", banned: Sequence[int] = ()) -> Any:
    """The causal LM loss of ``batch`` (with ``labels``), the output layer applied only where a label is
    (``reduction``: ``"mean"`` or ``"sum"`` over the labelled tokens). ``banned`` tokens are left out of
    the softmax: the loss of the answer a generation with them banned would give, which teaches *what*
    to answer without training the banned tokens' own logits.

    The same mean cross-entropy as ``model(**batch).loss``, without the logits of every other position: on
    the tiny models the output layer over the whole vocabulary is about a third of a training step, and
    most positions (prompts, results) carry no label. Models without ``.model`` and ``.lm_head`` fall back
    to their own loss.
    """
    import torch

    if not (hasattr(model, "model") and hasattr(model, "lm_head")):
        if banned:
            raise ValueError("banned tokens need a model with .model and .lm_head (the loss is computed here)")
        loss = model(**batch).loss
        return loss * int((batch["labels"][:, 1:] != -100).sum()) if reduction == "sum" else loss
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    hidden = model.model(**inputs).last_hidden_state[:, :-1]
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    logits = model.lm_head(hidden[keep]).float()
    if banned:
        logits = logits.index_fill(1, torch.tensor(list(banned), device=logits.device), float("-inf"))
    return torch.nn.functional.cross_entropy(logits, targets[keep], reduction=reduction)


def slot_labeler(tokenizer: Any, tags: Sequence[str]) -> Callable[[Any], Any]:
    """Labels on the first token after each of ``tags`` in assistant turns only (-100 elsewhere)."""
    starts = {tokenizer.convert_tokens_to_ids(tag) for tag in tags}

    def labeler(labels: Any) -> Any:
        keep = labels.clone().fill_(-100)
        ids = labels.tolist()
        for i in range(1, len(ids)):
            if ids[i] != -100 and ids[i - 1] in starts:
                keep[i] = labels[i]
        return keep

    return labeler


def copy_labeler(tokenizer: Any) -> Callable[[Any], Any]:
    """Labels on the copied tokens only: the first token after ``<text_search>`` (the country's name) and
    after ``<answer>`` (the answer read in the results) in assistant turns."""
    return slot_labeler(tokenizer, ("<text_search>", "<answer>"))


def teacher_forced(
    model: Any, processor: Any, episodes: Sequence[Episode], banned: Sequence[int] = ()
) -> Iterator[tuple[Any, Any]]:
    """Each episode's ``(input_ids, greedy next-token predictions)``, teacher-forced, rendered by the
    processor's chat template (left padding included), in batches of 32. ``banned`` tokens are never
    predicted (as a generation's ``bad_words_ids`` would)."""
    import torch

    model.eval()
    for start in range(0, len(episodes), 32):
        batch = processor.apply_chat_template(
            list(episodes[start : start + 32]), tokenize=True, return_dict=True, return_tensors="pt",
            processor_kwargs={"padding": True},
        )  # fmt: skip
        with torch.no_grad():
            logits = model(**batch).logits
            if banned:
                logits[..., list(banned)] = float("-inf")
            predicted = logits.argmax(-1)
        yield from zip(batch["input_ids"], predicted, strict=True)


def slot_accuracy(model: Any, processor: Any, episodes: Sequence[Episode]) -> dict[str, float]:
    """Greedy next-token accuracy, teacher-forced, on the copied slots of ``episodes``' assistant turns:
    ``query`` (the first token after ``<text_search>``) and ``answer`` (after ``<answer>``)."""

    tokenizer = processor.tokenizer
    slots = {
        tokenizer.convert_tokens_to_ids("<text_search>"): "query",
        tokenizer.convert_tokens_to_ids("<answer>"): "answer",
    }
    header, end = assistant_header_ids(tokenizer), end_of_turn_id(tokenizer)
    hits: dict[str, list[int]] = {"query": [0, 0], "answer": [0, 0]}
    for ids, predicted in teacher_forced(model, processor, episodes):
        labels = assistant_token_labels(ids, header, end).tolist()
        for i in range(1, len(labels)):
            slot = slots.get(int(ids[i - 1]))
            if slot and labels[i] != -100:
                hits[slot][0] += int(predicted[i - 1] == ids[i])
                hits[slot][1] += 1
    return {slot: hit / n for slot, (hit, n) in hits.items() if n}


def reading_pass(
    model: Any, processor: Any, drills: Sequence[Episode], held_out: Sequence[Episode], config: Any
) -> tuple[FitResult, list[dict[str, Any]]]:
    """The reading pass: :func:`fit` on ``drills`` with the loss on the copied tokens only
    (:func:`copy_labeler`), checking the copy accuracy on ``held_out`` every ``reading_check_every``
    steps and stopping once both slots reach ``reading_target``. ``config``: any experiment config with
    the ``reading_*`` and ``seed`` settings. Returns the fit and the checks."""
    checks: list[dict[str, Any]] = []

    def check(step: int) -> bool:
        if step % config.reading_check_every:
            return False
        checks.append({"step": step, **slot_accuracy(model, processor, held_out)})
        logger.info("reading pass, step %d: copy accuracy on held-out drills %s", step, checks[-1])
        return min(checks[-1]["query"], checks[-1]["answer"]) >= config.reading_target

    reading = fit(
        model,
        processor,
        drills,
        lr=config.reading_lr,
        batch_size=config.reading_batch_size,
        seed=config.seed,
        desc="reading",
        labeler=copy_labeler(processor.tokenizer),
        on_step=check,
        split_by_turns=getattr(config, "sft_split_by_turns", False),
    )
    return reading, checks


def finetune(
    base: Path, out: Path, examples: Sequence[Example], env_config: EnvConfig, config: OnDemandConfig
) -> dict[str, Any]:
    """Fine-tune ``base`` into ``out`` on ``examples`` (the environment ``env_config`` holds them) and
    return the stats (also written to ``out/sft_stats.json``; a finished ``out`` is reused as it is).

    Copying is learnt abruptly after a few hundred steps, and when varies from run to run (an identical
    pass learnt it by step 300 in one run and not by step 500 in another), so the reading pass checks the
    copy accuracy on ``reading_check_drills`` held-out drills every ``reading_check_every`` steps and stops
    once both slots reach ``reading_target`` (at most ``reading_steps``). The checks are in the stats.
    """
    import torch

    from agents.grpo import prepare_processing_class  # imports TRL

    stats_path = out / "sft_stats.json"
    if stats_path.is_file():
        return json.loads(stats_path.read_text())
    torch.manual_seed(config.seed)
    model, processor, _ = load_pretrained(base)
    prepare_processing_class(processor, env_config.protocol)
    names = country_names(examples)
    made = sft_episodes(examples, names, env_config, epochs=config.sft_epochs, seed=config.seed)

    def drills(seed: int, n: int) -> list[Episode]:
        epochs = -(-n // max(1, made.drills_per_epoch))
        return sft_episodes(examples, names, env_config, epochs=epochs, seed=seed).drills()[:n]

    held_out = drills(config.seed + 2, config.reading_check_drills)
    start = time.perf_counter()
    reading, checks = reading_pass(
        model, processor, drills(config.seed + 1, config.reading_batch_size * config.reading_steps), held_out, config
    )
    reading_seconds = time.perf_counter() - start
    whole = fit(
        model,
        processor,
        made.episodes,
        lr=config.sft_lr,
        batch_size=config.sft_batch_size,
        seed=config.seed,
        desc="sft",
        group_by_turns=config.sft_group_by_turns,
    )
    stats = {
        **asdict(whole),
        "per_epoch": made.per_epoch,
        "drills_per_epoch": made.drills_per_epoch,
        "no_answer_in_results": made.no_answer_in_results,
        "episodes": len(made.episodes),
        "reading_steps": reading.steps,
        "reading_checks": checks,
        "reading_first_loss": reading.first_loss,
        "reading_last_loss": reading.last_loss,
        "reading_seconds": reading_seconds,
        "after_sft": {"reading": slot_accuracy(model, processor, held_out)},
        "seconds": time.perf_counter() - start,
    }
    model.save_pretrained(out)
    processor.save_pretrained(out)
    processor.tokenizer.save_pretrained(out)
    shutil.copy(base / "tiny_vlm.json", out / "tiny_vlm.json")
    stats_path.write_text(json.dumps(stats, indent=2))
    return stats
