# ruff: noqa: E402  (the repository root goes on the path before the experiments are imported)
"""The multimodal on-demand experiment: its questions, what the model is taught, the fine-tuning episodes,
the metrics, the frozen image encoder, and (slow) the whole pipeline on the quick preset."""

from __future__ import annotations

import doctest
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

ROOT = Path(__file__).resolve().parents[1]
# The experiments are not part of the installed package: they are importable from the repository root.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agents.frozen_vision import (
    FEATURE_DIM,
    _content_key,
    _whitening,
    encoder_features,
    image_features,
    pack_features,
)
from experiments.multimodal import config as multimodal_config
from experiments.multimodal import evaluation as multimodal_evaluation
from experiments.multimodal.config import (
    ARMS,
    KINDS,
    PROMPTS,
    REASON_RECALL,
    REASON_SEARCH,
    RECIPE_ARM,
    UNSURE,
    MultimodalConfig,
)
from experiments.multimodal.data import countries, questions, split_of, write_questions
from experiments.multimodal.episodes import sft_episodes
from experiments.multimodal.evaluation import decision_tokens, ideal_shape, metrics, shape
from experiments.multimodal.report import before_after, endpoint, markdown
from mmsearch_env.errors import ConfigError
from mmsearch_env.records import ActionRecord, EpisodeRecord


def test_splits_are_fixed_and_knowledge_is_drawn_per_seed_independently():
    a, b = countries(MultimodalConfig(seed=0)), countries(MultimodalConfig(seed=1))
    assert [c.split for c in a] == [c.split for c in b] == [split_of(c.entity) for c in a]
    assert {c.split for c in a} == {"train", "validation", "test"}
    assert [c.recognised for c in a] != [c.recognised for c in b]
    # flags and capitals taught independently: all four cells are filled, roughly a quarter each
    cells = {(r, k): sum(c.recognised == r and c.known == k for c in a) for r in (True, False) for k in (True, False)}
    assert min(cells.values()) > len(a) / 8
    # a smaller run is a subset of a larger one
    small = countries(MultimodalConfig(seed=0, max_countries=24))
    assert {c.entity for c in small} <= {c.entity for c in a} and len(small) == 24


def test_a_question_that_shows_a_country_never_names_it():
    chosen = countries(MultimodalConfig(max_countries=40))
    qs = questions(chosen)
    assert len(qs) == 3 * len(chosen) and {q.metadata["kind"] for q in qs} == set(KINDS)
    names = [c.name for c in chosen]
    for q in qs:
        if q.metadata["kind"] != "named-capital":
            assert not any(name in q.question for name in names), q.question
        else:
            assert q.image.getextrema() == ((200, 200),) * 3  # the blank picture


def test_ideal_shapes_cover_every_action():
    shapes = {ideal_shape(kind, r, k) for kind in KINDS for r in (True, False) for k in (True, False)}
    assert shapes == {"A", "I", "T", "IT"}
    assert ideal_shape("name", False, True) == "I" and ideal_shape("named-capital", False, False) == "T"


def _record(example_id, kinds, correct):
    return EpisodeRecord(
        example_id=example_id,
        question="q",
        ground_truth="a",
        actions=[ActionRecord(kind=k) for k in kinds],
        reward_parts={"accuracy": correct, "format": True},
    )


def test_metrics_count_each_finding_on_its_own_questions():
    meta = {
        "x-name": {"kind": "name", "recognised": False, "known": True},
        "y-name": {"kind": "name", "recognised": True, "known": False},
        "x-flag-capital": {"kind": "flag-capital", "recognised": False, "known": False},
        "y-named-capital": {"kind": "named-capital", "recognised": True, "known": False},
    }
    records = [
        _record("x-name", ["image_search", "answer"], True),
        _record("y-name", ["answer"], True),
        _record("x-flag-capital", ["image_search", "text_search", "answer"], False),
        _record("y-named-capital", ["answer"], False),
    ]
    assert [shape(r) for r in records] == ["I", "A", "IT", "A"]
    m = metrics(records, meta)
    assert m["image_search_unrecognised"] == 1.0 and m["image_search_recognised"] == 0.0
    assert m["text_search_unknown"] == 0.5 and m["text_search_known"] is None
    assert m["chain"] == 1.0 and m["accuracy"] == 0.5 and m["right_shape"] == 0.75
    assert m["searches"] == 0.0  # no SearchRecords in these hand-made records
    assert endpoint([{"step": 0, "eval": m}, {"step": 5, "eval": m}], 3)["accuracy"] == 0.5


