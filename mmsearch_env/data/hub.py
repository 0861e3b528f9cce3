"""Hugging Face ``datasets`` objects, ``save_to_disk`` folders and ``hf:NAME`` as examples."""

from __future__ import annotations

import os
from typing import Any

from mmsearch_env.data.formats import (
    check_format,
    detect_format,
    first_image_cell,
    image_cell,
    normalize_record,
    to_example,
)
from mmsearch_env.data.parquet import image_column
from mmsearch_env.data.schema import Example, ImageRef, check_unique_ids, url_image
from mmsearch_env.errors import ConfigError, DatasetError

__all__ = ["load_hf"]


# -- Hugging Face datasets ------------------------------------------------------------------------------
def load_hf(
    dataset: Any,
    split: str | None = None,
    *,
    format: str = "auto",
    fetch_policy: Any = None,
) -> list[Example]:
    """A ``datasets.Dataset`` / ``DatasetDict``, a ``save_to_disk`` folder, or ``"hf:NAME"`` (downloaded by
    ``datasets.load_dataset``; needs the network) as examples. Images are read from the Arrow table
    (memory-mapped) when first shown.
    """
    check_format(format)
    try:
        import datasets as hf
    except ImportError as exc:
        raise ConfigError("Hugging Face datasets need the datasets package: pip install datasets") from exc
    name = "datasets object"
    if isinstance(dataset, (str, os.PathLike)):
        text = str(dataset)
        if text.startswith("hf:"):
            name = text
            dataset = hf.load_dataset(text[3:], split=split)
        else:
            name = text
            try:
                dataset = hf.load_from_disk(text)
            except (OSError, ValueError, KeyError, TypeError) as exc:  # missing/corrupt arrow or state files
                raise DatasetError(
                    f"{text}: not a readable datasets save_to_disk folder ({type(exc).__name__}: {str(exc)[:200]}); "
                    "save it again with Dataset.save_to_disk, or point at its .parquet/.jsonl files"
                ) from exc
    if isinstance(dataset, hf.DatasetDict):
        if split is None or split not in dataset:
            raise ConfigError(f"{name} has splits {sorted(dataset)}; choose one with split=..., got {split!r}")
        dataset = dataset[split]
    if not isinstance(dataset, hf.Dataset):
        raise ConfigError(f"expected a datasets.Dataset or DatasetDict, got {type(dataset).__name__}")
    names = dataset.column_names
    fmt = format if format != "auto" else detect_format(names, where=f"{name}: columns")
    image_col = image_column(names, fmt)
    # Arrow format hands back the stored {bytes, path} cells without decoding (and without the copy a
    # cast_column to Image(decode=False) would write).
    table = dataset.with_format("arrow")
    rest = dataset.remove_columns([image_col]) if image_col else dataset
    examples = []
    rows = iter(rest)
    for row in range(len(rest)):
        where = f"{name}: row {row}"
        try:
            record = next(rows)
        except (OSError, ValueError) as exc:  # pyarrow's read errors are both
            raise DatasetError(
                f"{where}: cannot read the row ({type(exc).__name__}: {str(exc)[:200]}); the dataset's arrow files "
                "are truncated or corrupt: save or download it again"
            ) from exc
        if image_col is not None:
            record["_image"] = _hf_image_ref(table, image_col, row, fmt, where, fetch_policy)
        examples.append(to_example(normalize_record(record, fmt, where), row, where, None, fetch_policy))
    check_unique_ids(examples, wheres=[f"{name}: row {i}" for i in range(len(examples))], source=name)
    return examples


def _hf_image_ref(table: Any, column: str, row: int, fmt: str, where: str, fetch_policy: Any) -> ImageRef:
    image_where = f"{where}: field '{column}'"

    def fetch() -> Any:
        cell = table[row].column(column)[0].as_py()
        value = first_image_cell(cell, where) if fmt == "fvqa" else image_cell(cell, image_where)
        if value is None:
            raise DatasetError(f"{image_where}: the row has no image")
        if isinstance(value, str) and value.lower().startswith(("http://", "https://")):
            return url_image(value, where=image_where, fetch_policy=fetch_policy).raw()
        return value

    return ImageRef(fetch, where=image_where)
