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
SSRF-guarded :mod:`mmsearch_env.search.http` fetcher, options ``fetch_policy``) or PIL images.

Laziness. File loaders never decode an image up front: an :class:`~mmsearch_env.data.schema.ImageRef`
reads it when the environment first shows it. Parquet loaders read every column *except* the image
column at load time (small: text) and read an image's row group when one of its images is needed,
keeping the last ``row_group_cache`` row groups' image column (so an in-order pass reads each row group
once; random access reads one row group per miss — write files with small row groups, as
:func:`write_parquet` does, for random access). :func:`iter_examples` streams a parquet file in record
batches without keeping anything.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mmsearch_env.data.schema import (
    Example,
    ImageRef,
    check_unique_ids,
    example_from_record,
    image_source,
    read_jsonl,
)
from mmsearch_env.errors import ConfigError, DatasetError

__all__ = [
    "FORMATS",
    "detect_format",
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

logger = logging.getLogger(__name__)

#: Row groups larger than this make random image access slow (each miss reads a whole row group).
LARGE_ROW_GROUP = 1024

#: Row formats the loaders understand (``"auto"`` detects one from the columns).
FORMATS = ("auto", "mmsearch", "fvqa", "infoseek")

#: FVQA search labels (normalised) → our ``search_need``.
FVQA_LABELS = {"search_free": "none", "search_required": None}

_PLACEHOLDERS = re.compile(r"<image>|<img>|</img>|<\|image_pad\|>|<\|vision_start\|>|<\|vision_end\|>", re.IGNORECASE)
_QUESTION_MARK = re.compile(r"^[ \t]*(?:#+[ \t]*)?question[ \t]*[:：][ \t]*", re.IGNORECASE | re.MULTILINE)
_IMAGE_SUFFIXES = (".jpg", ".JPEG", ".jpeg", ".JPG", ".png", ".PNG", ".webp")


# -- row formats -----------------------------------------------------------------------------------------
def detect_format(keys: Sequence[str] | set[str]) -> str:
    """The row format of a record/table with these keys (see the module docstring)."""
    keys = set(keys)
    if {"prompt", "reward_model"} <= keys:
        return "fvqa"
    if "question" in keys and ({"entity_id", "entity_text", "entity_name", "image_id", "answer_eval"} & keys):
        return "infoseek"
    if {"question", "answer"} <= keys:
        return "mmsearch"
    raise DatasetError(
        f"cannot tell the row format from the columns {sorted(keys)}: expected FVQA ('prompt', 'images', "
        "'reward_model', ...), InfoSeek ('question', 'answer', 'entity_id' or 'image_id', ...) or ours "
        "('question', 'image', 'answer', ...)"
    )


def fvqa_question(content: Any, *, where: str = "prompt") -> str:
    """The question text of an FVQA prompt message's ``content`` (a string or a list of content blocks)."""
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, Mapping) and isinstance(block.get("text"), str):
                parts.append(block["text"])
            elif isinstance(block, str):
                parts.append(block)
        content = "\n".join(parts)
    if not isinstance(content, str):
        raise DatasetError(f"{where}: the user message's 'content' must be text, got {type(content).__name__}")
    text = _PLACEHOLDERS.sub(" ", content)
    marks = list(_QUESTION_MARK.finditer(text))
    if marks:  # instructions around a "Question:" line: keep the question paragraph only
        text = text[marks[-1].end() :].split("\n\n", 1)[0]
    text = " ".join(text.split())
    if not text:
        raise DatasetError(f"{where}: the user message has no question text (only image placeholders?)")
    return text


