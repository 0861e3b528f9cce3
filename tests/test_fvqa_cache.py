"""FVQA image-search cache import: a restricted unpickler that refuses payloads, and env hits by data_id."""

from __future__ import annotations

import copyreg
import io
import os
import pickle
import pickletools
import subprocess

import gymnasium as gym
import pytest
from PIL import Image

import mmsearch_env  # noqa: F401
from mmsearch_env.errors import DatasetError
from mmsearch_env.search import ImageSearchRequest
from mmsearch_env.search.cache import CachedSearch, SQLiteStore
from mmsearch_env.search.fvqa_cache import (
    RestrictedUnpickler,
    UnsafePickleError,
    fvqa_key,
    import_fvqa_cache,
    load_fvqa_pickle,
)

TITLES = "tool_returned_web_title_list"
IMAGES = "tool_returned_images_urls"


def _thumb(color, fmt=None) -> Image.Image:
    image = Image.new("RGB", (12, 9), color)
    if fmt is None:
        return image
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, dpi=(72, 72))  # TIFF keeps dpi as IFDRational objects in info
    buffer.seek(0)
    return Image.open(buffer)  # a file-backed PngImageFile / JpegImageFile, as a crawler would keep


def _release_like() -> dict:
    return {
        "sample-arvenia-image": {
            TITLES: ["Arvenia flag - Wikipedia", "Flags of Europe", "Arvenia travel"],
            IMAGES: [_thumb((255, 0, 0)), _thumb((0, 255, 0), "PNG"), "https://example.org/t3.jpg"],
        },
        "fvqa_train_5": {TITLES: ["JPEG", "TIFF"], IMAGES: [_thumb((9, 9, 9), "JPEG"), _thumb((0, 0, 9), "TIFF")]},
        "fvqa_train_67": {TITLES: ["Only a URL"], IMAGES: ["https://example.org/t.jpg"]},
    }


@pytest.mark.parametrize("protocol", [0, 2, 4, pickle.HIGHEST_PROTOCOL])
def test_release_shaped_pickles_load_with_every_protocol(tmp_path, protocol):
    path = tmp_path / "cache.pkl"
    path.write_bytes(pickle.dumps(_release_like(), protocol=protocol))
    entries = load_fvqa_pickle(path)
    entry = entries["sample-arvenia-image"]
    assert entry["titles"][0] == "Arvenia flag - Wikipedia"
    assert entry["images"][0].tobytes() == _thumb((255, 0, 0)).tobytes()
    assert entry["images"][1].tobytes() == _thumb((0, 255, 0)).tobytes()
    assert entry["images"][2] == "https://example.org/t3.jpg"
    jpeg, tiff = entries["fvqa_train_5"]["images"]
    assert jpeg.size == tiff.size == (12, 9) and tiff.getpixel((0, 0)) == (0, 0, 9)
    assert float(tiff.info["dpi"][0]) == 72.0


class _Payload:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def test_malicious_pickles_are_refused_without_side_effects(tmp_path):
    marker = tmp_path / "pwned"
    payloads = {
        "os.system": _Payload(os.system, f"touch {marker}"),
        "subprocess": _Payload(subprocess.check_call, ["touch", str(marker)]),
        "exec": _Payload(exec, f"open({str(marker)!r}, 'w').write('x')"),
        "eval": _Payload(eval, f"__import__('os').system('touch {marker}')"),
    }
    for name, payload in payloads.items():
        for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
            path = tmp_path / f"{name}-{protocol}.pkl"
            # hidden inside an otherwise well-formed entry, as a tampered release would be
            path.write_bytes(pickle.dumps({"fvqa_1": {TITLES: ["t"], IMAGES: [payload]}}, protocol=protocol))
            with pytest.raises(UnsafePickleError, match=r"refusing to load .* from an FVQA cache pickle"):
                load_fvqa_pickle(path)
    assert not marker.exists()
    # a class smuggled through the allowed reconstructor is refused at lookup too
    smuggled = _Payload(copyreg._reconstructor, subprocess.Popen, object, None)
    with pytest.raises(UnsafePickleError, match=r"refusing to load \w+\.Popen"):
        RestrictedUnpickler(io.BytesIO(pickle.dumps(smuggled, protocol=2))).load()
    # the refused payload is live: its opcodes import os.system and call it (checked without unpickling,
    # since no test may pickle.load a hostile file)
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(pickle.dumps(_Payload(os.system, "x"), protocol=2))]
    assert ("GLOBAL", f"{os.system.__module__} system") in ops and ("REDUCE", None) in ops


