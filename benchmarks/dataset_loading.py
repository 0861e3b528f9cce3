"""Measure loading a large FVQA-schema parquet file: rows/s and peak memory, lazy vs eager.

    python benchmarks/dataset_loading.py                 # 20k rows; writes benchmarks/results/dataset_loading.{json,md}
    python benchmarks/dataset_loading.py --rows 2000     # a quick run

A parquet file in the released FVQA schema (REFERENCE.md §1) is generated with JPEG images (noise, so
they do not compress away), once with 100-row row groups (what ``datasets`` writes for image data) and
once as a single row group (what ``pandas.to_parquet`` writes by default). Each measurement runs in a
fresh subprocess so its peak RSS (``resource.getrusage``) is its own:

* ``load_dataset`` (lazy): the text columns are read, no image is read or decoded;
* the environment: ``gym.make(dataset=path)`` then ``reset`` on random questions (each decodes an image);
* a sequential pass decoding every image, one at a time (``example.image`` over the list);
* ``iter_examples`` streaming in record batches, decoding every image;
* the eager baseline this design avoids: ``pyarrow.parquet.read_table`` + decode every image into a list;
* ``rechunk_parquet``: rewriting a one-row-group file with 64-row groups for cheap random access.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parent.parent


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM), so the peak is this measurement's, not the imports'."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def generate(path: Path, rows: int, row_group_size: int, size: tuple[int, int], distinct: int = 256) -> None:
    """An FVQA-schema parquet file with ``rows`` rows (``distinct`` different noise JPEGs, cycled)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from mmsearch_env.data.loaders import fvqa_arrow_schema

    rng = np.random.default_rng(0)
    jpegs = []
    for _ in range(distinct):
        buffer = io.BytesIO()
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
        jpegs.append(buffer.getvalue())
    schema = fvqa_arrow_schema()
    with pq.ParquetWriter(path, schema, use_dictionary=["data_source", "category"]) as writer:
        for start in range(0, rows, row_group_size):
            batch = [
                {
                    "prompt": [{"content": f"<image>\nWhat is shown in picture number {i}?", "role": "user"}],
                    # bytes after the JPEG end marker are ignored by decoders: every row's bytes differ,
                    # so parquet cannot deduplicate the cycled images
                    "images": [{"bytes": jpegs[i % distinct] + f"row{i}".encode(), "path": None}],
                    "reward_model": {
                        "candidate_answers": json.dumps([f"alias {i}"]),
                        "ground_truth": f"answer {i}",
                        "style": "rule",
                    },
                    "data_source": "mmsearch_r1/fvqa_train",
                    "image_urls": None,
                    "data_id": f"fvqa_train_{i}",
                    "category": "search_required" if i % 3 else "search_free",
                }
                for i in range(start, min(rows, start + row_group_size))
            ]
            writer.write_table(pa.Table.from_pylist(batch, schema=schema), row_group_size=row_group_size)