def _search_label(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    key = re.sub(r"[\s\-]+", "_", value.strip().lower())
    return key if key in FVQA_LABELS else None


def _first_image_cell(images: Any, where: str) -> Any:
    """The first entry of FVQA ``images`` (list of ``{bytes, path}``) as bytes or a path, or None."""
    if images is None:
        return None
    if not isinstance(images, (list, tuple)):
        raise DatasetError(f"{where}: field 'images' must be a list of {{'bytes', 'path'}} dicts, got {images!r:.80}")
    if not images:
        return None
    return _image_cell(images[0], f"{where}: field 'images[0]'")


def _image_cell(cell: Any, where: str) -> Any:
    if isinstance(cell, Mapping):
        if cell.get("bytes"):
            return cell["bytes"]
        if cell.get("path"):
            return cell["path"]
        raise DatasetError(f"{where}: neither 'bytes' nor 'path' is set")
    return cell


def _fvqa_row(record: Mapping[str, Any], where: str) -> dict[str, Any]:
    if record.get("data_id") is not None:
        where = f"{where} (data_id={record['data_id']!r})"
    prompt = record.get("prompt")
    if hasattr(prompt, "tolist"):
        prompt = prompt.tolist()
    if not isinstance(prompt, (list, tuple)) or not prompt:
        raise DatasetError(f"{where}: field 'prompt' must be a list with one user message, got {prompt!r:.80}")
    users = [m for m in prompt if isinstance(m, Mapping) and m.get("role") == "user"]
    if not users:
        raise DatasetError(f"{where}: field 'prompt' has no message with role 'user'")
    question = fvqa_question(users[0].get("content"), where=f"{where}: field 'prompt'")
    reward = record.get("reward_model")
    if not isinstance(reward, Mapping):
        raise DatasetError(
            f"{where}: field 'reward_model' must be a dict with 'ground_truth' and 'candidate_answers', "
            f"got {reward!r:.80}"
        )
    truth = reward.get("ground_truth")
    if isinstance(truth, (list, tuple)) and truth:
        truth = truth[0]
    if truth is None or (isinstance(truth, str) and not truth.strip()):
        raise DatasetError(f"{where}: field 'reward_model.ground_truth' is missing or empty")
    candidates = reward.get("candidate_answers")
    if isinstance(candidates, str):
        try:
            candidates = json.loads(candidates) if candidates.strip() else []
        except ValueError as exc:
            raise DatasetError(
                f"{where}: field 'reward_model.candidate_answers' is not a JSON-encoded list ({exc})"
            ) from exc
    candidates = [str(c) for c in (candidates or []) if c is not None]
    label_raw = record.get("search_label", record.get("label"))
    label = _search_label(label_raw) or _search_label(record.get("category"))
    image_urls = record.get("image_urls")
    if isinstance(image_urls, str):
        image_urls = [image_urls]
    url = next((u for u in (image_urls or []) if isinstance(u, str) and u), None)
    image = record.get("_image")  # an ImageRef from the parquet reader
    if image is None:
        image = _first_image_cell(record.get("images"), where)
    if image is None:
        image = url
    metadata: dict[str, Any] = {
        "data_source": record.get("data_source"),
        "search_label": label,
        "search_required": None if label is None else label == "search_required",
    }
    if isinstance(reward.get("style"), str):
        metadata["reward_style"] = reward["style"]
    for key, value in record.items():
        if key not in _FVQA_KEYS and not key.startswith("_"):
            metadata[key] = value
    return {
        "id": record.get("data_id") if record.get("data_id") is not None else record.get("id"),
        "question": question,
        "image": image,
        "answer": truth,
        "candidate_answers": candidates,
        "category": record.get("category") if isinstance(record.get("category"), str) else None,
        "search_need": FVQA_LABELS.get(label) if label else None,
        "image_url": url,
        **metadata,
    }


_FVQA_KEYS = {"prompt", "images", "reward_model", "data_source", "image_urls", "data_id", "category", "search_label"}
_FVQA_KEYS |= {"label", "id"}


def _find_image_id(image_id: str, image_dirs: Sequence[Path]) -> Path | None:
    for folder in image_dirs:
        for suffix in ("", *_IMAGE_SUFFIXES):
            candidate = folder / f"{image_id}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _infoseek_row(record: Mapping[str, Any], where: str, image_dirs: Sequence[Path]) -> dict[str, Any]:
    answers = record.get("answer")
    if isinstance(answers, (str, int, float)) and not isinstance(answers, bool):
        answers = [answers]
    if not isinstance(answers, (list, tuple)) or not answers:
        raise DatasetError(
            f"{where}: field 'answer' must be a string or a non-empty list of strings, got {answers!r:.80}"
        )
    answers = [str(a) for a in answers]
    extra: list[str] = []
    for value in record.get("answer_eval") or []:
        if isinstance(value, Mapping) and "wikidata" in value:  # numeric answers: {"wikidata": v, "range": [lo, hi]}
            value = value["wikidata"]
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            extra.append(str(value))
    candidates = list(dict.fromkeys(a for a in [*answers[1:], *extra] if a != answers[0]))
    image = record.get("image", record.get("image_path"))
    url = record.get("image_url")
    if image is None and record.get("image_id") is not None:
        found = _find_image_id(str(record["image_id"]), image_dirs)
        if found is None and url is None:
            raise DatasetError(
                f"{where}: image_id {record['image_id']!r} not found in {[str(d) for d in image_dirs]} "
                f"(tried {', '.join(_IMAGE_SUFFIXES)}); give image_dir= or an 'image'/'image_url' field"
            )
        image = found
    if image is None:
        image = url
    known = {"data_id", "id", "question", "answer", "answer_eval", "image", "image_path", "image_url", "question_type"}
    return {
        "id": record.get("data_id") if record.get("data_id") is not None else record.get("id"),
        "question": record.get("question"),
        "image": image,
        "answer": answers[0],
        "candidate_answers": candidates,
        "category": record.get("question_type") if isinstance(record.get("question_type"), str) else "infoseek",
        "image_url": url,
        "entity_name": record.get("entity_text", record.get("entity_name")),
        **{k: v for k, v in record.items() if k not in known | {"entity_text", "entity_name"}},
    }


def _ours_row(record: Mapping[str, Any], where: str) -> dict[str, Any]:
    row = {k: v for k, v in record.items() if not k.startswith("_")}
    if "_image" in record:
        row["image"] = record["_image"]
    elif isinstance(row.get("image"), Mapping):  # {"bytes", "path"} as datasets' Image feature stores it
        row["image"] = _image_cell(row["image"], f"{where}: field 'image'")
    if row.get("image") is None and row.get("file_name"):  # the Hugging Face imagefolder convention
        row["image"] = row.pop("file_name")
    if row.get("image") is None and row.get("image_url"):
        row["image"] = row["image_url"]
    metadata = row.pop("metadata", None)
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata) if metadata else {}
        except ValueError as exc:
            raise DatasetError(f"{where}: field 'metadata' is not a JSON object ({exc})") from exc
    if metadata is not None and not isinstance(metadata, Mapping):
        raise DatasetError(f"{where}: field 'metadata' must be a JSON object, got {type(metadata).__name__}")
    if hasattr(row.get("candidate_answers"), "tolist"):
        row["candidate_answers"] = row["candidate_answers"].tolist()
    for key, value in (metadata or {}).items():
        row.setdefault(key, value)
    return row


