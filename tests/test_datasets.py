"""Real-dataset loaders: FVQA parquet (exact release schema), our parquet, JSONL + image folders,
InfoSeek-style records, Hugging Face datasets, image URLs through the SSRF guard, lazy images, export."""

from __future__ import annotations

import io
import json
import re

import gymnasium as gym
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from live_servers import LocalServer, Reply
from PIL import Image

import mmsearch_env  # noqa: F401
from mmsearch_env.data import ImageRef, load_dataset
from mmsearch_env.data.export import GRPO_COLUMNS, to_grpo_dataset
from mmsearch_env.data.loaders import fvqa_arrow_schema, fvqa_question, iter_examples, load_parquet, write_parquet
from mmsearch_env.data.sample import sample_examples
from mmsearch_env.data.schema import image_source
from mmsearch_env.errors import ConfigError, DatasetError

#: The released FVQA parquet schema (REFERENCE.md §1), column for column.
FVQA_SCHEMA = fvqa_arrow_schema()


def png(colour, size=(12, 8)):
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def fvqa_row(i, *, content=None, candidates=None, image=None, label=None, truth=None):
    return {
        "prompt": [{"content": content or f"<image>\nWhat is landmark {i}?", "role": "user"}],
        "images": [{"bytes": png((i, 100, 200)) if image is None else image, "path": None}],
        "reward_model": {
            "candidate_answers": json.dumps([f"alias {i}"]) if candidates is None else candidates,
            "ground_truth": f"answer {i}" if truth is None else truth,
            "style": "rule",
        },
        "data_source": "mmsearch_r1/fvqa_train",
        "image_urls": None,
        "data_id": f"fvqa_train_{i}",
        "category": label or ("search_required" if i % 3 else "search_free"),
    }


def write_fvqa(path, rows, row_group_size=4):
    pq.write_table(pa.Table.from_pylist(rows, schema=FVQA_SCHEMA), path, row_group_size=row_group_size)
    return path


# -- FVQA parquet -------------------------------------------------------------------------------------------
def test_fvqa_parquet_maps_every_field(tmp_path):
    rows = [fvqa_row(i) for i in range(10)]
    rows[4] = fvqa_row(
        4, content="<image>\nAnswer using the image.\n\nQuestion: Which river flows here?\n\nThink step by step."
    )
    rows[5] = fvqa_row(5, candidates="[]")
    path = write_fvqa(tmp_path / "fvqa_train.parquet", rows)
    examples = load_dataset(str(path))
    assert [e.id for e in examples] == [f"fvqa_train_{i}" for i in range(10)]
    first = examples[0]
    assert (first.question, first.answer, first.candidate_answers) == ("What is landmark 0?", "answer 0", ("alias 0",))
    assert examples[4].question == "Which river flows here?"
    assert examples[5].candidate_answers == ()
    assert first.category == "search_free" and first.search_need == "none"
    assert examples[1].category == "search_required" and examples[1].search_need is None
    assert examples[1].metadata == {
        "data_source": "mmsearch_r1/fvqa_train",
        "search_label": "search_required",
        "search_required": True,
        "reward_style": "rule",
    }
    assert first.image_url is None
    assert examples[7].image.getpixel((0, 0)) == (7, 100, 200)

    env = gym.make("MMSearch-v0", dataset=str(path))
    obs, info = env.reset(options={"example_id": "fvqa_train_9"})
    assert obs["question"] == "What is landmark 9?" and obs["image"].getpixel((3, 3)) == (9, 100, 200)
    env.close()


def test_fvqa_images_are_read_lazily_by_row_group(tmp_path):
    path = write_fvqa(tmp_path / "f.parquet", [fvqa_row(i) for i in range(10)], row_group_size=4)
    examples = load_parquet(path, row_group_cache=1)
    refs = [image_source(e) for e in examples]
    assert all(isinstance(r, ImageRef) for r in refs)
    reader = refs[0].fetch.__closure__  # the shared row-group reader behind every ref
    images = next(c.cell_contents for c in reader if type(c.cell_contents).__name__ == "_RowGroupImages")
    assert images.reads == 0  # loading read no image at all
    for example in examples[:4]:
        example.image  # noqa: B018 — decoding is the point
    assert images.reads == 1  # one row group served the first four rows
    examples[9].image  # noqa: B018
    examples[5].image  # noqa: B018
    assert images.reads == 3  # rows 8-9, then rows 4-7 (cache of one)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            fvqa_row(2, candidates="[not json"),
            "field 'reward_model.candidate_answers' is not a JSON-encoded list",
        ),
        (fvqa_row(2, truth=""), "field 'reward_model.ground_truth' is missing or empty"),
        (fvqa_row(2, content="<image>"), "field 'prompt': the user message has no question text"),
    ],
)
def test_fvqa_errors_name_file_row_and_field(tmp_path, row, message):
    path = write_fvqa(tmp_path / "bad.parquet", [fvqa_row(0), fvqa_row(1), row])
    with pytest.raises(DatasetError, match=re.escape(f"{path}: row 2 (data_id='fvqa_train_2'): {message}")):
        load_dataset(str(path))


