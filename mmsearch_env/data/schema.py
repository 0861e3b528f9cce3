"""The one ``Example`` schema every loader produces, and the validation that builds it.

Errors name the row and the field and say what was expected, so a bad file is fixed in one go.
"""

from __future__ import annotations

import io
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from mmsearch_env.errors import DatasetError, MMSearchError
from mmsearch_env.text import valid_unicode
from mmsearch_env.web.credentials import redact_url
from mmsearch_env.web.http import FetchPolicy, fetch
from mmsearch_env.web.images import open_bounded
from mmsearch_env.web.status import check_status

__all__ = [
    "SEARCH_NEEDS",
    "Example",
    "ImageRef",
    "example_from_record",
    "examples_from_records",
    "image_source",
    "load_image",
    "load_jsonl",
    "url_image",
]

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
        image: the question's image, RGB. Built with an :class:`ImageRef` instead of a PIL image, the
            image is decoded when first read (each read of a lazy example's ``image`` returns a decoded
            image; the last few are cached), so a large dataset's images are never all in memory.
        answer: the ground-truth answer.
        candidate_answers: other answers that also count as correct (aliases).
        category: a free-form category for per-category metrics.
        search_need: one of :data:`SEARCH_NEEDS` when known.
        image_url: a public URL of the image, when known (live image search engines need it).
        metadata: anything else from the row (JSON-able values).
    """

    id: str
    question: str
    image: Image.Image = field(compare=False, repr=False)
    answer: str
    candidate_answers: tuple[str, ...] = ()
    category: str | None = None
    search_need: str | None = None
    image_url: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False)


class ImageRef:
    """A lazily decoded image: a zero-argument ``fetch`` returning bytes, a path or a PIL image.

    ``where`` names the file, row and field for error messages (a broken image is reported when the
    environment first shows it). ``fetch`` may also raise :class:`DatasetError` itself.
    """

    __slots__ = ("fetch", "where")

    def __init__(self, fetch: Callable[[], Any], *, where: str):
        self.fetch = fetch
        self.where = where

    def raw(self) -> Any:
        """The undecoded source (bytes, a path or a PIL image), for writers that keep the original encoding."""
        try:
            return self.fetch()
        except DatasetError:
            raise
        except Exception as exc:
            raise DatasetError(
                f"{self.where}: cannot read the image ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
                "check that the file is complete "
                "(re-download or re-export it), or drop the row"
            ) from exc

    def decode(self) -> Image.Image:
        """The RGB image (the last :data:`DECODED_CACHE_SIZE` decoded images are kept)."""
        key = id(self)
        with _DECODED_LOCK:
            hit = _DECODED.get(key)
            if hit is not None and hit[0] is self:
                _DECODED.move_to_end(key)
                return hit[1]
        image = load_image(self.raw(), where=self.where)
        with _DECODED_LOCK:
            _DECODED[key] = (self, image)
            while len(_DECODED) > DECODED_CACHE_SIZE:
                _DECODED.popitem(last=False)
        return image

    def __repr__(self) -> str:
        return f"ImageRef({self.where!r})"


#: How many lazily decoded images stay cached (an episode reads its image a few times).
DECODED_CACHE_SIZE = 32
_DECODED: OrderedDict[int, tuple[ImageRef, Image.Image]] = OrderedDict()
_DECODED_LOCK = threading.Lock()


class _ImageField:
    """``Example.image``: stores a PIL image or an :class:`ImageRef`; reading it always gives a PIL image."""

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__["_image"]
        return value.decode() if isinstance(value, ImageRef) else value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__["_image"] = value


# Installed after the dataclass is built: its generated __init__ assigns through the descriptor.
Example.image = _ImageField()  # type: ignore[assignment,method-assign]


def image_source(example: Example) -> Any:
    """What ``example`` stores for its image without decoding it: a PIL image or an :class:`ImageRef`."""
    return example.__dict__["_image"]


def load_image(source: Any, *, where: str = "image") -> Image.Image:
    """Decode a PIL image, a path, or encoded bytes into an RGB image, or raise :class:`DatasetError`."""
    try:
        if isinstance(source, Image.Image):
            image = source
        elif isinstance(source, (bytes, bytearray, memoryview)):
            image = _open_checked(io.BytesIO(bytes(source)), where)
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.is_file():
                raise DatasetError(f"{where}: image file {str(path)!r} does not exist")
            image = _open_checked(path, where)
        else:
            raise DatasetError(
                f"{where}: expected a PIL image, a path to an image file, or the file's bytes; "
                f"got {type(source).__name__}"
            )
        return image if image.mode == "RGB" else image.convert("RGB")
    except DatasetError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        raise DatasetError(
            f"{where}: cannot decode the image ({type(exc).__name__}: {exc}); replace it with a valid JPEG/PNG/WebP "
            "file, or drop the row"
        ) from exc


def _open_checked(fp: Any, where: str) -> Image.Image:
    return open_bounded(fp, max_pixels=MAX_IMAGE_PIXELS, what=where, error=DatasetError, fix="downscale it first")


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
    # Text enters here: a lone surrogate (JSON's "\\ud83d") would break tokenizers and JSON writers later.
    return valid_unicode(value)


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.lower().startswith(("http://", "https://"))


def url_image(url: str, *, where: str, fetch_policy: Any = None) -> ImageRef:
    """An :class:`ImageRef` that downloads ``url`` through the SSRF-guarded fetcher of :mod:`mmsearch_env.web.http`.

    ``fetch_policy``: a :class:`~mmsearch_env.web.http.FetchPolicy` or its options dict (default: the
    strict web policy — public addresses only, 20 s, 5 MB).
    """

    def download() -> Any:
        policy = FetchPolicy.from_options(fetch_policy)
        shown = f"image {redact_url(url)!r}"
        try:
            result = check_status(fetch(url, policy=policy, accept=("image/*",), what=shown), shown)
        except MMSearchError as exc:
            raise DatasetError(f"{where}: cannot download the image: {exc}") from exc
        return result.content

    return ImageRef(download, where=where)


def _lazy_path(path: Path, where: str) -> ImageRef:
    if not path.is_file():
        raise DatasetError(f"{where}: image file {str(path)!r} does not exist")
    return ImageRef(lambda: path, where=where)


def example_from_record(
    record: Mapping[str, Any] | Example,
    index: int,
    *,
    base_dir: Path | None = None,
    lazy: bool = False,
    fetch_policy: Any = None,
    where: str | None = None,
) -> Example:
    """Validate one row (a mapping with ``question``, ``image``, ``answer``, ...) into an Example.

    ``image`` may be a PIL image, bytes, a path (relative ones are relative to ``base_dir``), an
    ``http(s)://`` URL (downloaded when first shown, through the SSRF-guarded fetcher with
    ``fetch_policy``; the URL also becomes ``image_url`` unless the row has one), or an :class:`ImageRef`.
    ``lazy``: paths and bytes are checked now (the file exists) but decoded when first shown.
    ``where``: how errors name the row (default ``"row INDEX"``).
    """
    if isinstance(record, Example):
        return record
    where = where or f"row {index}"
    if not isinstance(record, Mapping):
        raise DatasetError(
            f"{where}: expected a dict with 'question', 'image' and 'answer', got {type(record).__name__}"
        )
    if record.get("id") is not None:
        where = f"{where} (id={record['id']!r})"
    question = _string(record, "question", where, required=True)
    answer = _string(record, "answer", where, required=True)
    example_id = _string(record, "id", where, required=False) or f"example-{index}"
    if "image" not in record or record["image"] is None:
        raise DatasetError(f"{where}: missing required field 'image' (a PIL image, a path, or bytes)")
    source = record["image"]
    image_where = f"{where}: field 'image'"
    image_url = record.get("image_url")
    image: Any
    if isinstance(source, ImageRef):
        image = source
    elif _is_url(source):
        image = url_image(source, where=image_where, fetch_policy=fetch_policy)
        image_url = image_url or source
    else:
        if isinstance(source, str) and base_dir is not None and not os.path.isabs(source):
            source = base_dir / source
        if lazy and isinstance(source, (str, os.PathLike)):
            image = _lazy_path(Path(source), image_where)
        elif lazy and isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            image = ImageRef(lambda: data, where=image_where)
        else:
            image = load_image(source, where=image_where)
    candidates = record.get("candidate_answers") or ()
    if isinstance(candidates, str):
        try:  # the FVQA release stores this list JSON-encoded
            candidates = json.loads(candidates)
        except ValueError:
            candidates = [candidates]
        except RecursionError:
            raise DatasetError(
                f"{where}: field 'candidate_answers' is JSON nested too deeply; give a flat list of strings"
            ) from None
    if not isinstance(candidates, Sequence) or not all(isinstance(c, str) for c in candidates):
        raise DatasetError(f"{where}: field 'candidate_answers' must be a list of strings, got {candidates!r:.80}")
    candidates = [valid_unicode(c) for c in candidates]
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
        image_url=_string({"image_url": image_url}, "image_url", where, required=False),
        metadata={k: v for k, v in record.items() if k not in known},
    )


def examples_from_records(
    records: Iterable[Mapping[str, Any] | Example],
    *,
    base_dir: Path | None = None,
    lazy: bool = False,
    fetch_policy: Any = None,
) -> list[Example]:
    """Validate every row; ids must be unique (see :func:`example_from_record` for the arguments)."""
    examples = [
        example_from_record(r, i, base_dir=base_dir, lazy=lazy, fetch_policy=fetch_policy)
        for i, r in enumerate(records)
    ]
    check_unique_ids(examples)
    return examples


def check_unique_ids(
    examples: Sequence[Example],
    *,
    what: str = "row",
    wheres: Sequence[str] | None = None,
    source: str | None = None,
) -> None:
    """Raise :class:`DatasetError` on an empty dataset or a repeated id.

    ``wheres[i]`` names example ``i`` in messages (e.g. ``"data.jsonl:7"``; default ``"{what} {i}"``);
    ``source`` names the file or folder, for the empty-dataset message.
    """
    if not examples:
        raise DatasetError(
            f"{source or 'the dataset'}: the dataset is empty (no rows: a zero-byte file, only blank lines, or a "
            "table with no rows); give at least one row with 'question', 'image' and 'answer'"
        )
    seen: dict[str, int] = {}
    for i, example in enumerate(examples):
        if example.id in seen:
            first = seen[example.id]
            here, there = (wheres[i], wheres[first]) if wheres is not None else (f"{what} {i}", f"{what} {first}")
            raise DatasetError(
                f"{here}: field 'id': {example.id!r} repeats {there}; ids must be unique (give each row its own "
                "'id', or drop the 'id' field to number the rows)"
            )
        seen[example.id] = i


def read_jsonl(path: str | os.PathLike[str], *, what: str = "dataset file") -> Iterator[tuple[str, Any]]:
    """Yield ``("FILE:LINE", object)`` for each non-blank line, or raise naming the bad line.

    Every failure is a :class:`DatasetError` naming the file and line: bytes that are not UTF-8, a line
    that is not JSON, or JSON nested too deeply to parse.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{what} {str(path)!r} does not exist")
    with path.open("rb") as handle:  # decoded line by line, so a bad byte is reported with its line
        for line_no, raw in enumerate(handle, start=1):
            where = f"{path}:{line_no}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DatasetError(
                    f"{where}: byte {exc.start} of the line is not UTF-8 ({raw[exc.start : exc.start + 4]!r}); "
                    "save the file as UTF-8"
                ) from None
            if line_no == 1:
                line = line.removeprefix("\ufeff")  # a byte-order mark some editors write
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as exc:
                raise DatasetError(f"{where}: not valid JSON ({exc}); each line must be one JSON object") from exc
            except RecursionError:
                raise DatasetError(
                    f"{where}: JSON nested too deeply to read; each line must be one JSON object of plain fields"
                ) from None
            yield where, value


def load_jsonl(path: str | os.PathLike[str]) -> list[Example]:
    """Read a JSONL file (one row per line); relative image paths are relative to the file."""
    records = [record for _, record in read_jsonl(path)]
    return examples_from_records(records, base_dir=Path(path).parent)