def normalize_record(
    record: Mapping[str, Any], fmt: str, where: str, *, image_dirs: Sequence[Path] = ()
) -> dict[str, Any]:
    """A row of format ``fmt`` as our row dict (``question``, ``image``, ``answer``, ...; extras kept)."""
    if not isinstance(record, Mapping):
        raise DatasetError(f"{where}: expected a JSON object / table row, got {type(record).__name__}")
    if fmt == "auto":
        fmt = detect_format(record.keys() - {"_image"} | ({"image"} if "_image" in record else set()))
    if fmt == "fvqa":
        return _fvqa_row(record, where)
    if fmt == "infoseek":
        return _infoseek_row(record, where, image_dirs)
    if fmt == "mmsearch":
        return _ours_row(record, where)
    raise ConfigError(f"unknown dataset format {fmt!r}; expected one of {FORMATS}")


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {FORMATS}, got {fmt!r}")


def _to_example(row: dict[str, Any], index: int, where: str, base_dir: Path | None, fetch_policy: Any) -> Example:
    return example_from_record(row, index, base_dir=base_dir, lazy=True, fetch_policy=fetch_policy, where=where)


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
    _check_format(format)
    path = Path(path)
    base = Path(image_dir) if image_dir is not None else path.parent
    image_dirs = [base, base / "images"]
    examples = []
    fmt = format
    for index, (where, record) in enumerate(read_jsonl(path)):
        if fmt == "auto" and isinstance(record, Mapping):
            fmt = detect_format(record.keys())
        row = normalize_record(record, fmt, where, image_dirs=image_dirs)
        examples.append(_to_example(row, index, where, base, fetch_policy))
    check_unique_ids(examples)
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