def test_fvqa_bad_image_fails_on_first_use_naming_the_row(tmp_path):
    path = write_fvqa(tmp_path / "f.parquet", [fvqa_row(0), fvqa_row(1, image=b"not an image")])
    examples = load_dataset(str(path))
    assert examples[0].image.size == (12, 8)
    with pytest.raises(DatasetError, match=re.escape(f"{path}: row 1: field 'images': cannot decode the image")):
        examples[1].image  # noqa: B018


def test_fvqa_question_strips_placeholders():
    assert fvqa_question("<image>Who built this?") == "Who built this?"
    assert fvqa_question([{"type": "image"}, {"type": "text", "text": "<|vision_start|><|image_pad|>Why?"}]) == "Why?"
    with pytest.raises(DatasetError, match="must be text"):
        fvqa_question(42)


def test_parquet_folder_picks_the_split(tmp_path):
    write_fvqa(tmp_path / "fvqa_train.parquet", [fvqa_row(i) for i in range(3)])
    test_rows = [dict(fvqa_row(i), data_id=f"fvqa_test_{i}") for i in range(2)]
    write_fvqa(tmp_path / "fvqa_test.parquet", test_rows)
    assert [e.id for e in load_dataset(str(tmp_path), split="test")] == ["fvqa_test_0", "fvqa_test_1"]
    assert len(load_dataset(str(tmp_path), split=None)) == 5
    with pytest.raises(ConfigError, match="no parquet file for split 'validation'"):
        load_dataset(str(tmp_path), split="validation")


def test_rechunk_parquet_for_random_access(tmp_path, caplog, monkeypatch):
    from mmsearch_env.data import loaders, parquet

    big = write_fvqa(tmp_path / "big.parquet", [fvqa_row(i) for i in range(10)], row_group_size=10)
    monkeypatch.setattr(parquet, "LARGE_ROW_GROUP", 5)
    with caplog.at_level("WARNING", logger="mmsearch_env.data.parquet"):
        load_parquet(big)
    assert "row groups of up to 10 rows" in caplog.text and "rechunk_parquet" in caplog.text
    small = loaders.rechunk_parquet(big, tmp_path / "small.parquet", row_group_size=3)
    meta = pq.ParquetFile(small).metadata
    assert (meta.num_rows, meta.num_row_groups) == (10, 4)
    assert pq.read_table(small).equals(pq.read_table(big))
    assert [e.image.getpixel((0, 0)) for e in load_parquet(small)][8] == (8, 100, 200)
    with pytest.raises(ConfigError, match="write to a new file"):
        loaders.rechunk_parquet(big, big)


def test_iter_examples_streams_in_batches(tmp_path):
    path = write_fvqa(tmp_path / "f.parquet", [fvqa_row(i) for i in range(7)])
    stream = iter_examples(path, batch_size=3)
    first = next(stream)
    assert first.id == "fvqa_train_0" and first.image.getpixel((0, 0)) == (0, 100, 200)
    assert [e.id for e in stream] == [f"fvqa_train_{i}" for i in range(1, 7)]


# -- our parquet ------------------------------------------------------------------------------------------
def test_our_parquet_round_trip(tmp_path):
    examples = list(sample_examples("test"))
    path = write_parquet(examples, tmp_path / "ours.parquet", extra_columns={"score": list(range(len(examples)))})
    back = load_dataset(str(path))
    assert [e.id for e in back] == [e.id for e in examples]
    for a, b in zip(examples, back, strict=True):
        assert (a.question, a.answer, a.candidate_answers, a.category, a.search_need) == (
            b.question,
            b.answer,
            b.candidate_answers,
            b.category,
            b.search_need,
        )
        assert b.metadata == {**a.metadata, "score": examples.index(a)}
        assert a.image.tobytes() == b.image.tobytes()  # PNG is lossless
    # written from lazy examples, the original encoded bytes are copied, not re-encoded
    again = write_parquet(back, tmp_path / "again.parquet")
    assert pq.read_table(again)["image"].to_pylist() == pq.read_table(path)["image"].to_pylist()


