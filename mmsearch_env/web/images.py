"""Images from the web: decode downloaded bytes without falling for decompression bombs, and fetch one safely.

:func:`decode_image` reads the size from the header and refuses images over ``max_pixels`` before a
pixel is decoded; :func:`fetch_image` downloads through the SSRF-guarded :func:`~mmsearch_env.web.http.fetch`
(``image/*`` only) and decodes. Failures raise :class:`~mmsearch_env.errors.SearchBackendError` (a bad
image is not worth retrying) or what the fetch raised.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

from PIL import Image

from mmsearch_env.errors import SearchBackendError
from mmsearch_env.web.credentials import redact_url
from mmsearch_env.web.http import FetchPolicy, fetch
from mmsearch_env.web.status import check_status

__all__ = ["MAX_THUMBNAIL_PIXELS", "decode_image", "fetch_image", "open_bounded"]

#: Thumbnails and page images larger than this many pixels are refused before decoding.
MAX_THUMBNAIL_PIXELS = 16_000_000


def open_bounded(
    fp: Any, *, max_pixels: int, what: str, error: type[Exception] = SearchBackendError, fix: str = ""
) -> Image.Image:
    """Open and decode an image, refusing one over ``max_pixels`` from its header, before any pixel is
    decoded (a decompression bomb). The refusal is ``error`` naming ``what`` and, when given, ``fix``."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(fp)
        width, height = image.size
        if width * height > max_pixels:
            raise error(
                f"{what}: the image is {width}x{height} pixels, over the {max_pixels:,} pixel limit "
                f"(a decompression bomb?){'; ' + fix if fix else ''}"
            )
        image.load()
    return image


def decode_image(data: bytes, *, max_pixels: int = MAX_THUMBNAIL_PIXELS, what: str = "image") -> Image.Image:
    """Decode image bytes to RGB, refusing decompression bombs from the header, before any pixel is decoded."""
    try:
        image = open_bounded(io.BytesIO(data), max_pixels=max_pixels, what=what)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SearchBackendError(f"{what}: refused a decompression bomb ({exc})") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise SearchBackendError(f"{what}: not a decodable image ({type(exc).__name__}: {exc})") from exc
    return image if image.mode == "RGB" else image.convert("RGB")


def fetch_image(url: str, *, policy: FetchPolicy | None = None, max_pixels: int = MAX_THUMBNAIL_PIXELS) -> Image.Image:
    """Download and decode one image under the SSRF/size/type rules of :func:`~mmsearch_env.web.http.fetch`."""
    shown = f"image {redact_url(url)!r}"
    result = check_status(fetch(url, policy=policy, accept=("image/*",), what=shown), shown)
    return decode_image(result.content, max_pixels=max_pixels, what=shown)
