"""The FVQA restricted unpickler under hostile files: every allow-listed constructor fuzzed, bounded per file.

Each case must end by itself with a value or a :class:`DatasetError` (``UnsafePickleError`` is one), never
another exception and never a hang: the pytest-timeout marks stop the test if a constructor ever spins.
"""

from __future__ import annotations

import io
import itertools
import pickle
import random
import struct
from fractions import Fraction

import pytest
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from mmsearch_env.errors import DatasetError
from mmsearch_env.search import ImageSearchRequest, fvqa_cache
from mmsearch_env.search.fvqa_cache import RestrictedUnpickler, UnsafePickleError, load_fvqa_pickle, read_fvqa_pickle
from mmsearch_env.search.safe_pickle import ALLOWED_GLOBALS

# The smallest spelling of IFDRational("1e999999999"): GLOBAL, the string, TUPLE1, REDUCE, STOP (49
# bytes; the module path and the string alone are 41). Pillow's own IFDRational hands the string to
# Fraction, whose exponent expansion never returns.
SLOW_IFDRATIONAL = b"cPIL.TiffImagePlugin\nIFDRational\n\x8c\x0b1e999999999\x85R."


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _call(module: str, name: str, args: tuple) -> bytes:
    """A protocol-2 pickle that calls module.name(*args) (GLOBAL + args tuple + REDUCE)."""
    body = pickle.dumps(args, protocol=2)[2:-1]  # drop PROTO and STOP
    return b"\x80\x02" + _global(module, name) + body + b"R."


def _in_entry(data: bytes) -> bytes:
    """``{"k": {titles: <the value data builds>, images: []}}`` as one protocol-2 pickle."""

    def text(value: str) -> bytes:
        return b"X" + struct.pack("<I", len(value)) + value.encode()

    titles, images = text("tool_returned_web_title_list"), text("tool_returned_images_urls")
    return b"\x80\x02}(" + text("k") + b"}(" + titles + data[2:-1] + images + b"]uu."


def _newobj_build(module: str, name: str, state: object) -> bytes:
    """A protocol-2 pickle that makes cls.__new__(cls) and then BUILDs it with ``state``."""
    body = pickle.dumps(state, protocol=2)[2:-1]
    return b"\x80\x02" + _global(module, name) + b")\x81" + body + b"b."


HOSTILE_ARGS: list[object] = [
    "1e999999999",
    "-1e-999999999",
    "9" * 5000,
    "1/" + "9" * 4000,
    "nan",
    "inf",
    " " * 100_000 + "1",
    10**4000,
    -(10**4000),
    2**64,
    float("inf"),
    float("nan"),
    -0.0,
    Fraction(10**300, 3),
    b"\x00" * 1000,
    bytearray(b"x" * 10),
    [0] * 1000,
    [10**100] * 10,
    ["x"] * 5,
    (),
    {"k": 1},
    None,
    True,
    10**12,
    -1,
    0,
    "latin1",
    "punycode",
    "utf-16",
    "\ud83d" * 100,
]


def _constructors() -> list[tuple[str, str]]:
    return sorted(ALLOWED_GLOBALS)


def _load(data: bytes) -> object:
    return RestrictedUnpickler(io.BytesIO(data), max_seconds=5.0).load()


def _outcome(data: bytes) -> str:
    """What the FVQA loader makes of ``data``: a DatasetError, or any other exception's name."""
    try:
        read_fvqa_pickle(io.BytesIO(data), max_seconds=5.0)
    except DatasetError as exc:
        return "refused: " + type(exc).__name__
    except Exception as exc:
        return f"escaped: {type(exc).__name__}: {exc}"
    return "loaded"


@pytest.mark.timeout(60)
def test_the_slow_ifdrational_payload_is_refused_at_once(tmp_path):
    path = tmp_path / "slow.pkl"
    path.write_bytes(SLOW_IFDRATIONAL)
    assert len(SLOW_IFDRATIONAL) == 49
    with pytest.raises(UnsafePickleError, match=r"refusing IFDRational\('1e999999999', 1\)"):
        load_fvqa_pickle(path)
    # every protocol's spelling of the same call, too
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        data = pickle.dumps(_Reduce(IFDRational, ("1e999999999",)), protocol=protocol)
        with pytest.raises(UnsafePickleError, match="refusing IFDRational"):
            _load(data)


