"""Text printed in the corpus's logos, read once by an OCR engine, so the question set can tell a
wordmark (a logo that spells the brand's name: the picture answers "which brand is this?") from a
symbol that has to be recognised.

Built by ``python -m mmsearch_env.corpus.build --ocr-logos`` into ``data/logo_text.json`` (page id →
the text read, lower-case) with PyPI ``rapidocr-onnxruntime``, which ships its ONNX detection and
recognition models (build extra ``corpus-build``); nothing here runs at search time.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import numpy as np
from PIL import Image
from rapidfuzz import fuzz

from mmsearch_env.corpus import load_corpus

__all__ = ["MISREAD_WORDMARKS", "acronym", "load_logo_text", "ocr_logos", "spells_name"]

#: wordmarks the OCR engine misreads (checked by eye): DVC prints its name, read as "dc"
MISREAD_WORDMARKS = frozenset({"brand/dvc"})

#: recognised lines below this confidence are ignored
MIN_CONFIDENCE = 0.6


def _squash(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    return re.sub(r"[^a-z0-9]", "", folded)


def spells_name(read: str, name: str) -> bool:
    """Whether OCR text ``read`` spells the brand ``name`` (case, accents, spaces and punctuation aside;
    one character in eight may be misread).

    >>> spells_name("NETGEAR", "NETGEAR"), spells_name("the home depot", "The Home Depot")
    (True, True)
    >>> spells_name("", "Apple"), spells_name("bmw", "Wacom"), spells_name("r", "Apache Pulsar")
    (False, False, False)
    >>> spells_name("fairphcne", "Fairphone")  # one letter misread
    True
    >>> spells_name("ubl", "JBL"), spells_name("ubx", "JBL")
    (True, False)
    >>> spells_name("n ker cad", "Tinkercad")  # a wordmark over several lines, its first letters missed
    True
    """
    read, name = _squash(read), _squash(name)
    if len(name) < 2 or not read:
        return False
    if name in read:
        return True
    if len(name) == len(read) == 3 and sum(a != b for a, b in zip(name, read, strict=True)) <= 1:
        return True  # a three-letter wordmark with one letter misread ("JBL" read as "ubl")
    if len(read) >= 5 and read in name and len(read) >= 0.75 * len(name):
        return True  # most of the name read exactly (a stacked wordmark loses letters at line ends)
    # a misread wordmark: as long as the name, and nearly the same letters (partial_ratio alone would
    # match a one-letter read "r" inside "apachepulsar")
    return len(name) >= 4 and len(read) >= 0.8 * len(name) and fuzz.partial_ratio(name, read) >= 87.5


def acronym(read: str, name: str) -> str | None:
    """The initials of a multi-word ``name`` in capitals when OCR text ``read`` is exactly them, else None.

    >>> acronym("tfi", "Transport for Ireland"), acronym("tf", "Transport for Ireland"), acronym("a", "Apple")
    ('TFI', None, None)
    """
    words = re.findall(r"[A-Za-z0-9]+", name)
    initials = "".join(w[0] for w in words).lower()
    return initials.upper() if len(words) >= 2 and _squash(read) == initials else None


def ocr_logos(out: Path) -> dict[str, str]:
    """Read the text in every logo thumbnail at ``out`` and write ``logo_text.json``; returns it."""
    from rapidocr_onnxruntime import RapidOCR
    from tqdm import tqdm

    corpus = load_corpus(out)
    engine = RapidOCR()
    texts: dict[str, str] = {}
    for image_index in tqdm(range(corpus.n_images), desc="ocr logos"):
        if str(corpus.image_kind[image_index]) != "logo":
            continue
        thumb = corpus.thumbnail(image_index)
        canvas = Image.new("RGB", (thumb.width * 2 + 40, thumb.height * 2 + 40), "white")
        canvas.paste(thumb.resize((thumb.width * 2, thumb.height * 2), Image.Resampling.BICUBIC), (20, 20))
        result, _ = engine(np.asarray(canvas))
        lines = [text for _, text, score in (result or []) if float(score) >= MIN_CONFIDENCE]
        page = corpus.pages[int(corpus.image_page[image_index])]
        if lines:
            texts[page.id] = " ".join(lines).lower()
    (out / "logo_text.json").write_text(json.dumps(texts, ensure_ascii=False, indent=0, sort_keys=True) + "\n")
    return texts


def load_logo_text(path: Path) -> dict[str, str]:
    """The OCR texts at ``path`` (``{}`` when the corpus folder has none)."""
    file = Path(path) / "logo_text.json"
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
