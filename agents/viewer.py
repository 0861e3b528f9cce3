"""A self-contained HTML viewer for rollout trajectories (one file, no network, all text escaped).

    mmsearch view runs/trajectories.jsonl --out viewer.html

or from Python::

    from agents.viewer import write_viewer
    write_viewer("runs/trajectories.jsonl", Path("viewer.html"))

Input: the rollout engine's trajectory JSONL, one line per finished episode — the dict of
:meth:`mmsearch_env.env.MMSearchEnv.episode_record` (``example_id``, ``question``, ``ground_truth``,
``candidate_answers``, ``category``, ``search_need``, ``turns``, ``actions``, ``searches``,
``end_reason``, ``reward``) plus the engine's optional fields: ``policy``, ``index``, ``split``,
``reward_total``, ``info`` (the terminal info), ``image`` (a file name in the images folder, by
default ``images/`` next to the JSONL), a ``thumbnail`` file name per search result, ``usage`` and
``latency_s``. Every field but the first few is optional and a missing or mistyped one renders as
"—": a viewer must show a broken run, not refuse it.

Output: one HTML file that opens from disk in any browser. Images are downscaled (question images
to 256 px, result thumbnails to 96 px), encoded as data URLs and stored once each as a CSS class, so
an image that many episodes share (the same web thumbnail, the same question under several policies)
costs its bytes once. A small inline script filters episodes by policy, outcome, category,
search need and end reason, and by free text; the filters live in the URL's fragment, so
``viewer.html#policy=oracle-plan&outcome=wrong&q=capital`` opens (and bookmarks) a filtered view.

Security: every string from the file — model turns, web titles, URLs, summaries, even ids and
category names — is untrusted. Each one is HTML-escaped (``html.escape(..., quote=True)``) wherever
it lands, text or attribute; only ``http(s)`` URLs become links (``rel="noopener noreferrer"``); the
JSON the script reads has ``<``, ``>`` and ``&`` escaped so no value can close the ``<script>``
element; no value is ever passed to ``innerHTML``. Behind that, a Content-Security-Policy allows no
network loads at all and runs only the viewer's own script (by its SHA-256 hash), so markup that
slipped through escaping still could not execute or phone home.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import html
import io
import json
import logging
import math
import numbers
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from mmsearch_env.errors import ConfigError, DatasetError
from mmsearch_env.text import clean_text

__all__ = ["load_trajectories", "render_viewer", "write_viewer"]

logger = logging.getLogger(__name__)

#: Long side, in pixels, of the question image and of result thumbnails in the page.
QUESTION_IMAGE_PX = 256
THUMBNAIL_PX = 96
#: Longest assistant turn or summary shown in full; the rest is cut with a note (a 1 MB hostile turn
#: would otherwise make a 1 MB page per episode).
MAX_TEXT_CHARS = 20_000
#: Image files larger than this are not decoded (they are the engine's own PNGs, normally a few kB).
MAX_IMAGE_BYTES = 50_000_000
#: Episodes rendered with their details open; longer files start collapsed (one summary line each).
OPEN_EPISODES = 50

# An image reference must be a bare file name inside the images folder: no separators, no "..".
_IMAGE_NAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,254}$")
# Only these become clickable links. No whitespace or control characters: browsers strip some of
# them while parsing a URL, which is how "java\tscript:" tricks work.
_LINK_RE = re.compile(r"^https?://[^\s\x00-\x1f\x7f]+$", re.IGNORECASE)
#: The filter facets, in the order of the filter bar: (key in the facet JSON, label).
FACETS = (
    ("policy", "policy"),
    ("outcome", "outcome"),
    ("category", "category"),
    ("search_need", "search need"),
    ("end_reason", "end reason"),
)
_NONE = "—"


# ---------------------------------------------------------------------------------------------------
# public API


def load_trajectories(path: str | Path) -> list[dict[str, Any]]:
    """Read a trajectory JSONL file (:func:`agents.rollout.read_trajectories`), which must exist.

    A last line that is not valid JSON is what an interrupted writer leaves behind: it is skipped with
    a warning. Any other bad line raises :class:`DatasetError` naming it.
    """
    from agents.rollout import read_trajectories

    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"trajectory file {str(path)!r} does not exist; give the JSONL that `mmsearch eval` (or the "
            "rollout engine) wrote"
        )
    return read_trajectories(path)


def write_viewer(
    trajectories: str | Path | Iterable[Mapping[str, Any]],
    out_html: str | Path,
    *,
    images_dir: str | Path | None = None,
    title: str = "MMSearch-v0 trajectories",
    max_episodes: int | None = None,
) -> Path:
    """Write the self-contained HTML viewer for ``trajectories`` to ``out_html``; returns its path.

    Args:
        trajectories: a trajectory JSONL path, or the episode records themselves.
        out_html: the HTML file to write (its folder is created).
        images_dir: where the ``image`` / ``thumbnail`` file names live; default ``images/`` next
            to the JSONL (records given as dicts have no images unless this is set). A missing or
            unreadable image renders as a placeholder.
        title: the page title.
        max_episodes: render only the first this many episodes (the header says how many were left out).
    """
    if isinstance(trajectories, (str, Path)):
        records = load_trajectories(trajectories)
        if images_dir is None:
            images_dir = Path(trajectories).parent / "images"
    else:
        records = list(trajectories)
    page = render_viewer(records, images_dir=images_dir, title=title, max_episodes=max_episodes)
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    logger.info(
        "wrote %s (%d episodes, %.1f kB)", out, min(len(records), max_episodes or len(records)), len(page) / 1e3
    )
    return out


def render_viewer(
    records: Iterable[Mapping[str, Any]],
    *,
    images_dir: str | Path | None = None,
    title: str = "MMSearch-v0 trajectories",
    max_episodes: int | None = None,
) -> str:
    """The viewer's HTML as a string (see :func:`write_viewer`)."""
    if max_episodes is not None and (
        isinstance(max_episodes, bool) or not isinstance(max_episodes, numbers.Integral) or max_episodes < 1
    ):
        raise ConfigError(f"max_episodes must be a positive int or None, got {max_episodes!r}")
    records = list(records)
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise DatasetError(f"trajectory {i}: expected a dict (an episode record), got {type(record).__name__}")
    total = len(records)
    if max_episodes is not None:
        records = records[:max_episodes]
    images = _Images(Path(images_dir) if images_dir is not None else None)
    if images.folder is not None:
        images.preload((key for record in records for key in _image_keys(record)), progress=len(records) >= 200)
    episodes = [_Episode.from_record(record, i) for i, record in enumerate(records)]
    articles = [_render_episode(ep, images, open_=len(episodes) <= OPEN_EPISODES) for ep in episodes]
    facets = [{key: getattr(ep, key) for key, _ in FACETS} for ep in episodes]
    body = "\n".join(
        [
            f"<header><h1>{_esc(title)}</h1>",
            _render_counts(len(episodes), total, images),
            _render_policy_table(episodes),
            "</header>",
            _render_filters(episodes),
            '<main id="episodes">',
            *articles,
            "</main>" if episodes else '<p class="empty">No episodes in this file.</p></main>',
            f'<script type="application/json" id="mv-facets">{_json_for_script(facets)}</script>',
            f"<script>{_SCRIPT}</script>",
        ]
    )
    csp = (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src '{_script_hash()}'; base-uri 'none'; form-action 'none'"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_esc(csp)}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}\n{images.css()}</style>\n</head>\n<body>\n"
        f"{body}\n</body></html>\n"
    )


