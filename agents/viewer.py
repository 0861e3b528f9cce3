"""A self-contained HTML viewer for rollout trajectories (one file, no network, all text escaped).

    mmsearch view runs/trajectories.jsonl --out viewer.html

or from Python::

    from agents.viewer import write_viewer
    write_viewer("runs/trajectories.jsonl", Path("viewer.html"))

Input: episode records (:class:`mmsearch_env.records.EpisodeRecord`), as the rollout engine's
trajectory JSONL (one record per line; version-1 lines are upgraded) or as a list of records or
record dicts. A record that does not fit the layout (a required field missing, a field of the wrong
type) raises :class:`DatasetError` naming the line (``file:line``, or ``trajectory N`` for a list)
and the field. Optional fields may be missing: no images folder, images missing on disk, no
``usage``, no ``reward_parts``... each renders as "—" or a placeholder.

Output: one HTML file that opens from disk in any browser, rendered from
``agents/templates/viewer.html.jinja`` (with ``viewer.css`` and ``viewer.js`` inlined). Episodes are shown sorted by (``policy``, ``index``), not in
the order they finished; a collapsed episode shows its question, shortened. Images are downscaled
(question images to 256 px, result thumbnails to 96 px), encoded as data URLs and stored once each
as a CSS class per distinct encoded image (:mod:`agents.viewer_images`), so an image that many episodes share (the same web
thumbnail, the same question under several policies) costs its bytes once. A small inline script
filters episodes by policy, outcome, category, search need and end reason, and by free text; the
filters live in the URL's fragment, so ``viewer.html#policy=oracle-plan&outcome=wrong&q=capital``
opens (and bookmarks) a filtered view. Every text is capped in length (:data:`MAX_TEXT_CHARS` for
turns and questions, :data:`MAX_SHORT_CHARS` for the rest) with a note saying how much was cut.

Security: every string from the records — model turns, web titles, URLs, summaries, even ids and
category names — is untrusted. The template engine escapes every value by default (Jinja2
autoescape, text and attribute alike; the template never marks data safe); only ``http(s)`` URLs
become links (``rel="noopener noreferrer"``); the JSON the script reads has ``<``, ``>``, ``&`` and
``'`` escaped so no value can close the ``<script>`` element; no value is ever passed to
``innerHTML``. Behind that, a Content-Security-Policy allows no network loads at all and runs only
the viewer's own script (by its SHA-256 hash), so markup that slipped through escaping still could
not execute or phone home.
"""

from __future__ import annotations

import logging
import numbers
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.trajectories import read_trajectories
from agents.viewer_images import ImageStore, finite_number, region_boxes, region_crops
from agents.viewer_template import page_template, script_hash
from mmsearch_env.errors import ConfigError, DatasetError
from mmsearch_env.records import EpisodeRecord, SearchRecord
from mmsearch_env.text import clean_text

__all__ = ["load_trajectories", "render_viewer", "write_viewer"]

logger = logging.getLogger(__name__)

#: Long side, in pixels, of the question image and of result thumbnails in the page.
QUESTION_IMAGE_PX = 256
THUMBNAIL_PX = 96
#: Longest assistant turn or question shown in full; the rest is cut with a note (a 1 MB hostile turn
#: would otherwise make a 1 MB page per episode).
MAX_TEXT_CHARS = 20_000
#: Longest summary, title, URL, answer or error message shown in full.
MAX_SHORT_CHARS = 2_000
#: Characters of the question shown in an episode's one-line summary.
QUESTION_PREVIEW_CHARS = 100
#: Episodes rendered with their details open; longer files start collapsed (one summary line each).
OPEN_EPISODES = 50

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
_BADGES = {"correct": "✓ correct", "wrong": "✗ wrong", "unknown": "? unscored"}


# ---------------------------------------------------------------------------------------------------
# public API


