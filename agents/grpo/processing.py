"""Processor set-up for the two protocols (chat template, response parser) and assistant-token labels."""

from __future__ import annotations

import copy
from importlib import resources
from typing import Any

from agents.tiny_vlm import chat_template_path
from mmsearch_env.errors import ConfigError
from mmsearch_env.protocol import get_protocol

__all__ = [
    "TAGS_RESPONSE_TEMPLATE",
    "TURN_TOKENS",
    "add_turn_tokens",
    "assistant_header_ids",
    "assistant_token_labels",
    "end_of_turn_id",
    "prepare_processing_class",
    "tags_chat_template",
]

#: Response parser (transformers ``response_template``) for the tag protocol: the paper's action tags
#: become tool calls, everything else stays in ``content``.
TAGS_RESPONSE_TEMPLATE: dict[str, Any] = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "tool_calls": {
            "open_pattern": r"<(?P<name>search|text_search)>",
            "close_pattern": r"</(?:search|text_search)>\s*",
            "repeats": True,
            "content": "text",
            "transform": {"type": "function", "function": {"name": "{name}", "arguments": {"query": "{content}"}}},
        },
        "content": {"close_pattern": r"<\|im_end\|>\s*", "content": "text"},
    },
}


def tags_chat_template() -> str:
    """Our Qwen-format chat template for the tag protocol (``agents/templates/tags_chat.jinja``).

    No tool-schema block, tool results as plain user turns (as in the paper), and
    ``{% generation %}`` markers around each assistant turn for assistant-only supervised loss.
    """
    return resources.files("agents").joinpath("templates/tags_chat.jinja").read_text("utf-8")


def prepare_processing_class(processor: Any, protocol: str) -> Any:
    """Set the protocol's chat template and response parser on a Qwen-VL processor (in place).

    ``"tool_calls"``: TRL's ``qwen3_vl`` template (renders tool schemas, tool calls, and images inside
    tool messages) and TRL's Qwen parser. ``"tags"``: ours (:func:`tags_chat_template`,
    :data:`TAGS_RESPONSE_TEMPLATE`). The tokenizer pads on the left, as generation needs.
    Returns ``processor``.
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.padding_side = "left"
    if get_protocol(protocol).name == "tags":
        template = tags_chat_template()
        response_template: dict[str, Any] = copy.deepcopy(TAGS_RESPONSE_TEMPLATE)
    else:
        from trl.chat_template_utils import qwen3_template

        template = chat_template_path().read_text("utf-8")
        response_template = copy.deepcopy(qwen3_template)
    processor.chat_template = template
    tokenizer.chat_template = template
    tokenizer.response_template = response_template
    return processor


#: The turn tokens of the Qwen chat format our templates and the tag response parser use.
TURN_TOKENS = ("<|im_start|>", "<|im_end|>")


def add_turn_tokens(model: Any, tokenizer: Any) -> list[str]:
    """Give a text-only model of another chat format the turn tokens of ours (in place); returns those added.

    Our templates and the response parser speak the Qwen format; a model whose vocabulary lacks
    ``<|im_start|>`` / ``<|im_end|>`` (Gemma, Llama...) gets them as special tokens with new embedding
    rows, and ``<|im_end|>`` becomes its end-of-sequence token so generation stops at the end of a
    turn. The format warm-start then teaches the model to write them.
    """
    unknown = tokenizer.unk_token_id
    missing = [t for t in TURN_TOKENS if tokenizer.convert_tokens_to_ids(t) in (None, unknown)]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
        model.resize_token_embeddings(len(tokenizer))
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    tokenizer.eos_token = "<|im_end|>"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.eos_token_id = end
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        generation.eos_token_id = end
        generation.pad_token_id = tokenizer.pad_token_id
    return missing


def assistant_header_ids(tokenizer: Any) -> list[int]:
    """Token ids the chat template puts before each assistant turn (from the tokenizer, not hard-coded).

    Raises :class:`ConfigError` for a template whose generation prompt is not a plain suffix.
    """
    probe = [{"role": "user", "content": "x"}]
    with_header = tokenizer.apply_chat_template(probe, add_generation_prompt=True, tokenize=False)
    without = tokenizer.apply_chat_template(probe, add_generation_prompt=False, tokenize=False)
    if not with_header.startswith(without):
        raise ConfigError("the chat template is not prefix-preserving; MMSearch GRPO needs a Qwen-style template")
    return tokenizer.encode(with_header[len(without) :], add_special_tokens=False)


def end_of_turn_id(tokenizer: Any) -> int:
    """The id of ``<|im_end|>``, the token that closes every turn of the Qwen chat format."""
    return int(tokenizer.convert_tokens_to_ids("<|im_end|>"))


def assistant_token_labels(input_ids: Any, header_ids: list[int], end_id: int) -> Any:
    """Labels (a tensor like ``input_ids``, one row) that train on assistant turns only.

    Each assistant turn's tokens after ``header_ids`` up to and including ``end_id`` keep their id;
    every other position is -100 (ignored by the loss).

    >>> import torch
    >>> assistant_token_labels(torch.tensor([9, 1, 7, 5, 6, 2, 9]), header_ids=[1, 7], end_id=2).tolist()
    [-100, -100, -100, 5, 6, 2, -100]
    """
    labels = input_ids.clone().fill_(-100)
    ids = input_ids.tolist()
    h = len(header_ids)
    i = 0
    while i < len(ids):
        if ids[i : i + h] == header_ids:
            j = i + h
            while j < len(ids) and ids[j] != end_id:
                j += 1
            labels[i + h : j + 1] = input_ids[i + h : j + 1]
            i = j + 1
        else:
            i += 1
    return labels
