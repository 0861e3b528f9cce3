"""Added tokens that decode to what they say, in byte-level (GPT-2 style) tokenizers.

``tokenizer.add_tokens(["Yaoundé"])`` on a byte-level BPE tokenizer encodes the word as one token but
decodes it as ``"Yaound\\ufffd"``: the added token keeps its text (``"Yaoundé"``), and the byte-level
decoder reads every character of a token that lies in its 256-character alphabet as the byte it stands for,
so ``é`` becomes the lone byte 0xE9 (invalid UTF-8). A token with any character outside that alphabet (a
space, ``ș``) is passed through as text and decodes right, which is why ``"San José"`` works and ``"Lomé"``
does not. The model is trained on the right id; only the text it is scored on is wrong.

:func:`repair_added_token_decoding` fixes the decoding without touching the encoding: it puts, before the
byte-level decoder, one ``Replace`` per broken token that rewrites exactly that token (an anchored pattern)
into its byte-level spelling. The fix is part of the tokenizer (``save_pretrained`` keeps it) and loading
applies it to folders saved before it (:func:`agents.hf_policy.load_processing_class`,
:func:`agents.tiny_vlm.load_processor`).
"""

from __future__ import annotations

import json
import logging
from functools import cache
from typing import Any

__all__ = ["add_word_tokens", "broken_added_tokens", "byte_level_spelling", "repair_added_token_decoding"]

logger = logging.getLogger(__name__)

#: Characters that are regex syntax in the tokenizers library's (Oniguruma) patterns.
_REGEX_SYNTAX = frozenset(r"\^$.|?*+()[]{}-/")
_reported: set[tuple[str, ...]] = set()


@cache
def _byte_to_char() -> dict[int, str]:
    """GPT-2's byte → character table: printable Latin-1 bytes stand for themselves, the rest move to 256+."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shifted = (b for b in range(256) if b not in table)
    for n, b in enumerate(shifted):
        table[b] = chr(256 + n)
    return table


def byte_level_spelling(text: str) -> str:
    """``text``'s UTF-8 bytes written in the byte-level alphabet (what a BPE vocabulary entry looks like)."""
    table = _byte_to_char()
    return "".join(table[b] for b in text.encode("utf-8"))


def _uses_byte_level_decoder(backend: Any) -> bool:
    def walk(node: Any) -> bool:
        if not isinstance(node, dict):
            return False
        return node.get("type") == "ByteLevel" or any(walk(d) for d in node.get("decoders") or [])

    return walk(json.loads(backend.to_str()).get("decoder"))


def broken_added_tokens(tokenizer: Any) -> list[str]:
    """The added (non-special) tokens of a fast ``tokenizer`` that do not decode to their own text."""
    special = set(getattr(tokenizer, "all_special_tokens", ()))
    broken = []
    for text, token_id in sorted(tokenizer.get_added_vocab().items(), key=lambda item: item[1]):
        if text in special or text.isascii():
            continue
        if tokenizer.decode([token_id]) != text:
            broken.append(text)
    return broken


def _anchored(text: str) -> str:
    return "^" + "".join("\\" + c if c in _REGEX_SYNTAX else c for c in text) + "$"


def repair_added_token_decoding(tokenizer: Any) -> list[str]:
    """Make every added token of ``tokenizer`` decode to its own text; returns the tokens repaired.

    A no-op (``[]``) for slow tokenizers, tokenizers without a byte-level decoder and tokenizers whose
    added tokens already decode right, so calling it again changes nothing. Encoding is unchanged.

    Raises:
        ValueError: a broken token is still broken after the repair (a decoder this does not know).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return []
    broken = broken_added_tokens(tokenizer)
    if not broken or not _uses_byte_level_decoder(backend):
        return []
    from tokenizers import Regex, decoders

    rewrites = [decoders.Replace(Regex(_anchored(text)), byte_level_spelling(text)) for text in broken]
    original = backend.decoder
    backend.decoder = decoders.Sequence([*rewrites, original])
    still = broken_added_tokens(tokenizer)
    if still:
        backend.decoder = original  # left as it was: the error says what to do
        raise ValueError(
            f"added tokens {still} still decode wrongly after rewriting them into the byte-level alphabet; "
            "the tokenizer's decoder is not the plain byte-level one: decode these ids yourself"
        )
    if tuple(broken) not in _reported:  # once per process: every load of a model folder repairs it
        _reported.add(tuple(broken))
        logger.info("added tokens %s now decode to their own text (they decoded to invalid bytes)", broken)
    return broken


def add_word_tokens(tokenizer: Any, words: Any) -> int:
    """Add each of ``words`` to ``tokenizer`` as one token (sorted, so the ids do not depend on the order
    given) and make them decode to their own text; returns how many were new."""
    added = tokenizer.add_tokens(sorted(set(words)))
    repair_added_token_decoding(tokenizer)
    return added