# -- parquet ----------------------------------------------------------------------------------------------
def _pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow comes with datasets
        raise ConfigError("reading parquet needs pyarrow: pip install pyarrow") from exc
    return pa, pq


class _RowGroupImages:
    """Reads one column's cell by global row number, keeping the last few row groups' column (thread-safe)."""

    def __init__(self, path: Path, column: str, cache_size: int):
        _, pq = _pyarrow()
        self.path = path
        self.column = column
        self.cache_size = max(1, int(cache_size))
        self._file = pq.ParquetFile(path, pre_buffer=False)
        self._starts: list[int] = []
        total = 0
        for i in range(self._file.metadata.num_row_groups):
            self._starts.append(total)
            total += self._file.metadata.row_group(i).num_rows
        self._cache: OrderedDict[int, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.reads = 0  # row groups read (the benchmark reports it)
        largest = max((self._file.metadata.row_group(i).num_rows for i in range(len(self._starts))), default=0)
        if largest > LARGE_ROW_GROUP:
            logger.warning(
                "%s has row groups of up to %d rows: each image read outside the cached row groups reads a whole "
                "row group's images. For random access (training), rewrite it once with "
                "mmsearch_env.data.loaders.rechunk_parquet(src, dst) (64-row groups, streamed).",
                path,
                largest,
            )

    def cell(self, row: int) -> Any:
        group = bisect.bisect_right(self._starts, row) - 1
        with self._lock:
            column = self._cache.get(group)
            if column is None:
                column = self._file.read_row_group(group, columns=[self.column]).column(0)
                self.reads += 1
                self._cache[group] = column
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(group)
            return column[row - self._starts[group]].as_py()


def _image_column(names: Sequence[str], fmt: str) -> str | None:
    if fmt == "fvqa":
        return "images" if "images" in names else None
    return "image" if "image" in names else None


def _parquet_image_ref(
    images: _RowGroupImages, row: int, fmt: str, where: str, base_dir: Path, fallback_url: str | None, fetch_policy: Any
) -> ImageRef:
    image_where = f"{where}: field '{images.column}'"

    def fetch() -> Any:
        cell = images.cell(row)
        value = _first_image_cell(cell, where) if fmt == "fvqa" else _image_cell(cell, image_where)
        if value is None and fallback_url:
            from mmsearch_env.data.schema import url_image

            return url_image(fallback_url, where=image_where, fetch_policy=fetch_policy).raw()
        if value is None:
            raise DatasetError(f"{image_where}: the row has no image (no bytes, path or URL)")
        if isinstance(value, str) and value.lower().startswith(("http://", "https://")):
            from mmsearch_env.data.schema import url_image

            return url_image(value, where=image_where, fetch_policy=fetch_policy).raw()
        if isinstance(value, str) and not os.path.isabs(value):
            return base_dir / value
        return value

    return ImageRef(fetch, where=image_where)


def _parquet_format(names: Sequence[str], fmt: str, path: Path) -> str:
    if fmt != "auto":
        return fmt
    try:
        return detect_format(names)
    except DatasetError as exc:
        raise DatasetError(f"{path}: {exc}") from None


def fvqa_arrow_schema() -> Any:
    """The released FVQA parquet schema (MMSearch-R1), column for column, as a ``pyarrow.Schema``.

    For writing data the FVQA way (and for the tests and benchmarks that must write exactly it).
    """
    pa, _ = _pyarrow()
    return pa.schema(
        [
            ("prompt", pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))),
            ("images", pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))),
            (
                "reward_model",
                pa.struct([("candidate_answers", pa.string()), ("ground_truth", pa.string()), ("style", pa.string())]),
            ),
            ("data_source", pa.string()),
            ("image_urls", pa.null()),
            ("data_id", pa.string()),
            ("category", pa.string()),
        ]
    )


