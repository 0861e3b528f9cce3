"""Datasets: the :class:`Example` schema and the loaders that produce it."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmsearch_env.corpus.questions import corpus_examples
from mmsearch_env.data.loaders import load_file, load_hf
from mmsearch_env.data.sample import sample_examples
from mmsearch_env.data.scenes import ScreenshotScenes, screenshot_scenes
from mmsearch_env.data.schema import (
    SEARCH_NEEDS,
    Example,
    ImageRef,
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
    "ImageRef",
    "ScreenshotScenes",
    "example_from_record",
    "examples_from_records",
    "load_dataset",
    "load_image",
    "load_jsonl",
    "screenshot_scenes",
]

#: Datasets that ship with the package, and their splits. "corpus" (the default) is the question set
#: generated from the embedded knowledge corpus; "sample" is a 64-question invented world (test fixture).
BUILTIN_DATASETS = {"corpus": ("train", "validation", "test"), "sample": ("train", "validation", "test")}


#: Keys of a dataset spec dict (``gym.make(..., dataset={"path": ..., "format": "fvqa"})``).
SPEC_KEYS = ("path", "format", "split", "image_dir", "fetch_policy", "row_group_cache")


def load_dataset(dataset: Any = "corpus", split: str | None = "train") -> Sequence[Example]:
    """Resolve the ``dataset`` argument of ``gym.make("MMSearch-v0")`` into validated examples.

    Returns a sequence of examples (a list, or for ``"corpus"`` a lazy sequence whose ``ids`` attribute
    lists the ids without building images).

    Args:
        dataset: one of

            * a built-in name (``"corpus"``, the default; ``"sample"``, the test fixture);
            * a path: a ``.jsonl`` file (our rows, FVQA-style or InfoSeek-style records), a ``.parquet``
              file (the FVQA release or ours), or a folder (JSONL + images, parquet files, or a
              ``datasets`` ``save_to_disk`` folder) — see :mod:`mmsearch_env.data.loaders`;
            * ``"hf:NAME"``: ``datasets.load_dataset(NAME, split=split)`` (needs the network);
            * a dict (JSON-able, so ``gym.make`` kwargs stay JSON): ``{"path": ..., "format": "auto" |
              "mmsearch" | "fvqa" | "infoseek", "split": ..., "image_dir": ..., "fetch_policy": {...}
              (options of :class:`mmsearch_env.web.http.FetchPolicy` for image URLs),
              "row_group_cache": 2}``;
            * a ``datasets.Dataset`` / ``DatasetDict``;
            * a list of rows (dicts with ``question``, ``image``, ``answer`` and optional
              ``candidate_answers``, ``id``, ``category``, ``search_need``, ``image_url``; or
              :class:`Example` objects).
        split: the split of a built-in dataset, a ``DatasetDict``, a folder of ``*SPLIT*.parquet`` /
            ``SPLIT.jsonl`` files (``None`` = all); ignored by single files and lists.

    Files are loaded lazily: images are decoded when the environment first shows them.
    """
    if isinstance(dataset, Mapping):
        unknown = sorted(set(dataset) - set(SPEC_KEYS))
        if unknown or "path" not in dataset:
            raise ConfigError(
                f"dataset spec {dict(dataset)!r}: needs 'path' and only the keys {list(SPEC_KEYS)}"
                + (f"; unknown: {unknown}" if unknown else "")
            )
        spec = dict(dataset)
        path = str(spec.pop("path"))
        split = spec.pop("split", split)
        if path in BUILTIN_DATASETS:
            return load_dataset(path, split)
        if path.startswith("hf:"):
            return load_hf(path, split, format=spec.get("format", "auto"), fetch_policy=spec.get("fetch_policy"))

        if not Path(path).exists():
            raise ConfigError(f"dataset path {path!r} does not exist")
        return load_file(path, split, **spec)
    if isinstance(dataset, str) and dataset in BUILTIN_DATASETS:
        splits = BUILTIN_DATASETS[dataset]
        if split is not None and split not in splits:
            raise ConfigError(
                f"dataset {dataset!r} has no split {split!r}; its splits are {list(splits)} (or None for all)."
                + did_you_mean(str(split), splits)
            )
        if dataset == "corpus":
            return corpus_examples(split)  # lazy: images are built when a question is drawn

        return list(sample_examples(split))
    if isinstance(dataset, str) and dataset.startswith("hf:"):
        return load_hf(dataset, split)
    if isinstance(dataset, (str, os.PathLike)):
        path = Path(dataset)
        if path.exists() or path.suffix in (".jsonl", ".json", ".parquet"):
            if not path.exists():
                raise DatasetError(f"dataset file {str(path)!r} does not exist")

            return load_file(path, split)
        raise ConfigError(
            f"unknown dataset {str(dataset)!r}: not a built-in name {sorted(BUILTIN_DATASETS)}, not 'hf:NAME' and "
            "not a path to a .jsonl / .parquet file or a dataset folder." + did_you_mean(str(dataset), BUILTIN_DATASETS)
        )
    if type(dataset).__module__.split(".")[0] == "datasets":
        return load_hf(dataset, split)
    if isinstance(dataset, Sequence) and isinstance(getattr(dataset, "ids", None), tuple):
        # An already-loaded lazy dataset (what this function returns for "corpus"): iterating it would
        # build every question image, so it passes through; only its ids are checked.
        if len(set(dataset.ids)) != len(dataset.ids):
            raise DatasetError("the dataset's ids repeat; ids must be unique")
        return dataset
    if isinstance(dataset, Sequence) and not isinstance(dataset, (bytes, bytearray)):
        return examples_from_records(dataset)
    raise ConfigError(
        f"dataset must be a name, a path, 'hf:NAME', a spec dict, a datasets.Dataset or a list of rows; got "
        f"{type(dataset).__name__}. Example: gym.make('MMSearch-v0', dataset=[{{'question': ..., 'image': ..., "
        "'answer': ...}])."
    )
