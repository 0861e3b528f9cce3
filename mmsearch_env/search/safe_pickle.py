"""A restricted unpickler for the released FVQA image-search caches: only the globals they need, bounded work.

A pickle can run any code when loaded. :class:`RestrictedUnpickler` resolves only the globals that a
released cache (a dict ``data_id`` → titles and thumbnails) needs:

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

No allow-listed constructor does unbounded work on what the file says: every one validates the types,
lengths and magnitudes of its arguments before calling (``IFDRational("1e999999999")`` would spin in
``Fraction`` forever, ``bytes(10**12)`` would allocate a terabyte, an image state may not claim more
pixels than its data can fill, ``set`` / ``dict`` inserts are counted one by one). On top of that each
load is bounded: the unpickler stops with :class:`UnsafePickleError` once a load has run ``max_seconds``
(default :data:`MAX_PICKLE_SECONDS`), checked between opcodes and between the items of one container, so
a crafted file (hash-colliding keys, say) cannot hold a run forever; and
:func:`mmsearch_env.search.fvqa_cache.load_fvqa_pickle` refuses a file over a size cap before reading it.

:data:`ALLOWED_GLOBALS` lists the ``(module, name)`` pairs a pickle may name.
"""

from __future__ import annotations

import math
import pickle
import re
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any, ClassVar

from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from mmsearch_env.errors import DatasetError

__all__ = ["ALLOWED_GLOBALS", "MAX_PICKLE_SECONDS", "RestrictedUnpickler", "UnsafePickleError"]

# A legitimate multi-GB cache loads in minutes; this only guarantees that a crafted file returns.
MAX_PICKLE_SECONDS = 3600.0
# Ints and fractions in an image's info (dpi, EXIF rationals) are 32-bit in TIFF; 2**64 leaves room.
_MAX_INT = 2**64


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
        # Pillow allocates the whole image before it reads the data: raw pixels take at least one bit
        # each, so data shorter than that cannot fill the image and would only buy an allocation
        if len(data) * 8 < width * height:
            raise UnsafePickleError(
                f"pickled image claims {width}x{height} pixels but carries {len(data)} bytes of data; "
                "refusing to allocate it"
            )
        super().__setstate__(state)


def _bounded_number(value: Any) -> bool:
    """True for what an image's info may hold as a number: a small int, a finite float, a small fraction."""
    if type(value) is int:
        return abs(value) < _MAX_INT
    if type(value) is float:
        return math.isfinite(value)
    if isinstance(value, Fraction):
        return abs(value.numerator) < _MAX_INT and value.denominator < _MAX_INT
    return False


class _BoundedIFDRational(IFDRational):
    """``IFDRational`` from small numbers only: ``IFDRational("1e999999999")`` spins in ``Fraction``."""

    __slots__ = ()

    def __init__(self, value: Any = 0, denominator: Any = 1) -> None:
        ok_value = isinstance(value, IFDRational) or _bounded_number(value)
        if not ok_value or type(denominator) is not int or abs(denominator) >= _MAX_INT:
            raise UnsafePickleError(f"refusing IFDRational({value!r:.40}, {denominator!r:.40}) in a pickle")
        super().__init__(value, denominator)

    def __setstate__(self, state: Any) -> None:
        valid = (
            isinstance(state, (list, tuple))
            and len(state) == 3
            and isinstance(state[0], (float, Fraction))
            and type(state[2]) is int
            and all(_bounded_number(v) for v in state)
        )
        if not valid:
            raise UnsafePickleError(f"refusing IFDRational state {state!r:.80} in a pickle")
        super().__setstate__(list(state))


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


_PLAIN_CODECS = ("latin1", "latin-1", "ascii", "utf-8", "utf8")


def _sized(kind: type) -> Callable[..., Any]:
    """``bytes`` / ``bytearray`` without the ``bytes(n)`` form: a pickle must not allocate n zero bytes."""

    def build(*args: Any) -> Any:
        # bytes(str, encoding) only with the plain codecs: some others (punycode, idna) are superlinear
        plain = len(args) < 2 or (isinstance(args[0], str) and args[1] in _PLAIN_CODECS)
        if len(args) > 2 or not plain or (args and not isinstance(args[0], (str, bytes, bytearray, list))):
            raise UnsafePickleError(f"refusing {kind.__name__}{args!r:.60} in a pickle")
        try:
            return kind(*args)
        except (TypeError, ValueError, UnicodeError) as exc:
            raise UnsafePickleError(f"refusing {kind.__name__}{args!r:.60} in a pickle: {exc}") from exc

    return build


_SMALL_FRACTION_TEXT = re.compile(r"-?[0-9]{1,19}(/[0-9]{1,19})?")