# ---------------------------------------------------------------------------------------------------
# the episode, read tolerantly


@dataclass
class _Episode:
    position: int
    number: int
    record: Mapping[str, Any]
    policy: str
    outcome: str  # "correct" | "wrong" | "unknown"
    category: str
    search_need: str
    end_reason: str
    reward: dict[str, Any]
    reward_total: float | None

    @classmethod
    def from_record(cls, record: Mapping[str, Any], position: int) -> _Episode:
        reward = _as_dict(record.get("reward_parts"))
        info = _as_dict(record.get("info"))
        total = _num(record.get("reward"))
        if total is None:
            total = _num(reward.get("reward"))
        if total is None:
            total = _num(_as_dict(info.get("reward_parts")).get("reward"))
        if isinstance(info.get("correct"), bool):
            outcome = "correct" if info["correct"] else "wrong"
        elif _num(reward.get("accuracy")) is not None:
            outcome = "correct" if _num(reward.get("accuracy")) >= 1.0 else "wrong"
        else:
            outcome = "unknown"
        index = record.get("index")
        number = int(index) if isinstance(index, int) and not isinstance(index, bool) else position
        return cls(
            position=position,
            number=number,
            record=record,
            policy=_label(record.get("policy")),
            outcome=outcome,
            category=_label(record.get("category")),
            search_need=_label(record.get("search_need")),
            end_reason=_label(record.get("end_reason") or info.get("end_reason")),
            reward=reward,
            reward_total=total,
        )


