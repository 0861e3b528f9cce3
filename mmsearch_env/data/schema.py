"""The one ``Example`` schema every loader produces, and the validation that builds it.

Errors name the row and the field and say what was expected, so a bad file is fixed in one go.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from mmsearch_env.errors import DatasetError

__all__ = ["SEARCH_NEEDS", "Example", "example_from_record", "examples_from_records", "load_image", "load_jsonl"]

#: What a question needs: identify the entity by image search; identify it then look a fact up;
#: look a fact up about a named entity; nothing (answerable from the image itself).
SEARCH_NEEDS = ("image", "image+text", "text", "none")

#: Refuse images larger than this many pixels (decompression bombs); Pillow's default warns only.
MAX_IMAGE_PIXELS = 64_000_000


@dataclass(frozen=True)
class Example:
    """One visual question.

    Attributes:
        id: unique id within the dataset.
        question: the question text.
        image: the question's image, RGB.
        answer: the ground-truth answer.
        candidate_answers: other answers that also count as correct (aliases).
        category: a free-form category for per-category metrics.
        search_need: one of :data:`SEARCH_NEEDS` when known.
        image_url: a public URL of the image, when known (live image search engines need it).
        metadata: anything else from the row (JSON-able values).
    """

    id: str
    question: str
    image: Image.Image = field(compare=False)
    answer: str
    candidate_answers: tuple[str, ...] = ()
    category: str | None = None
    search_need: str | None = None
    image_url: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False)


def load_image(source: Any, *, where: str = "image") -> Image.Image:
    """Decode a PIL image, a path, or encoded bytes into an RGB image, or raise :class:`DatasetError`."""
    try:
        if isinstance(source, Image.Image):
            image = source
        elif isinstance(source, (bytes, bytearray, memoryview)):
            image = _open_checked(io.BytesIO(bytes(source)))
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.is_file():
                raise DatasetError(f"{where}: image file {str(path)!r} does not exist")
            image = _open_checked(path)
        else:
            raise DatasetError(
                f"{where}: expected a PIL image, a path to an image file, or the file's bytes; "
                f"got {type(source).__name__}"
            )
        return image if image.mode == "RGB" else image.convert("RGB")
    except DatasetError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        raise DatasetError(f"{where}: cannot decode the image ({type(exc).__name__}: {exc})") from exc


def _open_checked(fp: Any) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(fp)
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise DatasetError(
                f"image is {width}x{height} pixels, over the {MAX_IMAGE_PIXELS:,} pixel limit "
                "(a decompression bomb?); downscale it first"
            )
        image.load()
    return image


def _string(record: Mapping[str, Any], key: str, where: str, *, required: bool) -> str | None:
    value = record.get(key)
    if value is None:
        if required:
            raise DatasetError(f"{where}: missing required field {key!r} (a non-empty string)")
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and key in ("answer", "id"):
        value = str(value)  # numeric answers and ids are common in JSON files
    if not isinstance(value, str) or (required and not value.strip()):
        raise DatasetError(f"{where}: field {key!r} must be a non-empty string, got {value!r:.80}")
    return value


def example_from_record(record: Mapping[str, Any] | Example, index: int, *, base_dir: Path | None = None) -> Example:
    """Validate one row (a mapping with ``question``, ``image``, ``answer``, ...) into an Example."""
    if isinstance(record, Example):
        return record
    where = f"row {index}"
    if not isinstance(record, Mapping):
        raise DatasetError(
            f"{where}: expected a dict with 'question', 'image' and 'answer', got {type(record).__name__}"
        )
    if record.get("id") is not None:
        where = f"row {index} (id={record['id']!r})"
    question = _string(record, "question", where, required=True)
    answer = _string(record, "answer", where, required=True)
    example_id = _string(record, "id", where, required=False) or f"example-{index}"
    if "image" not in record or record["image"] is None:
        raise DatasetError(f"{where}: missing required field 'image' (a PIL image, a path, or bytes)")
    source = record["image"]
    if isinstance(source, str) and base_dir is not None and not os.path.isabs(source):
        source = base_dir / source
    image = load_image(source, where=f"{where}: field 'image'")
    candidates = record.get("candidate_answers") or ()
    if isinstance(candidates, str):
        try:  # the FVQA release stores this list JSON-encoded
            candidates = json.loads(candidates)
        except ValueError:
            candidates = [candidates]
    if not isinstance(candidates, Sequence) or not all(isinstance(c, str) for c in candidates):
        raise DatasetError(f"{where}: field 'candidate_answers' must be a list of strings, got {candidates!r:.80}")
    search_need = record.get("search_need")
    if search_need is not None and search_need not in SEARCH_NEEDS:
        raise DatasetError(f"{where}: field 'search_need' must be one of {SEARCH_NEEDS}, got {search_need!r}")
    known = {"id", "question", "image", "answer", "candidate_answers", "category", "search_need", "image_url"}
    return Example(
        id=example_id,
        question=question,
        image=image,
        answer=answer,
        candidate_answers=tuple(candidates),
        category=_string(record, "category", where, required=False),
        search_need=search_need,
        image_url=_string(record, "image_url", where, required=False),
        metadata={k: v for k, v in record.items() if k not in known},
    )


def examples_from_records(
    records: Iterable[Mapping[str, Any] | Example], *, base_dir: Path | None = None
) -> list[Example]:
    """Validate every row; ids must be unique."""
    examples = [example_from_record(r, i, base_dir=base_dir) for i, r in enumerate(records)]
    if not examples:
        raise DatasetError("the dataset is empty; give at least one row with 'question', 'image' and 'answer'")
    seen: dict[str, int] = {}
    for i, example in enumerate(examples):
        if example.id in seen:
            raise DatasetError(f"row {i}: id {example.id!r} repeats row {seen[example.id]}; ids must be unique")
        seen[example.id] = i
    return examples


def read_jsonl(path: str | os.PathLike[str], *, what: str = "dataset file") -> Iterator[tuple[str, Any]]:
    """Yield ``("FILE:LINE", object)`` for each non-blank line, or raise naming the bad line."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{what} {str(path)!r} does not exist")
    with path.open("r", encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                yield where, json.loads(line)
            except ValueError as exc:
                raise DatasetError(f"{where}: not valid JSON ({exc}); each line must be one JSON object") from exc


def load_jsonl(path: str | os.PathLike[str]) -> list[Example]:
    """Read a JSONL file (one row per line); relative image paths are relative to the file."""
    records = [record for _, record in read_jsonl(path)]
    return examples_from_records(records, base_dir=Path(path).parent)
