"""Export a dataset to the ``datasets.Dataset`` the GRPO trainer consumes.

The prompt is built by ``env.reset`` itself, so the trainer sees exactly the environment's first
observation (instruction wording, search limits, protocol) — never a copy of it that could drift.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from tqdm.auto import tqdm

from mmsearch_env.env import MMSearchEnv
from mmsearch_env.errors import ConfigError

__all__ = ["GRPO_COLUMNS", "to_grpo_dataset"]

logger = logging.getLogger(__name__)

#: Columns of :func:`to_grpo_dataset`'s result, in order.
GRPO_COLUMNS = ("prompt", "images", "example_id", "answer", "candidate_answers", "category", "search_need")


def _placeholder_messages(messages: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[Any]]:
    """Chat messages with image blocks replaced by ``{"type": "image"}`` placeholders, and the images in order."""
    images: list[Any] = []
    prompt: list[dict[str, Any]] = []
    for message in messages:
        content = []
        for block in message["content"]:
            if block["type"] == "image":
                images.append(block["image"])
                content.append({"type": "image"})
            else:
                content.append({"type": "text", "text": block["text"]})
        prompt.append({"role": message["role"], "content": content})
    return prompt, images


def to_grpo_dataset(
    source: Mapping[str, Any] | Sequence[Any] | str,
    *,
    env_kwargs: Mapping[str, Any] | None = None,
    limit: int | None = None,
    chunk_size: int = 256,
    progress: bool = False,
) -> Any:
    """A ``datasets.Dataset`` with one row per question, in the shape the GRPO trainer consumes.

    Args:
        source: ``gym.make("MMSearch-v0", ...)`` keyword arguments (a dict, e.g. ``{"dataset":
            "fvqa_train.parquet", "split": None, "protocol": "tags"}``), or a dataset (anything
            ``load_dataset`` accepts: a path, a name, a list of rows or examples).
        env_kwargs: more environment arguments when ``source`` is a dataset (protocol, limits, prompts).
        limit: only the first ``limit`` questions.
        chunk_size: rows converted to Arrow at a time (images are encoded per chunk, so memory stays
            bounded by one chunk of decoded images).

    Columns (:data:`GRPO_COLUMNS`): ``prompt`` (the first observation's messages with each image
    block replaced by ``{"type": "image"}``), ``images`` (the images in placeholder order, as the
    ``datasets`` Image feature), ``example_id``, ``answer``, ``candidate_answers`` (list of str),
    ``category`` and ``search_need`` (str or None).

    The environment is built with ``search="disabled"``: the first observation does not depend on the
    backend, and no backend (or corpus index) is built for an export.
    """
    try:
        import datasets as hf
    except ImportError as exc:
        raise ConfigError("to_grpo_dataset needs the datasets package: pip install datasets") from exc
    if isinstance(source, Mapping) and "path" not in source:
        kwargs = dict(source)
        kwargs.update(env_kwargs or {})
    else:
        kwargs = {**dict(env_kwargs or {}), "dataset": source}
    env = MMSearchEnv(**{**kwargs, "search": "disabled"})
    try:
        count = len(env.examples) if limit is None else min(limit, len(env.examples))
        if count < 1:
            raise ConfigError(f"limit must be a positive number of questions, got {limit!r}")
        features = hf.Features(
            {
                "prompt": [
                    {"role": hf.Value("string"), "content": [{"type": hf.Value("string"), "text": hf.Value("string")}]}
                ],
                "images": hf.Sequence(hf.Image()),
                "example_id": hf.Value("string"),
                "answer": hf.Value("string"),
                "candidate_answers": hf.Sequence(hf.Value("string")),
                "category": hf.Value("string"),
                "search_need": hf.Value("string"),
            }
        )
        parts = []
        bar = tqdm(total=count, desc="export", disable=not progress, leave=False)
        for start in range(0, count, chunk_size):
            rows = []
            for index in range(start, min(start + chunk_size, count)):
                example = env.examples[index]
                observation, _ = env.reset(options={"index": index})
                prompt, images = _placeholder_messages(observation["messages"])
                for message in prompt:  # one Arrow type for text and image blocks: image blocks get text=None
                    for block in message["content"]:
                        block.setdefault("text", None)
                rows.append(
                    {
                        "prompt": prompt,
                        "images": images,
                        "example_id": example.id,
                        "answer": example.answer,
                        "candidate_answers": list(example.candidate_answers),
                        "category": example.category,
                        "search_need": example.search_need,
                    }
                )
                bar.update(1)
            parts.append(hf.Dataset.from_list(rows, features=features))
        bar.close()
    finally:
        env.close()
    return parts[0] if len(parts) == 1 else hf.concatenate_datasets(parts)
