"""The embedded knowledge corpus: pages (countries, elements, brands, emoji, Wikipedia summaries) with
thumbnails and precomputed search indexes, all under ``mmsearch_env/corpus/data`` (built by
``python -m mmsearch_env.corpus.build``; sources and licences in ``data/LICENSES.md``).

:func:`load_corpus` reads it once per process (cached); thumbnails decode on demand.
"""

from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mmsearch_env.errors import DatasetError

__all__ = ["DATA_DIR", "Corpus", "CorpusPage", "load_corpus"]

DATA_DIR = Path(__file__).parent / "data"


@dataclass(frozen=True)
class CorpusPage:
    """One page: stable url-like id, title, text, structured facts, and the indexes of its images."""

    id: str
    url: str
    title: str
    kind: str
    text: str
    facts: dict[str, Any] = field(compare=False)
    images: tuple[int, ...] = ()


@dataclass
class Corpus:
    """The loaded corpus. ``image_page[i]`` is the page that image ``i`` belongs to."""

    path: Path
    pages: list[CorpusPage]
    image_page: np.ndarray
    image_kind: np.ndarray
    #: images with identical pixels share a group (they cannot be told apart by looking)
    dup_group: np.ndarray
    _blob: np.ndarray
    _offsets: np.ndarray
    by_id: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_id = {page.id: i for i, page in enumerate(self.pages)}

    @property
    def n_images(self) -> int:
        return len(self._offsets) - 1

    def image_bytes(self, index: int) -> bytes:
        """The stored (WebP) bytes of image ``index``."""
        return self._blob[self._offsets[index] : self._offsets[index + 1]].tobytes()

    def thumbnail(self, index: int) -> Image.Image:
        """Image ``index`` decoded to RGB (a new object each call; callers may modify it)."""
        image = Image.open(io.BytesIO(self.image_bytes(index)))
        return image.convert("RGB")

    def page(self, page_id: str) -> CorpusPage:
        try:
            return self.pages[self.by_id[page_id]]
        except KeyError:
            raise DatasetError(f"no corpus page with id {page_id!r}") from None


@lru_cache(maxsize=2)
def load_corpus(path: str | Path = DATA_DIR) -> Corpus:
    """Read the corpus at ``path`` (the packaged one by default); cached per path."""
    path = Path(path)
    pages_file = path / "pages.jsonl.gz"
    if not pages_file.is_file():
        raise DatasetError(
            f"corpus data not found at {str(path)!r} (missing pages.jsonl.gz); reinstall mmsearch-env or rebuild "
            "it with: python -m mmsearch_env.corpus.build"
        )
    pages = []
    with gzip.open(pages_file, "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            pages.append(
                CorpusPage(row["id"], row["url"], row["title"], row["kind"], row["text"], row["facts"],
                           tuple(row["images"]))
            )  # fmt: skip
    with np.load(path / "thumbs.npz", allow_pickle=False) as thumbs:
        blob, offsets = thumbs["blob"], thumbs["offsets"]
    with np.load(path / "image_index.npz", allow_pickle=False) as index:
        image_page, image_kind, dup_group = index["page"], index["kind"], index["dup_group"]
    return Corpus(path, pages, image_page, image_kind, dup_group, blob, offsets)