def _image_keys(record: Mapping[str, Any]) -> Iterable[tuple[Any, int]]:
    """The ``(file name, size)`` of every image an episode shows, in page order."""
    yield record.get("image"), QUESTION_IMAGE_PX
    for search in _as_list(record.get("searches")):
        for result in _as_list(_as_dict(search).get("results")):
            yield _as_dict(result).get("thumbnail"), THUMBNAIL_PX


def _as_dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else []


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _text(value: Any) -> str:
    """Any value as display text: lone surrogates and control characters removed (the file is UTF-8)."""
    return "" if value is None else clean_text(value if isinstance(value, str) else str(value))


def _label(value: Any) -> str:
    """A facet value: short, single-line text; missing values share one label."""
    text = " ".join(_text(value).split())[:200]
    return text or _NONE


def _esc(value: Any) -> str:
    """The one way untrusted text enters the page: cleaned, then escaped for text *and* attributes."""
    return html.escape(_text(value), quote=True)


def _esc_long(value: Any, limit: int = MAX_TEXT_CHARS) -> str:
    text = _text(value)
    if len(text) <= limit:
        return html.escape(text, quote=True)
    cut = html.escape(text[:limit], quote=True)
    return f'{cut}<span class="cut">… ({len(text) - limit:,} more characters not shown)</span>'


def _fmt(value: Any, digits: int = 4) -> str:
    number = _num(value)
    return _NONE if number is None else f"{round(number, digits):g}"


def _seconds(value: float) -> str:
    return f"{value:.2f} s" if value >= 1.0 else f"{value * 1000:.2f} ms"


