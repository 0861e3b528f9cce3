"""Row formats of real datasets (FVQA, InfoSeek-style, ours) → the one :class:`~mmsearch_env.data.schema.Example` schema.

See :mod:`mmsearch_env.data.loaders` for the formats' column mappings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmsearch_env.data.schema import Example, example_from_record
from mmsearch_env.errors import ConfigError, DatasetError

__all__ = [
    "FORMATS",
    "FVQA_LABELS",
    "check_format",
    "detect_format",
    "first_image_cell",
    "fvqa_question",
    "image_cell",
    "normalize_record",
    "to_example",
]


#: Row formats the loaders understand (``"auto"`` detects one from the columns).
FORMATS = ("auto", "mmsearch", "fvqa", "infoseek")

#: FVQA search labels (normalised) → our ``search_need``.
FVQA_LABELS = {"search_free": "none", "search_required": None}

_PLACEHOLDERS = re.compile(r"<image>|<img>|</img>|<\|image_pad\|>|<\|vision_start\|>|<\|vision_end\|>", re.IGNORECASE)
_QUESTION_MARK = re.compile(r"^[ \t]*(?:#+[ \t]*)?question[ \t]*[:：][ \t]*", re.IGNORECASE | re.MULTILINE)
_IMAGE_SUFFIXES = (".jpg", ".JPEG", ".jpeg", ".JPG", ".png", ".PNG", ".webp")


# -- row formats -----------------------------------------------------------------------------------------
def detect_format(keys: Sequence[str] | set[str], *, where: str | None = None) -> str:
    """The row format of a record/table with these keys (see the module docstring); ``where`` names the
    file and row in the error."""
    keys = set(keys)
    if {"prompt", "reward_model"} <= keys:
        return "fvqa"
    if "question" in keys and ({"entity_id", "entity_text", "entity_name", "image_id", "answer_eval"} & keys):
        return "infoseek"
    if {"question", "answer"} <= keys:
        return "mmsearch"
    raise DatasetError(
        f"{where + ': ' if where else ''}cannot tell the row format from the columns {sorted(map(str, keys))}: "
        "expected FVQA ('prompt', 'images', 'reward_model', ...), InfoSeek ('question', 'answer', 'entity_id' "
        "or 'image_id', ...) or ours ('question', 'image', 'answer', ...); rename the columns or pass format="
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


def first_image_cell(images: Any, where: str) -> Any:
    """The first entry of FVQA ``images`` (list of ``{bytes, path}``) as bytes or a path, or None."""
    if images is None:
        return None
    if not isinstance(images, (list, tuple)):
        raise DatasetError(f"{where}: field 'images' must be a list of {{'bytes', 'path'}} dicts, got {images!r:.80}")
    if not images:
        return None
    return image_cell(images[0], f"{where}: field 'images[0]'")


def image_cell(cell: Any, where: str) -> Any:
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
        except (ValueError, RecursionError) as exc:
            raise DatasetError(
                f"{where}: field 'reward_model.candidate_answers' is not a JSON-encoded list "
                f'({type(exc).__name__}: {str(exc)[:100]}); store a list of strings such as \'["a", "b"]\''
            ) from None
    if candidates is not None and not isinstance(candidates, (list, tuple)):
        raise DatasetError(
            f"{where}: field 'reward_model.candidate_answers' must be a list of strings, got {candidates!r:.80}"
        )
    candidates = [str(c) for c in (candidates or []) if c is not None]
    label_raw = record.get("search_label", record.get("label"))
    label = _search_label(label_raw) or _search_label(record.get("category"))
    image_urls = record.get("image_urls")
    if isinstance(image_urls, str):
        image_urls = [image_urls]
    url = next((u for u in (image_urls or []) if isinstance(u, str) and u), None)
    image = record.get("_image")  # an ImageRef from the parquet reader
    if image is None:
        image = first_image_cell(record.get("images"), where)
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
    answer_eval = record.get("answer_eval") or []
    if not isinstance(answer_eval, (list, tuple)):
        raise DatasetError(f"{where}: field 'answer_eval' must be a list of answers, got {answer_eval!r:.80}")
    for value in answer_eval:
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
        row["image"] = image_cell(row["image"], f"{where}: field 'image'")
    if row.get("image") is None and row.get("file_name"):  # the Hugging Face imagefolder convention
        row["image"] = row.pop("file_name")
    if row.get("image") is None and row.get("image_url"):
        row["image"] = row["image_url"]
    metadata = row.pop("metadata", None)
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata) if metadata else {}
        except (ValueError, RecursionError) as exc:
            raise DatasetError(
                f"{where}: field 'metadata' is not a JSON object ({type(exc).__name__}: {str(exc)[:100]}); store "
                "a JSON object of plain fields"
            ) from None
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
        fmt = detect_format(record.keys() - {"_image"} | ({"image"} if "_image" in record else set()), where=where)
    if fmt == "fvqa":
        return _fvqa_row(record, where)
    if fmt == "infoseek":
        return _infoseek_row(record, where, image_dirs)
    if fmt == "mmsearch":
        return _ours_row(record, where)
    raise ConfigError(f"unknown dataset format {fmt!r}; expected one of {FORMATS}")


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {FORMATS}, got {fmt!r}")


def to_example(row: dict[str, Any], index: int, where: str, base_dir: Path | None, fetch_policy: Any) -> Example:
    return example_from_record(row, index, base_dir=base_dir, lazy=True, fetch_policy=fetch_policy, where=where)
