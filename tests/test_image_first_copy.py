"""The image-first copy benchmark: its reading pass runs under a condition, its loss is the model's, and
what it measured about M-RoPE positions holds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
if str(ROOT) not in sys.path:  # the experiments are importable from the repository root only
    sys.path.insert(0, str(ROOT))

import image_first_copy as bench  # noqa: E402

from experiments.on_demand.config import OnDemandConfig  # noqa: E402


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    config = OnDemandConfig.quick(
        hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64, vocab_size=512
    ).replace(tokenizer_texts="sample")
    return bench.prepare(tmp_path_factory.mktemp("image-first-copy"), 0, config)


@pytest.mark.parametrize("name", ["first", "first-1d-positions", "first-text-pads"])
def test_a_two_step_condition_gives_both_slot_accuracies(prepared, name):
    run = bench.run_condition(prepared, bench.CONDITIONS[name], steps=2, batch_size=4, check_every=1, check_drills=4)
    assert [p["step"] for p in run["curve"]] == [0, 1, 2]
    for point in run["curve"]:
        assert set(point) == {"step", "query", "answer"}
        assert 0.0 <= point["query"] <= 1.0 and 0.0 <= point["answer"] <= 1.0


def _batch(prepared, position):
    from agents.grpo import prepare_processing_class
    from agents.hf_policy import load_pretrained

    model, processor, _ = load_pretrained(prepared.base)
    prepare_processing_class(processor, prepared.env.protocol)
    episodes = bench.drills(prepared, position, 2, 4)
    batch = processor.apply_chat_template(
        episodes, tokenize=True, return_dict=True, return_tensors="pt", processor_kwargs={"padding": True}
    )
    return model, processor, batch


def test_the_labelled_loss_is_the_models_loss(prepared):
    import torch

    from agents.grpo import assistant_header_ids, assistant_token_labels, end_of_turn_id
    from experiments.on_demand.finetune import copy_labeler, labelled_loss

    model, processor, batch = _batch(prepared, "first")
    tokenizer = processor.tokenizer
    header, end = assistant_header_ids(tokenizer), end_of_turn_id(tokenizer)
    labeler = copy_labeler(tokenizer)
    labels = torch.stack([labeler(assistant_token_labels(row, header, end)) for row in batch["input_ids"]])
    assert (labels != -100).sum() == 2 * len(labels)  # the query and the answer of each drill
    with torch.no_grad():
        full = model(**batch, labels=labels).loss
        fast = labelled_loss(model, {**batch, "labels": labels})
    assert torch.allclose(full, fast, atol=1e-5)


def test_text_after_the_image_keeps_sequential_positions(prepared):
    """M-RoPE gives the image's own tokens 3-D positions, but every text token, before and after the
    image, gets the plain sequential position (the image advances the count by as many positions as it
    has tokens here, a 1 x 2 grid): positions are not what tells "first" from "none"."""
    model, _, batch = _batch(prepared, "first")
    mismatch = bench.position_mismatch(model, batch)
    image = batch["input_ids"] == model.config.image_token_id
    assert image.any()
    assert not (mismatch & ~image).any()
    assert mismatch.sum() >= 1  # the second image token: same row and column-1 as the first


def test_shifted_positions_leave_the_function_unchanged(prepared):
    """The chaos control: RoPE sees only relative positions, so shifting every position id changes the
    model's output by rounding alone."""
    import torch

    model, _, batch = _batch(prepared, "none")
    with torch.no_grad():
        plain = model(**batch).logits
        with bench.intervened(model, "shifted_positions"):
            shifted = model(**batch).logits
    assert torch.allclose(plain, shifted, atol=1e-4)


def test_one_image_token_gets_exactly_the_sequential_position(prepared):
    """A LLaVA-style single image token (an image of one merged 2 x 2 patch group, grid 1 x 2 x 2) gets
    the same position in all three M-RoPE sections, and the text after it continues one further: every
    position is the plain 1-D one."""
    import torch

    from agents.hf_policy import load_pretrained

    model, _, _ = load_pretrained(prepared.base)
    config = model.config
    text = [100, 101, 102]  # ordinary tokens (the special ones come first in the vocabulary)
    ids = torch.tensor(
        [[*text, config.vision_start_token_id, config.image_token_id, config.vision_end_token_id, *text]]
    )
    types = (ids == config.image_token_id).int()
    positions, _ = model.model.get_rope_index(
        ids, mm_token_type_ids=types, image_grid_thw=torch.tensor([[1, 2, 2]]), attention_mask=torch.ones_like(ids)
    )
    assert torch.equal(positions, torch.arange(ids.shape[1]).view(1, 1, -1).expand(3, 1, -1))