# -- JSONL + image folder, InfoSeek ------------------------------------------------------------------------
def test_jsonl_image_folder(tmp_path):
    (tmp_path / "images").mkdir()
    for name, colour in (("a", (1, 2, 3)), ("b", (4, 5, 6))):
        Image.new("RGB", (8, 8), colour).save(tmp_path / "images" / f"{name}.png")
    rows = [
        {"id": "a", "question": "Colour?", "file_name": "images/a.png", "answer": "x", "search_need": "none"},
        {"id": "b", "question": "Colour?", "image": "images/b.png", "answer": "y", "metadata": {"source": "me"}},
    ]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    examples = load_dataset(str(tmp_path))
    assert [e.id for e in examples] == ["a", "b"]
    assert isinstance(image_source(examples[0]), ImageRef)  # checked now, decoded on first use
    assert examples[1].image.getpixel((0, 0)) == (4, 5, 6) and examples[1].metadata == {"source": "me"}
    (tmp_path / "metadata.jsonl").write_text(json.dumps({**rows[0], "file_name": "images/zz.png"}), encoding="utf-8")
    with pytest.raises(DatasetError, match=r"metadata.jsonl:1 \(id='a'\): field 'image': image file .*zz.png"):
        load_dataset(str(tmp_path))


def test_infoseek_records(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(images / "oven_0001.jpg")
    rows = [
        {
            "data_id": "infoseek_val_1",
            "image_id": "oven_0001",
            "question": "What is the height of this building?",
            "answer": ["828 m", "828 metres"],
            "answer_eval": [{"wikidata": 828, "range": [820, 836]}],
            "entity_id": "Q12495",
            "entity_text": "Burj Khalifa",
            "question_type": "NUMERICAL",
            "data_split": "val_unseen_entity",
        }
    ]
    path = tmp_path / "infoseek_val.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n", encoding="utf-8")
    (example,) = load_dataset({"path": str(path), "image_dir": str(images)})
    assert (example.id, example.answer, example.candidate_answers) == ("infoseek_val_1", "828 m", ("828 metres", "828"))
    assert example.category == "NUMERICAL" and example.search_need is None
    assert example.metadata["entity_name"] == "Burj Khalifa" and example.metadata["entity_id"] == "Q12495"
    assert example.image.getpixel((0, 0)) == (9, 9, 9)
    with pytest.raises(DatasetError, match=re.escape(f"{path}:1: image_id 'oven_0001' not found in")):
        load_dataset({"path": str(path), "format": "infoseek", "image_dir": str(tmp_path)})