def test_search_rates_by_measured_knowledge_follow_the_direct_policy_not_the_teaching():
    from experiments.multimodal.evaluation import measured_knowledge

    meta = {}
    for country, taught in (("x", True), ("y", True), ("z", False)):
        for kind in KINDS:
            meta[f"{country}-{kind}"] = {"entity": f"c/{country}", "kind": kind, "recognised": taught, "known": taught}
    # x and y were taught; the direct policy names only x's flag and gives only y's capital; z nothing
    direct = [
        _record("x-name", ["answer"], True),
        _record("y-name", ["answer"], False),
        _record("z-name", ["answer"], False),
        _record("x-named-capital", ["answer"], False),
        _record("y-named-capital", ["answer"], True),
        _record("z-named-capital", ["answer"], False),
    ]
    known = measured_knowledge(direct, meta)
    assert known == {
        "c/x": {"names_flag": True, "gives_capital": False},
        "c/y": {"names_flag": False, "gives_capital": True},
        "c/z": {"names_flag": False, "gives_capital": False},
    }
    # a policy that searches the image for y and z's flags and the web for x and z's capitals
    policy = [
        _record("x-name", ["answer"], True),
        _record("y-name", ["image_search", "answer"], True),
        _record("z-name", ["image_search", "answer"], True),
        _record("x-named-capital", ["text_search", "answer"], True),
        _record("y-named-capital", ["answer"], True),
        _record("z-named-capital", ["text_search", "answer"], True),
    ]
    m = metrics(policy, meta, known)
    assert m["image_search_named"] == 0.0 and m["image_search_unnamed"] == 1.0
    assert m["text_search_given"] == 0.0 and m["text_search_not_given"] == 1.0
    # by teaching, the same policy looks half wrong: y was taught its flag but is searched
    assert m["image_search_recognised"] == 0.5 and m["text_search_known"] == 0.5
    assert "image_search_named" not in metrics(policy, meta)  # only with a measurement