def _json_for_script(value: Any) -> str:
    """JSON that is safe inside ``<script>``: no ``<``, ``>`` or ``&`` (so no ``</script>``, no ``<!--``)."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _link(url: Any, label: Any) -> str:
    """A link for http(s) URLs; anything else (``javascript:``, ``data:``, relative) is plain text."""
    text = _text(url).strip()
    if _LINK_RE.match(text):
        return f'<a href="{_esc(text)}" rel="noopener noreferrer" target="_blank">{_esc(label)}</a>'
    return f'<span class="nolink" title="not an http(s) link">{_esc(label)}</span>'


# ---------------------------------------------------------------------------------------------------
# images: decoded once, downscaled, one CSS class each


class _Images:
    def __init__(self, folder: Path | None):
        self.folder = folder.resolve() if folder is not None else None
        self._classes: dict[tuple[str, int], str | None] = {}
        self._rules: list[str] = []
        self.shown = 0
        self.missing = 0

    def tag(self, name: Any, max_px: int, label: str, kind: str) -> str:
        """An element showing image file ``name`` (≤ ``max_px``), or a placeholder saying why not."""
        if name is None or name == "":
            return ""
        cls = self._class_for(str(name), max_px) if isinstance(name, str) else None
        if cls is None:
            self.missing += 1
            return f'<span class="noimg {kind}" title="{_esc(name)}">image missing</span>'
        self.shown += 1
        return f'<span class="img {kind} {cls}" role="img" aria-label="{_esc(label)}" title="{_esc(label)}"></span>'

    def preload(self, keys: Iterable[tuple[Any, int]], progress: bool) -> None:
        """Decode and encode every ``(name, max_px)`` up front, on threads (PIL releases the GIL)."""
        todo = list(dict.fromkeys(k for k in keys if isinstance(k[0], str) and k[0] and k not in self._classes))
        if not todo:
            return
        workers = max(1, min(8, os.cpu_count() or 1))
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            encoded = list(
                tqdm(
                    pool.map(lambda key: self._encode(*key), todo),
                    total=len(todo),
                    desc="viewer images",
                    disable=not progress,
                    leave=False,
                )
            )
        for key, result in zip(todo, encoded, strict=True):
            self._store(key, result)

    def css(self) -> str:
        return "\n".join(self._rules)

    @property
    def unique(self) -> int:
        return len(self._rules)

    def _class_for(self, name: str, max_px: int) -> str | None:
        key = (name, max_px)
        if key not in self._classes:
            self._store(key, self._encode(name, max_px))
        return self._classes[key]

    def _store(self, key: tuple[str, int], encoded: tuple[str, int, int] | None) -> None:
        if encoded is None:
            self._classes[key] = None
            return
        data_url, width, height = encoded
        cls = f"i{len(self._rules)}"
        # data_url is base64 and the sizes are ints: nothing from the file reaches the CSS as text.
        self._rules.append(f'.{cls}{{background-image:url("{data_url}");width:{width}px;height:{height}px}}')
        self._classes[key] = cls

    def _encode(self, name: str, max_px: int) -> tuple[str, int, int] | None:
        if self.folder is None or not _IMAGE_NAME_RE.match(name) or ".." in name:
            return None
        path = self.folder / name
        try:
            if not path.is_file() or path.stat().st_size > MAX_IMAGE_BYTES:
                return None
            with Image.open(path) as image:
                image.draft("RGB", (max_px, max_px))
                image.thumbnail((max_px, max_px))
                has_alpha = image.mode in ("RGBA", "LA") or "transparency" in image.info
                image = image.convert("RGBA" if has_alpha else "RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            logger.warning("viewer: cannot read image %s (%s)", path, exc)
            return None
        # Flags, charts and screenshots (few colours) are smaller as PNG, photos as JPEG: keep whichever
        # is smaller. A photo is not even tried as PNG, whose encoder is slow on noisy pixels.
        candidates = []
        if has_alpha or image.getcolors(1024) is not None:
            png = io.BytesIO()
            image.save(png, format="PNG", optimize=True)
            candidates.append(("image/png", png.getvalue()))
        if not has_alpha:
            jpeg = io.BytesIO()
            image.save(jpeg, format="JPEG", quality=75, optimize=True)
            candidates.append(("image/jpeg", jpeg.getvalue()))
        mime, data = min(candidates, key=lambda c: len(c[1]))
        return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}", image.width, image.height


# ---------------------------------------------------------------------------------------------------
# rendering


def _render_counts(shown: int, total: int, images: _Images) -> str:
    parts = [f"{shown} episode{'s' if shown != 1 else ''}"]
    if shown < total:
        parts.append(f"first {shown} of {total} in the file")
    parts.append(f"{images.unique} distinct images")
    if images.missing:
        parts.append(f"{images.missing} missing")
    return f'<p class="counts">{" · ".join(parts)}</p>'


def _render_policy_table(episodes: list[_Episode]) -> str:
    by_policy: dict[str, list[_Episode]] = {}
    for ep in episodes:
        by_policy.setdefault(ep.policy, []).append(ep)
    rows = []
    for policy, eps in sorted(by_policy.items()):
        known = [ep for ep in eps if ep.outcome != "unknown"]
        accuracy = sum(ep.outcome == "correct" for ep in known) / len(known) if known else None
        rewards = [ep.reward_total for ep in eps if ep.reward_total is not None]
        searched = sum(bool(_as_list(ep.record.get("searches"))) for ep in eps) / len(eps)
        rows.append(
            f"<tr><td>{_esc(policy)}</td><td>{len(eps)}</td>"
            f"<td>{_NONE if accuracy is None else f'{accuracy:.3f}'}</td>"
            f"<td>{_NONE if not rewards else f'{sum(rewards) / len(rewards):.3f}'}</td>"
            f"<td>{searched:.3f}</td></tr>"
        )
    return (
        '<table class="policies"><thead><tr><th>policy</th><th>episodes</th><th>accuracy</th>'
        "<th>mean reward</th><th>episodes with a search</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _render_filters(episodes: list[_Episode]) -> str:
    controls = []
    for key, label in FACETS:
        counts: dict[str, int] = {}
        for ep in episodes:
            counts[getattr(ep, key)] = counts.get(getattr(ep, key), 0) + 1
        options = "".join(
            f'<option value="{_esc(value)}">{_esc(value)} ({n})</option>' for value, n in sorted(counts.items())
        )
        controls.append(
            f'<label>{label} <select data-facet="{key}"><option value="">all</option>{options}</select></label>'
        )
    return (
        '<nav class="filters">'
        + "".join(controls)
        + '<label>text <input type="search" id="mv-q" placeholder="question, turn, result…"></label>'
        + '<button type="button" id="mv-open">expand all</button>'
        + '<button type="button" id="mv-close">collapse all</button>'
        + '<span id="mv-count"></span></nav>'
    )


def _render_episode(ep: _Episode, images: _Images, *, open_: bool) -> str:
    record = ep.record
    badge = {"correct": "✓ correct", "wrong": "✗ wrong", "unknown": "? unscored"}[ep.outcome]
    summary = (
        f'<summary><span class="badge {ep.outcome}">{badge}</span> '
        f'<span class="num">#{ep.number}</span> '
        f'<span class="policy">{_esc(ep.policy)}</span> '
        f'<span class="id">{_esc(record.get("example_id") or _NONE)}</span> '
        f'<span class="tag">{_esc(ep.category)}</span> <span class="tag">need: {_esc(ep.search_need)}</span> '
        f'<span class="tag">end: {_esc(ep.end_reason)}</span> '
        f'<span class="total">reward {_fmt(ep.reward_total)}</span></summary>'
    )
    question_image = images.tag(record.get("image"), QUESTION_IMAGE_PX, "question image", "qimg")
    candidates = [c for c in _as_list(record.get("candidate_answers")) if c is not None]
    answer = ep.reward.get("answer", _as_dict(record.get("info")).get("answer"))
    facts = [
        f'<dt>ground truth</dt><dd class="truth">{_esc(record.get("ground_truth") or _NONE)}</dd>',
        f"<dt>also accepted</dt><dd>{', '.join(_esc(c) for c in candidates) if candidates else _NONE}</dd>",
        f'<dt>answer given</dt><dd class="answer {ep.outcome}">'
        f"{_esc(answer) if answer is not None else '<i>no answer</i>'}</dd>",
    ]
    if record.get("split") is not None:
        facts.append(f"<dt>split</dt><dd>{_esc(record['split'])}</dd>")
    question = (
        '<div class="question">'
        + (question_image or '<span class="noimg qimg">no image</span>')
        + f'<div><p class="qtext">{_esc_long(record.get("question") or _NONE)}</p><dl>{"".join(facts)}</dl></div>'
        + _render_reward(ep)
        + "</div>"
    )
    return (
        f'<article class="episode {ep.outcome}" id="ep-{ep.position}">'
        f"<details{' open' if open_ else ''}>{summary}{question}{_render_turns(record, ep, images)}</details></article>"
    )


def _render_reward(ep: _Episode) -> str:
    record, reward = ep.record, ep.reward
    searches = _as_list(record.get("searches"))
    latency = sum(_num(_as_dict(s).get("latency_s")) or 0.0 for s in searches)
    cost = sum(_num(_as_dict(s).get("cost_usd")) or 0.0 for s in searches)
    rows = [
        ("accuracy", _fmt(reward.get("accuracy"))),
        ("search penalty ×", _fmt(reward.get("penalty"))),
        ("format", _fmt(reward.get("format"))),
        ("total reward", _fmt(ep.reward_total)),
        ("shape", _esc(reward.get("shape")) or _NONE),
        (
            "searches (image / text)",
            f"{len(searches)} ({_fmt(reward.get('image_searches'))} / {_fmt(reward.get('text_searches'))})",
        ),
        ("search latency", _seconds(latency)),
        ("search cost", f"${cost:.4f}"),
    ]
    if _num(record.get("latency_s")) is not None:
        rows.append(("episode latency", _seconds(_num(record.get("latency_s")))))
    usage = _as_dict(record.get("usage"))
    for key, value in usage.items():
        if _num(value) is not None:
            rows.append((f"usage: {_esc(key)}", _fmt(value, 6)))
    cells = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in rows)
    return f'<table class="reward">{cells}</table>'


def _render_turns(record: Mapping[str, Any], ep: _Episode, images: _Images) -> str:
    turns = _as_list(record.get("turns"))
    actions = [_as_dict(a) for a in _as_list(record.get("actions"))]
    searches = [_as_dict(s) for s in _as_list(record.get("searches"))]
    items = []
    next_search = 0
    for i in range(max(len(turns), len(actions))):
        action = actions[i] if i < len(actions) else {}
        kind = _text(action.get("kind")) or "?"
        well_formed = action.get("well_formed")
        status = (
            '<span class="ok">well formed</span>'
            if well_formed is True
            else f'<span class="err">malformed: {_esc(action.get("error") or "no reason given")}</span>'
            if well_formed is False
            else ""
        )
        content = action.get("content")
        head = (
            f'<div class="turn-head"><b>turn {i + 1}</b> · <span class="kind">{_esc(kind)}</span>'
            + (f' · <span class="content">{_esc(content)}</span>' if content not in (None, "") else "")
            + (f" · {status}" if status else "")
            + "</div>"
        )
        text = turns[i] if i < len(turns) else ""
        body = f'<pre class="assistant">{_esc_long(text)}</pre>'
        # Searches are recorded in the order they ran; a search action at the end of a truncated
        # episode never ran and has no record.
        search = ""
        if kind in ("image_search", "text_search"):
            if next_search < len(searches) and _text(searches[next_search].get("tool")) == kind:
                search = _render_search(searches[next_search], images)
                next_search += 1
            else:
                search = f'<div class="search notrun">search not run (episode ended: {_esc(ep.end_reason)})</div>'
        items.append(f'<li class="turn">{head}{body}{search}</li>')
    for extra in searches[next_search:]:  # records that match no action: still shown, never dropped
        items.append(f'<li class="turn">{_render_search(extra, images)}</li>')
    end = f'<p class="end">ended: <b>{_esc(ep.end_reason)}</b></p>'
    return f'<ol class="turns">{"".join(items)}</ol>{end}'


def _render_search(search: Mapping[str, Any], images: _Images) -> str:
    tool = _text(search.get("tool")) or "search"
    results = [_as_dict(r) for r in _as_list(search.get("results"))]
    bits = [f"<b>{_esc(tool.replace('_', ' '))}</b>", f"{len(results)} results"]
    if _num(search.get("latency_s")) is not None:
        bits.append(_seconds(_num(search.get("latency_s"))))
    if search.get("cached") is True:
        bits.append("cached")
    if _num(search.get("cost_usd")):
        bits.append(f"${_num(search.get('cost_usd')):.4f}")
    error = search.get("error")
    if error:
        bits.append(f'<span class="err">error: {_esc(error)}</span>')
    items = []
    for result in results:
        title = _text(result.get("title")) or _text(result.get("url")) or "(untitled)"
        thumb = images.tag(result.get("thumbnail"), THUMBNAIL_PX, title, "thumb")
        summary = result.get("summary")
        items.append(
            '<li class="result">'
            + thumb
            + '<div class="rtext">'
            + f'<div class="rtitle">{_link(result.get("url"), title)}</div>'
            + f'<div class="url{"" if _LINK_RE.match(_text(result.get("url")).strip()) else " bad"}">'
            + f"{_esc(result.get('url') or '')}</div>"
            + (f'<div class="summary">{_esc_long(summary, 2_000)}</div>' if summary else "")
            + "</div></li>"
        )
    kind = "image_search" if tool == "image_search" else "text_search"
    listing = f'<ul class="results {kind}">{"".join(items)}</ul>' if items else ""
    return f'<div class="search {"failed" if error else ""}"><div class="search-head">{" · ".join(bits)}</div>{listing}</div>'


# ---------------------------------------------------------------------------------------------------
# static parts: style and the filter script (its hash goes into the CSP, so it must not depend on data)

_CSS = """
:root{--ok:#1a7f37;--bad:#cf222e;--unk:#6e7781;--line:#d0d7de;--soft:#f6f8fa}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2328;background:#fff}
header{padding:12px 20px 4px;background:var(--soft)}
h1{font-size:20px;margin:0 0 4px}
.counts{margin:0 0 6px;color:#57606a}
table.policies{border-collapse:collapse;margin:4px 0 8px;font-size:13px}
table.policies th,table.policies td{border:1px solid var(--line);padding:2px 8px;text-align:right;background:#fff}
table.policies td:first-child,table.policies th:first-child{text-align:left}
.filters{display:flex;flex-wrap:wrap;gap:6px 14px;align-items:center;font-size:13px;padding:6px 20px 8px;background:var(--soft);border-bottom:1px solid var(--line);position:sticky;top:0;z-index:1}
.filters select,.filters input{font:inherit;max-width:220px}
#mv-count{color:#57606a;margin-left:auto}
main{padding:10px 20px}
.episode{border:1px solid var(--line);border-left:6px solid var(--unk);border-radius:6px;margin:0 0 12px;background:#fff}
.episode.correct{border-left-color:var(--ok)}
.episode.wrong{border-left-color:var(--bad)}
summary{cursor:pointer;padding:8px 10px;background:var(--soft);border-radius:0 6px 6px 0;overflow-wrap:anywhere}
summary .num{color:#57606a}
summary .policy{font-weight:600}
summary .id{font-family:ui-monospace,monospace;font-size:12px}
.tag{display:inline-block;padding:0 6px;border:1px solid var(--line);border-radius:10px;font-size:12px;background:#fff}
.total{float:right;font-weight:600}
.badge{display:inline-block;padding:0 6px;border-radius:4px;color:#fff;font-weight:600;font-size:12px;background:var(--unk)}
.badge.correct{background:var(--ok)}
.badge.wrong{background:var(--bad)}
.question{display:grid;grid-template-columns:auto 1fr auto;gap:12px;padding:10px;align-items:start}
.qtext{font-size:16px;font-weight:600;margin:0 0 6px;overflow-wrap:anywhere}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 10px;margin:0}
dt{color:#57606a}
dd{margin:0;overflow-wrap:anywhere}
dd.truth{font-weight:600}
dd.answer.correct{color:var(--ok);font-weight:600}
dd.answer.wrong{color:var(--bad);font-weight:600}
table.reward{border-collapse:collapse;font-size:12px}
table.reward th{text-align:left;font-weight:400;color:#57606a;padding:1px 8px 1px 0}
table.reward td{text-align:right;font-family:ui-monospace,monospace}
.img{display:inline-block;background-size:contain;background-repeat:no-repeat;border:1px solid var(--line);flex:none}
.noimg{display:inline-flex;align-items:center;justify-content:center;width:96px;height:64px;border:1px dashed var(--line);color:#8c959f;font-size:11px;flex:none}
.noimg.thumb{width:64px;height:48px}
ol.turns{margin:0;padding:0 10px 4px 34px}
.turn{margin:0 0 10px}
.turn-head{font-size:13px;margin-bottom:2px;overflow-wrap:anywhere}
.turn-head .kind{font-family:ui-monospace,monospace}
.turn-head .content{font-style:italic}
.ok{color:var(--ok)}
.err{color:var(--bad)}
pre.assistant{white-space:pre-wrap;overflow-wrap:anywhere;margin:0;padding:6px 8px;background:#f6f8fa;border-radius:4px;font-size:12.5px;max-height:320px;overflow:auto}
.cut{color:#8c959f;font-style:italic}
.search{margin:6px 0 0 16px;padding:6px 8px;border-left:3px solid #54aeff;background:#f5faff;border-radius:0 4px 4px 0}
.search.failed{border-left-color:var(--bad);background:#fff5f5}
.search.notrun{border-left-color:var(--unk);background:var(--soft);color:#57606a}
.search-head{font-size:12px;color:#57606a;margin-bottom:4px}
ul.results{list-style:none;margin:0;padding:0;display:grid;gap:6px}
ul.results.image_search{grid-template-columns:repeat(auto-fill,minmax(260px,1fr))}
.result{display:flex;gap:8px;align-items:flex-start}
.rtext{min-width:0}
.rtitle{font-weight:600;overflow-wrap:anywhere}
.url{font-size:11px;color:#1a7f37;overflow-wrap:anywhere}
.summary{font-size:12.5px;overflow-wrap:anywhere}
.nolink{color:#57606a}
.url.bad{color:#8c959f}
.end{margin:0;padding:0 10px 10px;font-size:13px;color:#57606a}
.empty{color:#57606a}
""".strip()

_SCRIPT = """
(function () {
  "use strict";
  var facets = JSON.parse(document.getElementById("mv-facets").textContent);
  var articles = document.querySelectorAll("article.episode");
  var selects = document.querySelectorAll("select[data-facet]");
  var query = document.getElementById("mv-q");
  var count = document.getElementById("mv-count");
  var texts = [];
  for (var i = 0; i < articles.length; i++) { texts.push(articles[i].textContent.toLowerCase()); }
  function apply() {
    var q = query.value.trim().toLowerCase();
    var shown = 0;
    for (var i = 0; i < articles.length; i++) {
      var ok = true;
      for (var j = 0; j < selects.length && ok; j++) {
        var want = selects[j].value;
        if (want !== "" && facets[i][selects[j].getAttribute("data-facet")] !== want) { ok = false; }
      }
      if (ok && q !== "" && texts[i].indexOf(q) < 0) { ok = false; }
      articles[i].hidden = !ok;
      if (ok) { shown++; }
    }
    count.textContent = shown + " of " + articles.length + " episodes shown";
  }
  function setOpen(open) {
    var all = document.querySelectorAll("article.episode > details");
    for (var i = 0; i < all.length; i++) { all[i].open = open; }
  }
  function remember() {
    var params = new URLSearchParams();
    for (var j = 0; j < selects.length; j++) {
      if (selects[j].value !== "") { params.set(selects[j].getAttribute("data-facet"), selects[j].value); }
    }
    if (query.value !== "") { params.set("q", query.value); }
    try { history.replaceState(null, "", "#" + params.toString()); } catch (e) { /* file:// may refuse */ }
  }
  function update() { apply(); remember(); }
  var initial = new URLSearchParams(location.hash.slice(1));
  for (var j = 0; j < selects.length; j++) {
    var wanted = initial.get(selects[j].getAttribute("data-facet"));
    for (var k = 0; wanted !== null && k < selects[j].options.length; k++) {
      if (selects[j].options[k].value === wanted) { selects[j].value = wanted; }
    }
    selects[j].addEventListener("change", update);
  }
  query.value = initial.get("q") || "";
  query.addEventListener("input", update);
  document.getElementById("mv-open").addEventListener("click", function () { setOpen(true); });
  document.getElementById("mv-close").addEventListener("click", function () { setOpen(false); });
  apply();
  document.documentElement.setAttribute("data-viewer-ready", String(articles.length));
})();
""".strip()


def _script_hash() -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(_SCRIPT.encode("utf-8")).digest()).decode("ascii")
