"""Trajectory files: one :class:`~mmsearch_env.records.EpisodeRecord` per JSON line, images beside them.

:class:`TrajectoryWriter` appends records (flushed and fsync'ed per line) and saves pictures once, in an
``images/`` folder next to the file, named by the SHA-256 of their PNG bytes; :func:`build_record` turns
the episode that just ended in an env into its record; :func:`read_trajectories` reads a file back. The
rollout engine (:mod:`agents.rollout`) writes these files; evaluation, curation and the viewer read them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym

from mmsearch_env.errors import DatasetError
from mmsearch_env.records import EpisodeRecord, jsonable

__all__ = [
    "THUMBNAIL_SAVE_SIZE",
    "SkippedEpisode",
    "TrajectoryWriter",
    "build_record",
    "read_trajectories",
    "skipped_path",
    "write_skipped",
]

#: Long side, in pixels, of the search-result thumbnails saved next to a trajectory file.
THUMBNAIL_SAVE_SIZE = 256


@dataclass(frozen=True)
class SkippedEpisode:
    """An episode a rollout could not play (``on_error="skip"``): which one, and why.

    Skipped episodes are not trajectory lines (they have no turns to score); a rerun retries them.
    """

    index: int
    example_id: str | None
    error: str
    policy: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))


def skipped_path(path: str | os.PathLike[str]) -> Path:
    """Where the skipped episodes of trajectory file ``path`` are listed: ``NAME.skipped.jsonl`` beside it."""
    path = Path(path)
    return path.with_name(path.stem + ".skipped.jsonl")


def write_skipped(path: str | os.PathLike[str], skipped: Sequence[SkippedEpisode]) -> Path | None:
    """List this run's skipped episodes beside trajectory file ``path`` (replacing an older list; none: removed)."""
    target = skipped_path(path)
    if not skipped:
        target.unlink(missing_ok=True)
        return None
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text("".join(json.dumps(s.to_dict(), ensure_ascii=False) + "\n" for s in skipped), encoding="utf-8")
    os.replace(tmp, target)
    return target


class TrajectoryWriter:
    """Appends trajectory lines to ``path`` and saves images by content hash in ``path.parent / "images"``.

    Thread-safe. Each line is written with one ``write`` call, flushed and fsync'ed, so a crash leaves
    at most one truncated last line, which :func:`read_trajectories` drops with a warning.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.images_dir = self.path.parent / "images"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.images_dir.mkdir(exist_ok=True)
        self._lock = threading.Lock()
        _repair_tail(self.path)

    def save_image(self, image: Any, *, max_size: int | None = None) -> str | None:
        """Save a PIL image as ``images/<sha256>.png`` (once) and return that file name; ``None`` if unusable."""
        try:
            if max_size is not None and max(image.size) > max_size:
                image = image.copy()
                image.thumbnail((max_size, max_size))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="PNG")
        except (AttributeError, OSError, ValueError):
            return None
        data = buffer.getvalue()
        name = hashlib.sha256(data).hexdigest() + ".png"
        target = self.images_dir / name
        if not target.exists():
            tmp = target.with_suffix(f".{os.getpid()}.{id(data)}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)  # atomic: a reader never sees half an image
        return name

    def write(self, record: EpisodeRecord) -> None:
        """Append ``record`` as one JSON line."""
        line = record.to_json() + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())


def _repair_tail(path: Path) -> None:
    """Drop a truncated last line (a crash mid-write) so appending starts on a clean line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    cut = data.rfind(b"\n", 0, len(data) - 1) + 1  # start of the last line
    last = data[cut:]
    try:
        json.loads(last)
    except ValueError:
        warnings.warn(f"{path}: dropping a truncated last line ({len(last)} bytes; an interrupted run?)", stacklevel=3)
        with path.open("r+b") as handle:
            handle.truncate(cut)
        return
    if not data.endswith(b"\n"):
        with path.open("ab") as handle:
            handle.write(b"\n")


def read_trajectories(path: str | os.PathLike[str]) -> list[EpisodeRecord]:
    """Read a trajectory JSONL file written by :func:`rollout`, one :class:`EpisodeRecord` per line.

    Lines from before records were versioned are upgraded. A truncated *last* line (an interrupted
    write) is dropped with a warning; any other bad line raises :class:`DatasetError` naming
    ``file:line`` and what is wrong with it. A missing file reads as no trajectories.
    """
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            if number == len(lines):
                warnings.warn(f"{path}:{number}: dropping a truncated last line ({exc})", stacklevel=2)
                break
            raise DatasetError(f"{path}:{number}: not a JSON trajectory line ({exc}); was the file edited?") from exc
        try:
            records.append(EpisodeRecord.from_dict(data))
        except DatasetError as exc:
            raise DatasetError(f"{path}:{number}: {exc}") from exc
    return records


def build_record(
    env: gym.Env,
    *,
    policy: str,
    index: int,
    split: str | None,
    reward: float,
    info: Mapping[str, Any],
    usage: dict[str, int] | None,
    latency_s: float,
    writer: TrajectoryWriter | None,
    finish_reasons: Sequence[str | None] = (),
) -> EpisodeRecord:
    """The trajectory record of the episode that just ended in ``env`` (see the module docstring).

    ``finish_reasons``: one per turn the policy wrote (``None`` each when not given).
    """
    base = env.unwrapped
    record = base.episode_record()
    record.policy, record.index, record.split = policy, int(index), split
    record.finish_reasons = list(finish_reasons) or [None] * len(record.turns)
    record.reward, record.info, record.usage = float(reward), jsonable(info), usage
    record.latency_s = round(latency_s, 6)
    images = base.episode_images()
    record.image = writer.save_image(images["question"]) if writer else None
    for search, thumbs in zip(record.searches, images["thumbnails"], strict=True):
        for result, thumb in zip(search.results, thumbs, strict=True):
            result.thumbnail = (
                writer.save_image(thumb, max_size=THUMBNAIL_SAVE_SIZE) if writer and thumb is not None else None
            )
    return record