def test_dataset_spec_errors(tmp_path):
    with pytest.raises(ConfigError, match=re.escape("unknown: ['colour']")):
        load_dataset({"path": "sample", "colour": 1})
    with pytest.raises(ConfigError, match="does not exist"):
        load_dataset({"path": str(tmp_path / "nope.parquet")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=re.escape("has no .jsonl or .parquet file")):
        load_dataset(str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="format must be one of"):
        load_dataset({"path": str(write_fvqa(tmp_path / "f.parquet", [fvqa_row(0)])), "format": "csv"})


# -- image URLs through the SSRF guard ---------------------------------------------------------------------
def test_image_urls_download_through_the_guard(tmp_path):
    with LocalServer({"/q.png": Reply(body=png((50, 60, 70)), content_type="image/png")}) as server:
        url = server.url("/q.png")
        path = tmp_path / "rows.jsonl"
        path.write_text(json.dumps({"id": "u", "question": "Where?", "image": url, "answer": "here"}), encoding="utf-8")
        (strict,) = load_dataset(str(path))  # loading downloads nothing
        assert server.hits("/q.png") == 0 and strict.image_url == url
        with pytest.raises(DatasetError, match=r"rows.jsonl:1 \(id='u'\): field 'image': cannot download the image"):
            strict.image  # noqa: B018 — 127.0.0.1 is refused by default
        assert server.hits("/q.png") == 0
        spec = {"path": str(path), "fetch_policy": {"allowed_hosts": [server.host_port]}}
        json.dumps(spec)  # gym.make kwargs stay JSON-able
        env = gym.make("MMSearch-v0", dataset=spec)
        obs, _ = env.reset(options={"index": 0})
        assert obs["image"].getpixel((0, 0)) == (50, 60, 70)
        assert server.hits("/q.png") == 1
        env.close()


# -- Hugging Face datasets -------------------------------------------------------------------------------
def test_hf_dataset_objects_and_save_to_disk(tmp_path):
    import datasets

    rows = {
        "id": ["h0", "h1", "h2"],
        "question": ["Q0?", "Q1?", "Q2?"],
        "image": [Image.new("RGB", (6, 6), (i, i, i)) for i in range(3)],
        "answer": ["a0", "a1", "a2"],
        "category": ["c", "c", "d"],
    }
    features = datasets.Features(
        {k: datasets.Value("string") for k in ("id", "question", "answer", "category")} | {"image": datasets.Image()}
    )
    ds = datasets.Dataset.from_dict(rows, features=features)
    examples = load_dataset(ds)
    assert [e.id for e in examples] == ["h0", "h1", "h2"] and isinstance(image_source(examples[2]), ImageRef)
    assert examples[2].image.getpixel((0, 0)) == (2, 2, 2)
    both = datasets.DatasetDict({"train": ds.select([0, 1]), "test": ds.select([2])})
    both.save_to_disk(str(tmp_path / "saved"))
    loaded = load_dataset(str(tmp_path / "saved"), split="test")
    assert [e.id for e in loaded] == ["h2"] and loaded[0].image.getpixel((1, 1)) == (2, 2, 2)
    env = gym.make("MMSearch-v0", dataset=str(tmp_path / "saved"), split="train")
    assert len(env.unwrapped.examples) == 2
    env.close()
    with pytest.raises(ConfigError, match=re.escape("has splits ['test', 'train']")):
        load_dataset(str(tmp_path / "saved"), split="validation")


def test_hf_dataset_in_fvqa_shape(tmp_path):
    import datasets

    table = pa.Table.from_pylist([fvqa_row(i) for i in range(3)], schema=FVQA_SCHEMA)
    ds = datasets.Dataset(table)
    examples = load_dataset(ds)
    assert examples[1].question == "What is landmark 1?" and examples[1].image.getpixel((0, 0)) == (1, 100, 200)
    # as the hub stores it: images as a list of the Image feature (decoded to PIL by default)
    hub = ds.cast_column("images", datasets.List(datasets.Image()))
    assert isinstance(hub[0]["images"][0], Image.Image)
    examples = load_dataset(hub)
    assert isinstance(image_source(examples[2]), ImageRef) and examples[2].image.getpixel((0, 0)) == (2, 100, 200)


# -- export for the GRPO trainer --------------------------------------------------------------------------
def test_to_grpo_dataset_matches_the_env_prompt(tmp_path):
    path = write_fvqa(tmp_path / "f.parquet", [fvqa_row(i) for i in range(5)])
    ds = to_grpo_dataset({"dataset": str(path), "protocol": "tags"}, chunk_size=2)
    assert tuple(ds.column_names) == GRPO_COLUMNS and len(ds) == 5
    env = gym.make("MMSearch-v0", dataset=str(path), search="disabled")
    obs, _ = env.reset(options={"index": 3})
    row = ds[3]
    assert row["example_id"] == "fvqa_train_3" and row["answer"] == "answer 3"
    assert row["candidate_answers"] == ["alias 3"] and row["category"] == "search_free"
    assert row["search_need"] == "none" and ds[4]["search_need"] is None
    expected = [[b["text"] if b["type"] == "text" else "<image>" for b in m["content"]] for m in obs["messages"]]
    got = [[b["text"] if b["type"] == "text" else "<image>" for b in m["content"]] for m in row["prompt"]]
    assert got == expected
    assert len(row["images"]) == sum(b["type"] == "image" for m in row["prompt"] for b in m["content"]) == 1
    assert row["images"][0].convert("RGB").getpixel((0, 0)) == (3, 100, 200)
    env.close()
    assert len(to_grpo_dataset("sample", env_kwargs={"split": "test"}, limit=3)) == 3