def load_trajectories(path: str | Path) -> list[EpisodeRecord]:
    """Read a trajectory JSONL file, which must exist, as :class:`EpisodeRecord` objects.

    :func:`agents.trajectories.read_trajectories`: a truncated last line is skipped with a warning; any
    other bad line raises :class:`DatasetError` naming ``file:line`` and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"trajectory file {str(path)!r} does not exist; give the JSONL that `mmsearch eval` (or the "
            "rollout engine) wrote"
        )
    return read_trajectories(path)


def write_viewer(
    trajectories: str | Path | Iterable[EpisodeRecord | Mapping[str, Any]],
    out_html: str | Path,
    *,
    images_dir: str | Path | None = None,
    title: str = "MMSearch-v0 trajectories",
    max_episodes: int | None = None,
) -> Path:
    """Write the self-contained HTML viewer for ``trajectories`` to ``out_html``; returns its path.

    Args:
        trajectories: a trajectory JSONL path, or the episode records themselves
            (:class:`EpisodeRecord` objects or their dicts).
        out_html: the HTML file to write (its folder is created).
        images_dir: where the ``image`` / ``thumbnail`` file names live; default ``images/`` next
            to the JSONL (records given directly have no images unless this is set). A missing or
            unreadable image renders as a placeholder.
        title: the page title.
        max_episodes: render only the first this many episodes of the file (the header says how many
            were left out).

    Raises:
        DatasetError: the file is missing, or a line or record is not an episode record.
        ConfigError: ``max_episodes`` is not a positive int.
    """
    if isinstance(trajectories, (str, Path)):
        records: list[EpisodeRecord | Mapping[str, Any]] = list(load_trajectories(trajectories))
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
    records: Iterable[EpisodeRecord | Mapping[str, Any]],
    *,
    images_dir: str | Path | None = None,
    title: str = "MMSearch-v0 trajectories",
    max_episodes: int | None = None,
) -> str:
    """The viewer's HTML as a string (see :func:`write_viewer`); the same records give the same bytes."""
    if max_episodes is not None and (
        isinstance(max_episodes, bool) or not isinstance(max_episodes, numbers.Integral) or max_episodes < 1
    ):
        raise ConfigError(f"max_episodes must be a positive int or None, got {max_episodes!r}")
    records = [_to_record(record, f"trajectory {i}") for i, record in enumerate(records)]
    total = len(records)
    if max_episodes is not None:
        records = records[:max_episodes]
    order = sorted(range(len(records)), key=lambda i: _sort_key(records[i], i))
    records = [records[i] for i in order]
    images = ImageStore(Path(images_dir) if images_dir is not None else None)
    if images.folder is not None:
        images.preload((key for record in records for key in _image_keys(record)), progress=len(records) >= 200)
    episodes = [_episode_view(record, position, images) for position, record in enumerate(records)]
    counts = [f"{len(episodes)} episode{'s' if len(episodes) != 1 else ''}"]
    if len(episodes) < total:
        counts.append(f"first {len(episodes)} of {total} in the file")
    counts.append(f"{len(images.rules)} distinct images")
    if images.missing:
        counts.append(f"{images.missing} missing")
    return page_template().render(
        title=_text(title),
        script_hash=script_hash(),
        image_rules=images.rules,
        counts=counts,
        policies=_policy_rows(episodes),
        filters=_filters(episodes),
        episodes=episodes,
        open_all=len(episodes) <= OPEN_EPISODES,
        facets=[{key: getattr(ep, key) for key, _ in FACETS} for ep in episodes],
    )


# ---------------------------------------------------------------------------------------------------
# records: checked against the EpisodeRecord layout, naming the field that does not fit


def _to_record(value: Any, where: str) -> EpisodeRecord:
    """``value`` (a record or its dict, either layout version) as a checked :class:`EpisodeRecord`."""
    if isinstance(value, EpisodeRecord):
        value = value.to_dict()  # one path for objects and lines: an object built in code is checked too
    if not isinstance(value, Mapping):
        raise DatasetError(f"{where}: expected a JSON object (an episode record), got {type(value).__name__}")
    try:
        return EpisodeRecord.from_dict(value)
    except DatasetError as exc:
        raise DatasetError(f"{where}: {exc}") from exc


def _sort_key(record: EpisodeRecord, position: int) -> tuple[Any, ...]:
    # Records without a policy or index go last, in file order.
    return (record.policy is None, record.policy or "", record.index is None, record.index or 0, position)


def _image_keys(record: EpisodeRecord) -> Iterable[tuple[str | None, int]]:
    """The ``(file name, size)`` of every image an episode shows, in page order."""
    yield record.image, QUESTION_IMAGE_PX
    for search in record.searches:
        for result in search.results:
            yield result.thumbnail, THUMBNAIL_PX


# ---------------------------------------------------------------------------------------------------
# what the template shows: display-ready, unescaped text (the template escapes every value)


@dataclass(frozen=True)
class _Text:
    """A text cut to its cap: ``shown``, then a note when ``more`` characters were left out."""

    shown: str
    more: int = 0


@dataclass(frozen=True)
class _Img:
    kind: str  # "qimg" | "thumb"
    name: str  # the file name in the record
    cls: str | None  # the CSS class holding the pixels; None: missing or unreadable
    label: str


@dataclass(frozen=True)
class _Result:
    title: _Text
    url: _Text
    href: str | None  # only http(s) URLs become links
    summary: _Text | None
    thumbnail: _Img | None


