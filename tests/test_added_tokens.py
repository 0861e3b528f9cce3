"""Added tokens with non-ASCII letters decode to their own text in byte-level tokenizers."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from agents.added_tokens import (
    add_word_tokens,
    broken_added_tokens,
    byte_level_spelling,
    repair_added_token_decoding,
)

WORDS = ["Yaoundé", "Lomé", "Brasília", "San José", "Chișinău", "Port-aux-Français", "Paris", "a.b(c)"]
TEXTS = [
    "The capital of Cameroon is Yaoundé.",
    "<answer>Lomé</answer> and Brasília, not Paris",
    "é alone, ß, 日本語, emoji 🙂, and Port-aux-Français",
    "San José · Chișinău · a.b(c) · Yaoundé Yaoundé",
]


def _byte_level_tokenizer(decoder=None) -> PreTrainedTokenizerFast:
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoder or decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(["The capital of a country is its seat of government."] * 20, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core)


def test_byte_level_spelling_is_gpt2s_alphabet():
    assert set(byte_level_spelling(bytes(range(256)).decode("latin-1"))) <= set(pre_tokenizers.ByteLevel.alphabet())
    assert byte_level_spelling("é") == "Ã©"  # UTF-8 C3 A9, each a printable Latin-1 byte
    assert byte_level_spelling(" a") == "Ġa"  # the space byte moves to U+0120


def test_repair_fixes_decoding_and_keeps_encoding(tmp_path):
    tokenizer = _byte_level_tokenizer()
    add_ids = tokenizer.add_tokens(WORDS)
    assert add_ids == len(WORDS)
    before = [tokenizer.encode(t) for t in TEXTS]
    broken = broken_added_tokens(tokenizer)
    # every character of these lies in the byte-level alphabet, so the decoder reads them as raw bytes
    # (tokenizers 0.23; a later release may decode them right, and then there is nothing to repair)
    assert set(broken) <= {"Yaoundé", "Lomé", "Brasília", "Port-aux-Français"}

    repaired = repair_added_token_decoding(tokenizer)

    assert repaired == broken
    assert broken_added_tokens(tokenizer) == []
    assert [tokenizer.encode(t) for t in TEXTS] == before
    for text, ids in zip(TEXTS, before, strict=True):
        assert tokenizer.decode(ids) == text
    assert repair_added_token_decoding(tokenizer) == []  # idempotent

    tokenizer.save_pretrained(tmp_path)
    reloaded = PreTrainedTokenizerFast.from_pretrained(tmp_path)
    assert broken_added_tokens(reloaded) == []
    assert reloaded.decode(reloaded.encode(TEXTS[0])) == TEXTS[0]


def test_add_word_tokens_sorts_and_repairs():
    tokenizer = _byte_level_tokenizer()
    assert add_word_tokens(tokenizer, reversed(WORDS)) == len(WORDS)
    ids = [tokenizer.convert_tokens_to_ids(w) for w in sorted(WORDS)]
    assert ids == sorted(ids)
    assert all(tokenizer.decode([tokenizer.convert_tokens_to_ids(w)]) == w for w in WORDS)
    assert add_word_tokens(tokenizer, ["Yaoundé", "Paris"]) == 0


def test_other_decoders_are_left_alone():
    core = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core)
    tokenizer.add_tokens(["Yaoundé"])
    assert repair_added_token_decoding(tokenizer) == []
    assert tokenizer.decode(tokenizer.encode("a Yaoundé")) == "a Yaoundé"


def test_a_decoder_that_still_mangles_is_an_error():
    tokenizer = _byte_level_tokenizer(decoders.Sequence([decoders.ByteLevel(), decoders.Replace("é", "e")]))
    tokenizer.add_tokens(["Yaoundé"])
    assert broken_added_tokens(tokenizer) == ["Yaoundé"]
    before = tokenizer.backend_tokenizer.to_str()
    with pytest.raises(ValueError, match="still decode wrongly"):
        repair_added_token_decoding(tokenizer)
    assert tokenizer.backend_tokenizer.to_str() == before  # the tokenizer is left as it was


def test_model_folders_saved_before_the_repair_load_repaired(tmp_path):
    from agents.hf_policy import load_processing_class
    from agents.tiny_vlm import build_tiny_vlm, load_processor

    folder = tmp_path / "old"
    shutil.copytree(build_tiny_vlm(), folder)
    processor = load_processor(folder)
    processor.tokenizer.backend_tokenizer.decoder = decoders.ByteLevel()  # as saved before the repair
    processor.tokenizer.add_tokens(["Yaoundé"])
    processor.tokenizer.save_pretrained(folder)

    for loaded in (load_processor(folder), load_processing_class(folder)):
        ids = loaded.tokenizer.encode("<answer>Yaoundé</answer>", add_special_tokens=False)
        assert loaded.tokenizer.convert_tokens_to_ids("Yaoundé") in ids
        assert loaded.tokenizer.decode(ids) == "<answer>Yaoundé</answer>"
