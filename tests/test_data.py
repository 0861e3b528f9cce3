"""Dataset rows are validated with errors that name the row and field; bad files lose nothing."""

from __future__ import annotations

import io
import json
import re

import gymnasium as gym
import pytest
from PIL import Image

import mmsearch_env
from mmsearch_env.data import examples_from_records, load_dataset, load_image, load_jsonl
from mmsearch_env.data.sample import COUNTRIES, SPLITS, sample_examples
from mmsearch_env.errors import DatasetError


def png_bytes(size=(8, 8), colour=(0, 200, 0)):
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def row(**overrides):
    base = {"question": "Q?", "image": Image.new("RGB", (8, 8)), "answer": "A"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([row(question=...)], "row 0: missing required field 'question'"),
        ([row(), row(answer=...)], "row 1: missing required field 'answer'"),
        ([row(id="q7", question="  ")], "row 0 (id='q7'): field 'question' must be a non-empty string"),
        ([row(image=...)], "row 0: missing required field 'image'"),
        ([row(image=b"not an image")], "row 0: field 'image': cannot decode the image"),
        ([row(image=png_bytes()[:30])], "row 0: field 'image': cannot decode the image"),
        ([row(image="/no/such/file.png")], "row 0: field 'image': image file '/no/such/file.png' does not exist"),
        ([row(image=42)], "expected a PIL image, a path to an image file, or the file's bytes; got int"),
        ([row(candidate_answers=[1, 2])], "field 'candidate_answers' must be a list of strings"),
        ([row(search_need="sometimes")], "field 'search_need' must be one of ('image', 'image+text', 'text', 'none')"),
        ([row(id="a"), row(id="a")], "row 1: field 'id': 'a' repeats row 0; ids must be unique (give each row"),
        (["just a string"], "row 0: expected a dict with 'question', 'image' and 'answer', got str"),
        ([], "the dataset is empty"),
    ],
)
def test_bad_rows_name_row_and_field(rows, message):
    with pytest.raises(DatasetError, match=re.escape(message)):
        examples_from_records(rows)


def test_decompression_bomb_is_refused():
    bomb = png_bytes(size=(9000, 9000), colour=(0, 0, 0))  # 81 Mpx, compresses to almost nothing
    with pytest.raises(DatasetError, match="over the 64,000,000 pixel limit"):
        load_image(bomb)


def test_row_conversions():
    (example,) = examples_from_records(
        [row(answer=1712, id=5, candidate_answers='["seventeen twelve"]', extra="kept", image=png_bytes())]
    )
    assert example.answer == "1712" and example.id == "5"
    assert example.candidate_answers == ("seventeen twelve",)  # FVQA stores this JSON-encoded
    assert example.metadata == {"extra": "kept"}
    assert example.image.mode == "RGB"
    rgba = Image.new("RGBA", (4, 4))
    assert examples_from_records([row(image=rgba)])[0].image.mode == "RGB"


def test_jsonl_with_relative_images(tmp_path):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "img" / "a.png")
    lines = [
        json.dumps({"id": "a", "question": "Colour?", "image": "img/a.png", "answer": "black"}),
        "",
        json.dumps({"id": "b", "question": "Colour?", "image": str(tmp_path / "img" / "a.png"), "answer": "black"}),
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    examples = load_jsonl(path)
    assert [e.id for e in examples] == ["a", "b"]
    env = gym.make("MMSearch-v0", search="sample", dataset=str(path))
    obs, info = env.reset(options={"example_id": "b"})
    assert obs["image"].getpixel((0, 0)) == (1, 2, 3)


def test_jsonl_errors(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q", "image": "x.png", "answer": "a"}\n{not json\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=re.escape(f"{path}:2: not valid JSON")):
        load_jsonl(path)
    with pytest.raises(DatasetError, match="does not exist"):
        load_jsonl(tmp_path / "missing.jsonl")
    other = tmp_path / "data.csv"
    other.write_text("x", encoding="utf-8")
    with pytest.raises(mmsearch_env.ConfigError, match=re.escape("unsupported file type '.csv'")):
        load_dataset(str(other))
    with pytest.raises(
        mmsearch_env.ConfigError, match=re.escape("dataset must be a name, a path, 'hf:NAME', a spec dict")
    ):
        load_dataset(42)


# -- the built-in sample --------------------------------------------------------------------------------------


def test_sample_splits_are_entity_disjoint_and_labelled():
    by_split = {name: sample_examples(name) for name in SPLITS}
    assert [len(v) for v in by_split.values()] == [40, 8, 16]
    entities = {name: {e.metadata["entity"] for e in v} for name, v in by_split.items()}
    assert not entities["train"] & entities["test"]
    assert not entities["train"] & entities["validation"]
    assert not entities["validation"] & entities["test"]
    assert len(sample_examples(None)) == 4 * len(COUNTRIES)
    needs = [e.search_need for e in sample_examples(None)]
    assert {n: needs.count(n) for n in set(needs)} == {"image": 16, "image+text": 16, "text": 16, "none": 16}


def test_sample_questions_hide_the_entity_when_the_image_identifies_it():
    for example in sample_examples(None):
        entity = example.metadata["entity"]
        if example.search_need in ("image", "image+text", "none"):
            assert entity not in example.question, example.id
        else:
            assert entity in example.question, example.id


def test_sample_is_deterministic():
    a = sample_examples("test")[0].image.tobytes()
    sample_examples.cache_clear()
    assert sample_examples("test")[0].image.tobytes() == a