@dataclass(frozen=True)
class _Search:
    tool_label: str
    kind: str
    results: list[_Result]
    latency: str
    cached: bool
    cost: str
    error: _Text | None
    crop: str | None = None  # inline CSS showing the searched region of the question image
    crop_cls: str | None = None  # the question image's CSS class


@dataclass(frozen=True)
class _Turn:
    number: int | None  # None: a search that matches no action (still shown, never dropped)
    kind: str
    content: _Text | None
    well_formed: bool | None
    error: _Text
    text: _Text
    search: _Search | None
    not_run: bool  # a search action whose search never ran (the episode ended first)


@dataclass(frozen=True)
class _EpisodeView:
    position: int
    number: int
    policy: str
    outcome: str  # "correct" | "wrong" | "unknown"
    badge: str
    category: str
    search_need: str
    end_reason: str
    example_id: _Text
    question: _Text
    question_short: str
    image: _Img | None
    regions: list[str]  # the image-search regions, as CSS positions over the question image
    ground_truth: _Text
    candidates: list[_Text]
    answer: _Text | None
    split: str | None
    reward_total: str
    reward_value: float | None
    searched: bool
    reward_rows: list[tuple[str, str]]
    turns: list[_Turn]


def _episode_view(record: EpisodeRecord, position: int, images: ImageStore) -> _EpisodeView:
    parts, info = record.reward_parts, record.info
    if isinstance(info.get("correct"), bool):
        outcome = "correct" if info["correct"] else "wrong"
    elif finite_number(parts.get("accuracy")) is not None:
        outcome = "correct" if finite_number(parts.get("accuracy")) >= 1.0 else "wrong"
    else:
        outcome = "unknown"
    answer = parts.get("answer", info.get("answer"))
    end_reason = _label(record.end_reason or info.get("end_reason"))
    image = _image(images, record.image, QUESTION_IMAGE_PX, "question image", "qimg")
    question = " ".join(_text(record.question).split())
    if len(question) > QUESTION_PREVIEW_CHARS:
        question = question[: QUESTION_PREVIEW_CHARS - 1].rstrip() + "…"
    return _EpisodeView(
        position=position,
        number=record.index if record.index is not None else position,
        policy=_label(record.policy),
        outcome=outcome,
        badge=_BADGES[outcome],
        category=_label(record.category),
        search_need=_label(record.search_need),
        end_reason=end_reason,
        example_id=_cap(record.example_id or _NONE),
        question=_cap(record.question or _NONE, MAX_TEXT_CHARS),
        question_short=question,
        image=image,
        regions=region_boxes(info),
        ground_truth=_cap(record.ground_truth or _NONE),
        candidates=[_cap(c) for c in record.candidate_answers],
        answer=None if answer is None else _cap(answer),
        split=None if record.split is None else _label(record.split),
        reward_total=_fmt(record.reward),
        reward_value=finite_number(record.reward),
        searched=bool(record.searches),
        reward_rows=_reward_rows(record),
        turns=_turns(record, end_reason, images, image.cls if image is not None else None),
    )


def _reward_rows(record: EpisodeRecord) -> list[tuple[str, str]]:
    parts, searches = record.reward_parts, record.searches
    rows = [
        ("accuracy", _fmt(parts.get("accuracy"))),
        ("search penalty ×", _fmt(parts.get("penalty"))),
        ("format", _fmt(parts.get("format"))),
        ("total reward", _fmt(record.reward)),
        ("shape", _label(parts.get("shape"))),
        (
            "searches (image / text)",
            f"{len(searches)} ({_fmt(parts.get('image_searches'))} / {_fmt(parts.get('text_searches'))})",
        ),
        ("search latency", _seconds(sum(finite_number(s.latency_s) or 0.0 for s in searches))),
        ("search cost", f"${sum(finite_number(s.cost_usd) or 0.0 for s in searches):.4f}"),
    ]
    if finite_number(record.latency_s) is not None:
        rows.append(("episode latency", _seconds(finite_number(record.latency_s))))
    for key, value in (record.usage or {}).items():
        if finite_number(value) is not None:
            rows.append((f"usage: {_label(key)}", _fmt(value, 6)))
    return rows