def load_parquet(
    path: str | os.PathLike[str],
    *,
    format: str = "auto",
    fetch_policy: Any = None,
    row_group_cache: int = 2,
    batch_size: int = 4096,
) -> list[Example]:
    """A parquet file (FVQA release or ours) as examples whose images are read and decoded on first use.

    Only the non-image columns are read now; errors name ``FILE:row N`` and the field.
    """
    _check_format(format)
    _, pq = _pyarrow()
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file {str(path)!r} does not exist")
    parquet = pq.ParquetFile(path, pre_buffer=False)
    names = parquet.schema_arrow.names
    fmt = _parquet_format(names, format, path)
    image_col = _image_column(names, fmt)
    images = _RowGroupImages(path, image_col, row_group_cache) if image_col else None
    columns = [n for n in names if n != image_col]
    examples: list[Example] = []
    row = 0
    for batch in parquet.iter_batches(batch_size=batch_size, columns=columns):
        for record in batch.to_pylist():
            where = f"{path}: row {row}"
            url = _first_url(record)
            if images is not None:
                record["_image"] = _parquet_image_ref(images, row, fmt, where, path.parent, url, fetch_policy)
            examples.append(_to_example(normalize_record(record, fmt, where), row, where, path.parent, fetch_policy))
            row += 1
    check_unique_ids(examples, what=f"{path}: row")
    return examples


def _first_url(record: Mapping[str, Any]) -> str | None:
    urls = record.get("image_urls", record.get("image_url"))
    if isinstance(urls, str):
        return urls or None
    return next((u for u in (urls or []) if isinstance(u, str) and u), None)


def iter_examples(
    path: str | os.PathLike[str],
    *,
    format: str = "auto",
    batch_size: int = 256,
    fetch_policy: Any = None,
) -> Iterator[Example]:
    """Stream a parquet file's examples in record batches (memory: one batch); images decode on first read."""
    _check_format(format)
    _, pq = _pyarrow()
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file {str(path)!r} does not exist")
    parquet = pq.ParquetFile(path, pre_buffer=False)
    fmt = _parquet_format(parquet.schema_arrow.names, format, path)
    row = 0
    for batch in parquet.iter_batches(batch_size=batch_size):
        for record in batch.to_pylist():
            where = f"{path}: row {row}"
            yield _to_example(normalize_record(record, fmt, where), row, where, path.parent, fetch_policy)
            row += 1


def rechunk_parquet(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], *, row_group_size: int = 64, batch_size: int = 256
) -> Path:
    """Copy a parquet file with small row groups (same schema and rows), streaming: memory stays at one
    batch. Small row groups make the lazy loader's random image access cheap."""
    _, pq = _pyarrow()
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise ConfigError(f"rechunk_parquet: write to a new file, not over {str(src)!r}")
    source = pq.ParquetFile(src, pre_buffer=False)
    with pq.ParquetWriter(dst, source.schema_arrow) as writer:
        for batch in source.iter_batches(batch_size=batch_size):
            writer.write_batch(batch, row_group_size=row_group_size)
    return dst


