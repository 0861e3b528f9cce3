"""Parquet datasets: lazy loading by row group, streaming, writing our schema, and FVQA's arrow schema."""

from __future__ import annotations

import bisect
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mmsearch_env.data.formats import (
    check_format,
    detect_format,
    first_image_cell,
    image_cell,
    normalize_record,
    to_example,
)
from mmsearch_env.data.schema import Example, ImageRef, check_unique_ids, image_source, url_image
from mmsearch_env.errors import ConfigError, DatasetError

__all__ = [
    "LARGE_ROW_GROUP",
    "fvqa_arrow_schema",
    "image_column",
    "iter_examples",
    "load_parquet",
    "rechunk_parquet",
    "write_parquet",
]

logger = logging.getLogger(__name__)

#: Row groups larger than this make random image access slow (each miss reads a whole row group).
LARGE_ROW_GROUP = 1024


# -- parquet ----------------------------------------------------------------------------------------------
def _pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow comes with datasets
        raise ConfigError("reading parquet needs pyarrow: pip install pyarrow") from exc
    return pa, pq


def _arrow_errors() -> tuple[type[BaseException], ...]:
    pa, _ = _pyarrow()
    # pyarrow's own errors (ArrowInvalid is also a ValueError, ArrowIOError an OSError) and the thrift /
    # IO failures a truncated or foreign file raises as plain OSError
    return (OSError, ValueError, EOFError, pa.ArrowException)


def _unreadable(path: Path, rows: str, exc: BaseException) -> DatasetError:
    return DatasetError(
        f"{path}: {rows}: not readable as parquet ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
        "the file is truncated, corrupt or not a parquet file: re-download or re-export it"
    )


def _open_parquet(path: Path) -> Any:
    """``pyarrow.parquet.ParquetFile(path)``, or a :class:`DatasetError` naming the file and how to fix it."""
    _, pq = _pyarrow()
    if not path.is_file():
        raise DatasetError(f"dataset file {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise DatasetError(f"{path}: the file is empty (0 bytes); re-download or re-export it")
    try:
        return pq.ParquetFile(path, pre_buffer=False)
    except _arrow_errors() as exc:
        raise _unreadable(path, "the file's footer (schema, row groups)", exc) from exc


def _read_batches(parquet: Any, path: Path, **options: Any) -> Iterator[Any]:
    """``parquet.iter_batches(**options)`` whose read failures are :class:`DatasetError` naming the rows."""
    batches = parquet.iter_batches(**options)
    row = 0
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except _arrow_errors() as exc:
            columns = options.get("columns")
            rows = f"rows from {row}" + (f", fields {columns}" if columns else "")
            raise _unreadable(path, rows, exc) from exc
        row += batch.num_rows
        yield batch


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


def image_column(names: Sequence[str], fmt: str) -> str | None:
    if fmt == "fvqa":
        return "images" if "images" in names else None
    return "image" if "image" in names else None


def parquet_image_ref(
    images: _RowGroupImages, row: int, fmt: str, where: str, base_dir: Path, fallback_url: str | None, fetch_policy: Any
) -> ImageRef:
    image_where = f"{where}: field '{images.column}'"

    def fetch() -> Any:
        cell = images.cell(row)
        value = first_image_cell(cell, where) if fmt == "fvqa" else image_cell(cell, image_where)
        if value is None and fallback_url:
            return url_image(fallback_url, where=image_where, fetch_policy=fetch_policy).raw()
        if value is None:
            raise DatasetError(f"{image_where}: the row has no image (no bytes, path or URL)")
        if isinstance(value, str) and value.lower().startswith(("http://", "https://")):
            return url_image(value, where=image_where, fetch_policy=fetch_policy).raw()
        if isinstance(value, str) and not os.path.isabs(value):
            return base_dir / value
        return value

    return ImageRef(fetch, where=image_where)


def _parquet_format(names: Sequence[str], fmt: str, path: Path) -> str:
    if fmt != "auto":
        return fmt
    return detect_format(names, where=f"{path}: columns")


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
    check_format(format)
    path = Path(path)
    parquet = _open_parquet(path)
    names = parquet.schema_arrow.names
    fmt = _parquet_format(names, format, path)
    image_col = image_column(names, fmt)
    images = _RowGroupImages(path, image_col, row_group_cache) if image_col else None
    columns = [n for n in names if n != image_col]
    examples: list[Example] = []
    row = 0
    for batch in _read_batches(parquet, path, batch_size=batch_size, columns=columns):
        for record in batch.to_pylist():
            where = f"{path}: row {row}"
            url = first_url(record)
            if images is not None:
                record["_image"] = parquet_image_ref(images, row, fmt, where, path.parent, url, fetch_policy)
            examples.append(to_example(normalize_record(record, fmt, where), row, where, path.parent, fetch_policy))
            row += 1
    check_unique_ids(examples, wheres=[f"{path}: row {i}" for i in range(len(examples))], source=str(path))
    return examples


def first_url(record: Mapping[str, Any]) -> str | None:
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
    check_format(format)
    path = Path(path)
    parquet = _open_parquet(path)
    fmt = _parquet_format(parquet.schema_arrow.names, format, path)
    row = 0
    for batch in _read_batches(parquet, path, batch_size=batch_size):
        for record in batch.to_pylist():
            where = f"{path}: row {row}"
            yield to_example(normalize_record(record, fmt, where), row, where, path.parent, fetch_policy)
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
    source = _open_parquet(src)
    with pq.ParquetWriter(dst, source.schema_arrow) as writer:
        for batch in _read_batches(source, src, batch_size=batch_size):
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
