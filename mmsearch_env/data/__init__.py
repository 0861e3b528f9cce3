"""Datasets: the :class:`Example` schema and the loaders that produce it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmsearch_env.data.schema import (
    SEARCH_NEEDS,
    Example,
    example_from_record,
    examples_from_records,
    load_image,
    load_jsonl,
)
from mmsearch_env.errors import ConfigError, DatasetError, did_you_mean

__all__ = [
    "BUILTIN_DATASETS",
    "SEARCH_NEEDS",
    "DatasetError",
    "Example",
    "example_from_record",
    "examples_from_records",
    "load_dataset",
    "load_image",
    "load_jsonl",
]

#: Datasets that ship with the package, and their splits.
BUILTIN_DATASETS = {"sample": ("train", "validation", "test")}


def load_dataset(dataset: Any = "sample", split: str | None = "train") -> list[Example]:
    """Resolve the ``dataset`` argument of ``gym.make("MMSearch-v0")`` into validated examples.

    Args:
        dataset: a built-in name (``"sample"``), a path to a ``.jsonl`` file, or a list of rows
            (dicts with ``question``, ``image``, ``answer`` and optional ``candidate_answers``, ``id``,
            ``category``, ``search_need``, ``image_url``; or :class:`Example` objects).
        split: the split of a built-in dataset (``None`` = all); ignored for lists and files.
    """
    if isinstance(dataset, str) and dataset in BUILTIN_DATASETS:
        splits = BUILTIN_DATASETS[dataset]
        if split is not None and split not in splits:
            raise ConfigError(
                f"dataset {dataset!r} has no split {split!r}; its splits are {list(splits)} (or None for all)."
                + did_you_mean(str(split), splits)
            )
        from mmsearch_env.data.sample import sample_examples

        return list(sample_examples(split))
    if isinstance(dataset, (str, os.PathLike)):
        path = Path(dataset)
        if path.suffix in (".jsonl", ".json") or path.exists():
            if path.suffix not in (".jsonl", ".json"):
                raise ConfigError(
                    f"dataset file {str(path)!r}: only .jsonl files are read here (one JSON object per line)."
                )
            return load_jsonl(path)
        raise ConfigError(
            f"unknown dataset {str(dataset)!r}: not a built-in name {sorted(BUILTIN_DATASETS)} and not a "
            "path to a .jsonl file." + did_you_mean(str(dataset), BUILTIN_DATASETS)
        )
    if isinstance(dataset, Sequence) and not isinstance(dataset, (bytes, bytearray)):
        return examples_from_records(dataset)
    raise ConfigError(
        f"dataset must be a name, a .jsonl path or a list of rows; got {type(dataset).__name__}. "
        "Example: gym.make('MMSearch-v0', dataset=[{'question': ..., 'image': ..., 'answer': ...}])."
    )