def test_frozen_encoder_features_are_the_corpus_features_packed_into_one_token(tmp_path):
    from agents.tiny_vlm import TinyVLMConfig, build_tiny_vlm, load_tiny_vlm
    from mmsearch_env.corpus import load_corpus
    from mmsearch_env.search.corpus import load_index

    corpus = load_corpus()
    images = [corpus.thumbnail(i) for i in (0, 1)]
    feats = image_features(images)
    assert feats.shape == (2, FEATURE_DIM)
    raw = encoder_features(images)
    np.testing.assert_allclose(raw, load_index().image_encoder(images), atol=1e-6)
    mean, std = _whitening()
    white = (raw - mean) / std
    np.testing.assert_allclose(feats, white / np.linalg.norm(white, axis=1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    assert _content_key(images[0]) != _content_key(images[1])
    packed = pack_features(feats)
    assert packed.shape == (8, 1176) and np.count_nonzero(packed[0, FEATURE_DIM:]) == 0

    path = build_tiny_vlm(tmp_path / "vlm", config=TinyVLMConfig(vision="efficientnet-lite0"))
    model, processor = load_tiny_vlm(path)
    assert model.config.vision_config.depth == 0
    messages = [{"role": "user", "content": [{"type": "image", "image": images[0]}, {"type": "text", "text": "Hi"}]}]
    batch = processor.apply_chat_template([messages], tokenize=True, return_dict=True, return_tensors="pt")
    assert int((batch["input_ids"] == processor.image_token_id).sum()) == 1
    # the image token carries the picture: two flags give two different embeddings
    other = processor.image_processor([images[1]])
    one = model.model.get_image_features(batch["pixel_values"], batch["image_grid_thw"]).pooler_output
    two = model.model.get_image_features(other["pixel_values"], other["image_grid_thw"]).pooler_output
    assert one[0].shape == two[0].shape and not np.allclose(one[0].detach().numpy(), two[0].detach().numpy())


@pytest.fixture(scope="module")
def taught(tmp_path_factory):
    config = MultimodalConfig(max_countries=24)
    chosen = countries(config)
    qs = questions(chosen)
    return chosen, qs, _env_over(qs, config, tmp_path_factory.mktemp("mm"))


def _env_over(qs, config, folder):
    """The run's env config over the questions ``qs`` (written into ``folder``, with the prompts)."""
    (folder / "prompts.json").write_text(json.dumps(PROMPTS))
    dataset = write_questions(qs, folder / "all.parquet")
    return config.env.replace(dataset=str(dataset), split=None, prompts=str(folder / "prompts.json"))


def _text(episode):
    out = []
    for m in episode:
        content = m["content"]
        out.append(content if isinstance(content, str) else "".join(b.get("text", "") for b in content))
    return "\n".join(out)


def test_fine_tuning_teaches_only_what_is_taught_and_every_shape_equally(taught):
    from mmsearch_env.corpus import load_corpus

    chosen, qs, env = taught
    made = sft_episodes(qs, chosen, env, epochs=3, seed=0)
    assert made.unreadable == 0 and made.per_epoch == 10 * len(chosen)
    corpus = load_corpus()
    flag_of = {_content_key(corpus.thumbnail(c.flag)): c for c in chosen}
    first_turns = {"image": 0, "other": 0}
    for episode in made.episodes:
        text = _text(episode)
        shown = next(b["image"] for b in episode[0]["content"] if b.get("type") == "image")
        country = flag_of.get(_content_key(shown))
        if country is None:  # a named question: the blank picture
            country = next(c for c in chosen if f"capital of {c.name}?" in text)
            assert country.known or country.capital not in text
            continue
        if not country.recognised:
            assert country.name not in text  # an untaught flag is never paired with its name
        if not country.known:
            assert country.capital not in text  # an untaught capital never appears with its country
        first = episode[1]["content"][0]["text"]
        first_turns["image" if "<search>" in first else "other"] += 1
    # on flag questions, image search is the first action in half of the episodes, taught or not
    assert first_turns["image"] == first_turns["other"]


@pytest.fixture(scope="module")
def base_model(taught, tmp_path_factory):
    from experiments.multimodal.model import build_base_model

    chosen, _, _ = taught
    return build_base_model(tmp_path_factory.mktemp("mm-base") / "base", chosen, MultimodalConfig())


def test_each_decision_is_the_token_where_the_knowledge_is_written(taught, base_model):
    from transformers import AutoTokenizer

    chosen, _, _ = taught
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    search = decision_tokens(tokenizer)["search"]
    for country in chosen[:5]:
        recall = tokenizer.encode(REASON_RECALL.format(name=country.name, capital=country.capital))
        unsure = tokenizer.encode(REASON_SEARCH.format(name=country.name))
        at = next(i for i, (a, b) in enumerate(zip(recall, unsure, strict=False)) if a != b)
        # the reasons part at one token: the capital (one token) or UNSURE in its place
        assert tokenizer.decode([recall[at]]) == country.capital and unsure[at] == search
        assert tokenizer.decode([search]) == UNSURE


def test_batches_split_by_episode_length_train_on_the_same_loss(taught, base_model):
    from agents.grpo import prepare_processing_class
    from agents.hf_policy import load_pretrained
    from experiments.on_demand.finetune import fit

    chosen, qs, env = taught
    episodes = sft_episodes(qs, chosen, env, epochs=1, seed=0).episodes[:24]
    assert len({len(e) for e in episodes}) == 3  # one, two and three exchanges in the one batch
    losses = []
    for split in (False, True):
        model, processor, _ = load_pretrained(base_model)
        prepare_processing_class(processor, env.protocol)
        result = fit(model, processor, episodes, lr=1e-3, batch_size=24, seed=0, desc="t", split_by_turns=split)
        losses.append(result.first_loss)
        after = fit(model, processor, episodes, lr=0.0, batch_size=24, seed=0, desc="t", split_by_turns=split)
        losses.append(after.first_loss)
    # the same loss before the step (micro-batches weighted by their labelled tokens) and after it
    assert losses[0] == pytest.approx(losses[2], rel=1e-5) and losses[1] == pytest.approx(losses[3], rel=1e-3)
    assert losses[1] < losses[0]


def test_the_name_loss_trains_the_name_and_the_answer_of_each_naming_turn(taught, base_model):
    import re

    from agents.grpo import assistant_header_ids, assistant_token_labels, end_of_turn_id, prepare_processing_class
    from agents.hf_policy import load_pretrained
    from experiments.multimodal.episodes import naming_episodes
    from experiments.on_demand.finetune import slot_labeler

    chosen, qs, env = taught
    _, processor, _ = load_pretrained(base_model)
    prepare_processing_class(processor, env.protocol)
    tokenizer = processor.tokenizer
    episodes = naming_episodes(qs, chosen, env, n=8, seed=0)
    batch = processor.apply_chat_template(
        episodes, tokenize=True, return_dict=True, return_tensors="pt", processor_kwargs={"padding": True}
    )
    labeler = slot_labeler(tokenizer, ("<reason>", "<answer>"))
    names = {c.name for c in chosen}
    for row, episode in zip(batch["input_ids"], episodes, strict=True):
        labels = assistant_token_labels(row, assistant_header_ids(tokenizer), end_of_turn_id(tokenizer))
        at = [i for i, t in enumerate(labeler(labels).tolist()) if t != -100]
        kept = [int(row[i]) for i in at]
        turn = episode[-1]["content"]
        turn = turn if isinstance(turn, str) else "".join(part.get("text", "") for part in turn)
        answer = re.search(r"<answer>\s*(.*?)\s*</answer>", turn).group(1)
        assert len(kept) == 2 < int((labels != -100).sum())  # two of the turn's tokens, not all of them
        assert tokenizer.decode([kept[0]]) in names and tokenizer.decode([kept[1]]) == answer
        # the name right after <reason>, the answer right after <answer>
        assert [tokenizer.decode([int(row[i - 1])]) for i in at] == ["<reason>", "<answer>"]


def test_taught_knowledge_is_the_forced_answer_per_split_at_the_taught_token(taught, base_model):
    import torch

    from agents.grpo import prepare_processing_class
    from agents.hf_policy import load_pretrained
    from experiments.multimodal.episodes import knowledge_episodes
    from experiments.multimodal.evaluation import search_tokens
    from experiments.multimodal.model import taught_knowledge

    chosen, qs, env = taught
    checks = knowledge_episodes(qs, chosen, env)
    # one check per taught flag and per taught capital, in its country's split
    for split in ("train", "validation", "test"):
        for what, taught_here in (
            ("flag", [c for c in chosen if c.recognised]),
            ("capital", [c for c in chosen if c.known]),
        ):
            expected = sorted(c.name if what == "flag" else c.capital for c in taught_here if c.split == split)
            assert sorted(t for s, w, t, _ in checks if s == split and w == what) == expected
    model, processor, _ = load_pretrained(base_model)
    prepare_processing_class(processor, env.protocol)
    tokenizer = processor.tokenizer
    before = taught_knowledge(model, processor, checks)
    # the batched measure is each episode's own forward pass, argmax over every token but the search ones
    banned = search_tokens(tokenizer)
    reason = tokenizer.convert_tokens_to_ids("<reason>")
    by_split: dict = {}
    for split, what, target, episode in checks:
        batch = processor.apply_chat_template([episode], tokenize=True, return_dict=True, return_tensors="pt")
        logits = model(**batch).logits[0].detach()
        logits[:, banned] = float("-inf")
        row = batch["input_ids"][0].tolist()
        token = tokenizer.convert_tokens_to_ids(target)
        at = row.index(token, row.index(reason))
        by_split.setdefault(split, {}).setdefault(f"{what}s", []).append(int(logits[at - 1].argmax()) == token)
    assert before == {s: {w: sum(v) / len(v) for w, v in found.items()} for s, found in sorted(by_split.items())}
    assert sum(len(found) for found in before.values()) == 6  # flags and capitals in each split
    # a model that puts one check's target first, after a banned search token: only that check is known
    split, what, target, _ = checks[0]

    class Biased:
        def eval(self):
            return model.eval()

        def __call__(self, **batch):
            out = model(**batch)
            bias = torch.zeros(out.logits.shape[-1])
            bias[banned[0]], bias[tokenizer.convert_tokens_to_ids(target)] = 2e4, 1e4
            out.logits = out.logits + bias
            return out

    forced = taught_knowledge(Biased(), processor, checks)
    n = {(s, w): sum(c[0] == s and c[1] == w for c in checks) for s, w, _, _ in checks}
    assert forced == {
        s: {f"{w}s": (1 / n[(s, w)] if (s, w) == (split, what) else 0.0) for (s2, w) in n if s2 == s}
        for s in sorted({c[0] for c in checks})
    }


def test_a_banned_token_is_left_out_of_the_loss_and_gets_no_gradient(taught, base_model):
    import torch

    from agents.grpo import prepare_processing_class
    from agents.hf_policy import load_pretrained
    from experiments.multimodal.episodes import knowledge_episodes
    from experiments.on_demand.finetune import labelled_loss

    chosen, qs, env = taught
    model, processor, _ = load_pretrained(base_model)
    prepare_processing_class(processor, env.protocol)
    episodes = [c[3] for c in knowledge_episodes(qs, chosen, env)[:4]]
    batch = processor.apply_chat_template(
        episodes, tokenize=True, return_dict=True, return_tensors="pt", processor_kwargs={"padding": True}
    )
    batch["labels"] = batch["input_ids"].clone()
    unsure = decision_tokens(processor.tokenizer)["search"]
    assert unsure not in batch["input_ids"].tolist()  # its row trains only through the output layer
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits[:, :-1].float()
    logits[..., unsure] = float("-inf")
    expected = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), batch["input_ids"][:, 1:].reshape(-1)
    )
    loss = labelled_loss(model, batch, banned=[unsure])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert loss.item() < labelled_loss(model, batch).item()  # one token fewer to share the probability with
    loss.backward()
    weight = model.get_output_embeddings().weight
    assert float(weight.grad[unsure].abs().sum()) == 0.0 and float(weight.grad.abs().sum()) > 0.0