class _Reduce:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.timeout(300)
def test_every_allow_listed_constructor_survives_hostile_arguments():
    constructors = _constructors()
    assert ("PIL.TiffImagePlugin", "IFDRational") in constructors and ("fractions", "Fraction") in constructors
    rng = random.Random(17)
    # each hostile argument alone, a third of all pairs, and longer random calls
    calls = [(a,) for a in HOSTILE_ARGS]
    calls += [(a, b) for a, b in itertools.product(HOSTILE_ARGS, repeat=2) if rng.random() < 0.3]
    calls += [tuple(rng.choice(HOSTILE_ARGS) for _ in range(rng.randint(3, 6))) for _ in range(50)]
    states = HOSTILE_ARGS + [[s, s, s] for s in HOSTILE_ARGS] + [[{}, "RGB", (9, 9), None, b""]]
    outcomes: dict[str, int] = {}
    for module, name in constructors:
        payloads = [_call(module, name, args) for args in calls]
        payloads += [_newobj_build(module, name, state) for state in states]
        for data in payloads:
            outcome = _outcome(data)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            # the same value where a cache entry's titles go, so the entry checks see it too
            embedded = _outcome(_in_entry(data))
            assert not embedded.startswith("escaped"), embedded
    # a top-level value that is not a dict is refused by the loader, so nothing hostile gets through
    assert "loaded" not in outcomes
    assert [o for o in outcomes if not o.startswith("refused: ")] == []
    assert outcomes["refused: UnsafePickleError"] > 100 * len(calls) // len(HOSTILE_ARGS), outcomes
    assert sum(outcomes.values()) == len(constructors) * (len(calls) + len(states))
    # a well-formed entry built the same way loads: the framing is right, so the refusals above are real
    loaded = read_fvqa_pickle(io.BytesIO(_in_entry(pickle.dumps(["a title"], protocol=2))))
    assert loaded == {"k": {"titles": ["a title"], "images": []}}


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_call("fractions", "Fraction", ("1e999999999",)), "refusing Fraction"),
        (_call("fractions", "Fraction", (1, 0)), "refusing Fraction"),
        (_call("PIL.TiffImagePlugin", "IFDRational", (10**30, 7)), "refusing IFDRational"),
        (_call("PIL.TiffImagePlugin", "IFDRational", (float("inf"),)), "refusing IFDRational"),
        (_newobj_build("PIL.TiffImagePlugin", "IFDRational", ["1e999999999", 1, 1]), "refusing IFDRational state"),
        (_newobj_build("PIL.TiffImagePlugin", "IFDRational", [Fraction(1, 3), 10**30, 3]), "IFDRational state"),
        (_call("builtins", "bytes", ("x" * 100, "punycode")), "refusing bytes"),
        (_call("builtins", "bytes", ([10**6],)), "refusing bytes"),
        (_call("copyreg", "_reconstructor", (Fraction, object, None)), "refusing"),
        (_newobj_build("PIL.Image", "Image", [{}, "RGB", (9000, 9000), None, b"x"]), "carries 1 bytes of data"),
        (_call("builtins", "set", (12,)), "refusing a set built from int"),
    ],
    ids=[
        "fraction-exponent",
        "fraction-zero-denominator",
        "ifdrational-huge-numerator",
        "ifdrational-infinite",
        "ifdrational-state-string",
        "ifdrational-state-huge",
        "bytes-superlinear-codec",
        "bytes-out-of-range",
        "reconstructor-other-class",
        "image-claims-more-than-its-data",
        "set-from-non-iterable",
    ],
)
def test_hostile_constructor_arguments_are_refused_with_a_reason(data, message):
    with pytest.raises(UnsafePickleError, match=message):
        _load(data)