def _turns(record: EpisodeRecord, end_reason: str, images: ImageStore, question_cls: str | None) -> list[_Turn]:
    turns, actions, searches = record.turns, record.actions, record.searches
    # the k-th image search ran on the k-th entry of info["image_regions"] (image_crops only)
    regions = iter(region_crops(record.info) if question_cls else [])
    crops = [next(regions, None) if s.tool == "image_search" else None for s in searches]
    items = []
    next_search = 0
    for i in range(max(len(turns), len(actions))):
        action = actions[i] if i < len(actions) else None
        kind = _text(action.kind) if action is not None else "?"
        # Searches are recorded in the order they ran; a search action at the end of a truncated
        # episode never ran and has no record.
        search, not_run = None, False
        if kind in ("image_search", "text_search"):
            if next_search < len(searches) and searches[next_search].tool == kind:
                search = _search(searches[next_search], images, crops[next_search], question_cls)
                next_search += 1
            else:
                not_run = True
        content = action.content if action is not None else None
        items.append(
            _Turn(
                number=i + 1,
                kind=kind or "?",
                content=_cap(content) if content else None,
                well_formed=action.well_formed if action is not None else None,
                error=_cap(action.error if action is not None and action.error else "no reason given"),
                text=_cap(turns[i] if i < len(turns) else "", MAX_TEXT_CHARS),
                search=search,
                not_run=not_run,
            )
        )
    for extra in searches[next_search:]:
        items.append(_Turn(None, "", None, None, _Text(""), _Text(""), _search(extra, images), False))
    return items


def _search(search: SearchRecord, images: ImageStore, crop: str | None = None, crop_cls: str | None = None) -> _Search:
    tool = _text(search.tool) or "search"
    results = []
    for result in search.results:
        url = _text(result.url).strip()
        title = _text(result.title) or url or "(untitled)"
        results.append(
            _Result(
                title=_cap(title),
                url=_cap(result.url),
                href=url if _LINK_RE.match(url) and len(url) <= MAX_SHORT_CHARS else None,
                summary=_cap(result.summary) if result.summary else None,
                thumbnail=_image(images, result.thumbnail, THUMBNAIL_PX, title[:MAX_SHORT_CHARS], "thumb"),
            )
        )
    latency, cost = finite_number(search.latency_s), finite_number(search.cost_usd)
    return _Search(
        tool_label=tool.replace("_", " "),
        kind="image_search" if tool == "image_search" else "text_search",
        results=results,
        latency="" if latency is None else _seconds(latency),
        cached=search.cached is True,
        cost=f"${cost:.4f}" if cost else "",
        error=_cap(search.error) if search.error else None,
        crop=crop if crop_cls else None,
        crop_cls=crop_cls if crop else None,
    )


def _policy_rows(episodes: list[_EpisodeView]) -> list[dict[str, Any]]:
    by_policy: dict[str, list[_EpisodeView]] = {}
    for ep in episodes:
        by_policy.setdefault(ep.policy, []).append(ep)
    rows = []
    for policy, eps in sorted(by_policy.items()):
        known = [ep for ep in eps if ep.outcome != "unknown"]
        rewards = [ep.reward_value for ep in eps if ep.reward_value is not None]
        rows.append(
            {
                "policy": policy,
                "episodes": len(eps),
                "accuracy": f"{sum(ep.outcome == 'correct' for ep in known) / len(known):.3f}" if known else _NONE,
                "mean_reward": f"{sum(rewards) / len(rewards):.3f}" if rewards else _NONE,
                "searched": f"{sum(ep.searched for ep in eps) / len(eps):.3f}",
            }
        )
    return rows


def _filters(episodes: list[_EpisodeView]) -> list[dict[str, Any]]:
    filters = []
    for key, label in FACETS:
        counts: dict[str, int] = {}
        for ep in episodes:
            counts[getattr(ep, key)] = counts.get(getattr(ep, key), 0) + 1
        filters.append({"key": key, "label": label, "options": sorted(counts.items())})
    return filters


def _image(images: ImageStore, name: str | None, max_px: int, label: str, kind: str) -> _Img | None:
    """Image file ``name`` as the page shows it (a placeholder when missing), or ``None`` if none is named."""
    if not name:
        return None
    return _Img(kind=kind, name=_text(name)[:MAX_SHORT_CHARS], cls=images.css_class(name, max_px), label=label)


def _text(value: Any) -> str:
    """Any value as display text: lone surrogates and control characters removed (the file is UTF-8)."""
    return "" if value is None else clean_text(value if isinstance(value, str) else str(value))


def _cap(value: Any, limit: int = MAX_SHORT_CHARS) -> _Text:
    text = _text(value)
    return _Text(text) if len(text) <= limit else _Text(text[:limit], len(text) - limit)


def _label(value: Any) -> str:
    """A facet value: short, single-line text; missing values share one label."""
    text = " ".join(_text(value).split())[:200]
    return text or _NONE


def _fmt(value: Any, digits: int = 4) -> str:
    number = finite_number(value)
    return _NONE if number is None else f"{round(number, digits):g}"


def _seconds(value: float) -> str:
    return f"{value:.2f} s" if value >= 1.0 else f"{value * 1000:.2f} ms"
