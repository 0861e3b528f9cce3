"""Which tokens of a rendered chat are the assistant's.

These mirror the GRPO trainer's public helpers ``assistant_header_ids(tokenizer)`` and
``assistant_token_labels(input_ids, header_ids, end_id)`` (same contracts); they will be folded into
the trainer's public ones once both are available, and are kept here until then so that the experiment
uses no private name of ``agents``.
"""

from __future__ import annotations

from typing import Any

from mmsearch_env.errors import ConfigError

__all__ = ["assistant_header_ids", "assistant_token_labels"]


def assistant_header_ids(tokenizer: Any) -> list[int]:
    """Token ids the chat template puts before each assistant turn (from the tokenizer, not hard-coded)."""
    probe = [{"role": "user", "content": "x"}]
    with_header = tokenizer.apply_chat_template(probe, add_generation_prompt=True, tokenize=False)
    without = tokenizer.apply_chat_template(probe, add_generation_prompt=False, tokenize=False)
    if not with_header.startswith(without):
        raise ConfigError("the chat template is not prefix-preserving; the experiment needs a Qwen-style template")
    return tokenizer.encode(with_header[len(without) :], add_special_tokens=False)


def assistant_token_labels(input_ids: Any, header_ids: list[int], end_id: int) -> Any:
    """Labels (a tensor like ``input_ids``) that train on assistant turns only: -100 everywhere else, the
    header excluded, the end-of-turn token ``end_id`` included."""
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