def test_the_knowledge_pass_teaches_the_taught_answers_and_stops_at_its_target(taught, base_model):
    from agents.grpo import prepare_processing_class
    from agents.hf_policy import load_pretrained
    from experiments.multimodal.episodes import knowledge_episodes
    from experiments.multimodal.model import _knowledge_hits, knowledge_pass

    chosen, qs, env = taught
    checks = knowledge_episodes(qs, chosen, env)
    model, processor, _ = load_pretrained(base_model)
    prepare_processing_class(processor, env.protocol)
    config = MultimodalConfig(knowledge_steps=24, knowledge_check_every=12, sft_lr=1e-2, sft_batch_size=16)
    steps, done = knowledge_pass(model, processor, checks, config)
    assert steps == 24 and [c["step"] for c in done] == [0, 12, 24]
    assert done[0]["flags"] + done[0]["capitals"] < done[-1]["flags"] + done[-1]["capitals"]
    # a target already met (only what the model now knows): checked once, no step taken
    known = [c for c, (_, _, hit) in zip(checks, _knowledge_hits(model, processor, checks), strict=True) if hit]
    again, checked = knowledge_pass(model, processor, known, config)
    assert known and again == 0 and [c["step"] for c in checked] == [0]
    assert set(checked[0].values()) - {0} == {1.0}  # every kind it still knows, all of it (step 0 aside)


