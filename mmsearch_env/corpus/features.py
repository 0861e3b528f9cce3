"""Query-time features for the embedded corpus: numpy + Pillow, plus onnxruntime for the image network.

The same functions run at build time (to index the corpus) and at query time (to search it), so the
two can never disagree. Nothing here imports torch.

* :func:`phash` — a 64-bit DCT perceptual hash (numpy only).
* :class:`ImageEncoder` — EfficientNet-Lite0 (ImageNet weights) exported to ONNX at build time, run by
  onnxruntime at a reduced input size, then PCA-reduced and L2-normalised.
* :class:`StaticTextEncoder` — MiniLM distilled into one static vector per WordPiece token (the
  model2vec recipe), so a query embedding is a weighted mean of table rows: no network at query time.
* :func:`bm25_tokenize` — the word tokenizer shared by the BM25 index and its queries.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops

from mmsearch_env.errors import ConfigError
from mmsearch_env.search.local import STOPWORDS

__all__ = [
    "IMAGE_INPUT_SIZE",
    "ImageEncoder",
    "StaticTextEncoder",
    "autocrop",
    "bm25_tokenize",
    "flatten_rgb",
    "hamming_similarity",
    "phash",
    "square_rgb",
    "wordpiece",
]

#: Side of the square image fed to EfficientNet-Lite0 (224 natively). 128 px: ~3 ms per query on one CPU
#: thread (160: ~5 ms, 224: ~9.4 ms) with the same top-1 under the perturbations (benchmarks/corpus_search.py).
IMAGE_INPUT_SIZE = 128
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_WORD_RE = re.compile(r"\w+")

# The same stopwords as the in-process engine: the shipped BM25 index was built with them.
BM25_STOPWORDS = STOPWORDS


def bm25_tokenize(text: str) -> list[str]:
    """Lowercase, accent-free word tokens without stopwords (index and queries alike).

    >>> bm25_tokenize("What is the capital of Côte d'Ivoire?")
    ['capital', 'cote', 'd', 'ivoire']
    """
    folded = unicodedata.normalize("NFKD", text.lower()).encode("ascii", "ignore").decode("ascii")
    return [t for t in _WORD_RE.findall(folded) if t not in BM25_STOPWORDS]


def flatten_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """RGB with any transparency composited onto ``background`` (logos and emoji are transparent)."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return image.convert("RGB")


def autocrop(image: Image.Image, tolerance: int = 40) -> Image.Image:
    """Crop away uniform padding (the median colour of the four corners), e.g. the blank margin around
    a logo or a coloured mat around a photo, so a padded or shifted copy maps to the same framing as
    the original.

    A pixel is content when any channel differs from the border colour by more than ``tolerance``. A
    neutral border (white, grey, black) is cropped on any side; a coloured one only when it surrounds
    the content on all four sides: a coloured band touching the edge is part of the picture (Austria's
    and Latvia's red stripes, Argentina's blue ones would otherwise be cut away, leaving a blank square).
    (Pillow's C routines: ~20x faster than the same in numpy on a 150×150 image.)

    >>> flag = Image.new("RGB", (60, 30), (200, 16, 46)); flag.paste((255, 255, 255), (0, 10, 60, 20))
    >>> autocrop(flag).size  # a red-white-red flag keeps its red stripes
    (60, 30)
    >>> padded = Image.new("RGB", (80, 50), (160, 240, 200)); padded.paste(flag, (10, 10))
    >>> autocrop(padded).size  # padding all around goes, whatever its colour
    (60, 30)
    """
    image = image.convert("RGB")
    w, h = image.size
    corners = np.array([image.getpixel(xy) for xy in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1))])
    background = tuple(int(v) for v in np.median(corners, axis=0).round())
    diff = ImageChops.difference(image, Image.new("RGB", image.size, background))
    red, green, blue = diff.split()
    mask = ImageChops.lighter(ImageChops.lighter(red, green), blue).point(_THRESHOLDS[tolerance])
    box = mask.getbbox()
    if box is None or box[2] - box[0] < 4 or box[3] - box[1] < 4:
        return image
    neutral = max(background) - min(background) <= _NEUTRAL_SPREAD
    if not neutral and (box[0] == 0 or box[1] == 0 or box[2] == w or box[3] == h):
        return image  # a coloured band that does not surround the content is a stripe, not padding
    return image.crop(box)


#: a border colour whose channels differ by at most this much is neutral padding (white, grey, black)
_NEUTRAL_SPREAD = 24


class _ThresholdTables(dict):
    def __missing__(self, tolerance: int) -> list[int]:
        table = [255 if v > tolerance else 0 for v in range(256)]
        self[tolerance] = table
        return table


_THRESHOLDS = _ThresholdTables()


