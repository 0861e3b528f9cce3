"""The training questions: which ones (a seeded subset, shared with the warm-start) and their prompts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from mmsearch_env.data.export import to_grpo_dataset
from mmsearch_env.env import MMSearchEnv

__all__ = ["make_train_dataset", "sample_train_examples"]

T = TypeVar("T")


def sample_train_examples(examples: Sequence[T], limit: int | None, seed: int) -> Sequence[T]:
    """The questions training uses: all of them, or ``limit`` drawn evenly at random (seeded), in order.

    >>> list(sample_train_examples("abcdef", None, seed=0))
    ['a', 'b', 'c', 'd', 'e', 'f']
    >>> len(sample_train_examples("abcdef", 3, seed=0))
    3
    """
    if limit is None or limit >= len(examples):
        return examples
    import numpy as np

    chosen = np.random.default_rng(seed).choice(len(examples), size=limit, replace=False)
    return [examples[int(i)] for i in sorted(chosen)]


def make_train_dataset(env_kwargs: Mapping[str, Any], *, limit: int | None = None, seed: int = 0) -> Any:
    """A ``datasets.Dataset`` with the env's first observation per question: ``prompt``, ``images``,
    ``example_id``, ``answer`` (and ``candidate_answers``, ``category``, ``search_need``).

    The prompt is exactly what ``env.reset`` shows (instruction wording, limits), with the image as a
    placeholder block filled from ``images`` by TRL. One implementation serves the trainer and users
    exporting their data: :func:`mmsearch_env.data.export.to_grpo_dataset`. ``limit``: train on that
    many questions of the split, drawn with ``seed`` (the warm-start uses the same ones). With
    ``image_position="none"`` (text-only training) there is no ``images`` column.
    """
    if limit is None:
        dataset = to_grpo_dataset(dict(env_kwargs))
    else:
        env = MMSearchEnv(**{**env_kwargs, "search": "disabled"})
        rest = {k: v for k, v in env_kwargs.items() if k not in ("dataset", "split", "search")}
        dataset = to_grpo_dataset(list(sample_train_examples(env.examples, limit, seed)), env_kwargs=rest)
    if env_kwargs.get("image_position") == "none":
        # The text-only mode: no image anywhere, so TRL treats the prompts as text (no pixel_values).
        dataset = dataset.remove_columns("images")
    return dataset
