"""The supervised warm-start (TRL ``SFTTrainer``, assistant-only loss) and the assistant-token labels."""

from __future__ import annotations

import os

import pytest
import torch_guard  # noqa: F401  (skips the module without the training extra)

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import gymnasium as gym
import torch

from agents.grpo import (
    EpisodeCollator,
    assistant_header_ids,
    assistant_token_labels,
    end_of_turn_id,
    fit_episodes,
    prepare_processing_class,
)
from agents.hf_policy import load_pretrained, load_processing_class
from agents.tiny_vlm import build_tiny_vlm
from mmsearch_env.data import load_dataset
from mmsearch_env.protocol import get_protocol


def episodes(protocol: str):
    p = get_protocol(protocol)
    sample = load_dataset("sample", None)[0]
    user = {"role": "user", "content": [{"type": "image", "image": sample.image}, {"type": "text", "text": "Q?"}]}
    short = [user, {"role": "assistant", "content": p.format_action("answer", "Arvenia", reason="Known.")}]
    long = [
        user,
        {"role": "assistant", "content": p.format_action("text_search", "Arvenia", reason="Search.")},
        {"role": "user", "content": [{"type": "text", "text": "<information>Arvenia.</information>"}]},
        {"role": "assistant", "content": p.format_action("answer", "Arvenia", reason="Read.")},
    ]
    return short, long


def test_warm_start_fit_learns_the_episodes(tmp_path):
    model, processor, _ = load_pretrained(build_tiny_vlm())
    prepare_processing_class(processor, "tags")
    short, long = episodes("tags")
    stats = fit_episodes(
        model, processor, [short, long] * 4, output_dir=tmp_path, epochs=6, lr=5e-3, batch_size=4, seed=0,
        use_cpu=True, progress=False,
    )  # fmt: skip
    assert stats["steps"] == 12  # 8 episodes in batches of 4, 6 epochs
    assert stats["last_loss"] < stats["first_loss"] / 2
    assert not model.training
    assert not list(tmp_path.glob("checkpoint-*"))  # logs only


@pytest.mark.parametrize("protocol", ["tags", "tool_calls"])
def test_collator_trains_on_exactly_the_assistant_turns(protocol):
    """The template's generation markers and the token-level labeler agree: each assistant turn and its
    <|im_end|>, nothing of the prompt, the tool results (images included) or the padding."""
    processor = prepare_processing_class(load_processing_class(build_tiny_vlm()), protocol)
    env = gym.make("MMSearch-v0", dataset="sample", search="sample", protocol=protocol)
    p = env.unwrapped.protocol
    obs, _ = env.reset(options={"example_id": "sample-arvenia-image-text"})
    for turn in (p.format_action("image_search", reason="Unknown."), p.format_action("answer", "Arvenia")):
        obs, *_ = env.step(turn)
    short, _ = episodes(protocol)
    tools = p.tool_schemas() or None
    batch = EpisodeCollator(processor, tools=tools)([{"messages": obs["messages"]}, {"messages": short}])
    tok = processor.tokenizer
    header, end = assistant_header_ids(tok), end_of_turn_id(tok)
    for row in range(2):
        ids = batch["input_ids"][row]
        expected = assistant_token_labels(ids, header, end)
        expected[batch["attention_mask"][row] == 0] = -100
        labels = batch["labels"][row]
        assert torch.equal(labels[expected != -100], expected[expected != -100])
        # TRL's qwen3_vl training template also trains the newline after <|im_end|>; ours stops at <|im_end|>
        extra = ((labels != -100) & (expected == -100)).nonzero().flatten()
        assert len(extra) == (0 if protocol == "tags" else (expected == end).sum())
        assert all(ids[i - 1] == end and tok.decode(ids[i]) == "\n" for i in extra)
    first = batch["labels"][0]
    trained = tok.decode(first[(first != -100) & (assistant_token_labels(batch["input_ids"][0], header, end) != -100)])
    said = [b["text"] for m in obs["messages"] if m["role"] == "assistant" for b in m["content"] if b["type"] == "text"]
    assert trained == "".join(text + "<|im_end|>" for text in said)
    assert int((batch["input_ids"][0] == processor.image_token_id).sum()) > 0  # thumbnails are in the input
    if tools:  # the tool_calls prompt lists the tools, as in training and evaluation
        assert "text_search" in tok.decode(batch["input_ids"][0][: int((batch["labels"][0] != -100).nonzero()[0])])
