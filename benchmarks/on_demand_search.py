"""On-demand search in miniature: does GRPO in MMSearch-v0 teach a model *when* to search?

    python benchmarks/on_demand_search.py            # full run (35 min on 2 CPU cores), writes the results
    python benchmarks/on_demand_search.py --quick    # minutes: checks the pipeline and the metrics

The MMSearch-R1 paper's central claim is that GRPO with an outcome reward, a search penalty and
search-balanced data teaches a model to search only for what it does not know. This script tests that
claim end to end on this machine, with every stage real and seeded:

1. **Questions.** The embedded corpus's country questions that name their country in the text and need
   a fact lookup (capital, calling code, web domain). Each country is "known" or "unknown" by a seeded
   coin flip.
2. **A policy that knows some facts.** The tiny Qwen2.5-VL-class model of :mod:`agents.tiny_vlm`,
   scaled up (hidden 128, 4 layers) with every country name and answer as one token, text-only (the
   question names its country), is fine-tuned (:func:`sft_episodes`): known countries' questions are
   answered with their true facts, unknown ones with a random guess new every epoch, and reading drills
   (search, then copy the answer from the results, on renamed countries with fake answers) teach it to
   search and read. Every country is answered at once as often and searched for as often, so the
   fine-tuned model's choice to search does not depend on what it knows: that is left to GRPO.
3. **Curation.** ``mmsearch curate`` with that model (K rollouts with search off and K with search on)
   labels each training question search-free or search-required and writes the search-balanced set
   and the search-required-only set.
4. **GRPO + LoRA** in MMSearch-v0 (TRL ``GRPOTrainer`` through :mod:`agents.grpo`), three arms with the
   same budget and seeds: *on-demand* (balanced data, search penalty 0.1), *no penalty* (balanced,
   penalty 0), *unbalanced* (search-required questions only, penalty 0.1).
5. **Evaluation** of every saved checkpoint, greedy, on the held-out test questions (never trained by
   GRPO), split into the known and unknown countries: accuracy, both search ratios, and the search
   ratio on known vs unknown questions over training steps; plus the direct-answer baseline (search
   disabled) and the RAG workflow baseline (always search first, then the same model answers).

Outputs: ``benchmarks/results/on_demand_search.{json,md}`` and the plots
``docs/images/on_demand_search_{curves,summary}.png`` (``--quick`` writes under ``--out`` only).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
IMAGES = ROOT / "docs" / "images"
logger = logging.getLogger("on_demand_search")

CATEGORIES = ("country-capital", "country-calling_code", "country-tld")
#: One phrasing per kind of question, the country's name last: copying it into the query is then a copy
#: from a fixed distance, which a small model learns fastest.
PHRASING = {
    "country-capital": "What is the capital of {name}?",
    "country-calling_code": "What is the international calling code of {name}?",
    "country-tld": "What is the internet country code top-level domain of {name}?",
}
#: The first turn's reason names the country first, then decides: the choice to search is then made right
#: after the country's name, where the model's own representation of the name sits (what it knows of the
#: country is linearly readable there: 74% on held-out countries, against chance (55%) at the position
#: where a reason starting with the decision is chosen; see docs/ARCHITECTURE.md).
REASON_DIRECT = "{name}: I know it."
REASON_SEARCH = "{name}: let me search."
REASON_READ = "The results say it."

#: Compact prompts (the tiny model reads every token on a CPU): same actions and limits as the default.
PROMPTS = {
    "instruction": "Question: {question}\nAnswer at once if you know it; otherwise search the web first (a search costs).",
    "text_results_header": 'Results for "{query}":',
    "text_result_item": "{summary}",
    "followup": "{next_step}",
    "next_step_answer": "Now give your answer.",
    "next_step_search": "Now give your answer, or use {search_options}.",
}

#: The environment every stage uses: one text search at most, then an answer (shapes A and T>A).
ENV = {
    "protocol": "tags",
    # a text-only policy (the questions name their country; no image search is allowed). With the image
    # shown first, the tiny model did not learn to copy from the results: 4 of 64 drills read after 400
    # steps, against 37 of 64 with the image after the text and 61 of 64 without it (docs/ARCHITECTURE.md)
    "image_position": "none",
    "max_turns": 2,
    "max_image_searches": 0,
    "max_text_searches": 1,
    "search": "corpus",
    "search_options": {"max_results": 1, "summary_sentences": 2},
}


def settings(quick: bool) -> dict[str, Any]:
    """Every knob of the experiment; ``quick`` shrinks the work, not the pipeline."""
    full = {
        "seed": 0,
        "known_fraction": 0.5,
        "model": {
            "hidden_size": 128,
            "num_layers": 4,
            "num_heads": 4,
            "num_kv_heads": 2,
            "intermediate_size": 384,
            "vocab_size": 4096,
            "tokenizer_texts": "corpus",
        },
        "reading_steps": 1200,
        "reading_check_every": 100,
        "reading_target": 0.9,
        "reading_lr": 1e-3,
        "reading_batch_size": 32,
        "sft_epochs": 45,
        "sft_lr": 2e-3,
        "sft_batch_size": 16,
        "curate_rollouts": 4,
        # half search-required: with the paper's 0.68, a policy that cannot tell known from unknown
        # questions is pushed toward searching everything by the data's majority alone
        "curate_ratio": 0.5,
        "grpo_steps": 150,
        "grpo_batch": 32,
        "grpo_generations": 8,
        "grpo_lr": 2e-3,
        "eval_every": 10,
        "max_train_questions": None,
        "max_test_questions": None,
    }
    if quick:
        full.update(
            reading_steps=4,
            reading_check_every=2,
            reading_batch_size=8,
            sft_epochs=4,
            curate_rollouts=2,
            grpo_steps=2,
            grpo_batch=16,
            eval_every=1,
            max_train_questions=24,
            max_test_questions=12,
        )
    return full


# ---------------------------------------------------------------------------------------------------
# 1. Questions


def is_known(entity: str, seed: int, fraction: float) -> bool:
    """The seeded coin flip that decides whether the model is taught a country's facts."""
    digest = hashlib.sha256(f"{seed}:{entity}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def select_questions(split: str, cfg: Mapping[str, Any]) -> list[Any]:
    """The split's text-lookup country questions, with ``metadata["known"]`` set."""
    from dataclasses import replace

    from mmsearch_env.corpus import load_corpus
    from mmsearch_env.data import load_dataset

    corpus = load_corpus()
    out = []
    for example in load_dataset("corpus", split):
        if example.category in CATEGORIES and example.search_need == "text":
            entity = example.metadata["entity"]
            known = is_known(entity, cfg["seed"], cfg["known_fraction"])
            question = PHRASING[example.category].format(name=corpus.page(entity).title)
            out.append(replace(example, question=question, metadata={**example.metadata, "known": known}))
    return out


def write_questions(examples: Sequence[Any], path: Path) -> Path:
    from mmsearch_env.data.loaders import write_parquet

    return write_parquet(examples, path, extra_columns={"known": [e.metadata["known"] for e in examples]})


# ---------------------------------------------------------------------------------------------------
# 2. The policy that knows some facts


def build_base_model(out: Path, examples: Sequence[Any], cfg: Mapping[str, Any]) -> Path:
    """The tiny VLM scaled up: a tokenizer trained on the corpus texts, plus every country name and answer
    of ``examples`` as one token each (copying an answer from the results is then one attention step,
    which a small model learns in minutes; spelling it out piece by piece it does not)."""
    from agents.tiny_vlm import TinyVLMConfig, build_tiny_vlm, load_tiny_vlm

    if (out / "config.json").is_file():
        return out
    built = build_tiny_vlm(out.parent / "tiny-vlm", config=TinyVLMConfig(seed=cfg["seed"], **cfg["model"]))
    model, processor = load_tiny_vlm(built)
    names = set(country_names(examples).values())
    processor.tokenizer.add_tokens(sorted(names | {e.answer for e in examples}))
    model.resize_token_embeddings(len(processor.tokenizer), mean_resizing=False)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    processor.tokenizer.save_pretrained(out)
    shutil.copy(built / "tiny_vlm.json", out / "tiny_vlm.json")
    shutil.rmtree(built, ignore_errors=True)
    return out


def scripted_episode(env: Any, example: Any, search: bool, answer: str, name: str) -> list[dict[str, Any]]:
    """One well-formed episode of ``example`` (about country ``name``): answer ``answer`` at once, or
    search, then answer it."""
    protocol = env.protocol
    env.reset(options={"example_id": example.id})
    if search:
        query = example.metadata.get("text_query") or example.question
        env.step(protocol.format_action("text_search", query, reason=REASON_SEARCH.format(name=name)))
        turn = protocol.format_action("answer", answer, reason=REASON_READ)
    else:
        turn = protocol.format_action("answer", answer, reason=REASON_DIRECT.format(name=name))
    observation, _, terminated, truncated, info = env.step(turn)
    assert terminated or truncated, info
    return observation["messages"]


def _substituted(message: dict[str, Any], pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """``message`` with each ``(old, new)`` whole-word replacement made in its text."""
    import re

    def swap(text: str) -> str:
        for old, new in pairs:
            text = re.sub(rf"(?<!\w){re.escape(old)}(?!\w)", lambda _, new=new: new, text)
        return text

    content = message["content"]
    if isinstance(content, str):
        return {**message, "content": swap(content)}
    return {**message, "content": [{**b, "text": swap(b["text"])} if b.get("type") == "text" else b for b in content]}


def reading_drill(
    episode: list[dict[str, Any]], entity: tuple[str, str], answer: tuple[str, str], protocol: Any
) -> list[dict[str, Any]] | None:
    """A search episode turned into a reading drill: the country ``entity[0]`` renamed ``entity[1]`` and the
    answer ``answer[0]`` replaced by ``answer[1]`` everywhere (question, query, results), and the final
    turn answering ``answer[1]``.

    The fake answer changes from epoch to epoch, so it can only be learnt by reading it in the results,
    never by remembering it; the renamed country teaches the model to copy any country's name into its
    query. No true fact of another country is taught. ``None`` if the results do not hold the answer.
    """
    user, search, results, _ = episode
    if not any(b.get("type") == "text" and answer[0] in b["text"] for b in results["content"]):
        return None
    pairs = [answer, entity] if entity[0] != entity[1] else [answer]
    turn = protocol.format_action("answer", answer[1], reason=REASON_READ)
    return [*(_substituted(m, pairs) for m in (user, search, results)), _assistant(turn)]


def _assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def sft_episodes(
    examples: Sequence[Any], names: Mapping[str, str], env_kwargs: Mapping[str, Any], cfg: Mapping[str, Any]
) -> tuple[list[list[dict[str, Any]]], dict[str, int]]:
    """Every epoch's fine-tuning episodes: one direct answer per question, and one reading drill per
    *known* question.

    * Direct, known country: the true answer, at once: the fact goes into the weights.
    * Direct, unknown country: a random answer of the same kind, new every epoch: the model answers these
      at once just as often, but nothing it could remember (it guesses, as language models do).
    * Reading drill (:func:`reading_drill`): search with the question's query, then copy the answer from
      the results, on a copy of the episode about a random country (known or not) whose answer is a
      random one of the same kind, new every epoch: the model learns to search and read, and no fact.

    Every country is thus asked about directly as often and searched for as often, whether known or not:
    the fine-tuned model's choice to search does not depend on what it knows; that is left to GRPO.
    The true facts of unknown countries never appear. ``names``: entity id -> country name, for every
    country of the experiment.
    """
    import random

    from mmsearch_env.env import MMSearchEnv

    rng = random.Random(cfg["seed"])
    env = MMSearchEnv(**env_kwargs)
    known = [e for e in examples if e.metadata["known"]]
    pools: dict[str, list[str]] = {}
    for example in examples:
        pools.setdefault(example.category, [])
        if example.answer not in pools[example.category]:
            pools[example.category].append(example.answer)
    countries = sorted(set(names.values()))

    def fake(example: Any) -> str:
        taken = {example.answer, *example.candidate_answers}
        return rng.choice([a for a in pools[example.category] if a not in taken])

    name = {e.id: names[e.metadata["entity"]] for e in examples}
    search = {e.id: scripted_episode(env, e, True, e.answer, name[e.id]) for e in known}
    direct = {e.id: scripted_episode(env, e, False, e.answer, name[e.id]) for e in known}
    guess = {
        e.id: scripted_episode(env, e, False, e.answer, name[e.id])[:-1] for e in examples if not e.metadata["known"]
    }
    episodes: list[list[dict[str, Any]]] = []
    skipped = 0
    for _ in range(cfg["sft_epochs"]):
        for example in examples:
            if example.id in guess:
                reason = REASON_DIRECT.format(name=name[example.id])
                turn = env.protocol.format_action("answer", fake(example), reason=reason)
                episodes.append([*guess[example.id], _assistant(turn)])
        for example in known:
            episodes.append(direct[example.id])
            entity = (names[example.metadata["entity"]], rng.choice(countries))
            drill = reading_drill(search[example.id], entity, (example.answer, fake(example)), env.protocol)
            if drill is None:
                skipped += 1
            else:
                episodes.append(drill)
    drills = sum(len(e) > 2 for e in episodes) // max(1, cfg["sft_epochs"])
    return episodes, {
        "per_epoch": len(episodes) // max(1, cfg["sft_epochs"]),
        "drills_per_epoch": drills,
        "no_answer_in_results": skipped,
    }


def country_names(examples: Sequence[Any]) -> dict[str, str]:
    from mmsearch_env.corpus import load_corpus

    corpus = load_corpus()
    return {e.metadata["entity"]: corpus.page(e.metadata["entity"]).title for e in examples}


def copy_labeler(tokenizer: Any) -> Any:
    """Labels on the copied tokens only: the first token after ``<text_search>`` (the country's name) and
    after ``<answer>`` (the answer read in the results) in assistant turns."""
    starts = {tokenizer.convert_tokens_to_ids("<text_search>"), tokenizer.convert_tokens_to_ids("<answer>")}

    def labeler(labels: Any) -> Any:
        keep = labels.clone().fill_(-100)
        ids = labels.tolist()
        for i in range(1, len(ids)):
            if ids[i] != -100 and ids[i - 1] in starts:
                keep[i] = labels[i]
        return keep

    return labeler


def slot_accuracy(model: Any, processor: Any, episodes: Sequence[list[dict[str, Any]]]) -> dict[str, float]:
    """Greedy next-token accuracy, teacher-forced, on the copied slots of ``episodes``' assistant turns:
    ``query`` (the first token after ``<text_search>``) and ``answer`` (after ``<answer>``)."""
    import torch

    from agents.grpo import _assistant_header_ids, _assistant_labels

    tokenizer = processor.tokenizer
    slots = {
        tokenizer.convert_tokens_to_ids("<text_search>"): "query",
        tokenizer.convert_tokens_to_ids("<answer>"): "answer",
    }
    header, end = _assistant_header_ids(tokenizer), tokenizer.convert_tokens_to_ids("<|im_end|>")
    hits: dict[str, list[int]] = {"query": [0, 0], "answer": [0, 0]}
    model.eval()
    for start in range(0, len(episodes), 32):
        batch = processor.apply_chat_template(
            list(episodes[start : start + 32]), tokenize=True, return_dict=True, return_tensors="pt",
            processor_kwargs={"padding": True},
        )  # fmt: skip
        with torch.no_grad():
            predicted = model(**batch).logits.argmax(-1)
        for row, ids in enumerate(batch["input_ids"]):
            labels = _assistant_labels(ids, header, end).tolist()
            for i in range(1, len(labels)):
                slot = slots.get(int(ids[i - 1]))
                if slot and labels[i] != -100:
                    hits[slot][0] += int(predicted[row, i - 1] == ids[i])
                    hits[slot][1] += 1
    return {slot: hit / n for slot, (hit, n) in hits.items() if n}


def sft(base: Path, out: Path, examples: Sequence[Any], env_kwargs: Mapping[str, Any], cfg: Mapping[str, Any]) -> dict:
    """Fine-tuning in two passes over :func:`sft_episodes`: a reading pass (the drills, loss on the copied
    tokens only: a small model learns to copy when the loss is not diluted by the rest of the turn), then
    the whole episodes (direct answers and drills, loss on every assistant token).

    Copying is learnt abruptly after a few hundred steps, and when varies from run to run (an identical
    pass learnt it by step 300 in one run and not by step 500 in another), so the reading pass checks the
    copy accuracy on 64 held-out drills every ``reading_check_every`` steps and stops once both slots reach
    ``reading_target`` (at most ``reading_steps``). The checks are recorded in the stats.
    """
    import torch

    from agents.grpo import prepare_processing_class, supervised_fit
    from agents.hf_policy import load_pretrained

    stats_path = out / "sft_stats.json"
    if stats_path.is_file():
        return json.loads(stats_path.read_text())
    torch.manual_seed(cfg["seed"])
    model, processor, _ = load_pretrained(base)
    prepare_processing_class(processor, env_kwargs["protocol"])
    names = country_names(examples)
    episodes, counts = sft_episodes(examples, names, env_kwargs, cfg)

    def drills(seed: int, n: int) -> list[list[dict[str, Any]]]:
        per_epoch = max(1, counts["drills_per_epoch"])
        more, _ = sft_episodes(examples, names, env_kwargs, {**cfg, "seed": seed, "sft_epochs": -(-n // per_epoch)})
        return [e for e in more if len(e) > 2][:n]

    held_out = drills(cfg["seed"] + 2, 64)
    checks: list[dict[str, Any]] = []

    def check(step: int) -> bool:
        if step % cfg["reading_check_every"]:
            return False
        checks.append({"step": step, **slot_accuracy(model, processor, held_out)})
        logger.info("reading pass, step %d: copy accuracy on held-out drills %s", step, checks[-1])
        return min(checks[-1]["query"], checks[-1]["answer"]) >= cfg["reading_target"]

    start = time.perf_counter()
    reading = supervised_fit(
        model,
        processor,
        drills(cfg["seed"] + 1, cfg["reading_batch_size"] * cfg["reading_steps"]),
        epochs=1,
        lr=cfg["reading_lr"],
        batch_size=cfg["reading_batch_size"],
        seed=cfg["seed"],
        desc="reading",
        labeler=copy_labeler(processor.tokenizer),
        on_step=check,
    )
    reading_seconds = time.perf_counter() - start
    stats = supervised_fit(
        model,
        processor,
        episodes,
        epochs=1,
        lr=cfg["sft_lr"],
        batch_size=cfg["sft_batch_size"],
        seed=cfg["seed"],
        desc="sft",
        # mixed batches: with batches of one episode length (all direct answers or all drills) at this
        # learning rate, the last few batches decided the model's choice to search (P = 0.02 measured,
        # against 0.31 of the episodes searching)
        group_by_turns=False,
    )
    stats.update(
        counts,
        episodes=len(episodes),
        reading_steps=reading["steps"],
        reading_checks=checks,
        reading_first_loss=reading["first_loss"],
        reading_last_loss=reading["last_loss"],
        reading_seconds=reading_seconds,
        after_sft={"reading": slot_accuracy(model, processor, held_out)},
        seconds=time.perf_counter() - start,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    processor.tokenizer.save_pretrained(out)
    shutil.copy(base / "tiny_vlm.json", out / "tiny_vlm.json")
    stats_path.write_text(json.dumps(stats, indent=2))
    return stats


# ---------------------------------------------------------------------------------------------------
# 3-5. Policies, curation, GRPO arms, evaluation


def model_policy(
    model_dir: Path, adapter: Path | None = None, *, temperature: float = 0.0, seed: int | None = None
) -> Any:
    """The tiny model as an MMSearch-v0 policy (greedy unless ``temperature`` > 0; seeded sampling does not
    depend on how the concurrent episodes are batched)."""
    from agents.hf_policy import HFPolicy

    return HFPolicy(model_dir, adapter=adapter, max_new_tokens=32, batch_size=64, temperature=temperature, seed=seed)


def run_policy(policy: Any, dataset: Path, env_kwargs: Mapping[str, Any], *, search: bool = True) -> list[dict]:
    """One greedy episode per question of ``dataset``; the trajectory lines, in dataset order."""
    from agents.evaluate import search_disabled_kwargs
    from agents.rollout import rollout

    kwargs = {**env_kwargs, "dataset": str(dataset), "split": None}
    if not search:
        kwargs = search_disabled_kwargs(kwargs)
    result = rollout(policy, env_kwargs=kwargs, concurrency=64, progress=False, batch_wait_s=0.05)
    return sorted(result.records, key=lambda r: r["index"])


def group_metrics(records: Sequence[Mapping[str, Any]], known: Mapping[str, bool]) -> dict[str, Any]:
    """Accuracy, both search ratios and mean reward, on all questions and on the known / unknown ones."""
    from agents.evaluate import policy_metrics

    groups = {
        "all": list(records),
        "known": [r for r in records if known[r["info"]["example_id"]]],
        "unknown": [r for r in records if not known[r["info"]["example_id"]]],
    }
    out: dict[str, Any] = {}
    for name, rows in groups.items():
        if not rows:
            continue
        m = policy_metrics(rows, max_searches_per_episode=1)
        out[name] = {
            "n": m["episodes"],
            "accuracy": m["accuracy"],
            "search_ratio_episodes": m["search_ratio_episodes"],
            "search_ratio_calls": m["search_ratio_calls"],
            "mean_reward": m["mean_reward"],
            "format_rate": m["format_rate"],
        }
    return out


def curate_train(sft_dir: Path, train: Path, out: Path, env_kwargs: Mapping[str, Any], cfg: Mapping[str, Any]):
    """``mmsearch curate`` with the fine-tuned model: the balanced set and the search-required-only set."""
    import torch

    from agents.curate import curate
    from mmsearch_env.data import load_dataset
    from mmsearch_env.data.loaders import write_parquet
    from mmsearch_env.errors import DatasetError

    torch.manual_seed(cfg["seed"])
    kwargs = {k: v for k, v in env_kwargs.items() if k not in ("dataset", "split")}
    quick = bool(cfg["max_train_questions"])
    try:
        result = curate(
            model_policy(sft_dir, temperature=1.0, seed=cfg["seed"]),
            str(train),
            None,
            out=out,
            rollouts=cfg["curate_rollouts"],
            ratio=cfg["curate_ratio"],
            env_kwargs=kwargs,
            concurrency=64,
            seed=cfg["seed"],
            on_shortfall="keep-all" if quick else "shrink",
            progress=True,
        )
        labels, selected = result.labels, result.selected
    except DatasetError:
        # No balanced set is possible (e.g. --quick's barely trained model gets every question wrong): go on
        # with the labels curate wrote and the whole training set as the fallback, recorded in the results.
        labels = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
        selected = []
    examples = load_dataset(str(train), None)
    sets = {
        "balanced": [examples[i] for i in selected],
        "required_only": [examples[row["index"]] for row in labels if row["label"] == "search_required"],
    }
    fallback = []
    for name, chosen in sets.items():
        if not chosen:
            logger.warning("curation left the %s set empty; training on all questions instead", name)
            chosen, sets[name] = list(examples), list(examples)
            fallback.append(name)
        write_parquet(chosen, out / f"{name}.parquet", extra_columns={"known": [e.metadata["known"] for e in chosen]})
    return {"labels": labels, "selected": len(sets["balanced"]), "fallback": fallback}
    return result


ARMS = {
    # name: (training data, search penalty)
    "on-demand": ("balanced", 0.1),
    "no-penalty": ("balanced", 0.0),
    "unbalanced": ("required_only", 0.1),
}


def grpo_config(name: str, dataset: Path, penalty: float, sft_dir: Path, out: Path, env_kwargs, cfg) -> Any:
    from agents.grpo import MMSearchGRPOConfig

    return MMSearchGRPOConfig(
        output_dir=str(out),
        model_path=str(sft_dir),
        dataset=str(dataset),
        split=None,
        search=env_kwargs["search"],
        search_options=dict(env_kwargs["search_options"]),
        prompts=env_kwargs["prompts"],
        protocol=env_kwargs["protocol"],
        max_turns=env_kwargs["max_turns"],
        max_image_searches=env_kwargs["max_image_searches"],
        max_text_searches=env_kwargs["max_text_searches"],
        search_penalty=penalty,
        warm_start_epochs=0,
        learning_rate=cfg["grpo_lr"],
        per_device_train_batch_size=cfg["grpo_batch"],
        num_generations=cfg["grpo_generations"],
        max_completion_length=320,
        max_turn_tokens=32,
        max_steps=cfg["grpo_steps"],
        logging_steps=1,
        save_steps=cfg["eval_every"],
        save_total_limit=None,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        report_to=[],
        seed=cfg["seed"],
        data_seed=cfg["seed"],
        dataloader_num_workers=0,
        lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        metrics_plot=True,
        disable_tqdm=False,
        run_name=name,
    )


def train_arm(name: str, dataset: Path, penalty: float, sft_dir: Path, out: Path, env_kwargs, cfg) -> dict:
    """GRPO + LoRA from the fine-tuned model; checkpoints every ``eval_every`` steps. Resumable."""
    from agents.grpo import train

    done = out / "train_stats.json"
    if done.is_file():
        return json.loads(done.read_text())
    config = grpo_config(name, dataset, penalty, sft_dir, out, env_kwargs, cfg)
    start = time.perf_counter()
    train(config)
    stats = {"seconds": time.perf_counter() - start, "steps": cfg["grpo_steps"]}
    done.write_text(json.dumps(stats))
    return stats


def checkpoints(arm_dir: Path) -> list[tuple[int, Path]]:
    found = [
        (int(p.name.split("-")[1]), p) for p in arm_dir.glob("checkpoint-*") if (p / "adapter_config.json").is_file()
    ]
    return sorted(found)


def evaluate_model(model_dir: Path, adapter: Path | None, test: Path, env_kwargs, known: Mapping[str, bool]) -> dict:
    """Greedy episodes on ``test`` (:func:`group_metrics`), plus each group's mean ``search_probability``."""
    policy = model_policy(model_dir, adapter)
    metrics = group_metrics(run_policy(policy, test, env_kwargs), known)
    probability = search_probability(policy.model, policy.processing_class, test, env_kwargs)
    for name, group in metrics.items():
        chosen = [p for example_id, p in probability.items() if name == "all" or known[example_id] == (name == "known")]
        group["search_probability"] = sum(chosen) / len(chosen)
    return metrics


def search_probability(model: Any, processor: Any, dataset: Path, env_kwargs: Mapping[str, Any]) -> dict[str, float]:
    """Per question of ``dataset``: the policy's probability of choosing to search in its first turn, i.e.
    of the search reason's first token right after ``<reason>{country}:`` (the greedy episodes show only
    which side of 1/2 it is on)."""
    import torch

    from mmsearch_env.data import load_dataset
    from mmsearch_env.env import MMSearchEnv

    tokenizer = processor.tokenizer
    direct, search = (
        tokenizer.encode(r.split(":", 1)[1], add_special_tokens=False)[0] for r in (REASON_DIRECT, REASON_SEARCH)
    )
    assert direct != search, "the two reasons must differ in their first token after the country"
    examples = load_dataset(str(dataset), None)
    names = country_names(examples)
    env = MMSearchEnv(**{**env_kwargs, "dataset": str(dataset), "split": None})
    out: dict[str, float] = {}
    for example in examples:
        observation, _ = env.reset(options={"example_id": example.id})
        text = processor.apply_chat_template([observation["messages"]], tokenize=False, add_generation_prompt=True)[0]
        ids = tokenizer(text + f"<reason>{names[example.metadata['entity']]}:", return_tensors="pt").input_ids
        with torch.no_grad():
            out[example.id] = model(input_ids=ids.to(model.device)).logits[0, -1].softmax(-1)[search].item()
    return out


# ---------------------------------------------------------------------------------------------------
# Report


def plot_curves(results: Mapping[str, Any], path: Path) -> Path:
    """Per arm, over GRPO steps: accuracy and search ratio on known vs unknown test questions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = results["arms"]
    fig, axes = plt.subplots(1, len(arms), figsize=(4.6 * len(arms), 3.8), sharey=True, squeeze=False)
    for ax, (name, arm) in zip(axes[0], arms.items(), strict=True):
        steps = [point["step"] for point in arm["curve"]]
        for group, colour in (("known", "tab:green"), ("unknown", "tab:red")):
            ax.plot(steps, [p["test"][group]["search_ratio_episodes"] for p in arm["curve"]], "-o", color=colour,
                    label=f"search ratio, {group}")  # fmt: skip
            ax.plot(steps, [p["test"][group]["search_probability"] for p in arm["curve"]], ":", color=colour,
                    label=f"P(search), {group}")  # fmt: skip
        ax.plot(
            steps, [p["test"]["all"]["accuracy"] for p in arm["curve"]], "--s", color="black", label="accuracy (test)"
        )
        ax.set_title(f"{name} (penalty {arm['search_penalty']}, {arm['data']})", fontsize=10)
        ax.set_xlabel("GRPO step")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("rate on held-out test questions")
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_summary(results: Mapping[str, Any], path: Path) -> Path:
    """Final accuracy and search ratio of every policy on the test questions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary_rows(results)
    names = [r["policy"] for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(8.5, 3.8))
    width = 0.27
    ax.bar([i - width for i in x], [r["accuracy"] for r in rows], width, label="accuracy", color="black")
    ax.bar(list(x), [r["search_known"] for r in rows], width, label="search ratio, known", color="tab:green")
    ax.bar([i + width for i in x], [r["search_unknown"] for r in rows], width, label="search ratio, unknown",
           color="tab:red")  # fmt: skip
    ax.set_xticks(list(x), names, rotation=15, fontsize=9)
    ax.set_ylim(0, 1.05)
    ax.set_title("Held-out test questions: final policies and baselines", fontsize=10)
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.22))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    def row(name: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "policy": name,
            "accuracy": metrics["all"]["accuracy"],
            "search_episodes": metrics["all"]["search_ratio_episodes"],
            "search_calls": metrics["all"]["search_ratio_calls"],
            "search_known": metrics.get("known", {}).get("search_ratio_episodes", math.nan),
            "search_unknown": metrics.get("unknown", {}).get("search_ratio_episodes", math.nan),
            "accuracy_known": metrics.get("known", {}).get("accuracy", math.nan),
            "accuracy_unknown": metrics.get("unknown", {}).get("accuracy", math.nan),
        }

    rows = [row(name, m) for name, m in results["baselines"].items()]
    rows += [row(f"GRPO {name}", arm["curve"][-1]["test"]) for name, arm in results["arms"].items()]
    return rows


def markdown(results: Mapping[str, Any]) -> str:
    pct = lambda v: "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"  # noqa: E731
    cfg = results["settings"]
    sft = results["sft"]

    def slots(acc: Mapping[str, float]) -> str:
        return ", ".join(f"{slot} {pct(value)}" for slot, value in acc.items())

    reading_at = "; ".join(f"step {c['step']}: {slots({k: c[k] for k in ('query', 'answer') if k in c})}"
                           for c in sft["reading_checks"]) or "not checked"  # fmt: skip
    lines = [
        "# On-demand search in miniature",
        "",
        f"`python benchmarks/on_demand_search.py{' --quick' if results['quick'] else ''}` on {results['machine']}; "
        f"total {results['seconds_total'] / 60:.1f} min (stages: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in results["seconds"].items())
        + ")"
        + (
            ", the fine-tuning's time as measured when its model was built (this run reused it)"
            if results.get("sft_reused")
            else ""
        )
        + ".",
        "",
        f"Questions: {results['questions']['train']} training / {results['questions']['test']} held-out test "
        f"(categories {', '.join(CATEGORIES)}); known countries: {results['questions']['train_known']} of the "
        f"training and {results['questions']['test_known']} of the test questions. Fine-tuning: "
        f"a reading pass of {sft['reading_steps']} steps × {cfg['reading_batch_size']} drills (copy loss "
        f"{sft['reading_first_loss']:.2f} → {sft['reading_last_loss']:.2f}; copy accuracy on 64 held-out drills "
        f"{reading_at}), then {sft['episodes']} episodes ({sft['per_epoch']} per epoch × {cfg['sft_epochs']}; "
        f"loss {sft['first_loss']:.2f} → {sft['last_loss']:.2f}; held-out drills afterwards: "
        f"{slots(sft['after_sft']['reading'])}).",
        "",
        f"Curation (K = {cfg['curate_rollouts']}): {results['curation']['counts']}; balanced set "
        f"{results['curation']['balanced']} questions, search-required only {results['curation']['required_only']}.",
        "",
        "## Final policies on the held-out test questions (greedy)",
        "",
        "| policy | accuracy | search ratio (episodes) | search ratio (calls / max) | search, known | search, unknown "
        "| accuracy, known | accuracy, unknown |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary_rows(results):
        lines.append(
            f"| {r['policy']} | {pct(r['accuracy'])} | {pct(r['search_episodes'])} | {pct(r['search_calls'])} | "
            f"{pct(r['search_known'])} | {pct(r['search_unknown'])} | {pct(r['accuracy_known'])} | "
            f"{pct(r['accuracy_unknown'])} |"
        )
    lines += ["", "## Over GRPO steps (test questions)", ""]
    for name, arm in results["arms"].items():
        lines += [
            f"### {name}: {arm['data']} data, search penalty {arm['search_penalty']} ({arm['train_seconds']:.0f} s)",
            "",
            "| step | accuracy | search ratio | search, known | search, unknown | P(search), known | P(search), unknown "
            "| training reward |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for p in arm["curve"]:
            t = p["test"]
            reward = "–" if p.get("train_reward") is None else f"{p['train_reward']:.3f}"
            lines.append(
                f"| {p['step']} | {pct(t['all']['accuracy'])} | {pct(t['all']['search_ratio_episodes'])} | "
                f"{pct(t.get('known', {}).get('search_ratio_episodes'))} | "
                f"{pct(t.get('unknown', {}).get('search_ratio_episodes'))} | "
                f"{pct(t.get('known', {}).get('search_probability'))} | "
                f"{pct(t.get('unknown', {}).get('search_probability'))} | {reward} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------
# Driver


def window_reward(arm_dir: Path, step: int, width: int) -> float | None:
    """Mean training reward over the ``width`` logged steps up to ``step``."""
    path = arm_dir / "metrics.jsonl"
    if step == 0 or not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    values = [r["reward"] for r in rows if "reward" in r and step - width < r.get("step", -1) <= step]
    return sum(values) / len(values) if values else None


def run(out: Path, quick: bool, write_results: bool, seed: int = 0) -> dict[str, Any]:
    import torch

    cfg = {**settings(quick), "seed": seed}
    torch.manual_seed(cfg["seed"])
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    out.mkdir(parents=True, exist_ok=True)
    # a rerun in the same folder reuses its finished stages: only if they were made with these settings
    stamp = out / "settings.json"
    if stamp.is_file() and json.loads(stamp.read_text()) != json.loads(json.dumps(cfg)):
        raise SystemExit(f"{out} holds a run with other settings ({stamp}); pass another --out, or delete it")
    stamp.write_text(json.dumps(cfg, indent=2))
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = seconds.get(name, 0.0) + now - clock
        clock = now

    # 1. questions
    prompts = out / "prompts.json"
    prompts.write_text(json.dumps(PROMPTS, ensure_ascii=False, indent=2), encoding="utf-8")
    env_kwargs = {**ENV, "prompts": str(prompts)}
    splits = {s: select_questions(s, cfg) for s in ("train", "test")}
    rng_limit = {"train": cfg["max_train_questions"], "test": cfg["max_test_questions"]}
    for split, limit in rng_limit.items():
        if limit:  # quick mode: an even mix of known and unknown countries
            known = [e for e in splits[split] if e.metadata["known"]][: limit // 2]
            unknown = [e for e in splits[split] if not e.metadata["known"]][: limit - len(known)]
            splits[split] = known + unknown
    paths = {split: write_questions(examples, out / f"{split}.parquet") for split, examples in splits.items()}
    everything = [e for examples in splits.values() for e in examples]
    write_questions(everything, out / "sft.parquet")
    known_of = {e.id: e.metadata["known"] for examples in splits.values() for e in examples}
    lap("questions")

    # 2. the policy that knows some facts
    base = build_base_model(out / "base", everything, cfg)
    sft_dir = out / "sft"
    reused = (sft_dir / "sft_stats.json").is_file()
    sft_stats = sft(base, sft_dir, everything, {**env_kwargs, "dataset": str(out / "sft.parquet"), "split": None}, cfg)
    lap("fine-tuning")
    if reused:  # a rerun in the same folder: the fine-tuned model is kept, with the time it took to build
        seconds["fine-tuning"] = sft_stats["seconds"]

    # 3. curation
    curation = curate_train(sft_dir, paths["train"], out / "curate", env_kwargs, cfg)
    data = {name: out / "curate" / f"{name}.parquet" for name in ("balanced", "required_only")}
    lap("curation")

    # baselines on the test questions (the fine-tuned model before GRPO)
    baselines = {
        "direct answer": group_metrics(
            run_policy(model_policy(sft_dir), paths["test"], env_kwargs, search=False), known_of
        ),
        "RAG workflow": group_metrics(
            run_policy(rag_policy(sft_dir, env_kwargs["protocol"]), paths["test"], env_kwargs), known_of
        ),
        "fine-tuned, before GRPO": evaluate_model(sft_dir, None, paths["test"], env_kwargs, known_of),
    }
    lap("baselines")

    # 4-5. GRPO arms and their curves
    arms: dict[str, Any] = {}
    for name, (data_name, penalty) in ARMS.items():
        arm_dir = out / "grpo" / name
        stats = train_arm(name, data[data_name], penalty, sft_dir, arm_dir, env_kwargs, cfg)
        lap(f"GRPO {name}")
        curve = [{"step": 0, "test": baselines["fine-tuned, before GRPO"], "train_reward": None}]
        for step, ckpt in checkpoints(arm_dir):
            curve.append(
                {
                    "step": step,
                    "test": evaluate_model(sft_dir, ckpt, paths["test"], env_kwargs, known_of),
                    "train_reward": window_reward(arm_dir, step, cfg["eval_every"]),
                }
            )
        arms[name] = {"data": data_name, "search_penalty": penalty, "train_seconds": stats["seconds"], "curve": curve}
        lap("evaluation")

    labels = [row["label"] for row in curation["labels"]]
    results = {
        "quick": quick,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()}",
        "settings": cfg,
        "env": env_kwargs | {"prompts": PROMPTS},
        "questions": {
            "train": len(splits["train"]),
            "test": len(splits["test"]),
            "train_known": sum(e.metadata["known"] for e in splits["train"]),
            "test_known": sum(e.metadata["known"] for e in splits["test"]),
        },
        "sft": sft_stats,
        "sft_reused": reused,
        "curation": {
            "counts": {label: labels.count(label) for label in sorted(set(labels))},
            "balanced": curation["selected"],
            "required_only": labels.count("search_required"),
            "fallback_to_all": curation["fallback"],
            "label_vs_known": label_agreement(curation["labels"], splits["train"]),
        },
        "baselines": baselines,
        "arms": arms,
        "seconds": seconds,
        "seconds_total": sum(seconds.values()),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown(results))
    plot_curves(results, out / "curves.png")
    plot_summary(results, out / "summary.png")
    if write_results:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stem = "on_demand_search" + (f"_seed{seed}" if seed else "")
        (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
        (RESULTS / f"{stem}.md").write_text(markdown(results))
        shutil.copy(out / "curves.png", IMAGES / f"{stem}_curves.png")
        shutil.copy(out / "summary.png", IMAGES / f"{stem}_summary.png")
    return results


def label_agreement(labels: Sequence[Mapping[str, Any]], train: Sequence[Any]) -> dict[str, dict[str, int]]:
    """How the curation labels line up with the known / unknown countries (counts)."""
    table: dict[str, dict[str, int]] = {}
    for row in labels:
        group = "known" if train[row["index"]].metadata["known"] else "unknown"
        table.setdefault(group, {}).setdefault(row["label"], 0)
        table[group][row["label"]] += 1
    return table


def rag_policy(sft_dir: Path, protocol: str) -> Any:
    """The RAG workflow: always text-search the question first, then the fine-tuned model answers."""
    from agents.baselines import ForcedSearchPolicy

    return ForcedSearchPolicy(model_policy(sft_dir), protocol=protocol)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few minutes: checks the pipeline and the metrics")
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: runs/on-demand[-quick])")
    parser.add_argument(
        "--no-write", action="store_true", help="do not write benchmarks/results and docs/images (default for --quick)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds everything: which countries are known, the model, fine-tuning, curation, GRPO "
        "(results of a seed other than 0 are written with a _seedN suffix)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = args.out or ROOT / "runs" / (
        ("on-demand-quick" if args.quick else "on-demand") + (f"-seed{args.seed}" if args.seed else "")
    )
    results = run(out, args.quick, write_results=not (args.quick or args.no_write), seed=args.seed)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