def test_the_episode_knowledge_pass_replays_every_shape_of_the_taught_countries_only(taught, base_model, monkeypatch):
    from agents.grpo import prepare_processing_class
    from agents.hf_policy import load_pretrained
    from experiments.multimodal import model as multimodal_model
    from experiments.multimodal.episodes import knowledge_episodes
    from experiments.multimodal.model import knowledge_pass, taught_about

    chosen, qs, env = taught
    replay = taught_about(qs, chosen)
    taught_here = {c.entity for c in chosen if c.recognised or c.known}
    assert {e.metadata["entity"] for e in replay} == taught_here != {c.entity for c in chosen}
    fitted: list = []
    real_fit = multimodal_model.fit

    def spy(model, processor, episodes, **kwargs):  # the real fit, its episodes kept to look at
        fitted.extend(episodes)
        return real_fit(model, processor, episodes, **kwargs)

    monkeypatch.setattr(multimodal_model, "fit", spy)
    model, processor, _ = load_pretrained(base_model)
    prepare_processing_class(processor, env.protocol)
    checks = knowledge_episodes(qs, chosen, env)
    config = MultimodalConfig(knowledge_steps=4, knowledge_check_every=2, knowledge_data="episodes", sft_batch_size=8)
    steps, done = knowledge_pass(model, processor, checks, config, replay, chosen, env)
    assert steps == 4 and [c["step"] for c in done] == [0, 2, 4] and len(fitted) == 32
    # whole episodes: direct answers and searches alike, with the whole turn's loss (no search token banned)
    assert any(len(e) == 2 for e in fitted) and any(len(e) > 2 for e in fitted)
    with pytest.raises(ValueError, match="needs the questions to replay"):
        knowledge_pass(model, processor, checks, config)
    with pytest.raises(ConfigError, match=r"knowledge_data must be one of \['answers', 'episodes'\]"):
        MultimodalConfig(knowledge_data="episode")


def test_a_shipped_start_serves_the_runs_with_its_model_and_data_settings(tmp_path):
    from experiments.multimodal.run import save_start, shipped_start

    out = tmp_path / "run"
    (out / "sft").mkdir(parents=True)
    (out / "settings.json").write_text(json.dumps(MultimodalConfig.main(seed=0).to_dict()))
    starts = tmp_path / "start"
    with pytest.raises(ConfigError, match="no finished fine-tuning"):
        save_start(out, "main-seed0", starts)
    (out / "sft" / "sft_stats.json").write_text("{}")
    saved = save_start(out, "main-seed0", starts)
    assert sorted(p.name for p in saved.iterdir()) == ["settings.json", "sft"]
    # the same model and data: the main job on either split, and the full configuration (more arms)
    for config in (MultimodalConfig.main(seed=0, eval_split="test"), MultimodalConfig.full(seed=0)):
        assert shipped_start(config, starts) == saved
    # another seed, another fine-tuning schedule: none
    for config in (MultimodalConfig.main(seed=1), MultimodalConfig.short(seed=0), MultimodalConfig.quick()):
        assert shipped_start(config, starts) is None
    # a damaged stamp: a clear error that names it, not a JSON traceback
    (saved / "settings.json").write_text("{truncated")
    with pytest.raises(ConfigError, match=r"main-seed0/settings.json is not valid JSON.*--save-start"):
        shipped_start(MultimodalConfig.main(seed=0), starts)


def test_the_shipped_start_is_the_main_jobs_and_knows_what_its_stats_say(tmp_path):
    """The starting point in the repository: found for the main job's settings, loadable, and it still
    knows the taught flags and capitals its fine-tuning measured (to one question per split and kind)."""
    from agents.grpo import prepare_processing_class
    from agents.hf_policy import load_pretrained
    from experiments.multimodal.episodes import knowledge_episodes
    from experiments.multimodal.model import taught_knowledge
    from experiments.multimodal.run import LATE_SETTINGS, STARTS, shipped_start

    config = MultimodalConfig.main(seed=0)
    start = shipped_start(config)
    assert start == STARTS / "main-seed0", "run: python -m experiments.multimodal.run --main --save-start"
    # made with the main job's model and data settings (GRPO's may have moved on since: they come after it)
    assert not set(config.differences(json.loads((start / "settings.json").read_text()))) - LATE_SETTINGS
    stats = json.loads((start / "sft" / "sft_stats.json").read_text())["after_sft"]["knowledge"]
    chosen = countries(config)
    qs = questions(chosen)
    env = _env_over(qs, config, tmp_path)
    checks = knowledge_episodes(qs, chosen, env)
    model, processor, _ = load_pretrained(str(start / "sft"))
    prepare_processing_class(processor, env.protocol)
    measured = taught_knowledge(model, processor, checks)
    assert measured.keys() == stats.keys() == {"train", "validation", "test"}
    for split, kinds in stats.items():
        for kind, share in kinds.items():
            n = sum(s == split and f"{w}s" == kind for s, w, _, _ in checks)
            assert abs(measured[split][kind] - share) <= 1 / n + 1e-9, (split, kind, measured[split][kind], share)
    # every name and capital is one token that decodes to itself, accents included ("Yaoundé" decoded
    # as "Yaound\ufffd" before the loader repaired the byte-level decoding of added tokens)
    from transformers import AutoTokenizer

    from agents.added_tokens import broken_added_tokens

    assert broken_added_tokens(AutoTokenizer.from_pretrained(start / "sft")) == []  # as saved (vLLM reads it)
    tokenizer = processor.tokenizer
    words = [w for c in chosen for w in (c.name, c.capital)]
    assert any(not w.isascii() and w.isalpha() for w in words)
    for word in words:
        ids = tokenizer.encode(f"<answer>{word}</answer>", add_special_tokens=False)
        assert tokenizer.convert_tokens_to_ids(word) in ids
        assert tokenizer.decode(ids, skip_special_tokens=True) == f"<answer>{word}</answer>"


