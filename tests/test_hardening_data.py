"""Every data error is a DatasetError naming the file, the row (or line) and the field, and saying how to fix it.

One table: each case builds a broken file, loads it through the public entry point, and lists the
pieces the message must hold. Left to themselves, pyarrow, the UTF-8 codec and ``json`` raise raw
``ArrowInvalid``, ``OSError("Couldn't deserialize thrift")``, ``UnicodeDecodeError`` or ``RecursionError``
for these files, naming no row.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmsearch_env.data import load_dataset
from mmsearch_env.data.loaders import iter_examples, load_file, rechunk_parquet
from mmsearch_env.errors import DatasetError

FIX = "re-download or re-export it"


def _png(size=(8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height: opening it reads only the header (no pixels behind it)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _rows(n: int, **changes) -> list[dict]:
    return [{"id": f"q{i}", "question": f"What is shown {i}?", "answer": "red", "image": "red.png", **changes}
            for i in range(n)]  # fmt: skip


def _jsonl(folder: Path, name: str, rows: list, raw: bytes | None = None) -> Path:
    (folder / "red.png").write_bytes(_png())
    path = folder / name
    path.write_bytes(raw if raw is not None else b"".join(json.dumps(r).encode() + b"\n" for r in rows))
    return path


def _parquet(folder: Path, name: str, ids: list[str]) -> Path:
    path = folder / name
    table = pa.table(
        {
            "id": ids,
            "question": [f"What is shown {i}?" * 5 for i in range(len(ids))],
            "answer": ["red"] * len(ids),
            "image": [_png()] * len(ids),
        }
    )
    pq.write_table(table, path, compression="none", row_group_size=64)
    return path


def _corrupt(path: Path, column: int) -> Path:
    """Overwrite the first data page of ``column`` in row group 0 (the footer stays valid)."""
    offset = pq.ParquetFile(path).metadata.row_group(0).column(column).data_page_offset
    data = bytearray(path.read_bytes())
    data[offset : offset + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    return path


def case_zero_byte_parquet(tmp: Path) -> Path:
    path = tmp / "empty.parquet"
    path.write_bytes(b"")
    return path


def case_truncated_parquet(tmp: Path) -> Path:
    path = _parquet(tmp, "cut.parquet", ["a", "b"])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def case_not_parquet(tmp: Path) -> Path:
    path = tmp / "text.parquet"
    path.write_text('{"question": "not parquet at all"}\n')
    return path


def case_corrupt_text_pages(tmp: Path) -> Path:
    return _corrupt(_parquet(tmp, "pages.parquet", [f"q{i}" for i in range(100)]), column=1)


def case_duplicate_ids_parquet(tmp: Path) -> Path:
    return _parquet(tmp, "dup.parquet", ["a", "b", "a"])


def case_duplicate_ids_across_parquet_files(tmp: Path) -> Path:
    folder = tmp / "parts"
    folder.mkdir()
    _parquet(folder, "a.parquet", ["x", "y"])
    _parquet(folder, "b.parquet", ["z", "y"])
    return folder


def case_zero_byte_jsonl(tmp: Path) -> Path:
    return _jsonl(tmp, "empty.jsonl", [], raw=b"")


def case_blank_lines_jsonl(tmp: Path) -> Path:
    return _jsonl(tmp, "blank.jsonl", [], raw=b"\n  \n\t\n")


def case_invalid_utf8_jsonl(tmp: Path) -> Path:
    good = json.dumps(_rows(1)[0]).encode()
    return _jsonl(tmp, "latin.jsonl", [], raw=good + b'\n{"id": "q1", "question": "Caf\xe9?", "answer": "x"}\n')


def case_nested_jsonl(tmp: Path) -> Path:
    return _jsonl(tmp, "deep.jsonl", [], raw=b"[" * 100_000 + b"]" * 100_000 + b"\n")


def case_nested_field_jsonl(tmp: Path) -> Path:
    return _jsonl(tmp, "meta.jsonl", _rows(2, metadata="[" * 100_000 + "]" * 100_000))


def case_nested_candidates_jsonl(tmp: Path) -> Path:
    return _jsonl(tmp, "cands.jsonl", _rows(1, candidate_answers="[" * 100_000 + "]" * 100_000))


def case_nested_fvqa_candidates(tmp: Path) -> Path:
    row = {
        "data_id": "fvqa_1",
        "prompt": [{"role": "user", "content": "<image>Question: What is shown?"}],
        "images": [{"bytes": None, "path": "red.png"}],
        "reward_model": {"ground_truth": "red", "candidate_answers": "[" * 100_000 + "]" * 100_000},
    }
    return _jsonl(tmp, "fvqa.jsonl", [row])


def case_fvqa_candidates_not_a_list(tmp: Path) -> Path:
    row = {
        "data_id": "fvqa_2",
        "prompt": [{"role": "user", "content": "Question: What is shown?"}],
        "images": [{"bytes": None, "path": "red.png"}],
        "reward_model": {"ground_truth": "red", "candidate_answers": "7"},
    }
    return _jsonl(tmp, "fvqa7.jsonl", [row])


def case_infoseek_answer_eval(tmp: Path) -> Path:
    row = {"data_id": "i1", "question": "Which?", "answer": "x", "entity_id": "Q1", "image": "red.png",
           "answer_eval": 5}  # fmt: skip
    return _jsonl(tmp, "infoseek.jsonl", [row])


def case_unknown_columns(tmp: Path) -> Path:
    return _jsonl(tmp, "cols.jsonl", [{"q": "What?", "a": "x"}])


def case_duplicate_ids_jsonl(tmp: Path) -> Path:
    rows = _rows(3)
    rows[2]["id"] = "q0"
    return _jsonl(tmp, "dup.jsonl", [], raw=(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n"
                                             + json.dumps(rows[2]) + "\n").encode())  # fmt: skip


# (case, what the message must hold: file, row/line, field, fix)
LOAD_CASES = [
    pytest.param(case_zero_byte_parquet, ["empty.parquet", "the file is empty (0 bytes)", FIX], id="zero-byte parquet"),
    pytest.param(case_truncated_parquet, ["cut.parquet", "footer", "not readable as parquet", FIX], id="truncated"),
    pytest.param(case_not_parquet, ["text.parquet", "not readable as parquet", FIX], id="not parquet"),
    pytest.param(
        case_corrupt_text_pages,
        ["pages.parquet", "rows from 0", "fields ['id', 'question', 'answer']", "OSError", FIX],
        id="corrupt data pages",
    ),
    pytest.param(
        case_duplicate_ids_parquet,
        ["dup.parquet: row 2: field 'id': 'a' repeats", "dup.parquet: row 0", "give each row its own 'id'"],
        id="duplicate ids in parquet",
    ),
    pytest.param(
        case_duplicate_ids_across_parquet_files,
        ["b.parquet: row 1: field 'id': 'y' repeats", "a.parquet: row 1", "give each row its own 'id'"],
        id="duplicate ids across parquet files",
    ),
    pytest.param(
        case_zero_byte_jsonl, ["empty.jsonl", "the dataset is empty", "give at least one row"], id="0-byte jsonl"
    ),
    pytest.param(case_blank_lines_jsonl, ["blank.jsonl", "the dataset is empty", "only blank lines"], id="blank jsonl"),
    pytest.param(case_invalid_utf8_jsonl, ["latin.jsonl:2", "is not UTF-8", "save the file as UTF-8"], id="not UTF-8"),
    pytest.param(case_nested_jsonl, ["deep.jsonl:1", "nested too deeply", "one JSON object"], id="line nested 100k"),
    pytest.param(
        case_nested_field_jsonl,
        ["meta.jsonl:1", "field 'metadata'", "RecursionError", "store a JSON object"],
        id="metadata nested 100k",
    ),
    pytest.param(
        case_nested_candidates_jsonl,
        ["cands.jsonl:1", "field 'candidate_answers'", "nested too deeply", "flat list of strings"],
        id="candidates nested 100k",
    ),
    pytest.param(
        case_nested_fvqa_candidates,
        ["fvqa.jsonl:1", "data_id='fvqa_1'", "field 'reward_model.candidate_answers'", "store a list of strings"],
        id="FVQA candidates nested 100k",
    ),
    pytest.param(
        case_fvqa_candidates_not_a_list,
        ["fvqa7.jsonl:1", "field 'reward_model.candidate_answers' must be a list of strings"],
        id="FVQA candidates not a list",
    ),
    pytest.param(
        case_infoseek_answer_eval,
        ["infoseek.jsonl:1", "field 'answer_eval' must be a list"],
        id="answer_eval not a list",
    ),
    pytest.param(case_unknown_columns, ["cols.jsonl:1", "cannot tell the row format", "pass format="], id="no format"),
    pytest.param(
        case_duplicate_ids_jsonl,
        ["dup.jsonl:4: field 'id': 'q0' repeats ", "dup.jsonl:1;", "give each row its own 'id'"],
        id="duplicate ids in jsonl (line numbers, blank line counted)",
    ),
]


@pytest.mark.parametrize(("build", "pieces"), LOAD_CASES)
def test_load_errors_name_file_row_field_and_fix(tmp_path, build, pieces):
    path = build(tmp_path)
    with pytest.raises(DatasetError) as caught:
        load_dataset(str(path), split=None)
    message = str(caught.value)
    for piece in pieces:
        assert piece in message, (piece, message)
    assert "\n" not in message


PARQUET_CASES = [p for p in LOAD_CASES if "parquet" in p.id and "duplicate" not in p.id]


@pytest.mark.parametrize(("build", "pieces"), PARQUET_CASES)
def test_streaming_and_rechunking_name_the_file_too(tmp_path, build, pieces):
    path = build(tmp_path)
    with pytest.raises(DatasetError, match=r"parquet"):
        list(iter_examples(path))
    with pytest.raises(DatasetError) as caught:
        rechunk_parquet(path, tmp_path / "out.parquet")
    assert path.name in str(caught.value) and FIX in str(caught.value)


def case_pixel_bomb(tmp: Path) -> Path:
    (tmp / "bomb.png").write_bytes(_png_header(9000, 8000))  # 72 Mpx: over our 64 Mpx, under Pillow's own check
    return _jsonl(tmp, "bomb.jsonl", _rows(2, image="bomb.png"))


def case_undecodable_image(tmp: Path) -> Path:
    (tmp / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return _jsonl(tmp, "junk.jsonl", _rows(1, image="junk.png"))


def case_corrupt_image_column(tmp: Path) -> Path:
    return _corrupt(_parquet(tmp, "imgcol.parquet", [f"q{i}" for i in range(100)]), column=3)


# Images are decoded when first shown: the error comes from example.image, naming where the image lives
IMAGE_CASES = [
    pytest.param(
        case_pixel_bomb,
        ["bomb.jsonl:1 (id='q0'): field 'image'", "9000x8000 pixels", "64,000,000 pixel limit", "downscale it"],
        id="pixel bomb",
    ),
    pytest.param(
        case_undecodable_image,
        ["junk.jsonl:1 (id='q0'): field 'image'", "cannot decode the image", "replace it with a valid"],
        id="undecodable image",
    ),
    pytest.param(
        case_corrupt_image_column,
        ["imgcol.parquet: row 0: field 'image'", "cannot read the image", FIX],
        id="corrupt image column",
    ),
]


@pytest.mark.parametrize(("build", "pieces"), IMAGE_CASES)
def test_image_errors_name_file_row_field_and_fix(tmp_path, build, pieces):
    examples = load_file(build(tmp_path))
    with pytest.raises(DatasetError) as caught:
        examples[0].image  # noqa: B018 - reading the image is the point
    message = str(caught.value)
    for piece in pieces:
        assert piece in message, (piece, message)
    assert "\n" not in message


def test_a_byte_order_mark_is_not_an_error(tmp_path):
    rows = _rows(2)
    raw = b"\xef\xbb\xbf" + b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    examples = load_dataset(str(_jsonl(tmp_path, "bom.jsonl", [], raw=raw)), split=None)
    assert [e.id for e in examples] == ["q0", "q1"] and examples[0].image.size == (8, 8)


def test_lone_surrogates_in_a_dataset_never_reach_a_run(tmp_path):
    """JSON's "\\ud83d" escape gives a lone surrogate: sanitised where the row enters, so the whole run works."""
    import gymnasium as gym

    import mmsearch_env  # noqa: F401
    from agents.rollout import read_trajectories, rollout
    from agents.scripted import OraclePolicy

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    line = '{"id": "q\\ud83d", "question": "Which\\ud83d?", "image": "a.png", "answer": "x\\ud83d", "candidate_answers": ["y\\udc00"]}'
    (tmp_path / "q.jsonl").write_text(line + "\n")
    (example,) = load_dataset(str(tmp_path / "q.jsonl"), None)
    assert (example.id, example.question, example.answer) == ("q\ufffd", "Which\ufffd?", "x\ufffd")
    assert list(example.candidate_answers) == ["y\ufffd"]
    env = gym.make("MMSearch-v0", dataset=str(tmp_path / "q.jsonl"), split=None, search="sample")
    obs, _ = env.reset(seed=0)
    json.dumps(obs["messages"][0]["content"][-1]["text"]).encode("utf-8")
    out = tmp_path / "run" / "t.jsonl"
    result = rollout(OraclePolicy([example], use_search=False), env_config={"dataset": str(tmp_path / "q.jsonl"),
                     "split": None, "search": "sample"}, out=out, progress=False)  # fmt: skip
    assert len(result.records) == 1 and read_trajectories(out)[0].question == "Which\ufffd?"
