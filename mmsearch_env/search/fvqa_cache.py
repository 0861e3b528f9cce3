"""Import the released FVQA image-search caches (pickles) safely, and search them by ``data_id``.

The MMSearch-R1 release ships image-search results as Python pickles: a dict ``data_id`` →
``{"tool_returned_web_title_list": [str, ...], "tool_returned_images_urls": [str | PIL.Image, ...]}``
(REFERENCE.md §1). A pickle can run any code when loaded, so :func:`load_fvqa_pickle` uses
:class:`RestrictedUnpickler`, which resolves only the globals that such a file needs:

* PIL images (Pillow 13 pickles an image as its class + ``__setstate__([info, mode, size, palette, bytes])``):
  ``PIL.Image.Image`` and the file-backed subclasses a loaded thumbnail may have (PNG, JPEG, WebP, GIF,
  BMP, TIFF). Each is mapped to :class:`_BoundedImage`, which checks the pixel count against Pillow's
  ``MAX_IMAGE_PIXELS`` *before* allocating (a pickle can claim any size).
* what protocols 0–2 use to rebuild those objects and bytes: ``copyreg._reconstructor``,
  ``builtins.object``, ``_codecs.encode`` (latin-1 only) and ``bytes`` / ``bytearray`` (never the
  ``bytes(n)`` allocation form); and ``builtins`` ``set`` / ``frozenset``.
* what Pillow puts in an image's ``info``: ``PIL.TiffImagePlugin.IFDRational`` (dpi of TIFF/EXIF images)
  and ``fractions.Fraction`` from two small ints.

Anything else (``os.system``, ``builtins.eval``, ``subprocess.Popen``, any ``__reduce__`` payload) raises
:class:`UnsafePickleError` before the global is even imported, so nothing runs.

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
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

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

__all__ = [
    "FVQA_BACKEND_NAME",
    "FvqaImageSearch",
    "ImportReport",
    "RestrictedUnpickler",
    "UnsafePickleError",
    "fvqa_key",
    "import_fvqa_cache",
    "load_fvqa_pickle",
]

logger = logging.getLogger(__name__)

FVQA_BACKEND_NAME = "fvqa"
_TITLES = "tool_returned_web_title_list"
_IMAGES = "tool_returned_images_urls"


class UnsafePickleError(DatasetError):
    """A pickle asked for a global outside the allow-list; nothing from it was executed."""


class _BoundedImage(Image.Image):
    """A PIL image whose unpickling refuses sizes above ``Image.MAX_IMAGE_PIXELS`` before allocating."""

    def __setstate__(self, state: Any) -> None:
        try:
            _info, mode, size, _palette, data = state[:5]
            width, height = (int(v) for v in size)
        except (TypeError, ValueError) as exc:
            raise UnsafePickleError(f"malformed pickled PIL image state: {exc}") from exc
        limit = Image.MAX_IMAGE_PIXELS
        if width <= 0 or height <= 0 or (limit is not None and width * height > limit):
            raise UnsafePickleError(
                f"pickled image claims {width}x{height} pixels (limit {limit}); refusing to allocate it"
            )
        if not isinstance(mode, str) or not isinstance(data, (bytes, bytearray)):
            raise UnsafePickleError("malformed pickled PIL image state: mode must be str and data bytes")
        super().__setstate__(state)


_PIL_IMAGE_CLASSES = {
    ("PIL.Image", "Image"),
    ("PIL.PngImagePlugin", "PngImageFile"),
    ("PIL.JpegImagePlugin", "JpegImageFile"),
    ("PIL.WebPImagePlugin", "WebPImageFile"),
    ("PIL.GifImagePlugin", "GifImageFile"),
    ("PIL.BmpImagePlugin", "BmpImageFile"),
    ("PIL.TiffImagePlugin", "TiffImageFile"),
}


def _latin1_encode(text: Any, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocols 0-2 use it for bytes (``latin1`` only; no other codec is reachable)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"refusing _codecs.encode({type(text).__name__}, {encoding!r}) in a pickle")
    return text.encode("latin-1")


def _sized(kind: type) -> Callable[..., Any]:
    """``bytes`` / ``bytearray`` without the ``bytes(n)`` form: a pickle must not allocate n zero bytes."""

    def build(*args: Any) -> Any:
        if len(args) > 2 or (args and not isinstance(args[0], (str, bytes, bytearray, list))):
            raise UnsafePickleError(f"refusing {kind.__name__}{args!r:.60} in a pickle")
        return kind(*args)

    return build


def _small_fraction(numerator: Any = 0, denominator: Any = 1) -> Fraction:
    """``fractions.Fraction`` from two small ints only: ``Fraction("1e999999999")`` would hang the loader."""
    if not all(type(v) is int and abs(v) < 2**64 for v in (numerator, denominator)):
        raise UnsafePickleError(f"refusing Fraction({numerator!r:.40}, {denominator!r:.40}) in a pickle")
    return Fraction(numerator, denominator)


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    # TIFF/EXIF resolutions in an image's info dict (dpi) are IFDRational(Fraction(int, int))
    ("PIL.TiffImagePlugin", "IFDRational"): __import__("PIL.TiffImagePlugin", fromlist=["IFDRational"]).IFDRational,
    ("fractions", "Fraction"): _small_fraction,
    # protocols 0/1 rebuild objects with copyreg._reconstructor(cls, object, None) (fix_imports maps the
    # Python 2 names copy_reg / __builtin__, which is what find_class receives); cls can only be an image
    # class from the allow-list, since find_class is the only way a pickle can name a class
    ("copyreg", "_reconstructor"): __import__("copyreg")._reconstructor,
    ("copy_reg", "_reconstructor"): __import__("copyreg")._reconstructor,
    ("builtins", "object"): object,
    ("__builtin__", "object"): object,
    # protocols 0-2 spell bytes as _codecs.encode(str, "latin1"), and b"" as bytes()
    ("_codecs", "encode"): _latin1_encode,
    ("builtins", "bytes"): _sized(bytes),
    ("__builtin__", "bytes"): _sized(bytes),
    ("builtins", "bytearray"): _sized(bytearray),
    ("__builtin__", "bytearray"): _sized(bytearray),
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the allow-listed globals (module docstring); others raise."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PIL_IMAGE_CLASSES:
            return _BoundedImage
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        raise UnsafePickleError(
            f"refusing to load {module}.{name} from an FVQA cache pickle: only containers, strings and PIL "
            "images are allowed (the file is not a released FVQA cache, or it was tampered with)"
        )


def load_fvqa_pickle(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Load and validate an FVQA image-search cache pickle with :class:`RestrictedUnpickler`.

    Returns ``{data_id: {"titles": [str], "images": [str | PIL.Image]}}``. Raises
    :class:`UnsafePickleError` on a forbidden global and :class:`~mmsearch_env.errors.DatasetError` when the
    structure is not the documented one (the message names the entry and the field).
    """
    try:
        with open(path, "rb") as handle:
            raw = RestrictedUnpickler(handle).load()
    except FileNotFoundError as exc:
        raise DatasetError(f"FVQA cache file not found: {os.fspath(path)!r}") from exc
    except (UnsafePickleError, DatasetError):
        raise
    except Exception as exc:  # truncated or corrupt files: UnpicklingError, EOFError, ValueError, ...
        raise DatasetError(f"{os.fspath(path)!r} is not a readable pickle: {type(exc).__name__}: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise DatasetError(f"an FVQA cache must be a dict data_id -> entry, got {type(raw).__name__}")
    entries: dict[str, dict[str, Any]] = {}
    for data_id, entry in raw.items():
        where = f"FVQA cache entry {data_id!r}"
        if not isinstance(data_id, str) or not isinstance(entry, Mapping):
            raise DatasetError(f"{where}: expected str data_id -> dict, got {type(entry).__name__}")
        missing = [k for k in (_TITLES, _IMAGES) if k not in entry]
        if missing:
            raise DatasetError(f"{where}: missing field(s) {missing}; expected {_TITLES!r} and {_IMAGES!r}")
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


def _plain(image: Image.Image) -> Image.Image:
    # Image.copy() builds a plain PIL.Image.Image, so the unpickling subclass does not leak out
    return image.copy()


def import_fvqa_cache(
    pickle_path: str | os.PathLike[str],
    cache: str | os.PathLike[str] | CacheStore,
    *,
    top_k: int = 5,
    fetch_thumbnail: Callable[[str], Image.Image] | None = None,
    progress: bool = True,
) -> ImportReport:
    """Load an FVQA cache pickle safely and write its entries into ``cache`` (path, URL or store).

    Each entry becomes an image-search response of its first ``top_k`` (title, thumbnail) pairs. A
    thumbnail URL becomes the result's ``url``; with ``fetch_thumbnail`` it is downloaded too (a failed
    download keeps the URL-only result and is logged).
    """
    entries = load_fvqa_pickle(pickle_path)
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