def test_legitimate_numbers_still_load():
    assert _load(_call("fractions", "Fraction", ("72/1",))) == Fraction(72)  # Python < 3.12 spelling
    assert _load(_call("fractions", "Fraction", (3, 2))) == Fraction(3, 2)
    rational = _load(pickle.dumps(IFDRational(300, 1), protocol=2))
    assert isinstance(rational, IFDRational) and float(rational) == 300.0
    assert _load(_call("builtins", "frozenset", (["a", "b"],))) == frozenset({"a", "b"})
    image = _load(pickle.dumps(Image.new("L", (4, 3), 7), protocol=2))
    assert image.size == (4, 3) and image.getpixel((0, 0)) == 7


@pytest.mark.timeout(60)
@pytest.mark.parametrize("opcode", [b"u", b"d"], ids=["SETITEMS", "DICT"])
def test_hash_colliding_keys_stop_at_the_deadline(opcode):
    # keys k * (2**61 - 1) all hash to 0: one dict insert per key costs a probe over every earlier key,
    # so 30k of them take seconds; the per-item deadline check stops the load instead
    keys = b"".join(
        b"\x8a" + bytes([len(enc)]) + enc + b"N"
        for enc in (pickle.encode_long(k * (2**61 - 1)) for k in range(1, 30_000))
    )
    head = b"\x80\x02}(" if opcode == b"u" else b"\x80\x02("
    data = head + keys + opcode + b"."
    with pytest.raises(UnsafePickleError, match="deadline"):
        RestrictedUnpickler(io.BytesIO(data), max_seconds=0.01).load()


def test_file_size_is_capped_before_reading(tmp_path):
    path = tmp_path / "big.pkl"
    path.write_bytes(
        pickle.dumps({"fvqa_1": {"tool_returned_web_title_list": ["t"] * 100, "tool_returned_images_urls": []}})
    )
    with pytest.raises(DatasetError, match=r"over the 64-byte limit for an FVQA cache pickle"):
        load_fvqa_pickle(path, max_bytes=64)
    assert load_fvqa_pickle(path)["fvqa_1"]["titles"] == ["t"] * 100


def test_errors_from_the_loader_are_dataset_errors(tmp_path):
    cases = {
        "wrong-call": _call("builtins", "frozenset", (1, 2, 3)),
        "deep": b"\x80\x02" + b"]" * 200_000 + b".",  # deep is fine: the stack is a list, not recursion
        "newobj-on-function": b"\x80\x02" + _global("fractions", "Fraction") + b")\x81.",
    }
    for name, data in cases.items():
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(data)
        with pytest.raises(DatasetError):
            load_fvqa_pickle(path)


def test_a_crafted_info_dict_cannot_break_the_import(tmp_path):
    palette = Image.new("P", (6, 4), 3)
    palette.putpalette([0, 0, 0, 9, 9, 9, 50, 60, 70, 200, 10, 10] * 4)
    # keys that mode conversion and PNG encoding read, with values they cannot use
    palette.info = {"transparency": "not a colour", "icc_profile": 5, "exif": [1, 2], "dpi": "x"}
    rgba = Image.new("RGBA", (5, 5), (1, 2, 3, 128))
    rgba.info = {"transparency": object.__name__, "icc_profile": ["x"]}
    pkl, db = tmp_path / "crafted.pkl", tmp_path / "crafted.sqlite"
    titles, images = "tool_returned_web_title_list", "tool_returned_images_urls"
    pkl.write_bytes(pickle.dumps({"fvqa_9": {titles: ["p", "a"], images: [palette, rgba]}}, protocol=2))
    report = fvqa_cache.import_fvqa_cache(pkl, db, progress=False)
    assert (report.entries, report.results, report.thumbnails) == (1, 2, 2)
    backend = fvqa_cache.FvqaImageSearch(db)
    response = backend.image_search(ImageSearchRequest(image=Image.new("RGB", (1, 1)), example_id="fvqa_9"))
    backend.close()
    first, second = (r.thumbnail for r in response.results)
    assert first.getpixel((0, 0))[:3] == (200, 10, 10) and second.getpixel((0, 0)) == (1, 2, 3, 128)