def test_recognition_first_runs_the_recognition_pass_before_the_reading_pass(tmp_path, capsys):
    from experiments.multimodal.run import main

    out = tmp_path / "run"
    # the quick preset fine-tunes as the recipe does (reading first, name loss): the other path here
    argv = ["--quick", "--finetune-only", "--pass-order", "recognition-first", "--recognition-draw", "5"]
    argv += ["--recognition-loss", "turn", "--knowledge-steps", "3"]
    assert main([*argv, "--out", str(out)]) == 0
    stats = json.loads((out / "sft" / "sft_stats.json").read_text())
    assert stats["pass_order"] == "recognition-first" and stats["recognition_loss"] == "turn"
    began = stats["pass_began"]
    assert began["recognition"] < began["reading"] < stats["seconds"]
    assert began["reading"] >= stats["recognition_seconds"]  # the reading pass started after recognition ended
    assert [c["step"] for c in stats["reading_checks"]][:1] == [2] and stats["recognition_checks"][0]["step"] == 2
    assert json.loads((out / "settings.json").read_text())["recognition_draw"] == 5
    assert not (out / "results.json").exists() and not (out / "curate").exists()  # it stopped after fine-tuning
    printed = capsys.readouterr().out
    assert printed.index("- recognition (taught") < printed.index("- reading (query") < printed.index("after the whole")
    # what the whole-episode pass keeps of the taught knowledge, per split, measured before and after it
    assert (
        set(stats["knowledge_before_whole"]) == set(stats["after_sft"]["knowledge"]) == {"train", "validation", "test"}
    )
    assert "named / capitals given, answer forced, before → after the whole episodes: test " in printed
    # the knowledge pass after them: checked before its first step and every 2 (quick), at most 3 steps
    assert stats["knowledge_steps"] <= 3 and stats["knowledge_checks"][0]["step"] == 0
    assert "- knowledge (taught flags named / capitals given, all splits): step 0 " in printed
    with pytest.raises(ConfigError, match="knowledge_steps must be a non-negative int"):
        MultimodalConfig(knowledge_steps=-1)
    with pytest.raises(ConfigError, match="pass_order must be one of"):
        MultimodalConfig(pass_order="reading")
    with pytest.raises(ConfigError, match="recognition_draw must be a non-negative int"):
        MultimodalConfig(recognition_draw=-1)
    with pytest.raises(ConfigError, match=r"recognition_loss must be one of \['turn', 'name'\]"):
        MultimodalConfig(recognition_loss="names")


def test_the_doctests_pass():
    # the experiments are outside the doctest paths of setup.cfg
    from experiments.multimodal import report, spread

    for module in (multimodal_config, multimodal_evaluation, report, spread):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_reuse_takes_fine_tuning_only_from_a_run_with_the_same_model_and_data(tmp_path):
    from experiments.multimodal.run import reuse_stages

    source = tmp_path / "source"
    (source / "sft").mkdir(parents=True)
    (source / "sft" / "sft_stats.json").write_text("{}")
    (source / "settings.json").write_text(json.dumps(MultimodalConfig.short().to_dict()))
    copied = reuse_stages(source, tmp_path / "a", MultimodalConfig.short(grpo_steps=150, grpo_scale_rewards="none"))
    assert copied == ["sft"] and (tmp_path / "a" / "sft" / "sft_stats.json").is_file()
    with pytest.raises(ConfigError, match="sft_epochs"):
        reuse_stages(source, tmp_path / "b", MultimodalConfig.short(sft_epochs=3))


def test_a_folder_made_before_a_setting_existed_is_still_the_same_run(tmp_path):
    from experiments.on_demand.run import claim_work_folder

    older = MultimodalConfig.main(seed=1).to_dict()
    del older["grpo_ablation_steps"]  # a folder made before this setting existed
    assert MultimodalConfig.main(seed=1).differences(older) == []  # it could only have had its default
    assert MultimodalConfig.full(seed=1).differences(older) == ["arms", "grpo_ablation_steps"]
    (tmp_path / "settings.json").write_text(json.dumps(older))
    assert claim_work_folder(tmp_path, MultimodalConfig.main(seed=1))["grpo_ablation_steps"] is None
    with pytest.raises(ConfigError, match="other settings"):
        claim_work_folder(tmp_path, MultimodalConfig.main(seed=2))


