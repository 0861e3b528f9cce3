"""Measure the HTML trajectory viewer: file size (per 1,000 episodes) and render time.

    python benchmarks/viewer_size.py            # writes benchmarks/results/viewer_size.{json,md}
    python benchmarks/viewer_size.py --screenshot docs/images/viewer.png   # the README's screenshot

Two cases bracket real runs. "sample": real episodes of the built-in sample (oracle policy with and
without search, cycled to N episodes), whose 64 question images and 16 web thumbnails repeat, as the
same questions do across policies and as popular web images do. "unique images": the same records,
but every question image and every result thumbnail is a distinct photo-like picture (smooth random
colour fields plus noise, 512×384), the worst case for a dataset where nothing repeats. Each row
gives the page's size, its size per episode and per 1,000 episodes (the size a smaller ``--episodes``
run extrapolates to; images shared between episodes make the true figure for 1,000 a bit smaller).

``--screenshot PATH`` instead renders the sample's test split (both oracle policies) and saves a
Chromium screenshot of it (the README's picture).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from PIL import Image
from tqdm import tqdm

import mmsearch_env  # noqa: F401
from agents.scripted import OraclePolicy
from agents.viewer import QUESTION_IMAGE_PX, THUMBNAIL_PX, write_viewer

RESULTS = Path(__file__).parent / "results"


def save_image(image: Image.Image, folder: Path) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # fast: these files are only the viewer's input
    name = hashlib.sha256(buffer.getvalue()).hexdigest() + ".png"
    if not (folder / name).exists():
        (folder / name).write_bytes(buffer.getvalue())
    return name


def sample_records(episodes: int, images: Path, split: str | None = None) -> list[dict[str, Any]]:
    """Real episodes, records extended as the rollout engine extends them."""
    env = gym.make("MMSearch-v0", split=split)
    base = env.unwrapped
    policies = [OraclePolicy(base.examples, use_search=flag) for flag in (True, False)]
    records = []
    for n in tqdm(range(episodes), desc="episodes", leave=False):
        policy, index = policies[(n // len(base.examples)) % 2], n % len(base.examples)
        observation, info = env.reset(options={"index": index})
        while True:
            observation, _, terminated, truncated, info = env.step(policy.act(observation, info))
            if terminated or truncated:
                break
        record = base.episode_record().to_dict()
        for search, thumbs in zip(record["searches"], base.episode_images()["thumbnails"], strict=True):
            for result, thumb in zip(search["results"], thumbs, strict=True):
                result["thumbnail"] = save_image(thumb, images) if thumb is not None else None
        record.update(policy=policy.name, index=index, image=save_image(base.example.image, images))
        records.append(record)
    env.close()
    return records


def photo(rng: np.random.Generator) -> Image.Image:
    """A photo-like 512×384 picture: a smooth random colour field plus sensor-like noise."""
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((512, 384), Image.BICUBIC)
    noise = rng.normal(0, 12, (384, 512, 3))
    return Image.fromarray(np.clip(np.asarray(coarse, dtype=np.float64) + noise, 0, 255).astype(np.uint8))


def uniquify(records: list[dict[str, Any]], images: Path) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    out = json.loads(json.dumps(records))
    for record in tqdm(out, desc="unique images", leave=False):
        record["image"] = save_image(photo(rng), images)
        for search in record["searches"]:
            for result in search["results"]:
                if result.get("thumbnail"):
                    result["thumbnail"] = save_image(photo(rng), images)
    return out


def measure(name: str, records: list[dict[str, Any]], images: Path, out: Path) -> dict[str, Any]:
    start = time.perf_counter()
    write_viewer(records, out, images_dir=images)
    seconds = time.perf_counter() - start
    referenced = {r.get("image") for r in records} | {
        x.get("thumbnail") for r in records for s in r["searches"] for x in s["results"]
    }
    referenced.discard(None)
    size = out.stat().st_size
    return {
        "case": name,
        "episodes": len(records),
        "distinct_images": len(referenced),
        "html_mb": round(size / 1e6, 2),
        "kb_per_episode": round(size / 1e3 / len(records), 1),
        "mb_per_1000_episodes": round(size / 1e3 / len(records), 2),  # the same ratio as kB per episode
        "render_s": round(seconds, 2),
    }


def screenshot(path: Path, work: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("--screenshot needs chromium (apt-get install chromium)")
    images = work / "shot-images"
    images.mkdir()
    # The viewer orders episodes by (policy, index): the oracle without search (wrong answers) comes first.
    records = sample_records(32, images, split="test")
    html = write_viewer(records, work / "shot.html", images_dir=images)
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={work / 'p'}",
         f"--screenshot={path.resolve()}", "--window-size=1280,1400", html.resolve().as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--screenshot", type=Path, default=None, help="only save the README screenshot PNG here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.screenshot is not None:
            return screenshot(args.screenshot, work)
        (work / "sample").mkdir()
        (work / "unique").mkdir()
        records = sample_records(args.episodes, work / "sample")
        rows = [
            measure("sample", records, work / "sample", work / "sample.html"),
            measure("unique images", uniquify(records, work / "unique"), work / "unique", work / "unique.html"),
        ]
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "command": f"python benchmarks/viewer_size.py --episodes {args.episodes}",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "question_image_px": QUESTION_IMAGE_PX,
        "thumbnail_px": THUMBNAIL_PX,
    }
    (RESULTS / "viewer_size.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    lines = [
        "# HTML trajectory viewer: size and render time",
        "",
        f"`{meta['command']}` · Python {meta['python']} · {meta['machine']} · question images ≤ "
        f"{QUESTION_IMAGE_PX} px, thumbnails ≤ {THUMBNAIL_PX} px",
        "",
        "| case | episodes | distinct images | HTML (MB) | kB / episode | MB / 1,000 episodes | render (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r['case']} | {r['episodes']} | {r['distinct_images']} | {r['html_mb']} | {r['kb_per_episode']} | "
            f"{r['mb_per_1000_episodes']} | {r['render_s']} |"
            for r in rows
        ),
    ]
    (RESULTS / "viewer_size.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
