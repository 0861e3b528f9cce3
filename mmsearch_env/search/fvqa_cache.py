"""Import the released FVQA image-search caches (pickles) safely, and search them by ``data_id``.

The MMSearch-R1 release ships image-search results as Python pickles: a dict ``data_id`` →
``{"tool_returned_web_title_list": [str, ...], "tool_returned_images_urls": [str | PIL.Image, ...]}``
(REFERENCE.md §1). A pickle can run any code when loaded, so :func:`load_fvqa_pickle` uses
:class:`~mmsearch_env.search.safe_pickle.RestrictedUnpickler`, which resolves only the globals that such a
file needs (PIL images, the bytes and object rebuilders of protocols 0-2, sets, and the numbers Pillow
keeps in an image's ``info``), validates every constructor's arguments before it runs, and stops a load
past ``max_seconds``; anything else raises :class:`UnsafePickleError` before it is imported, so nothing
runs. :func:`load_fvqa_pickle` also refuses a file over ``max_bytes`` (default :data:`MAX_PICKLE_BYTES`)
before reading it.

Keys: each entry is stored as an image-search response under
``cache_key("image_search", ..., backend="fvqa", image_key="example_id")`` — that is, keyed by the
question's ``data_id``, which our FVQA loader uses as ``Example.id``. :class:`FvqaImageSearch` (``search="fvqa"``)
answers image searches from those entries (``example_id`` of the request) and passes text searches to
another backend; ``CachedSearch(None, store, mode="replay", backend_name="fvqa", image_key="example_id")``
reads the same entries.

Thumbnails given as URLs are kept as the result's ``url`` with no image unless ``fetch_thumbnail``
(a callable URL → PIL image, e.g. the safe HTTP fetcher) downloads them at import time.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, BinaryIO

from PIL import Image
from tqdm.auto import tqdm

from mmsearch_env.errors import DatasetError, SearchBackendError
from mmsearch_env.search.base import (
    ImageSearchRequest,
    SearchBackendBase,
    SearchResponse,
    SearchResult,
    TextSearchRequest,
    as_backend,
)
from mmsearch_env.search.cache import CacheStore, cache_key, open_store
from mmsearch_env.search.calls import call_search
from mmsearch_env.search.codec import canonical_json, response_from_json, response_to_json
from mmsearch_env.search.safe_pickle import MAX_PICKLE_SECONDS, RestrictedUnpickler, UnsafePickleError

__all__ = [
    "FVQA_BACKEND_NAME",
    "MAX_PICKLE_BYTES",
    "MAX_PICKLE_SECONDS",
    "FvqaImageSearch",
    "ImportReport",
    "RestrictedUnpickler",
    "UnsafePickleError",
    "fvqa_key",
    "import_fvqa_cache",
    "load_fvqa_pickle",
    "read_fvqa_pickle",
]

logger = logging.getLogger(__name__)

FVQA_BACKEND_NAME = "fvqa"
# The released caches hold ~6k entries of up to five thumbnails (raw pixels, tens of KB each), well under
# a few GB; a file past this cap is refused before a byte of it is read.
MAX_PICKLE_BYTES = 8 * 2**30
_TITLES = "tool_returned_web_title_list"
_IMAGES = "tool_returned_images_urls"


def load_fvqa_pickle(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = MAX_PICKLE_BYTES,
    max_seconds: float | None = MAX_PICKLE_SECONDS,
) -> dict[str, dict[str, Any]]:
    """Load and validate an FVQA image-search cache pickle with :class:`RestrictedUnpickler`.

    Returns ``{data_id: {"titles": [str], "images": [str | PIL.Image]}}``. Raises
    :class:`UnsafePickleError` on a forbidden global, a hostile constructor argument or a load past
    ``max_seconds``, and :class:`~mmsearch_env.errors.DatasetError` for a file over ``max_bytes`` or when
    the structure is not the documented one (the message names the entry and the field).
    """
    name = repr(os.fspath(path))
    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            raise DatasetError(
                f"{name} is {size} bytes, over the {max_bytes}-byte limit for an FVQA cache pickle; pass a "
                "larger max_bytes if the file is genuine"
            )
        with open(path, "rb") as handle:
            return read_fvqa_pickle(handle, name=name, max_seconds=max_seconds)
    except FileNotFoundError as exc:
        raise DatasetError(f"FVQA cache file not found: {name}") from exc


def read_fvqa_pickle(
    file: BinaryIO, *, name: str = "the FVQA cache", max_seconds: float | None = MAX_PICKLE_SECONDS
) -> dict[str, dict[str, Any]]:
    """:func:`load_fvqa_pickle` of an open binary file (``name`` is how messages call it)."""
    try:
        raw = RestrictedUnpickler(file, max_seconds=max_seconds).load()
    except (UnsafePickleError, DatasetError):
        raise
    except RecursionError as exc:
        raise DatasetError(f"{name} nests objects too deeply for an FVQA cache") from exc
    except Exception as exc:  # truncated or corrupt files: UnpicklingError, EOFError, ValueError, ...
        raise DatasetError(f"{name} is not a readable pickle: {type(exc).__name__}: {str(exc)[:200]}") from exc
    if not isinstance(raw, Mapping):
        raise DatasetError(f"an FVQA cache must be a dict data_id -> entry, got {type(raw).__name__}")
    entries: dict[str, dict[str, Any]] = {}
    for data_id, entry in raw.items():
        where = f"FVQA cache entry {data_id!r:.80}"
        if not isinstance(data_id, str) or not isinstance(entry, Mapping):
            raise DatasetError(f"{where}: expected str data_id -> dict, got {type(entry).__name__}")
        missing = [k for k in (_TITLES, _IMAGES) if k not in entry]
        if missing:
            raise DatasetError(f"{where}: missing field(s) {missing}; expected {_TITLES!r} and {_IMAGES!r}")
        for key in (_TITLES, _IMAGES):
            if entry[key] is not None and not isinstance(entry[key], (list, tuple)):
                raise DatasetError(f"{where}: {key} must be a list, got {type(entry[key]).__name__}")
        titles, images = list(entry[_TITLES] or []), list(entry[_IMAGES] or [])
        if not all(isinstance(t, str) for t in titles):
            raise DatasetError(f"{where}: {_TITLES} must be a list of str")
        if not all(isinstance(i, (str, Image.Image)) for i in images):
            raise DatasetError(f"{where}: {_IMAGES} must be a list of URL strings or PIL images")
        entries[data_id] = {"titles": titles, "images": images}
    return entries


def fvqa_key(data_id: str) -> str:
    """The cache key of the FVQA image-search entry for ``data_id``."""
    request = ImageSearchRequest(image=Image.new("RGB", (1, 1)), example_id=data_id)
    return cache_key("image_search", request, backend=FVQA_BACKEND_NAME, image_key="example_id")[0]


@dataclass(frozen=True)
class ImportReport:
    """What :func:`import_fvqa_cache` did."""

    entries: int
    results: int
    thumbnails: int
    url_only: int


def _plain(image: Image.Image) -> Image.Image | None:
    """The thumbnail's pixels as a plain RGB(A) image, or None when they cannot be converted.

    The pickled ``info`` dict is the file's to choose, and PNG encoding and mode conversion read keys of
    it (``transparency``, ``icc_profile``, ``exif``): it is dropped, so a crafted one cannot break the import.
    """
    try:
        copy = image.copy()  # a plain PIL.Image.Image: the unpickling subclass does not leak out
        copy.info = {}
        return copy.convert("RGBA" if "A" in copy.getbands() else "RGB")
    except (OSError, ValueError, TypeError) as exc:
        logger.warning("a pickled thumbnail of mode %r could not be converted: %s", image.mode, exc)
        return None


def import_fvqa_cache(
    pickle_path: str | os.PathLike[str],
    cache: str | os.PathLike[str] | CacheStore,
    *,
    top_k: int = 5,
    fetch_thumbnail: Callable[[str], Image.Image] | None = None,
    progress: bool = True,
    max_bytes: int = MAX_PICKLE_BYTES,
    max_seconds: float | None = MAX_PICKLE_SECONDS,
) -> ImportReport:
    """Load an FVQA cache pickle safely and write its entries into ``cache`` (path, URL or store).

    Each entry becomes an image-search response of its first ``top_k`` (title, thumbnail) pairs. A
    thumbnail URL becomes the result's ``url``; with ``fetch_thumbnail`` it is downloaded too (a failed
    download keeps the URL-only result and is logged). ``max_bytes`` / ``max_seconds`` bound the pickle as
    in :func:`load_fvqa_pickle`.
    """
    entries = load_fvqa_pickle(pickle_path, max_bytes=max_bytes, max_seconds=max_seconds)
    store = open_store(cache)
    results_total = thumbs = url_only = 0
    try:
        for data_id, entry in tqdm(entries.items(), desc="import FVQA cache", disable=not progress):
            results = []
            for index, (title, image) in enumerate(zip(entry["titles"], entry["images"], strict=False)):
                if index >= top_k:
                    break
                thumbnail: Image.Image | None = None
                url = ""
                if isinstance(image, Image.Image):
                    thumbnail = _plain(image)
                else:
                    url = image
                    if fetch_thumbnail is not None:
                        try:
                            thumbnail = fetch_thumbnail(image)
                        except Exception as exc:
                            logger.warning("thumbnail %s of %s not fetched: %s", image, data_id, exc)
                if thumbnail is None:
                    url_only += 1
                else:
                    thumbs += 1
                results.append(SearchResult(title=title, url=url, thumbnail=thumbnail))
            results_total += len(results)
            response = SearchResponse("image_search", tuple(results))
            store.put(fvqa_key(data_id), canonical_json(response_to_json(response)).encode("utf-8"))
    finally:
        if isinstance(cache, (str, os.PathLike)):  # a store object passed in stays open: the caller owns it
            store.close()
    return ImportReport(entries=len(entries), results=results_total, thumbnails=thumbs, url_only=url_only)


class FvqaImageSearch(SearchBackendBase):
    """Image search answered from an imported FVQA cache (by ``example_id``); text search delegated.

    ``gym.make("MMSearch-v0", dataset=..., search="fvqa", search_options={"cache": "fvqa.sqlite",
    "text": "sample"})``. A question missing from the cache is a tool error naming the ``data_id``.

    Args:
        cache: the imported cache (SQLite path, ``redis://`` URL or store).
        text: the backend that answers text searches (``None``: text search is a tool error).
    """

    name = FVQA_BACKEND_NAME

    def __init__(self, cache: str | os.PathLike[str] | CacheStore, text: Any = None):
        self.store = open_store(cache)
        self.text_backend = None if text is None else as_backend(text)

    def image_search(self, request: ImageSearchRequest) -> SearchResponse:
        if not request.example_id:
            raise SearchBackendError("the FVQA image-search cache is keyed by data_id; the request has no example_id")
        raw = self.store.get(fvqa_key(request.example_id))
        if raw is None:
            raise SearchBackendError(
                f"no FVQA image-search cache entry for data_id {request.example_id!r} in {self.store!r}"
            )
        return replace(response_from_json(json.loads(raw)), cached=True, cost_usd=0.0)

    def text_search(self, request: TextSearchRequest) -> SearchResponse:
        if self.text_backend is None:
            return SearchResponse("text_search", error="text search is not configured (search_options 'text')")
        return call_search(self.text_backend, "text_search", request, raise_errors=True)

    def reset_episode(self, example_id: str | None = None) -> None:
        if self.text_backend is not None:
            self.text_backend.reset_episode(example_id)

    def close(self) -> None:
        self.store.close()
        if self.text_backend is not None:
            self.text_backend.close()