def test_the_spread_of_grpo_reruns_finds_the_dip_of_the_committed_seed_0_rerun(tmp_path, capsys):
    from experiments.multimodal.spread import main as spread_main

    results = ROOT / "experiments" / "multimodal" / "results"
    names = ["main-validation-seed0-rerun.json", "main-validation-seed0-grpolr0.001.json"]
    out = tmp_path / "spread.md"
    assert spread_main([*(str(results / n) for n in names), "--by", "grpo_lr", "--out", str(out)]) == 0
    rows = {line.split("|")[-2].strip(): line for line in out.read_text().splitlines() if ".json" in line}
    # the recipe's rerun fell to 79.4% accuracy at step 40 and was back by step 60; half the rate never fell
    assert "| 79.4% | 40, 50 |" in rows[names[0]] and "| 96.8% | – |" in rows[names[1]]
    assert "| 0.002 | 1 | 1 | 6 of 6 |" in out.read_text() and "| 0.001 | 1 | 0 | 6 of 6 |" in out.read_text()
    assert capsys.readouterr().out == out.read_text()
    with pytest.raises(SystemExit):
        spread_main([str(results / names[0]), "--by", "grpo_rate"])
    assert "not a MultimodalConfig setting" in capsys.readouterr().err


def test_the_pooled_page_marks_each_finding_per_seed(tmp_path):
    from experiments.multimodal.pool import main as pool_main

    committed = Path(__file__).resolve().parents[1] / "experiments/multimodal/results"
    one = json.loads((committed / "short-validation-seed0-steps150.json").read_text())
    other = json.loads(json.dumps(one))
    other["settings"]["seed"] = 1
    other["arms"]["on-demand"]["endpoint"]["text_search_unknown"] = 0.9
    paths = []
    for r in (one, other):
        paths.append(tmp_path / f"seed{r['settings']['seed']}.json")
        paths[-1].write_text(json.dumps(r))
    assert pool_main([*map(str, paths), "--out", str(tmp_path / "pooled")]) == 0
    page = (tmp_path / "pooled" / "findings.md").read_text()
    row = next(line for line in page.splitlines() if line.startswith("| text search on unknown capitals"))
    assert row.split("|")[2:5] == [" **no** ", " yes ", " **no** "]  # seed 0, seed 1, pooled mean 0.625
    assert "2 seeds (0, 1)" in page and (tmp_path / "pooled" / "curves.png").stat().st_size > 10_000


def test_pooling_merges_the_parts_of_one_seed(tmp_path):
    from experiments.multimodal.pool import made_minutes, merge_seeds
    from experiments.multimodal.pool import main as pool_main

    committed = Path(__file__).resolve().parents[1] / "experiments/multimodal/results"
    recipe = json.loads((committed / "main-validation-seed0.json").read_text())
    ablations = json.loads((committed / "main-validation-seed0-ablations.json").read_text())
    (whole,) = merge_seeds([recipe, ablations])
    assert list(whole["arms"]) == ["on-demand", "no-penalty", "unbalanced", "ratio-2:1"] and whole["parts"] == 2
    assert whole["seconds_total"] == recipe["seconds_total"] + ablations["seconds_total"]
    # both parts reused one fine-tuning (made once, counted once) on top of their own calls' time
    assert recipe["reused_seconds"]["fine-tuning"] == ablations["reused_seconds"]["fine-tuning"] > 60
    assert made_minutes(whole) == pytest.approx(made_minutes(recipe) + ablations["seconds_total"] / 60)
    assert list(recipe["arms"]) == ["on-demand"]  # the inputs are left as they were
    with pytest.raises(ValueError, match=r"both trained \['no-penalty'"):
        merge_seeds([recipe, ablations, ablations])
    with pytest.raises(ValueError, match="no results file has the on-demand arm"):
        merge_seeds([ablations])
    other_recipe = json.loads(json.dumps(recipe))
    other_recipe["settings"].update(seed=5, pass_order="reading-first")
    with pytest.raises(ValueError, match=r"seed 5 was made with other settings than seed 0: \['pass_order'\]"):
        merge_seeds([recipe, ablations, other_recipe])
    paths = [tmp_path / "recipe.json", tmp_path / "ablations.json"]
    for path, r in zip(paths, (recipe, ablations), strict=True):
        path.write_text(json.dumps(r))
    assert pool_main([*map(str, paths), "--out", str(tmp_path / "pooled")]) == 0
    page = (tmp_path / "pooled" / "findings.md").read_text()
    assert "1 seed (0)" in page and "| GRPO ratio-2:1 |" in page and "| GRPO on-demand |" in page
    # the ablation arms' finding, from their own endpoints (validation seed 0: both searched everything)
    assert "| no-penalty arm searches on ≥ 90% of the questions | yes | yes |" in page
    assert "| unbalanced arm searches on ≥ 90% of the questions | yes | yes |" in page
    assert "| image → text chain where neither is known ≥ 80% | yes | yes |" in page
    with pytest.raises(SystemExit):  # an arm given twice is refused, not silently overwritten
        pool_main([str(paths[1]), *map(str, paths), "--out", str(tmp_path / "again")])


