"""Text printed in a query picture, read at search time and turned into the corpus pages it names.

A reverse image search on the web also reads the text in the picture: an element tile prints the
symbol and the name, a wordmark spells the brand. :class:`PictureTextReader` runs an OCR engine that a
registry package ships with its models (PyPI ``rapidocr-onnxruntime``, extra ``ocr``) and
:func:`named_pages` maps the lines it reads to the pages whose names they spell, exactly (no spelling
correction: OCR noise such as a tiled "SAMPLE" watermark would otherwise be corrected into a name).

The image search fuses this with the visual match only when the visual match is weak (see
``CorpusSearch(read_text=True)``): the OCR pass costs several times a whole visual search.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from mmsearch_env.corpus.features import bm25_tokenize, flatten_rgb
from mmsearch_env.corpus.query import QueryAnalyzer
from mmsearch_env.errors import ConfigError

__all__ = ["MIN_CONFIDENCE", "PictureTextReader", "named_pages"]

#: recognised lines below this confidence are ignored
MIN_CONFIDENCE = 0.6
#: the OCR detector sees the picture with its short side at this many pixels (rapidocr's default, 736,
#: upscales a 100-px thumbnail sevenfold and costs ~0.5 s on this machine's CPU; 192 reads the same lines
#: of a corpus picture in ~25 ms)
DETECT_SIDE = 192
_NUMBER_RE = re.compile(r"^\d{1,3}$")


class PictureTextReader:
    """Lazily built OCR engine (one per reader; thread-safe: calls are serialised).

    Args:
        threads: onnxruntime intra-op threads of the OCR models (1 suits many parallel envs).
    """

    def __init__(self, threads: int = 1) -> None:
        self.threads = int(threads)
        self._engine: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        try:
            from rapidocr_onnxruntime import RapidOCR  # optional: only search with read_text=True needs it
        except ImportError as exc:
            raise ConfigError(
                "reading the text in query pictures (read_text=True) needs the OCR engine: "
                "pip install 'mmsearch-env[ocr]' (rapidocr-onnxruntime), or leave read_text off."
            ) from exc
        return RapidOCR(
            use_cls=False,  # corpus pictures and screenshots are upright; the angle model costs a pass
            det_limit_side_len=DETECT_SIDE,
            intra_op_num_threads=self.threads,
            inter_op_num_threads=1,
        )

    def read(self, image: Image.Image) -> list[str]:
        """The lines of text in ``image`` read with confidence >= :data:`MIN_CONFIDENCE`, top to bottom."""
        with self._lock:
            if self._engine is None:
                self._engine = self._load()
            result, _ = self._engine(np.asarray(flatten_rgb(image)))
        return [str(text).strip() for _, text, score in (result or []) if float(score) >= MIN_CONFIDENCE]


def named_pages(lines: Sequence[str], analyzer: QueryAnalyzer, atomic_numbers: dict[int, int]) -> list[int]:
    """Pages (indices) whose name one of ``lines`` spells, in reading order.

    * A line's words name a page when they are exactly one of its names (title, alias, other name:
      :meth:`QueryAnalyzer.named`, the table text search uses, without its spelling correction).
    * An element tile prints its symbol: a line that is exactly a two-letter symbol (case-sensitive)
      names the element; a one-letter symbol only together with a line holding its atomic number
      (a lone "K" or "I" is too often noise).

    ``atomic_numbers`` maps element page → atomic number.
    """
    found: list[int] = []

    def add(page: int) -> None:
        if page not in found:
            found.append(page)

    numbers = {int(line) for line in lines if _NUMBER_RE.match(line)}
    for line in lines:
        for page in analyzer.named(bm25_tokenize(line)):
            add(page)
        page = analyzer.symbols.get(line)
        if page is not None and (len(line) == 2 or atomic_numbers.get(page) in numbers):
            add(page)
    return found