def test_image_bombs_and_wrong_shapes_are_refused(tmp_path):
    bomb = _Payload(copyreg._reconstructor, Image.Image, object, None)
    data = pickle.dumps(bomb, protocol=2)
    # append BUILD state claiming a 100k x 100k image: rebuild by hand to keep the state
    state = [{}, "RGB", (100_000, 100_000), None, b""]
    data = data[:-1] + pickle.dumps(state, protocol=2)[2:-1] + pickle.BUILD + pickle.STOP
    with pytest.raises(UnsafePickleError, match="claims 100000x100000 pixels"):
        RestrictedUnpickler(io.BytesIO(data)).load()
    allocation = pickle.dumps(_Payload(bytes, 10**12), protocol=2)  # bytes(n) would allocate a terabyte
    with pytest.raises(UnsafePickleError, match="refusing bytes"):
        RestrictedUnpickler(io.BytesIO(allocation)).load()
    slow = pickle.dumps(_Payload(__import__("fractions").Fraction, "1e999999999"), protocol=2)
    with pytest.raises(UnsafePickleError, match="refusing Fraction"):
        RestrictedUnpickler(io.BytesIO(slow)).load()
    codec = pickle.dumps(_Payload(__import__("_codecs").encode, "x", "zlib"), protocol=2)
    with pytest.raises(UnsafePickleError, match=r"refusing _codecs\.encode"):
        RestrictedUnpickler(io.BytesIO(codec)).load()
    cases = {
        "list.pkl": ([1, 2], "must be a dict data_id -> entry"),
        "missing.pkl": ({"fvqa_1": {TITLES: []}}, f"missing field(s) ['{IMAGES}']"),
        "titles.pkl": ({"fvqa_1": {TITLES: [3], IMAGES: []}}, "must be a list of str"),
    }
    for name, (value, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(pickle.dumps(value))
        with pytest.raises(DatasetError, match=__import__("re").escape(message)):
            load_fvqa_pickle(path)
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(pickle.dumps(_release_like())[:50])
    with pytest.raises(DatasetError, match="is not a readable pickle"):
        load_fvqa_pickle(truncated)
    with pytest.raises(DatasetError, match="not found"):
        load_fvqa_pickle(tmp_path / "nope.pkl")


def test_import_then_env_image_search_hits_by_data_id(tmp_path):
    pkl, db = tmp_path / "fvqa.pkl", tmp_path / "fvqa.sqlite"
    pkl.write_bytes(pickle.dumps(_release_like(), protocol=4))
    fetched: list[str] = []

    def fetch(url: str) -> Image.Image:  # stands in for the safe HTTP fetcher
        fetched.append(url)
        if url.endswith("t.jpg"):
            raise OSError("HTTP 404")
        return _thumb((0, 0, 255))

    report = import_fvqa_cache(pkl, db, fetch_thumbnail=fetch, progress=False)
    assert (report.entries, report.results, report.thumbnails, report.url_only) == (3, 6, 5, 1)
    assert sorted(fetched) == ["https://example.org/t.jpg", "https://example.org/t3.jpg"]

    env = gym.make(
        "MMSearch-v0", dataset="sample", split=None, search="fvqa", search_options={"cache": str(db), "text": "sample"}
    )
    env.reset(options={"example_id": "sample-arvenia-image"})
    obs, _, terminated, _, info = env.step("<reason>Unknown flag.</reason><search><img></search>")
    assert info["search_failures"] == 0 and not terminated
    record = env.unwrapped.episode_record().to_dict()["searches"][0]
    assert record["cached"] is True and record["cost_usd"] == 0.0
    assert [r["title"] for r in record["results"]] == ["Arvenia flag - Wikipedia", "Flags of Europe", "Arvenia travel"]
    images = [b["image"] for b in obs["messages"][-1]["content"] if b["type"] == "image"]
    assert [im.getpixel((0, 0)) for im in images] == [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    # text search goes to the configured text backend
    _, _, _, _, info = env.step("<reason>More.</reason><text_search>capital of Arvenia</text_search>")
    assert info["search_failures"] == 0
    # a question the cache does not hold is a tool error naming the data_id
    env.reset(options={"example_id": "sample-belmora-image"})
    _, _, terminated, _, info = env.step("<reason>?</reason><search><img></search>")
    assert (
        not terminated and "no FVQA image-search cache entry for data_id 'sample-belmora-image'" in info["search_error"]
    )
    env.close()

    # the same entries are readable through the generic cache (replay keyed by example_id)
    replay = CachedSearch(None, db, mode="replay", backend_name="fvqa", image_key="example_id")
    hit = replay.image_search(ImageSearchRequest(image=Image.new("RGB", (1, 1)), example_id="fvqa_train_67"))
    assert hit.cached and hit.results[0].title == "Only a URL" and hit.results[0].url == "https://example.org/t.jpg"
    assert hit.results[0].thumbnail is None
    replay.close()
    store = SQLiteStore(db)
    assert store.get(fvqa_key("fvqa_train_67")) is not None and len(store) == 3
    store.close()