def square_rgb(image: Image.Image, size: int, *, crop: bool = True) -> Image.Image:
    """``image`` (its uniform border cropped when ``crop``) letterboxed onto a white square of ``size``
    pixels, aspect ratio kept."""
    image = flatten_rgb(image)
    if max(image.size) >= 4 * size:  # cheap box-reduce first: autocrop and resize cost ~ pixels
        image = image.reduce(max(image.size) // (2 * size))
    if crop:
        image = autocrop(image)
    w, h = image.size
    scale = size / max(w, h)
    resized = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(resized, ((size - resized.width) // 2, (size - resized.height) // 2))
    return canvas


@lru_cache(maxsize=4)
def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return np.cos(np.pi * (2 * i + 1) * k / (2 * n)).astype(np.float32)


def phash(image: Image.Image, *, framed: bool = False) -> int:
    """The classic 64-bit perceptual hash: 32×32 grey, 2-D DCT, low 8×8 block against its median.

    ``framed=True``: ``image`` is already the output of :func:`square_rgb` (skips cropping again).

    >>> phash(Image.new("RGB", (40, 30), "white")) == phash(Image.new("RGB", (80, 60), "white"))
    True
    """
    square = image.resize((32, 32), Image.Resampling.BILINEAR) if framed else square_rgb(image, 32)
    grey = np.asarray(square.convert("L"), dtype=np.float32)
    dct = _dct_matrix(32)
    low = (dct @ grey @ dct.T)[:8, :8].reshape(-1)
    bits = low > np.median(low[1:])
    return int(np.packbits(bits).view(">u8")[0])


def hamming_similarity(query: int, hashes: np.ndarray) -> np.ndarray:
    """``1 - hamming/64`` between one hash and an array of ``uint64`` hashes."""
    bits = np.bitwise_count(np.bitwise_xor(hashes, np.uint64(query)))
    return 1.0 - bits.astype(np.float32) / 64.0


class ImageEncoder:
    """EfficientNet-Lite0 image features from an ONNX file, PCA-reduced and unit-norm.

    Args:
        onnx_path: the exported network (input ``x``: N×3×S×S float32; output: N×1280 pooled features).
        pca_mean, pca_components: the projection fitted on the corpus (``components`` is 1280×D).
        threads: onnxruntime intra-op threads.
    """

    def __init__(
        self, onnx_path: str | Path, pca_mean: np.ndarray, pca_components: np.ndarray, *, threads: int = 1
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - onnxruntime is a core dependency
            raise ConfigError("image search over the corpus needs onnxruntime: pip install onnxruntime") from exc
        options = ort.SessionOptions()
        # One thread by default: envs run many in parallel (vector envs, trainers). More threads help a
        # single process only with spin-waiting workers (2 threads: ~5 → ~2.7 ms on an idle 2-core box).
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # workers that spin between runs burn the CPU other envs and the trainer need on a shared machine
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.pca_mean = np.asarray(pca_mean, dtype=np.float32)
        self.pca_components = np.asarray(pca_components, dtype=np.float32)

    @staticmethod
    def frame(image: Image.Image) -> Image.Image:
        """The network's view of ``image``: border cropped, letterboxed to the input size."""
        return square_rgb(image, IMAGE_INPUT_SIZE)

    @staticmethod
    def preprocess(framed: Sequence[Image.Image]) -> np.ndarray:
        batch = np.stack([np.asarray(im, dtype=np.float32) for im in framed])
        batch = (batch * (1 / 255.0) - _MEAN) / _STD
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))

    def raw(self, images: Sequence[Image.Image], *, framed: bool = False) -> np.ndarray:
        """The network's 1280-d pooled features (before PCA)."""
        views = images if framed else [self.frame(im) for im in images]
        return self._session.run(None, {"x": self.preprocess(views)})[0]

    def project(self, raw: np.ndarray) -> np.ndarray:
        reduced = (raw - self.pca_mean) @ self.pca_components
        return reduced / np.maximum(np.linalg.norm(reduced, axis=1, keepdims=True), 1e-8)

    def __call__(self, images: Sequence[Image.Image], *, framed: bool = False) -> np.ndarray:
        return self.project(self.raw(images, framed=framed))


def wordpiece(text: str, vocab: dict[str, int], *, max_chars: int = 100) -> list[int]:
    """BERT-uncased WordPiece ids of ``text`` (lowercase, accents stripped, punctuation split, greedy
    longest match with ``##`` continuations; unknown words are dropped rather than mapped to [UNK]).

    >>> v = {"un": 0, "##know": 1, "##n": 2, "paris": 3}
    >>> wordpiece("Unknown PARIS!", v)
    [0, 1, 2, 3]
    """
    folded = unicodedata.normalize("NFD", text.lower())
    folded = "".join(c for c in folded if unicodedata.category(c) != "Mn")
    ids: list[int] = []
    for word in re.findall(r"\w+|[^\w\s]", folded):
        if len(word) > max_chars:
            continue
        start, pieces = 0, []
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in vocab:
                    pieces.append(vocab[piece])
                    break
                end -= 1
            if end == start:
                pieces = []
                break
            start = end
        ids.extend(pieces)
    return ids


class StaticTextEncoder:
    """Sentence embeddings as the weighted mean of static token vectors (MiniLM distilled at build time).

    Args:
        vocab: WordPiece vocabulary (token → row).
        table: ``V×D`` token vectors (already multiplied by their SIF weight).
    """

    def __init__(self, vocab: dict[str, int], table: np.ndarray) -> None:
        self.vocab = vocab
        self.table = np.asarray(table, dtype=np.float32)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.table.shape[1]), dtype=np.float32)
        for row, text in enumerate(texts):
            ids = wordpiece(text, self.vocab)
            if ids:
                out[row] = self.table[ids].mean(axis=0)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-8)