def test_config_checks_and_presets():
    assert MultimodalConfig.short().arms == MultimodalConfig.main().arms == ["on-demand"]
    main, short = MultimodalConfig.main(), MultimodalConfig.short()
    # the main job is the short configuration, never a different recipe
    differ = {k for k, v in main.to_dict().items() if short.to_dict()[k] != v}
    assert differ == {"reading_check_every"} and not main.is_quick
    # the recipe's fine-tuning (validation seeds 0-2), which the quick preset runs on a budget
    recipe = ("reading-first", "name", 1000)
    assert (main.pass_order, main.recognition_loss, main.recognition_steps) == recipe
    assert (MultimodalConfig.quick().pass_order, MultimodalConfig.quick().recognition_loss) == recipe[:2]
    assert MultimodalConfig.main(grpo_steps=60).grpo_steps == 60  # overrides still apply
    assert MultimodalConfig.quick().is_quick and not MultimodalConfig.full().is_quick
    # the full configuration is the main job's recipe with every arm, the ablations on a budget of their own
    full = MultimodalConfig.full()
    differ = {k for k, v in full.to_dict().items() if main.to_dict()[k] != v}
    assert differ == {"arms", "grpo_ablation_steps"} and full.arms == list(ARMS)
    assert [full.arm_steps(a) for a in ARMS] == [150, 60, 60, 60]
    assert MultimodalConfig.main().arm_steps("no-penalty") == 150  # no ablation budget: grpo_steps
    with pytest.raises(ConfigError, match="must divide grpo_ablation_steps"):
        MultimodalConfig.full(grpo_ablation_steps=45)
    with pytest.raises(ConfigError, match="grpo_ablation_steps must be an int"):
        MultimodalConfig.full(grpo_ablation_steps=0)
    with pytest.raises(ConfigError, match="arms must be"):
        MultimodalConfig(arms=["on-demnd"])
    with pytest.raises(ConfigError, match="unknown MultimodalConfig setting"):
        MultimodalConfig.from_dict({"sft_epoch": 3})
    with pytest.raises(ConfigError, match="eval_split"):
        MultimodalConfig(eval_split="train")
    with pytest.raises(ConfigError, match="grpo_scale_rewards"):
        MultimodalConfig(grpo_scale_rewards="std")
    with pytest.raises(ConfigError, match="grpo_seed must be a non-negative int"):
        MultimodalConfig(grpo_seed=-1)


def test_grpo_can_be_rerun_with_its_own_seed_from_the_same_fine_tuned_model(tmp_path):
    from experiments.multimodal.run import LATE_SETTINGS
    from experiments.on_demand.training import grpo_config

    env = MultimodalConfig.quick().env.replace(prompts=str(tmp_path / "prompts.json"))
    arm = ARMS[RECIPE_ARM]
    seeds = []
    for config in (MultimodalConfig.quick(seed=3), MultimodalConfig.quick(seed=3, grpo_seed=11)):
        grpo = grpo_config(RECIPE_ARM, tmp_path / "d.parquet", arm, tmp_path / "sft", tmp_path / "g", env, config)
        seeds.append((grpo.seed, grpo.data_seed))
    assert seeds == [(3, 3), (11, 11)]  # None: the run's seed
    assert "grpo_seed" in LATE_SETTINGS  # a rerun of GRPO alone may --reuse the fine-tuning


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_quick_run_produces_every_metric(tmp_path, capsys):
    from experiments.multimodal.report import COLUMNS
    from experiments.multimodal.run import main

    out = tmp_path / "run"
    assert main(["--quick", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert (out / "curves.png").stat().st_size > 10_000 and (out / "results.md").is_file()
    assert set(results["arms"]) == {"on-demand", "no-penalty", "unbalanced", "ratio-2:1"}
    rows = [*results["baselines"].values(), *(arm["endpoint"] for arm in results["arms"].values())]
    for row in rows:
        for key, _ in COLUMNS:
            assert row[key] is not None, key  # every finding's questions exist in the held-out split
        # by measured knowledge: each flag (capital) question is named (given) or not, so one side has questions
        assert row["image_search_named"] is not None or row["image_search_unnamed"] is not None
        assert row["text_search_given"] is not None or row["text_search_not_given"] is not None
    for name, arm in results["arms"].items():  # the ablation arms train for their own, shorter budget
        assert [p["step"] for p in arm["curve"]] == ([0, 1, 2] if name == "on-demand" else [0, 1])
    assert "before GRPO" in before_after(results) and "GRPO on-demand" in markdown(results)
    assert results["reused_seconds"] == {}
    # a rerun reuses the finished stages, reports what they took when made, and refuses other settings
    assert main(["--quick", "--out", str(out)]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["reused_seconds"]["fine-tuning"] == results["sft"]["seconds"]
    assert again["reused_seconds"]["GRPO on-demand"] == results["arms"]["on-demand"]["train_seconds"]
    assert again["baselines"] == results["baselines"]  # greedy: the same policy gives the same rates
    assert "Reused from an earlier call" in (out / "results.md").read_text()
    with pytest.raises(SystemExit):
        main(["--quick", "--seed", "1", "--out", str(out)])
    assert Path(out / "settings.json").is_file()
