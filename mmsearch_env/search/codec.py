"""JSON wire format for search requests and responses (cache entries and the search service).

Never pickle: a response is a JSON object whose thumbnails are base64-encoded PNG (or lossless WebP)
bytes, so a cache file or an HTTP body can be read by anything and executes nothing when loaded.
Decoding is bounded: a thumbnail larger than :data:`MAX_THUMBNAIL_PIXELS` is rejected (a
decompression bomb in a shared cache must not take a trainer down).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import unicodedata
from typing import Any

from PIL import Image

from mmsearch_env.errors import SearchBackendError
from mmsearch_env.search.base import ImageSearchRequest, SearchResponse, SearchResult, TextSearchRequest
from mmsearch_env.text import valid_unicode

__all__ = [
    "MAX_THUMBNAIL_PIXELS",
    "WIRE_VERSION",
    "canonical_json",
    "decode_image",
    "encode_image",
    "image_digest",
    "normalize_query",
    "request_from_json",
    "request_to_json",
    "response_from_json",
    "response_to_json",
]

#: Bumped when the JSON layout changes; part of every cache key, so old entries simply miss.
WIRE_VERSION = 1
#: Largest thumbnail (in pixels) a cache entry or service reply may carry: 4096 × 4096.
MAX_THUMBNAIL_PIXELS = 4096 * 4096
_SPACES = re.compile(r"\s+")


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces, UTF-8 kept (the input of every cache key)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def normalize_query(text: str) -> str:
    """The form a text query is keyed by: NFKC, case-folded, NFKC again, whitespace collapsed and trimmed.

    Web engines ignore case and spacing, so ``"Flag  of FRANCE "`` and ``"flag of france"`` share one
    cache entry (one paid call).

    >>> normalize_query("  Flag  of\\tFRANCE ")
    'flag of france'
    """
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())  # stable under repeats
    return _SPACES.sub(" ", folded).strip()


def image_digest(image: Image.Image) -> str:
    """sha256 of the image's canonical encoding: mode, size and raw pixel bytes (not file bytes).

    The same pixels give the same digest whether they came from a PNG, a JPEG decode or memory;
    metadata (EXIF, ``info``) is ignored.
    """
    digest = hashlib.sha256()
    digest.update(f"{image.mode}:{image.width}x{image.height}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def encode_image(image: Image.Image, image_format: str = "png") -> str:
    """Base64 of the image saved losslessly as PNG (default) or WebP.

    PNG uses zlib level 1: thumbnails are small, and on them the higher levels save a few percent of
    bytes for twice the encoding time (this runs on every cache store and every service reply).
    """
    buffer = io.BytesIO()
    if image_format == "webp":
        image.save(buffer, format="WEBP", lossless=True)
    elif image_format == "png":
        image.save(buffer, format="PNG", compress_level=1)
    else:
        raise ValueError(f"image_format must be 'png' or 'webp', got {image_format!r}")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_image(data: str) -> Image.Image:
    """Decode :func:`encode_image` output into an in-memory image (size-checked before decoding)."""
    try:
        raw = base64.b64decode(data, validate=True)
        with Image.open(io.BytesIO(raw)) as opened:
            if opened.width * opened.height > MAX_THUMBNAIL_PIXELS:
                raise SearchBackendError(
                    f"thumbnail of {opened.width}x{opened.height} pixels exceeds the limit of "
                    f"{MAX_THUMBNAIL_PIXELS} pixels; the cache entry or service reply is corrupt or hostile"
                )
            opened.load()
            image = opened.copy()
    except SearchBackendError:
        raise
    except Exception as exc:  # binascii.Error, OSError, DecompressionBombError, ...
        raise SearchBackendError(f"undecodable thumbnail in a cached or served response: {exc}") from exc
    image.info.clear()  # PNG chunks are not part of the result's identity
    return image


def response_to_json(response: SearchResponse, image_format: str = "png") -> dict[str, Any]:
    """A JSON-able dict of ``response``: results with base64 thumbnails; latency, cost, cached kept."""
    return {
        "v": WIRE_VERSION,
        "tool": response.tool,
        "error": response.error,
        "latency_s": response.latency_s,
        "cost_usd": response.cost_usd,
        "cached": response.cached,
        "results": [
            {
                "title": r.title,
                "url": r.url,
                "summary": r.summary,
                "thumbnail": None if r.thumbnail is None else encode_image(r.thumbnail, image_format),
            }
            for r in response.results
        ],
    }


def response_from_json(data: Any) -> SearchResponse:
    """Inverse of :func:`response_to_json`; a malformed document raises :class:`SearchBackendError`."""
    try:
        if data.get("v") != WIRE_VERSION:
            raise SearchBackendError(f"search response format version {data.get('v')!r}, expected {WIRE_VERSION}")
        tool = data["tool"]
        if tool not in ("image_search", "text_search"):
            raise SearchBackendError(f"unknown tool {tool!r} in a search response")
        results = tuple(
            SearchResult(
                title=str(r["title"]),
                url=str(r["url"]),
                summary=None if r.get("summary") is None else str(r["summary"]),
                thumbnail=None if r.get("thumbnail") is None else decode_image(r["thumbnail"]),
            )
            for r in data["results"]
        )
        return SearchResponse(
            tool,
            results,
            error=data.get("error"),
            latency_s=float(data.get("latency_s") or 0.0),
            cost_usd=float(data.get("cost_usd") or 0.0),
            cached=bool(data.get("cached")),
        )
    except SearchBackendError:
        raise
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise SearchBackendError(f"malformed search response document: {type(exc).__name__}: {exc}") from exc


def request_to_json(request: ImageSearchRequest | TextSearchRequest) -> dict[str, Any]:
    """The search service's request body (images as base64 PNG)."""
    if isinstance(request, ImageSearchRequest):
        return {
            "image_png_b64": encode_image(request.image),
            "image_url": request.image_url,
            "example_id": request.example_id,
        }
    return {"query": request.query, "question": request.question, "example_id": request.example_id}


def request_from_json(tool: str, data: dict[str, Any]) -> ImageSearchRequest | TextSearchRequest:
    """Inverse of :func:`request_to_json` (raises :class:`SearchBackendError` on bad input).

    Text from the request is made valid Unicode here, where it enters (``json.loads`` turns a ``"\\ud83d"``
    escape into a lone surrogate, which no backend, cache key or JSON reply can carry).
    """
    for name in ("image_url", "example_id", "question"):
        if data.get(name) is not None and not isinstance(data[name], str):
            raise SearchBackendError(f"{name!r} must be a string or null, got {type(data[name]).__name__}")
    data = {k: valid_unicode(v) if isinstance(v, str) and k != "image_png_b64" else v for k, v in data.items()}
    if tool == "image_search":
        if not isinstance(data.get("image_png_b64"), str):
            raise SearchBackendError("an image search needs 'image_png_b64': the image as base64 PNG")
        return ImageSearchRequest(
            image=decode_image(data["image_png_b64"]),
            image_url=data.get("image_url"),
            example_id=data.get("example_id"),
        )
    if not isinstance(data.get("query"), str):
        raise SearchBackendError("a text search needs 'query': a string")
    return TextSearchRequest(query=data["query"], question=data.get("question"), example_id=data.get("example_id"))
