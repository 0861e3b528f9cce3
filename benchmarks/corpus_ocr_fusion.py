"""Cost of reading the text printed in query pictures (OCR) at search time, on the question images.

    pip install -e ".[ocr]" && python benchmarks/corpus_ocr_fusion.py
    # writes benchmarks/results/corpus_ocr_fusion.{json,md}

``CorpusSearch(read_text=True)`` runs the OCR engine only when the visual match is in doubt. This
measures, on a seeded sample of question images (every category): how often that happens, the OCR
pass's latency with the shipped settings against the engine's defaults, and the whole image search's
latency with and without reading. Accuracy with and without reading is measured on perturbed pictures
by ``benchmarks/corpus_robustness.py --search-options '{"read_text": true}'``.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mmsearch_env.corpus.features import flatten_rgb
from mmsearch_env.corpus.questions import corpus_examples
from mmsearch_env.search.base import ImageSearchRequest
from mmsearch_env.search.corpus import CorpusSearch

RESULTS = Path(__file__).parent / "results"


def ms(values: list[float]) -> str:
    return f"p50 {np.median(values):.1f} ms, p90 {np.percentile(values, 90):.1f} ms"


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return 1000 * (time.perf_counter() - start)


def main() -> None:
    from rapidocr_onnxruntime import RapidOCR  # optional: the 'ocr' extra

    examples = corpus_examples(None)
    order = random.Random(0).sample(range(len(examples)), len(examples))
    images = [im for im in (examples[i].image for i in order[:260]) if im is not None][:200]
    plain, reading = CorpusSearch(), CorpusSearch(read_text=True)
    default_engine = RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1)
    for image in images[:3]:  # warm every engine
        reading.reader.read(image)
        default_engine(np.asarray(flatten_rgb(image)))
        plain.image_search(ImageSearchRequest(image=image))
    reads = []
    real_read = reading.reader.read
    reading.reader.read = lambda image: reads.append(1) or real_read(image)  # count the OCR passes
    shipped_ms, default_ms, plain_ms, reading_ms = [], [], [], []
    for image in tqdm(images[:60], desc="ocr"):
        shipped_ms.append(timed(real_read, image))
        default_ms.append(timed(default_engine, np.asarray(flatten_rgb(image))))
    for image in tqdm(images, desc="search"):
        plain_ms.append(timed(plain.image_search, ImageSearchRequest(image=image)))
        reading_ms.append(timed(reading.image_search, ImageSearchRequest(image=image)))
    result = {
        "images": len(images),
        "read_fraction": len(reads) / len(images),
        "ocr_shipped_ms_p50": float(np.median(shipped_ms)),
        "ocr_default_ms_p50": float(np.median(default_ms)),
        "search_ms_p50": float(np.median(plain_ms)),
        "search_read_text_ms_p50": float(np.median(reading_ms)),
        "search_read_text_ms_p90": float(np.percentile(reading_ms, 90)),
        "load_avg_1min": os.getloadavg()[0],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "corpus_ocr_fusion.json").write_text(json.dumps(result, indent=1))
    lines = [
        "# Reading the picture's text at search time (corpus_ocr_fusion)",
        "",
        f"{len(images)} question images (seeded sample, every category); 1-minute load average "
        f"{result['load_avg_1min']:.1f} on a shared 2-core machine.",
        "",
        f"* The visual match is in doubt (so the text is read) for {result['read_fraction']:.1%} of them.",
        f"* OCR pass (rapidocr-onnxruntime, 60 images): shipped settings {ms(shipped_ms)}; "
        f"the engine's defaults {ms(default_ms)}.",
        f"* Whole image search: visual only {ms(plain_ms)}; with `read_text=True` {ms(reading_ms)}.",
    ]
    (RESULTS / "corpus_ocr_fusion.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
