"""Loaders for real datasets: FVQA parquet, our parquet, JSONL (+ image folder), InfoSeek-style records,
Hugging Face ``datasets`` objects — all producing the one :class:`~mmsearch_env.data.schema.Example` schema.

Row formats (detected from the columns / keys, or named with ``format=``):

* ``"fvqa"`` — the released MMSearch-R1 FVQA parquet: ``prompt`` (one user message), ``images`` (list of
  ``{bytes, path}``), ``reward_model`` (``{ground_truth, candidate_answers: JSON-encoded list, style}``),
  ``data_source``, ``image_urls``, ``data_id``, ``category``. Mapping: ``id`` = ``data_id``; ``question`` =
  the prompt's text with image placeholders (``<image>``, Qwen vision tokens) removed and, when the text
  wraps the question in instructions, the part after the last ``Question:`` line; ``answer`` =
  ``ground_truth``; ``candidate_answers`` = the decoded list; ``category`` = ``category`` as released.
  The release stores the search label in ``category`` (``search_free`` / ``search_required``); a
  separate ``search_label`` (or ``label``) column wins when present. ``search_free`` → ``search_need="none"``
  (answerable without search); ``search_required`` → ``search_need=None`` (search is needed but the data
  does not say which kind); the label itself goes to ``metadata["search_label"]`` and
  ``metadata["search_required"]`` (bool). ``data_source``, ``reward_model.style`` → ``metadata``.
* ``"infoseek"`` — entity/question records: ``data_id``/``id``, ``question``, ``answer`` (str or list),
  optional ``answer_eval`` (list; numeric ``{"wikidata": v, "range": [lo, hi]}`` entries count as ``v``),
  ``entity_id``, ``entity_text``/``entity_name``, ``question_type``, and the image as ``image`` /
  ``image_path`` / ``image_url`` or ``image_id`` (looked up as ``IMAGE_DIR/<image_id>.{jpg,JPEG,jpeg,png}``).
  ``answer`` = the first answer, the rest (and ``answer_eval``) become ``candidate_answers``;
  ``category`` = ``question_type`` (else ``"infoseek"``); entity fields → ``metadata``.
* ``"mmsearch"`` — ours: ``id``, ``question``, ``image`` (or ``file_name``, as in a Hugging Face
  imagefolder ``metadata.jsonl``), ``answer``, ``candidate_answers``, ``category``,
  ``search_need``, ``image_url``, ``metadata`` (a JSON object, or a JSON-encoded string in parquet);
  other columns → ``metadata``.

Images may be bytes, paths (relative to the data file), ``http(s)://`` URLs (downloaded through the
SSRF-guarded :mod:`mmsearch_env.web.http` fetcher, options ``fetch_policy``) or PIL images.

Laziness. File loaders never decode an image up front: an :class:`~mmsearch_env.data.schema.ImageRef`
reads it when the environment first shows it. Parquet loaders read every column *except* the image
column at load time (small: text) and read an image's row group when one of its images is needed,
keeping the last ``row_group_cache`` row groups' image column (so an in-order pass reads each row group
once; random access reads one row group per miss — write files with small row groups, as
:func:`write_parquet` does, for random access). :func:`iter_examples` streams a parquet file in record
batches without keeping anything.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmsearch_env.data.formats import FORMATS, check_format, detect_format, fvqa_question, normalize_record, to_example
from mmsearch_env.data.hub import load_hf
from mmsearch_env.data.parquet import fvqa_arrow_schema, iter_examples, load_parquet, rechunk_parquet, write_parquet
from mmsearch_env.data.schema import Example, check_unique_ids, read_jsonl
from mmsearch_env.errors import ConfigError

__all__ = [
    "FORMATS",
    "detect_format",
    "fvqa_arrow_schema",
    "fvqa_question",
    "iter_examples",
    "load_file",
    "load_hf",
    "load_parquet",
    "load_records_file",
    "normalize_record",
    "rechunk_parquet",
    "write_parquet",
]


# -- JSONL ------------------------------------------------------------------------------------------------
def load_records_file(
    path: str | os.PathLike[str],
    *,
    format: str = "auto",
    image_dir: str | os.PathLike[str] | None = None,
    fetch_policy: Any = None,
) -> list[Example]:
    """A JSONL file of rows in any :data:`FORMATS`; images relative to ``image_dir`` (default: the file's folder).

    Images are checked to exist now and decoded when first shown.
    """
    check_format(format)
    path = Path(path)
    base = Path(image_dir) if image_dir is not None else path.parent
    image_dirs = [base, base / "images"]
    examples, wheres = [], []
    fmt = format
    for index, (where, record) in enumerate(read_jsonl(path)):
        if fmt == "auto" and isinstance(record, Mapping):
            fmt = detect_format(record.keys(), where=where)
        row = normalize_record(record, fmt, where, image_dirs=image_dirs)
        examples.append(to_example(row, index, where, base, fetch_policy))
        wheres.append(where)
    check_unique_ids(examples, wheres=wheres, source=str(path))
    return examples


def _jsonl_in_folder(folder: Path, split: str | None) -> Path:
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise ConfigError(
            f"dataset folder {str(folder)!r} has no .jsonl or .parquet file and is not a datasets save_to_disk "
            "folder; put the rows in metadata.jsonl (or SPLIT.jsonl) next to the images"
        )
    if split is not None and (folder / f"{split}.jsonl").is_file():
        return folder / f"{split}.jsonl"
    if (folder / "metadata.jsonl").is_file():
        return folder / "metadata.jsonl"
    if len(files) == 1:
        return files[0]
    raise ConfigError(
        f"dataset folder {str(folder)!r}: cannot choose a JSONL file among {[f.name for f in files]}; "
        f"name one {split or 'SPLIT'}.jsonl or metadata.jsonl, or pass the file's path"
    )


# -- one entry point for files and folders ---------------------------------------------------------------
def load_file(
    path: str | os.PathLike[str],
    split: str | None = None,
    *,
    format: str = "auto",
    image_dir: str | os.PathLike[str] | None = None,
    fetch_policy: Any = None,
    row_group_cache: int = 2,
) -> list[Example]:
    """A ``.parquet`` / ``.jsonl`` file, or a folder: a ``save_to_disk`` dataset, parquet files (the ones
    whose name contains ``split``, or all when ``split`` is None), or JSONL + images (``SPLIT.jsonl``,
    ``metadata.jsonl`` or the only ``*.jsonl``). Single files ignore ``split``.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return load_hf(str(path), split, format=format, fetch_policy=fetch_policy)
        parquets = sorted(path.glob("*.parquet"))
        if parquets:
            chosen = [p for p in parquets if split is None or split in p.stem]
            if not chosen:
                raise ConfigError(
                    f"dataset folder {str(path)!r} has no parquet file for split {split!r} among "
                    f"{[p.name for p in parquets]}; name the file, or use split=None for all"
                )
            examples: list[Example] = []
            wheres: list[str] = []
            for file in chosen:
                part = load_parquet(file, format=format, fetch_policy=fetch_policy, row_group_cache=row_group_cache)
                examples += part
                wheres += [f"{file}: row {i}" for i in range(len(part))]
            check_unique_ids(examples, wheres=wheres, source=str(path))
            return examples
        return load_records_file(
            _jsonl_in_folder(path, split), format=format, image_dir=image_dir or path, fetch_policy=fetch_policy
        )
    if path.suffix == ".parquet":
        return load_parquet(path, format=format, fetch_policy=fetch_policy, row_group_cache=row_group_cache)
    if path.suffix in (".jsonl", ".json"):
        return load_records_file(path, format=format, image_dir=image_dir, fetch_policy=fetch_policy)
    raise ConfigError(
        f"dataset file {str(path)!r}: unsupported file type {path.suffix or '(none)'!r}; give a .parquet or "
        ".jsonl file, or a folder (JSONL + images, parquet files, or a datasets save_to_disk folder)"
    )