# -- measurements (each in its own process) -------------------------------------------------------------
def measure(kind: str, path: str, samples: int) -> dict:
    import gymnasium as gym
    import pyarrow.parquet  # noqa: F401  (import cost is not the measurement's)
    from PIL import JpegImagePlugin  # noqa: F401

    import mmsearch_env  # noqa: F401
    from mmsearch_env.data import load_dataset
    from mmsearch_env.data.loaders import iter_examples

    _reset_peak()
    base_rss = _status_mb("VmRSS")
    t0 = time.perf_counter()
    if kind == "lazy_load":
        examples = load_dataset(path)
        n = len(examples)
    elif kind == "env_reset":
        env = gym.make("MMSearch-v0", dataset=path, search="disabled")
        made = time.perf_counter() - t0
        rng = random.Random(0)
        total = len(env.unwrapped.examples)
        t0 = time.perf_counter()
        for _ in range(samples):
            env.reset(options={"index": rng.randrange(total)})
        n = samples
        result_extra = {"make_s": round(made, 3)}
    elif kind == "sequential_decode":
        examples = load_dataset(path)
        for example in examples:
            example.image.load()
        n = len(examples)
    elif kind == "stream_decode":
        n = 0
        for n, example in enumerate(iter_examples(path, batch_size=256), start=1):  # noqa: B007
            example.image.load()
    elif kind == "rechunk":
        from mmsearch_env.data.loaders import rechunk_parquet

        dst = Path(path).with_name("rechunked.parquet")
        rechunk_parquet(path, dst)
        n = len(load_dataset(str(dst)))
        dst.unlink()
    elif kind == "eager_baseline":
        import pyarrow.parquet as pq
        from PIL import Image

        rows = pq.read_table(path).to_pylist()
        images = [Image.open(io.BytesIO(r["images"][0]["bytes"])).convert("RGB") for r in rows]
        n = len(images)
    else:
        raise SystemExit(f"unknown measurement {kind!r}")
    elapsed = time.perf_counter() - t0
    out = {"kind": kind, "rows": n, "seconds": round(elapsed, 3), "rows_per_s": round(n / elapsed, 1)}
    peak = _status_mb("VmHWM")
    out["base_rss_mb"] = round(base_rss, 1)
    out["peak_rss_mb"] = round(peak, 1)
    out["added_rss_mb"] = round(peak - base_rss, 1)
    if kind == "env_reset":
        out.update(result_extra)
    return out


def run_child(kind: str, path: Path, samples: int) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--file", str(path), "--samples", str(samples)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


LABELS = {
    "lazy_load": "load_dataset (lazy: text columns only)",
    "env_reset": "gym.make + random env.reset (decodes one image each)",
    "sequential_decode": "load_dataset + decode every image in order",
    "stream_decode": "iter_examples (streaming) + decode every image",
    "eager_baseline": "eager baseline: read_table + decode all images",
    "rechunk": "rechunk_parquet to 64-row groups (streamed)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--size", type=int, nargs=2, default=(224, 168), help="image width height")
    parser.add_argument("--samples", type=int, default=1000, help="random env resets")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--file", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.file, args.samples)))
        return

    from tqdm import tqdm

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        layouts = {"100-row groups": 100, "one row group": args.rows}
        plan = [
            ("100-row groups", k)
            for k in ("lazy_load", "env_reset", "sequential_decode", "stream_decode", "eager_baseline")
        ]
        plan += [("one row group", k) for k in ("lazy_load", "env_reset", "stream_decode", "rechunk")]
        files = {}
        for name, group in tqdm(layouts.items(), desc="generate"):
            files[name] = Path(tmp) / f"fvqa_{group}.parquet"
            generate(files[name], args.rows, group, tuple(args.size))
        sizes = {name: round(path.stat().st_size / 1e6, 1) for name, path in files.items()}
        for layout, kind in tqdm(plan, desc="measure"):
            row = run_child(kind, files[layout], args.samples)
            rows.append({"layout": layout, "what": LABELS[kind], **row})
    meta = {
        "command": f"python benchmarks/dataset_loading.py --rows {args.rows}",
        "rows": args.rows,
        "image_size": list(args.size),
        "file_mb": sizes,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dataset_loading.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2), encoding="utf-8")
    lines = [
        "# Loading a large FVQA-schema parquet file",
        "",
        f"`{meta['command']}` · {args.rows:,} rows, {args.size[0]}x{args.size[1]} JPEG images · files: "
        + ", ".join(f"{k} {v} MB" for k, v in sizes.items())
        + f" · Python {meta['python']} · {meta['machine']}, {meta['cpus']} CPUs (shared)",
        "",
        "Each row is its own process; *added RSS* = peak RSS minus RSS after imports.",
        "",
        "| layout | what | rows | seconds | rows/s | added RSS (MB) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['layout']} | {r['what']} | {r['rows']:,} | {r['seconds']} | {r['rows_per_s']:,.0f} | {r['added_rss_mb']} |"
        )
    (RESULTS / "dataset_loading.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