def _small_fraction(numerator: Any = 0, denominator: Any = 1) -> Fraction:
    """``fractions.Fraction`` from two small ints only: ``Fraction("1e999999999")`` would hang the loader."""
    # Python before 3.12 pickles a Fraction as its str ("72/1"): a short plain spelling is as cheap
    if isinstance(numerator, str) and denominator == 1 and _SMALL_FRACTION_TEXT.fullmatch(numerator):
        return Fraction(numerator)
    if not all(type(v) is int and abs(v) < _MAX_INT for v in (numerator, denominator)) or denominator == 0:
        raise UnsafePickleError(f"refusing Fraction({numerator!r:.40}, {denominator!r:.40}) in a pickle")
    return Fraction(numerator, denominator)


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` as protocols 0/1 use it for the allow-listed classes, and nothing else."""
    if cls not in (_BoundedImage, _BoundedIFDRational) or base is not object or state is not None:
        raise UnsafePickleError(f"refusing copyreg._reconstructor({cls!r:.40}, {base!r:.40}, {state!r:.40})")
    return object.__new__(cls)


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    # TIFF/EXIF resolutions in an image's info dict (dpi) are IFDRational(Fraction(int, int))
    ("PIL.TiffImagePlugin", "IFDRational"): _BoundedIFDRational,
    ("fractions", "Fraction"): _small_fraction,
    # protocols 0/1 rebuild objects with copyreg._reconstructor(cls, object, None) (fix_imports maps the
    # Python 2 names copy_reg / __builtin__, which is what find_class receives)
    ("copyreg", "_reconstructor"): _reconstructor,
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("builtins", "object"): object,
    ("__builtin__", "object"): object,
    # protocols 0-2 spell bytes as _codecs.encode(str, "latin1"), and b"" as bytes()
    ("_codecs", "encode"): _latin1_encode,
    ("builtins", "bytes"): _sized(bytes),
    ("__builtin__", "bytes"): _sized(bytes),
    ("builtins", "bytearray"): _sized(bytearray),
    ("__builtin__", "bytearray"): _sized(bytearray),
}
# set / frozenset are built item by item against the load's deadline (RestrictedUnpickler.find_class):
# hash-colliding elements make one C-level set(items) call quadratic
_SETS: dict[tuple[str, str], type] = {
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
}


def _checked(op: Callable[[Any], None]) -> Callable[[Any], None]:
    def run(self: RestrictedUnpickler) -> None:
        self.check_deadline()
        op(self)

    return run


# The pure-Python unpickler, because the C one has no hook between opcodes where a deadline can be checked
class RestrictedUnpickler(pickle._Unpickler):
    """An unpickler that resolves only the allow-listed globals (module docstring); others raise.

    Args:
        file: a binary file, as for :class:`pickle.Unpickler`.
        max_seconds: a :meth:`load` running longer raises :class:`UnsafePickleError` (checked between
            opcodes and between the items of one container); ``None`` for no deadline.
    """

    def __init__(self, file: Any, *, max_seconds: float | None = MAX_PICKLE_SECONDS) -> None:
        super().__init__(file)
        self.max_seconds = max_seconds
        self._deadline = math.inf

    def load(self) -> Any:
        self._deadline = math.inf if self.max_seconds is None else time.monotonic() + self.max_seconds
        return super().load()

    def check_deadline(self) -> None:
        """Raise :class:`UnsafePickleError` once the current :meth:`load` has run past ``max_seconds``."""
        if time.monotonic() > self._deadline:
            raise UnsafePickleError(
                f"unpickling ran past its {self.max_seconds} s deadline; the file is crafted to be slow or "
                "far larger than a released FVQA cache (raise max_seconds if it is genuine)"
            )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PIL_IMAGE_CLASSES:
            return _BoundedImage
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if (module, name) in _SETS:
            kind = _SETS[(module, name)]
            return lambda items=(): kind(self._each(items))
        raise UnsafePickleError(
            f"refusing to load {module}.{name} from an FVQA cache pickle: only containers, strings and PIL "
            "images are allowed (the file is not a released FVQA cache, or it was tampered with)"
        )

    def _each(self, items: Any) -> Any:
        if not isinstance(items, (list, tuple, set, frozenset, str, bytes)):
            raise UnsafePickleError(f"refusing a set built from {type(items).__name__} in a pickle")
        for item in items:
            self.check_deadline()
            yield item

    # The opcodes that insert many items in one step, redone item by item against the deadline
    def _load_setitems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        for i in range(0, len(items), 2):
            self.check_deadline()
            target[items[i]] = items[i + 1]

    def _load_dict(self) -> None:
        items = self.pop_mark()
        built: dict[Any, Any] = {}
        for i in range(0, len(items), 2):
            self.check_deadline()
            built[items[i]] = items[i + 1]
        self.append(built)

    def _load_additems(self) -> None:
        items = self.pop_mark()
        add = self.stack[-1].add
        for item in items:
            self.check_deadline()
            add(item)

    def _load_frozenset(self) -> None:
        self.append(frozenset(self._each(self.pop_mark())))

    dispatch: ClassVar[dict[int, Callable[[Any], None]]] = {
        code: _checked(op) for code, op in pickle._Unpickler.dispatch.items()
    }
    dispatch[pickle.SETITEMS[0]] = _checked(_load_setitems)
    dispatch[pickle.DICT[0]] = _checked(_load_dict)
    dispatch[pickle.ADDITEMS[0]] = _checked(_load_additems)
    dispatch[pickle.FROZENSET[0]] = _checked(_load_frozenset)


#: Every ``(module, name)`` a pickle may name; anything else raises :class:`UnsafePickleError`.
ALLOWED_GLOBALS = frozenset(_PIL_IMAGE_CLASSES | set(_SAFE_GLOBALS) | set(_SETS))
