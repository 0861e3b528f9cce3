"""Measure the embedded corpus search: quality under perturbations, recall, latency, load time, memory.

    python benchmarks/corpus_search.py               # writes benchmarks/results/corpus_search.{json,md}
    python benchmarks/corpus_search.py --images 200 --queries 500

Image search: corpus images (flags, outlines, logos, emoji) under each perturbation alone and two at a
time (what the question set uses); a hit is the right page — or a page whose image is pixel-identical
(France and its overseas regions share one flag). Text search: the question set's fact lookups (its
``text_query`` / ``query_template`` with the entity's title); recall@5 = the entity's page in the top 5,
answer@5 = the answer appears in the returned summaries. Latencies are whole ``image_search`` /
``text_search`` calls (thumbnails decoded, summaries written), one process, one thread; the thread's CPU
time is reported too, since wall-clock on a shared machine includes waiting for other processes.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

RESULTS = Path(__file__).parent / "results"

LOAD_CODE = """
import json, resource, sys, time
t0 = time.perf_counter()
import mmsearch_env
from mmsearch_env.search import make_search
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t1 = time.perf_counter()
search = make_search("corpus")
t2 = time.perf_counter()
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "rss_mb": rss1 / 1024, "load_rss_mb": (rss1 - rss0) / 1024,
                  "torch_imported": "torch" in sys.modules}))
"""


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="corpus images per perturbation")
    parser.add_argument("--queries", type=int, default=1000, help="fact-lookup queries (0 = all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-threads", type=int, default=1, help="onnxruntime threads (search_options)")
    args = parser.parse_args()

    load = json.loads(
        subprocess.run([sys.executable, "-c", LOAD_CODE], capture_output=True, text=True, check=True).stdout
    )

    from mmsearch_env.corpus.perturb import PERTURBATIONS, apply_perturbation, perturb
    from mmsearch_env.corpus.questions import load_question_rows
    from mmsearch_env.reward import normalize_answer
    from mmsearch_env.search import ImageSearchRequest, TextSearchRequest, make_search
    from mmsearch_env.search.corpus import corpus_stats

    search = make_search("corpus", {"image_threads": args.image_threads})
    corpus = search.corpus
    rng = np.random.default_rng(args.seed)
    searchable = np.array([i for i in range(corpus.n_images) if str(corpus.image_kind[i]) != "tile"])
    picks = rng.choice(searchable, size=min(args.images, len(searchable)), replace=False)
    image_rows, all_lat, cpu_lat = [], [], []
    for kind in (*PERTURBATIONS, "two random (question set)"):
        top1 = top5 = 0
        lat = []
        for n, image in enumerate(tqdm(picks, desc=f"image: {kind}", leave=False)):
            source = corpus.thumbnail(int(image))
            if kind in PERTURBATIONS:
                query = apply_perturbation(source, kind, np.random.default_rng(n))
            else:
                query = perturb(source, n)[0]
            started, cpu = time.perf_counter(), time.thread_time()
            response = search.image_search(ImageSearchRequest(image=query))
            lat.append(time.perf_counter() - started)
            cpu_lat.append(time.thread_time() - cpu)
            ranked = search.rank_images(query)  # same ranking, with image ids for the duplicate check
            groups = [corpus.dup_group[img] for _, img, _ in ranked]
            top1 += groups[0] == corpus.dup_group[image]
            top5 += corpus.dup_group[image] in groups
            assert len(response.results) == len(ranked)
        all_lat += lat
        image_rows.append({"perturbation": kind, "top1": top1 / len(picks), "top5": top5 / len(picks),
                           "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95)})  # fmt: skip

    rows = [r for r in load_question_rows() if "text_query" in r or "query_template" in r]
    if args.queries and len(rows) > args.queries:
        rows = [rows[i] for i in sorted(rng.choice(len(rows), size=args.queries, replace=False))]
    hits = answers = 0
    lat, text_cpu = [], []
    for row in tqdm(rows, desc="text", leave=False):
        page = corpus.page(row["entity"])
        query = row.get("text_query") or row["query_template"].format(e=page.title)
        started, cpu = time.perf_counter(), time.thread_time()
        response = search.text_search(TextSearchRequest(query))
        lat.append(time.perf_counter() - started)
        text_cpu.append(time.thread_time() - cpu)
        hits += page.url in [r.url for r in response.results]
        text = " " + " ".join(normalize_answer(r.summary or "") for r in response.results) + " "
        targets = [normalize_answer(a) for a in (row["answer"], *row["candidate_answers"])]
        answers += any(t and f" {t} " in text for t in targets)
    text_row = {"queries": len(rows), "recall_at_5": hits / len(rows), "answer_at_5": answers / len(rows),
                "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95), "cpu_p50_ms": pct(text_cpu, 50)}  # fmt: skip

    meta = {"python": platform.python_version(), "machine": platform.machine(), "cpus": __import__("os").cpu_count(),
            "images_per_perturbation": len(picks), "image_threads": args.image_threads, **corpus_stats()}  # fmt: skip
    image_all = {"p50_ms": pct(all_lat, 50), "p95_ms": pct(all_lat, 95), "cpu_p50_ms": pct(cpu_lat, 50)}
    RESULTS.mkdir(exist_ok=True)
    result = {"meta": meta, "load": load, "image": image_rows, "image_latency": image_all, "text": text_row}
    (RESULTS / "corpus_search.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    lines = [
        "# Embedded corpus search",
        "",
        f"`python benchmarks/corpus_search.py --images {args.images} --queries {args.queries} --image-threads "
        f"{args.image_threads}` · Python "
        f"{meta['python']} · {meta['machine']} · {meta['cpus']} CPUs (shared) · {meta['pages']} pages, "
        f"{meta['images']} images",
        "",
        f"Load (fresh process, `make_search('corpus')`): {load['load_s']:.2f} s after a {load['import_s']:.2f} s "
        f"import; peak RSS {load['rss_mb']:.0f} MB (+{load['load_rss_mb']:.0f} MB for the corpus); "
        f"torch imported: {load['torch_imported']}.",
        "",
        "| image perturbation | top-1 | top-5 | p50 (ms) | p95 (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in image_rows:
        lines.append(
            f"| {r['perturbation']} | {r['top1']:.3f} | {r['top5']:.3f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} |"
        )
    lines += [
        f"| **all** | | | **{image_all['p50_ms']:.1f}** | {image_all['p95_ms']:.1f} |",
        "",
        f"CPU time of the calling thread per query (robust to other processes on a shared box): image p50 "
        f"{image_all['cpu_p50_ms']:.1f} ms, text p50 {text_row['cpu_p50_ms']:.2f} ms. Latency columns are "
        "wall-clock; image latency with `--image-threads 1` counts onnxruntime's work on this thread.",
        "",
        "| text search | queries | recall@5 (page) | answer in top-5 summaries | p50 (ms) | p95 (ms) |",
        "|---|---:|---:|---:|---:|---:|",
        f"| fact lookups | {text_row['queries']} | {text_row['recall_at_5']:.3f} | {text_row['answer_at_5']:.3f} | "
        f"{text_row['p50_ms']:.2f} | {text_row['p95_ms']:.2f} |",
    ]
    (RESULTS / "corpus_search.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
