"""``search="corpus"`` (the default): real offline image and text search over the embedded corpus.

* **Image search** (like Google Lens): the query image goes through EfficientNet-Lite0 (ONNX, 128 px,
  PCA to 128-d) and a 64-bit perceptual hash; each corpus image scores
  ``cosine(features) + hash_weight · (1 − hamming/64)``; pages are ranked by their best image and the
  top ``max_results`` come back as (thumbnail of the matching image, page title, url).
* **Text search**: BM25 (bm25s index) and dense retrieval (MiniLM distilled into static token vectors)
  each rank the pages; weighted reciprocal rank fusion merges them; each hit carries a query-aware
  extractive summary of at most ``summary_sentences`` sentences.

Search-quality knobs (all off by default) degrade results on purpose, for experiments on imperfect
retrieval. Their randomness comes from the request's ``rng_seed`` (the environment draws it from its
own seeded RNG), so the same env seed gives the same results:

* ``drop_prob``: with this probability, the top-ranked (right) page is removed from the results (the
  next-ranked page fills its slot);
* ``distractors``: this many random pages are mixed into the results (keeping ``max_results``);
* ``shuffle``: the result order is randomly permuted;
* ``degrade``: thumbnails are blurred, shrunk and JPEG-compressed with this strength (0–1).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from threadpoolctl import ThreadpoolController

from mmsearch_env.corpus import DATA_DIR, Corpus, load_corpus
from mmsearch_env.corpus.features import (
    ImageEncoder,
    StaticTextEncoder,
    hamming_similarity,
    phash,
)
from mmsearch_env.corpus.localise import propose_regions
from mmsearch_env.corpus.names import load_names
from mmsearch_env.corpus.picture_text import PictureTextReader, named_pages
from mmsearch_env.corpus.query import QueryAnalyzer
from mmsearch_env.errors import ConfigError
from mmsearch_env.search.base import (
    ImageSearchRequest,
    SearchBackendBase,
    SearchResponse,
    SearchResult,
    TextSearchRequest,
)
from mmsearch_env.search.local import summarize

__all__ = ["CorpusIndex", "CorpusSearch", "load_index"]

log = logging.getLogger(__name__)


@dataclass
class CorpusIndex:
    """The loaded corpus plus its search structures (shared by every backend in the process)."""

    corpus: Corpus
    image_encoder: ImageEncoder
    image_feats: np.ndarray  # (n_views, D) float32, unit norm
    image_hashes: np.ndarray  # (n_views,) uint64
    view_image: np.ndarray  # (n_views,) image index of each indexed view (an image's views are contiguous)
    bm25: object
    text_encoder: StaticTextEncoder
    doc_emb: np.ndarray  # (n_pages, d) float32, unit norm
    analyzer: QueryAnalyzer

    def __post_init__(self) -> None:
        # scores are reduced to one per indexed image: the max over its contiguous block of views
        change = np.r_[True, self.view_image[1:] != self.view_image[:-1]]
        self.view_starts = np.flatnonzero(change)
        self.image_ids = self.view_image[self.view_starts]
        # The first view of each image is the image as stored: it wins a tie against a transformed view
        # of another image (Ireland's flag is Ivory Coast's mirrored; a waxing moon a waning one's).
        self.view_bonus = np.zeros(len(self.view_image), np.float32)
        self.view_bonus[self.view_starts] = PLAIN_VIEW_BONUS
        self.row_page = self.corpus.image_page[self.image_ids]  # page of each reduced score column
        self.atomic_numbers = {
            i: int(p.facts["atomic_number"]) for i, p in enumerate(self.corpus.pages) if p.kind == "element"
        }


# numpy's BLAS spins up its thread pool for every mat-vec: on a loaded machine one text search then
# costs ~14 ms instead of ~1 ms. The search pins BLAS to one thread for the duration of each call.
_BLAS = ThreadpoolController()


_INDEXES: dict[tuple[Path, int], CorpusIndex] = {}
#: score bonus of an image's stored (untransformed) view over its rotated, mirrored, cropped... views
PLAIN_VIEW_BONUS = 0.03


def load_index(path: str | Path = DATA_DIR, *, image_threads: int = 1) -> CorpusIndex:
    """Load (once per process, path and thread count) the corpus and every index it ships."""
    path = Path(path)
    key = (path, image_threads)
    if key in _INDEXES:
        return _INDEXES[key]
    import bm25s

    corpus = load_corpus(path)
    with np.load(path / "image_index.npz", allow_pickle=False) as data:
        feats = data["feats"].astype(np.float32)
        hashes = data["phash"]
        view_image = data["view_image"].astype(np.int64)
        encoder = ImageEncoder(
            path / "effnet_lite0.onnx", data["pca_mean"], data["pca_components"], threads=image_threads
        )
    with np.load(path / "dense.npz", allow_pickle=False) as data:
        table, docs = data["table"], data["docs"].astype(np.float32)
    vocab = {tok: i for i, tok in enumerate((path / "vocab.txt").read_text(encoding="utf-8").splitlines())}
    retriever = bm25s.BM25.load(str(path / "bm25"), load_corpus=False, mmap=False)
    doc_freq = np.diff(np.asarray(retriever.scores["indptr"]))
    bm25_vocab = retriever.vocab_dict
    analyzer = QueryAnalyzer(
        corpus, bm25_vocab, {t: int(doc_freq[i]) for t, i in bm25_vocab.items() if i < len(doc_freq)}, load_names(path)
    )
    index = CorpusIndex(
        corpus, encoder, feats, hashes, view_image, retriever, StaticTextEncoder(vocab, table), docs, analyzer
    )
    _INDEXES[key] = index
    return index


class CorpusSearch(SearchBackendBase):
    """Image and text search over the embedded corpus (see the module docstring).

    Args:
        path: a corpus folder (the packaged one by default).
        max_results: results per call (the paper uses 5).
        summary_sentences: at most this many sentences per text-search summary.
        hash_weight: weight of the perceptual-hash similarity next to the learned features.
        dense_weight: weight of the dense ranking in the fusion (BM25 has weight 1).
        drop_prob, distractors, shuffle, degrade: search-quality knobs (off by default).
        image_threads: onnxruntime threads for the image network (1 suits many parallel envs).
        localise_below: when the whole query's best match scores below this (the best is ~1.3 for a
            clean copy, ~0.9 for a screenshot), also search crops of the proposed picture regions; 0 = never.
        max_regions: at most this many proposed regions per query.
        denoise_below: when the whole query's best match scores below this, a median-filtered copy of
            the query is searched too and each image keeps its better score; 0 = never.
        read_text: read the text printed in the query picture (OCR, extra ``ocr``) when the visual match
            is weak, and rank the pages it names higher (off by default: the OCR pass costs ~25 ms, and
            results then depend on an optional package).
        read_text_below: the picture's text is read when the visual best match scores below this...
        read_text_margin: ...or beats the best other page by less than this (a word alone on a page
            matches every wordmark about equally well).
        text_bonus: score added to every image of a page the picture's text names.
    """

    name = "corpus"

    def __init__(
        self,
        path: str | None = None,
        *,
        max_results: int = 5,
        summary_sentences: int = 5,
        hash_weight: float = 0.3,
        dense_weight: float = 0.5,
        drop_prob: float = 0.0,
        distractors: int = 0,
        shuffle: bool = False,
        degrade: float = 0.0,
        image_threads: int = 1,
        localise_below: float = 1.1,
        max_regions: int = 3,
        denoise_below: float = 1.25,
        read_text: bool = False,
        read_text_below: float = 1.2,
        read_text_margin: float = 0.03,
        text_bonus: float = 0.5,
    ) -> None:
        if max_results < 1 or summary_sentences < 1:
            raise ConfigError(
                f"max_results and summary_sentences must be >= 1, got {max_results} and {summary_sentences}."
            )
        if not 0.0 <= drop_prob <= 1.0 or not 0.0 <= degrade <= 1.0:
            raise ConfigError(f"drop_prob and degrade must be in [0, 1], got {drop_prob} and {degrade}.")
        if image_threads < 1:
            raise ConfigError(f"image_threads must be >= 1, got {image_threads}.")
        if distractors < 0 or distractors > max_results:
            raise ConfigError(f"distractors must be between 0 and max_results={max_results}, got {distractors}.")
        self.index = load_index(Path(path) if path else DATA_DIR, image_threads=int(image_threads))
        self.corpus = self.index.corpus
        self.max_results = max_results
        self.summary_sentences = summary_sentences
        self.hash_weight = hash_weight
        self.dense_weight = dense_weight
        self.drop_prob = drop_prob
        self.distractors = int(distractors)
        self.shuffle = bool(shuffle)
        self.degrade = degrade
        self.localise_below = localise_below
        self.max_regions = int(max_regions)
        self.crop_margin = 0.0
        self.denoise_below = denoise_below
        self.read_text_below = read_text_below
        self.read_text_margin = read_text_margin
        self.text_bonus = text_bonus
        self.reader = PictureTextReader(threads=int(image_threads)) if read_text else None

    @property
    def knobs_on(self) -> bool:
        return bool(self.drop_prob or self.distractors or self.shuffle or self.degrade)

    # -- ranking -----------------------------------------------------------------------------------
    def rank_images(self, image: Image.Image, k: int | None = None) -> list[tuple[int, int, float]]:
        """``(page, image, score)`` for the best ``k`` pages (each page scored by its best image, each
        image by its best indexed view).

        When the best match is still weak and ``read_text`` is on, the text printed in the picture is read
        and every image of a page it names gains ``text_bonus``.

        When the best match is not clean (``denoise_below``), a median-filtered copy is scored too (thin
        overlays such as watermarks vanish). When even the best match is weak (``localise_below``), the
        query is taken for a screenshot or a
        photo with the picture somewhere inside: rectangles framed by long straight edges are proposed
        (:func:`~mmsearch_env.corpus.localise.propose_regions`), and each corpus image is scored by the
        best of the whole query and those crops.
        """
        k = k or self.max_results
        idx = self.index
        with _BLAS.limit(limits=1, user_api="blas"):
            scores = self._image_scores([image])[0]
            if self.denoise_below and float(scores.max()) < self.denoise_below:
                # thin overlays (watermarks, captions, scratches) vanish under a median filter; flat
                # pictures (flags, silhouettes, logos) survive it
                # (on the network's 128-px view: a median over a large screenshot costs ~30 ms)
                smoothed = self.index.image_encoder.frame(image).filter(ImageFilter.MedianFilter(5))
                scores = np.maximum(scores, self._image_scores([smoothed])[0])
            best = float(scores.max())
            if self.localise_below and best < self.localise_below and min(image.size) >= 64:
                crops = [image.crop(box) for box in propose_regions(image, max_regions=self.max_regions)]
                if crops:
                    crop_scores = self._image_scores(crops)
                    # a crop takes over only when it matches clearly better than the whole query did:
                    # text and watermark strokes also frame rectangles, and those match at random
                    top = int(crop_scores.max(axis=1).argmax())
                    if float(crop_scores[top].max()) > best + self.crop_margin:
                        scores = crop_scores[top]
            if self.reader is not None and self._visual_doubt(scores):
                named = named_pages(self.reader.read(image), idx.analyzer, idx.atomic_numbers)
                if named:
                    scores = scores + self.text_bonus * np.isin(idx.row_page, named)
        order = top_k(scores, 4 * k)
        seen: dict[int, tuple[int, int, float]] = {}
        for row in order:
            image_index = int(idx.image_ids[row])
            page = int(self.corpus.image_page[image_index])
            if page not in seen:
                seen[page] = (page, image_index, float(scores[row]))
                if len(seen) == k:
                    break
        return list(seen.values())

    def _visual_doubt(self, scores: np.ndarray) -> bool:
        """Whether the best page's visual score is weak or barely ahead of the next page's."""
        top = top_k(scores, 32)
        pages = self.index.row_page[top]
        other = scores[top][pages != pages[0]]
        best = float(scores[top[0]])
        return best < self.read_text_below or (other.size > 0 and best - float(other[0]) < self.read_text_margin)

    def _image_scores(self, images: list[Image.Image]) -> np.ndarray:
        """``(len(images), n_indexed_images)``: each query against each indexed image (best view)."""
        idx = self.index
        framed = [idx.image_encoder.frame(im) for im in images]  # cropped and letterboxed once
        feats = idx.image_encoder(framed, framed=True)
        scores = feats @ idx.image_feats.T + idx.view_bonus
        if self.hash_weight:
            for row, frame in enumerate(framed):
                scores[row] += self.hash_weight * hamming_similarity(phash(frame, framed=True), idx.image_hashes)
        return np.maximum.reduceat(scores, idx.view_starts, axis=1)

    def rank_text(self, query: str, k: int | None = None, *, pool: int = 50) -> list[int]:
        """Page indices of the best ``k`` pages: the pages the query names (title, other name, symbol)
        first, then weighted reciprocal rank fusion of BM25 and dense retrieval."""
        return self._rank_analyzed(self.index.analyzer.analyze(query), k or self.max_results, pool)

    def _rank_analyzed(self, analysis, k: int, pool: int = 50) -> list[int]:
        fused: dict[int, float] = {}
        # a page the query names outranks any fused score (each list adds at most 1.5/60)
        for rank, doc in enumerate(analysis.entities):
            fused[doc] = 1.0 + 1.0 / (1 + rank)
        with _BLAS.limit(limits=1, user_api="blas"):
            if analysis.tokens:
                bm = np.asarray(self.index.bm25.get_scores(analysis.tokens))
                top = top_k(bm, pool)
                for rank, doc in enumerate(top):
                    if bm[doc] > 0:
                        fused[int(doc)] = fused.get(int(doc), 0.0) + 1.0 / (60 + rank)
            if self.dense_weight and analysis.tokens:
                q = self.index.text_encoder([" ".join(analysis.tokens)])[0]
                if q.any():
                    dense = self.index.doc_emb @ q
                    top = top_k(dense, pool)
                    for rank, doc in enumerate(top):
                        fused[int(doc)] = fused.get(int(doc), 0.0) + self.dense_weight / (60 + rank)
        return [doc for doc, _ in sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]

    # -- tools -------------------------------------------------------------------------------------
    def image_search(self, request: ImageSearchRequest) -> SearchResponse:
        rng = self._rng(request.rng_seed)
        # one spare result, so a dropped page is replaced by the next one (as failed pages were in the paper)
        k = self.max_results + (1 if rng is not None else 0)
        ranked = [(page, image) for page, image, _ in self.rank_images(request.image, k)]
        if rng is not None:
            ranked = self._apply_knobs(ranked, rng, lambda page: (page, self._page_image(page)), with_images=True)
        results = []
        for page_index, image_index in ranked:
            page = self.corpus.pages[page_index]
            thumb = self.corpus.thumbnail(image_index)
            if rng is not None and self.degrade:
                thumb = degrade_thumbnail(thumb, self.degrade, rng)
            results.append(SearchResult(title=page.title, url=page.url, thumbnail=thumb))
        return SearchResponse("image_search", tuple(results))

    def text_search(self, request: TextSearchRequest) -> SearchResponse:
        rng = self._rng(request.rng_seed)
        analysis = self.index.analyzer.analyze(request.query)
        ranked = self._rank_analyzed(analysis, self.max_results + (1 if rng is not None else 0))
        if rng is not None:
            ranked = self._apply_knobs(ranked, rng, lambda page: page, with_images=False)
        terms = analysis.terms
        results = tuple(
            SearchResult(
                title=self.corpus.pages[i].title,
                url=self.corpus.pages[i].url,
                summary=summarize(self.corpus.pages[i].text, terms, self.summary_sentences, fill=True),
            )
            for i in ranked
        )
        return SearchResponse("text_search", results)

    # -- knobs -------------------------------------------------------------------------------------
    def _rng(self, seed: int | None) -> np.random.Generator | None:
        if not self.knobs_on:
            return None
        return np.random.default_rng(seed)

    def _page_image(self, page: int) -> int:
        images = self.corpus.pages[page].images
        return images[0] if images else -1

    def _apply_knobs(
        self, ranked: list, rng: np.random.Generator, make: Callable[[int], object], *, with_images: bool
    ) -> list:
        """Drop the top hit (``drop_prob``), mix in distractors, shuffle — in that order, one RNG."""
        ranked = list(ranked)
        drop = rng.random() < self.drop_prob
        if drop and ranked:
            ranked = ranked[1:]
        if self.distractors:
            pool = self._distractor_pool(with_images)
            present = {(r[0] if isinstance(r, tuple) else r) for r in ranked}
            extra = []
            while len(extra) < self.distractors:
                page = int(pool[int(rng.integers(len(pool)))])
                if page not in present:
                    present.add(page)
                    extra.append(make(page))
            keep = ranked[: self.max_results - self.distractors]
            positions = sorted(rng.choice(self.max_results, size=self.distractors, replace=False).tolist())
            for pos, item in zip(positions, extra, strict=True):
                keep.insert(min(pos, len(keep)), item)
            ranked = keep
        ranked = ranked[: self.max_results]  # the spare result is not needed any more
        if self.shuffle:
            ranked = [ranked[i] for i in rng.permutation(len(ranked))]
        return ranked

    def _distractor_pool(self, with_images: bool) -> np.ndarray:
        if with_images:  # pages that image search can return (their image is indexed)
            return np.unique(self.corpus.image_page[self.index.view_image])
        return np.arange(len(self.corpus.pages))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, best first, equal scores in index order.

    ``np.argpartition`` alone picks among scores tied at the cut by a CPU-dependent SIMD kernel, so the
    same query ranked different pages on different machines; here every tie at the cut is kept and
    ordered by index before cutting.

    >>> top_k(np.array([1.0, 3.0, 2.0, 3.0, 2.0]), 3).tolist()
    [1, 3, 2]
    """
    n = len(scores)
    if k >= n:
        return np.argsort(-scores, kind="stable")
    kth = np.partition(scores, n - k)[n - k]  # the k-th largest value: the same on every CPU
    candidates = np.flatnonzero(scores >= kth)
    return candidates[np.argsort(-scores[candidates], kind="stable")][:k]


def degrade_thumbnail(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    """Blur, shrink and JPEG-compress ``image``; ``strength`` in [0, 1] (1 = barely recognisable)."""
    w, h = image.size
    scale = 1.0 - 0.75 * strength * rng.uniform(0.8, 1.0)
    small = image.resize((max(4, round(w * scale)), max(4, round(h * scale))), Image.Resampling.BILINEAR)
    small = small.filter(ImageFilter.GaussianBlur(radius=2.5 * strength))
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=max(5, int(80 - 70 * strength)))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def corpus_stats(path: str | Path = DATA_DIR) -> dict[str, int]:
    """Counts of pages by kind and images (for docs and the benchmark)."""
    corpus = load_corpus(path)
    kinds: dict[str, int] = {}
    for page in corpus.pages:
        kinds[page.kind] = kinds.get(page.kind, 0) + 1
    return {"pages": len(corpus.pages), "images": corpus.n_images, **{f"pages_{k}": v for k, v in kinds.items()}}
