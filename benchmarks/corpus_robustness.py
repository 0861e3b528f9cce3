"""Held-out robustness of the embedded corpus search: inputs its generator never made.

    python benchmarks/corpus_robustness.py                      # writes benchmarks/results/corpus_robustness.{json,md}
    python benchmarks/corpus_robustness.py --images 100 --out before   # a named result (before/after)

Everything here is written independently of ``mmsearch_env/corpus/perturb.py`` and of the question
templates, so it measures how the search behaves on what users send, not on its own generator's output.

* **Image search**, top-1 per perturbation kind over a seeded sample of searchable corpus images (flags,
  outlines, logos, emoji, element tiles): a hit is the image's page, or a page whose image is
  pixel-identical. Kinds: ``clean``, ``screenshot`` (the picture at 30–50 % of a busy 640×480 canvas
  with text and boxes beside it), ``crop60`` (centre crop to 60 %), ``hflip``, ``rotate25`` (20–30°),
  ``grayscale``, ``downscale24`` (long side 24 px), ``jpeg10``, ``watermark`` (tiled translucent text),
  ``invert`` and ``combo`` (two of the others).
* **Text search**: free-form queries over the country and element facts — natural questions, bare
  keywords, misspellings (seeded character edits of the entity name), other names (exonyms, native
  names, abbreviations) and element-by-symbol questions. recall@5 = the entity's page in the top 5;
  answer@5 = the answer text appears in the five returned summaries.
* Latency: p50/p95 of whole ``image_search`` / ``text_search`` calls in this process, wall-clock and
  the calling thread's CPU time (on a shared machine wall-clock includes waiting for other processes;
  the 1-minute load average is recorded with the result).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import time
import unicodedata
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from mmsearch_env.corpus import load_corpus
from mmsearch_env.search.base import ImageSearchRequest, TextSearchRequest
from mmsearch_env.search.corpus import CorpusSearch

RESULTS = Path(__file__).parent / "results"
SEARCHABLE = ("flag", "outline", "logo", "emoji", "tile")

# -- image perturbations ---------------------------------------------------------------------------
WORDS = [
    "news",
    "price",
    "today",
    "search",
    "results",
    "share",
    "video",
    "login",
    "weather",
    "sports",
    "travel",
    "home",
    "about",
    "contact",
]


def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def screenshot(image: Image.Image, rng: random.Random) -> Image.Image:
    canvas = Image.new("RGB", (640, 480), tuple(rng.randrange(200, 256) for _ in range(3)))
    draw = ImageDraw.Draw(canvas)
    for _ in range(12):  # a busy page: coloured boxes, bars and text lines
        x, y = rng.randrange(640), rng.randrange(480)
        draw.rectangle([x, y, x + rng.randrange(20, 200), y + rng.randrange(8, 60)],
                       fill=tuple(rng.randrange(256) for _ in range(3)))  # fmt: skip
    frac = rng.uniform(0.30, 0.50)
    w = int(640 * frac)
    h = max(8, round(image.height * w / image.width))
    if h > 420:
        h, w = 420, max(8, round(image.width * 420 / image.height))
    x = rng.randrange(10, max(11, 640 - w - 200)) if rng.random() < 0.5 else rng.randrange(200, max(201, 640 - w - 10))
    y = rng.randrange(10, max(11, 480 - h - 10))
    canvas.paste(image.convert("RGB").resize((w, h), Image.Resampling.BILINEAR), (x, y))
    tx = x + w + 15 if x + w + 200 < 640 else 10
    for line in range(8):
        words = " ".join(rng.choice(WORDS) for _ in range(3))
        draw.text((tx, 20 + line * 28), words, fill=(20, 20, 20), font=_font(16))
    return canvas


def centre_crop(image: Image.Image, keep: float = 0.6) -> Image.Image:
    w, h = image.size
    cw, ch = max(4, round(w * keep)), max(4, round(h * keep))
    return image.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))


def rotate(image: Image.Image, rng: random.Random) -> Image.Image:
    angle = rng.uniform(20, 30) * rng.choice((-1, 1))
    return image.convert("RGB").rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(255, 255, 255))


def downscale(image: Image.Image) -> Image.Image:
    scale = 24 / max(image.size)
    return image.resize((max(2, round(image.width * scale)), max(2, round(image.height * scale))), Image.Resampling.BOX)


def jpeg(image: Image.Image, quality: int = 10) -> Image.Image:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def watermark(image: Image.Image, rng: random.Random) -> Image.Image:
    base = image.convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    step = max(20, base.width // 4)
    for y in range(0, base.height, step // 2):
        for x in range(-step, base.width, step):
            draw.text((x + (y // 2) % step, y), "SAMPLE", fill=(255, 255, 255, 140), font=_font(max(10, step // 4)))
    return Image.alpha_composite(base, layer.rotate(rng.uniform(-30, 30))).convert("RGB")


def invert(image: Image.Image) -> Image.Image:
    return ImageOps.invert(image.convert("RGB"))


SINGLE = {
    "clean": lambda im, rng: im,
    "screenshot": screenshot,
    "crop60": lambda im, rng: centre_crop(im, 0.6),
    "hflip": lambda im, rng: ImageOps.mirror(im),
    "rotate25": rotate,
    "grayscale": lambda im, rng: ImageOps.grayscale(im).convert("RGB"),
    "downscale24": lambda im, rng: downscale(im),
    "jpeg10": lambda im, rng: jpeg(im),
    "watermark": watermark,
    "invert": lambda im, rng: invert(im),
}
COMBINABLE = ("crop60", "hflip", "rotate25", "grayscale", "jpeg10", "watermark", "downscale24")


def perturb_kind(kind: str, image: Image.Image, rng: random.Random) -> Image.Image:
    if kind == "combo":
        a, b = rng.sample(COMBINABLE, 2)
        return SINGLE[b](SINGLE[a](image, rng), rng)
    return SINGLE[kind](image, rng)


# -- free-form text queries ------------------------------------------------------------------------
#: other names users type: exonym or native name or abbreviation -> corpus title
OTHER_NAMES = {
    "Burma": "Myanmar", "DRC": "DR Congo", "Congo-Kinshasa": "DR Congo", "Deutschland": "Germany",
    "Holland": "Netherlands", "Persia": "Iran", "Nippon": "Japan", "Cote d'Ivoire": "Ivory Coast",
    "Czech Republic": "Czechia", "Swaziland": "Eswatini", "East Timor": "Timor-Leste", "Cabo Verde": "Cape Verde",
    "Great Britain": "United Kingdom", "UK": "United Kingdom", "USA": "United States", "America": "United States",
    "Turkey": "Türkiye", "Hellas": "Greece", "Espana": "Spain", "Suomi": "Finland", "Sverige": "Sweden",
    "Brasil": "Brazil", "Macedonia": "North Macedonia", "UAE": "United Arab Emirates", "Hrvatska": "Croatia",
    "Magyarorszag": "Hungary", "Polska": "Poland", "Osterreich": "Austria", "Schweiz": "Switzerland",
    "Norge": "Norway", "Danmark": "Denmark", "Eire": "Ireland", "Italia": "Italy", "Rossiya": "Russia",
    "Republic of Korea": "South Korea", "Korea South": "South Korea", "North Korea DPRK": "North Korea",
    "Vatican": "Vatican City", "Holy See": "Vatican City", "PNG": "Papua New Guinea", "KSA": "Saudi Arabia",
    "Kampuchea": "Cambodia", "Ceylon": "Sri Lanka", "Zaire": "DR Congo", "Siam": "Thailand",
}  # fmt: skip
NATURAL = {
    "capital": ["what's the capital city of {e}", "capital of {e}?", "which city is {e}'s capital"],
    "currency": ["what money do they use in {e}", "{e} currency", "what currency does {e} use"],
    "calling_code": ["what is the phone code for {e}", "dialing code to call {e}", "{e} country calling code"],
    "demonym": ["what do you call someone from {e}", "nationality of people from {e}", "{e} people are called what"],
    "language": ["what language do they speak in {e}", "languages spoken in {e}", "{e} official language"],
    "tld": ["what is the web domain of {e}", "{e} internet domain"],
}
KEYWORDS = {"capital": "{e} capital", "currency": "{e} money", "calling_code": "{e} phone code",
            "demonym": "{e} nationality", "language": "{e} language", "tld": "{e} domain"}  # fmt: skip
ELEMENT_NATURAL = ["what is the atomic number of {e}", "{e} atomic weight", "when was {e} discovered",
                   "which period is {e} in", "{e} element symbol"]  # fmt: skip


def answer_of(facts: dict, fact: str) -> str | None:
    value = {"capital": (facts.get("capital") or [None])[0], "currency": (facts.get("currency") or [{}])[0].get("name"),
             "calling_code": facts.get("calling_code"), "demonym": facts.get("demonym"),
             "language": (facts.get("languages") or [None])[0], "tld": (facts.get("tld") or [None])[0]}[fact]  # fmt: skip
    return value or None


def misspell(word: str, rng: random.Random) -> str:
    """One or two seeded edits (drop, swap, double, replace) inside a word of 5+ letters."""
    letters = list(word)
    for _ in range(1 if len(word) < 9 else 2):
        i = rng.randrange(1, len(letters) - 1)
        op = rng.choice(("drop", "swap", "double", "replace"))
        if op == "drop":
            del letters[i]
        elif op == "swap":
            letters[i], letters[i + 1 if i + 1 < len(letters) else i - 1] = (
                letters[i + 1 if i + 1 < len(letters) else i - 1],
                letters[i],
            )
        elif op == "double":
            letters.insert(i, letters[i])
        else:
            letters[i] = rng.choice("aeiou" if letters[i] in "aeiou" else "bcdfghklmnprst")
    return "".join(letters)


def text_queries(corpus, rng: random.Random) -> list[dict]:
    by_title = {p.title: i for i, p in enumerate(corpus.pages) if p.kind in ("country", "element")}
    countries = [i for i, p in enumerate(corpus.pages) if p.kind == "country" and p.facts.get("independent")]
    elements = [i for i, p in enumerate(corpus.pages) if p.kind == "element"]
    out: list[dict] = []
    for i in rng.sample(countries, 80):
        p = corpus.pages[i]
        facts = [f for f in NATURAL if answer_of(p.facts, f)]
        fact = rng.choice(facts)
        out.append({"kind": "natural", "query": rng.choice(NATURAL[fact]).format(e=p.title), "page": i,
                    "answer": answer_of(p.facts, fact)})  # fmt: skip
        fact = rng.choice(facts)
        out.append({"kind": "keywords", "query": KEYWORDS[fact].format(e=p.title).lower(), "page": i,
                    "answer": answer_of(p.facts, fact)})  # fmt: skip
        long_words = [w for w in re.findall(r"\w+", p.title) if len(w) >= 5]
        if long_words:
            fact = rng.choice(facts)
            name = p.title.replace(long_words[0], misspell(long_words[0], rng))
            out.append({"kind": "misspelling", "query": rng.choice(NATURAL[fact]).format(e=name), "page": i,
                        "answer": answer_of(p.facts, fact)})  # fmt: skip
    for other, title in OTHER_NAMES.items():
        p = corpus.pages[by_title[title]]
        fact = rng.choice([f for f in NATURAL if answer_of(p.facts, f)])
        out.append({"kind": "other_name", "query": rng.choice(NATURAL[fact]).format(e=other),
                    "page": by_title[title], "answer": answer_of(p.facts, fact)})  # fmt: skip
    for i in rng.sample(elements, 60):
        p = corpus.pages[i]
        sym = p.facts["symbol"]
        q = rng.choice([f"what element has the symbol {sym}", f"which element is {sym}", f"element with symbol {sym}"])
        out.append({"kind": "element_symbol", "query": q, "page": i, "answer": p.title})
        q = rng.choice(ELEMENT_NATURAL).format(e=p.title if rng.random() < 0.6 else misspell(p.title, rng))
        out.append({"kind": "element_natural", "query": q, "page": i, "answer": None})
    return out


def norm(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text.lower()).encode("ascii", "ignore").decode("ascii")
    return " " + " ".join(t.rstrip(".") for t in re.findall(r"[a-z0-9+.]+", folded)) + " "


# -- runs -------------------------------------------------------------------------------------------
def run_images(search: CorpusSearch, corpus, n: int, seed: int) -> tuple[dict, list[float]]:
    rng = random.Random(seed)
    kinds = np.asarray([str(k) for k in corpus.image_kind])
    pool = [i for i in range(corpus.n_images) if kinds[i] in SEARCHABLE]
    sample = sorted(rng.sample(pool, n))
    groups = corpus.dup_group
    page_groups: dict[int, set[int]] = {}
    for img in range(corpus.n_images):
        page_groups.setdefault(int(corpus.image_page[img]), set()).add(int(groups[img]))
    per_kind: dict[str, dict] = {}
    latencies: list[float] = []
    for kind in (*SINGLE, "combo"):
        hits_by_src: dict[str, list[int]] = {}
        for img in sample:
            query = perturb_kind(kind, corpus.thumbnail(img), random.Random(f"{seed}-{kind}-{img}"))
            t0, c0 = time.perf_counter(), time.thread_time()
            response = search.image_search(ImageSearchRequest(query))
            latencies.append((time.perf_counter() - t0, time.thread_time() - c0))
            top = response.results[0].url if response.results else None
            page = corpus.pages[int(corpus.image_page[img])]
            ok = top == page.url
            if not ok and top is not None:
                top_page = next(i for i, p in enumerate(corpus.pages) if p.url == top) if top else -1
                ok = int(groups[img]) in page_groups.get(top_page, set())
            hits_by_src.setdefault(str(kinds[img]), []).append(int(ok))
        allhits = [h for v in hits_by_src.values() for h in v]
        per_kind[kind] = {
            "top1": float(np.mean(allhits)),
            **{f"top1_{k}": float(np.mean(v)) for k, v in sorted(hits_by_src.items())},
        }
    return per_kind, latencies


def run_text(search: CorpusSearch, corpus, seed: int) -> tuple[dict, list[float], list[dict]]:
    queries = text_queries(corpus, random.Random(seed))
    stats: dict[str, dict[str, list[int]]] = {}
    latencies: list[float] = []
    failures = []
    for q in queries:
        t0, c0 = time.perf_counter(), time.thread_time()
        response = search.text_search(TextSearchRequest(q["query"]))
        latencies.append((time.perf_counter() - t0, time.thread_time() - c0))
        urls = [r.url for r in response.results]
        hit = corpus.pages[q["page"]].url in urls
        s = stats.setdefault(q["kind"], {"recall": [], "answer": []})
        s["recall"].append(int(hit))
        if q["answer"]:
            found = norm(q["answer"]) in norm(" ".join(r.summary or "" for r in response.results))
            s["answer"].append(int(found))
            if not found:
                failures.append({**q, "why": "answer" if hit else "recall", "top": [r.title for r in response.results]})
        elif not hit:
            failures.append({**q, "why": "recall", "top": [r.title for r in response.results]})
    out = {k: {"n": len(v["recall"]), "recall5": float(np.mean(v["recall"])),
               "answer5": float(np.mean(v["answer"])) if v["answer"] else None} for k, v in stats.items()}  # fmt: skip
    allr = [x for v in stats.values() for x in v["recall"]]
    alla = [x for v in stats.values() for x in v["answer"]]
    out["all"] = {"n": len(allr), "recall5": float(np.mean(allr)), "answer5": float(np.mean(alla))}
    return out, latencies, failures


def timing(latencies: list[tuple[float, float]]) -> dict[str, float]:
    wall = np.asarray([w for w, _ in latencies]) * 1000
    cpu = np.asarray([c for _, c in latencies]) * 1000
    return {"p50": float(np.percentile(wall, 50)), "p95": float(np.percentile(wall, 95)),
            "cpu_p50": float(np.percentile(cpu, 50)), "cpu_p95": float(np.percentile(cpu, 95))}  # fmt: skip


def ms(t: dict[str, float]) -> str:
    return (f"wall p50 {t['p50']:.2f} ms, p95 {t['p95']:.2f} ms; thread CPU p50 {t['cpu_p50']:.2f} ms, "
            f"p95 {t['cpu_p95']:.2f} ms")  # fmt: skip


def fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="corpus images per perturbation kind")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default="corpus_robustness", help="result file stem under benchmarks/results")
    parser.add_argument("--skip-images", action="store_true")
    parser.add_argument("--skip-text", action="store_true")
    parser.add_argument(
        "--search-options", default="{}", help="CorpusSearch options as JSON, e.g. '{\"read_text\": true}'"
    )
    args = parser.parse_args()
    corpus = load_corpus()
    options = json.loads(args.search_options)
    search = CorpusSearch(**options)
    search.text_search(TextSearchRequest("warm up"))
    text, text_lat, failures = ({}, [], []) if args.skip_text else run_text(search, corpus, args.seed)
    result: dict = {"search_options": options, "seed": args.seed, "load_avg_1min": os.getloadavg()[0]}
    if text:
        result |= {"text": text, "text_ms": timing(text_lat)}
    if not args.skip_images:
        images, image_lat = run_images(search, corpus, args.images, args.seed)
        result["image"] = images
        # the mean over perturbation kinds (the unperturbed "clean" row is a sanity check, not a kind)
        result["image_mean_top1"] = float(np.mean([v["top1"] for k, v in images.items() if k != "clean"]))
        result["image_ms"] = timing(image_lat)
    result["text_failures"] = failures[:60]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    lines = [
        f"# Corpus search robustness ({args.out})",
        "",
        f"seed {args.seed}, {args.images} images per kind, search options {json.dumps(options)}",
        "",
    ]
    if text:
        lines += ["| text kind | n | recall@5 | answer@5 |", "|---|---|---|---|"]
        for k, v in text.items():
            lines.append(f"| {k} | {v['n']} | {v['recall5']:.3f} | {fmt(v['answer5'])} |")
        lines += ["", "text " + ms(result["text_ms"]), ""]
    if "image" in result:
        lines += ["| image kind | top-1 | per source |", "|---|---|---|"]
        for k, v in result["image"].items():
            per = ", ".join(f"{s[5:]} {x:.2f}" for s, x in v.items() if s != "top1")
            lines.append(f"| {k} | {v['top1']:.3f} | {per} |")
        lines += ["", f"mean image top-1 {result['image_mean_top1']:.3f}; image " + ms(result["image_ms"])]
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