def write_parquet(
    examples: Sequence[Example],
    path: str | os.PathLike[str],
    *,
    extra_columns: Mapping[str, Sequence[Any]] | None = None,
    row_group_size: int = 64,
) -> Path:
    """Write ``examples`` as parquet in our schema (``format="mmsearch"``), loadable by :func:`load_parquet`.

    Columns: ``id``, ``question``, ``image`` (the original encoded bytes when known, else PNG), ``answer``,
    ``candidate_answers`` (list of str), ``category``, ``search_need``, ``image_url``, ``metadata`` (JSON
    string), then ``extra_columns`` (one value per example; they load back into ``metadata``). Small row
    groups keep random access cheap for the lazy loader.
    """
    import io

    pa, pq = _pyarrow()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {k: list(v) for k, v in (extra_columns or {}).items()}
    for key, values in extra.items():
        if len(values) != len(examples):
            raise ConfigError(f"extra column {key!r} has {len(values)} values for {len(examples)} examples")
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("question", pa.string()),
            ("image", pa.binary()),
            ("answer", pa.string()),
            ("candidate_answers", pa.list_(pa.string())),
            ("category", pa.string()),
            ("search_need", pa.string()),
            ("image_url", pa.string()),
            ("metadata", pa.string()),
        ]
    )
    extra_types = {k: pa.array(v).type for k, v in extra.items()}
    schema = pa.schema([*schema, *(pa.field(k, t) for k, t in extra_types.items())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, len(examples), row_group_size):
            chunk = examples[start : start + row_group_size]
            columns: dict[str, list[Any]] = {name: [] for name in schema.names}
            for offset, example in enumerate(chunk):
                columns["id"].append(example.id)
                columns["question"].append(example.question)
                columns["image"].append(_encoded_image(example, io))
                columns["answer"].append(example.answer)
                columns["candidate_answers"].append(list(example.candidate_answers))
                columns["category"].append(example.category)
                columns["search_need"].append(example.search_need)
                columns["image_url"].append(example.image_url)
                columns["metadata"].append(json.dumps(_jsonable(example.metadata), ensure_ascii=False))
                for key, values in extra.items():
                    columns[key].append(values[start + offset])
            writer.write_table(pa.table(columns, schema=schema), row_group_size=row_group_size)
    return path


def _encoded_image(example: Example, io: Any) -> bytes:
    source = image_source(example)
    if isinstance(source, ImageRef):
        raw = source.raw()
        if isinstance(raw, (bytes, bytearray, memoryview)):
            return bytes(raw)
        if isinstance(raw, (str, os.PathLike)):
            return Path(raw).read_bytes()
    buffer = io.BytesIO()
    example.image.save(buffer, format="PNG")
    return buffer.getvalue()


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, bytes):
        return None  # binary leftovers (e.g. a second image) are not metadata
    return str(value)


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
    _check_format(format)
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
            dataset = hf.load_from_disk(text)
    if isinstance(dataset, hf.DatasetDict):
        if split is None or split not in dataset:
            raise ConfigError(f"{name} has splits {sorted(dataset)}; choose one with split=..., got {split!r}")
        dataset = dataset[split]
    if not isinstance(dataset, hf.Dataset):
        raise ConfigError(f"expected a datasets.Dataset or DatasetDict, got {type(dataset).__name__}")
    names = dataset.column_names
    fmt = format if format != "auto" else detect_format(names)
    image_col = _image_column(names, fmt)
    # Arrow format hands back the stored {bytes, path} cells without decoding (and without the copy a
    # cast_column to Image(decode=False) would write).
    table = dataset.with_format("arrow")
    rest = dataset.remove_columns([image_col]) if image_col else dataset
    examples = []
    for row, record in enumerate(rest):
        where = f"{name}: row {row}"
        if image_col is not None:
            record["_image"] = _hf_image_ref(table, image_col, row, fmt, where, fetch_policy)
        examples.append(_to_example(normalize_record(record, fmt, where), row, where, None, fetch_policy))
    check_unique_ids(examples, what=f"{name}: row")
    return examples


def _hf_image_ref(table: Any, column: str, row: int, fmt: str, where: str, fetch_policy: Any) -> ImageRef:
    image_where = f"{where}: field '{column}'"

    def fetch() -> Any:
        cell = table[row].column(column)[0].as_py()
        value = _first_image_cell(cell, where) if fmt == "fvqa" else _image_cell(cell, image_where)
        if value is None:
            raise DatasetError(f"{image_where}: the row has no image")
        if isinstance(value, str) and value.lower().startswith(("http://", "https://")):
            from mmsearch_env.data.schema import url_image

            return url_image(value, where=image_where, fetch_policy=fetch_policy).raw()
        return value

    return ImageRef(fetch, where=image_where)


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
            for file in chosen:
                examples += load_parquet(
                    file, format=format, fetch_policy=fetch_policy, row_group_cache=row_group_cache
                )
            check_unique_ids(examples, what="example")
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
