"""The texts the model reads, and the one place that renders search results into a chat message.

Defaults live in ``mmsearch_env/templates/<protocol>.json`` (our own wording). Users pass their own
file (JSON, or TOML on Python 3.11+) with ``gym.make("MMSearch-v0", prompts="my_prompts.json")``;
keys they leave out keep the default. Placeholders are checked when the file is loaded, so a typo
fails at ``make`` time, not mid-training.
"""

from __future__ import annotations

import json
import os
import string
import sys
from dataclasses import dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from PIL import Image

from mmsearch_env.errors import ConfigError, did_you_mean
from mmsearch_env.protocol import ActionProtocol
from mmsearch_env.search.base import SearchResponse
from mmsearch_env.text import escape_external, neutralize_control_tokens

__all__ = ["PromptTemplates", "load_prompts", "render_tool_result"]

# Caps on web text per result, so one hostile page cannot flood the context.
MAX_TITLE_CHARS = 300
MAX_URL_CHARS = 500
MAX_SUMMARY_CHARS = 2000


@dataclass(frozen=True)
class PromptTemplates:
    """Instruction and tool-result texts. ``{placeholders}`` are filled by the environment.

    ``instruction``: first user turn, after the image (``{question}``, ``{max_turns}``,
    ``{max_image_searches}``, ``{max_text_searches}``). ``followup``: closes each tool-result turn
    (``{question}``, ``{next_step}``). The rest build the result list and the next-step hint.
    Where the question's image goes is not a text: it is the env argument ``image_position``.
    With ``image_crops``: ``crop_instruction`` follows the instruction (``{width}``, ``{height}``: the
    image's size) and ``region_results_header`` heads a region's results (``{box}``); ``None`` keeps
    the protocol's default wording.
    ``instruction_no_image``: the instruction when the image is not shown (``image_position="none"``,
    text-only models; same placeholders); ``None``: ``instruction``.
    """

    instruction: str
    image_results_header: str
    text_results_header: str
    image_result_item: str
    text_result_item: str
    no_results: str
    search_error: str
    followup: str
    next_step_search: str
    next_step_answer: str
    image_search_option: str
    text_search_option: str
    system: str | None = None
    crop_instruction: str | None = None
    region_results_header: str | None = None
    instruction_no_image: str | None = None


_OPTIONAL = ("system", "crop_instruction", "region_results_header", "instruction_no_image")
_PLACEHOLDERS = {
    "instruction": {"question", "max_turns", "max_image_searches", "max_text_searches"},
    "image_results_header": set(),
    "text_results_header": {"query"},
    "image_result_item": {"title", "url", "index"},
    "text_result_item": {"title", "url", "summary", "index"},
    "no_results": set(),
    "search_error": {"tool_label", "error"},
    "followup": {"question", "next_step"},
    "next_step_search": {"search_options"},
    "next_step_answer": set(),
    "image_search_option": set(),
    "text_search_option": set(),
    "system": set(),
    "crop_instruction": {"width", "height"},
    "region_results_header": {"box"},
    "instruction_no_image": {"question", "max_turns", "max_image_searches", "max_text_searches"},
}


def _check(templates: PromptTemplates, source: str) -> PromptTemplates:
    for f in fields(PromptTemplates):
        value = getattr(templates, f.name)
        if value is None and f.name in _OPTIONAL:
            continue
        if not isinstance(value, str):
            raise ConfigError(f"{source}: template {f.name!r} must be a string, got {type(value).__name__}")
        try:
            used = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as exc:
            raise ConfigError(
                f"{source}: template {f.name!r} is not a valid format string ({exc}); write {{{{ for a literal brace"
            ) from exc
        unknown = used - _PLACEHOLDERS[f.name]
        if unknown:
            raise ConfigError(
                f"{source}: template {f.name!r} uses unknown placeholder(s) {sorted(unknown)}; "
                f"allowed: {sorted(_PLACEHOLDERS[f.name]) or 'none'}"
            )
        try:  # format specs and conversions fail only when filled: fill once now, not mid-episode
            value.format(**dict.fromkeys(_PLACEHOLDERS[f.name], "x"))
        except (ValueError, IndexError, KeyError) as exc:
            raise ConfigError(
                f"{source}: template {f.name!r} cannot be filled ({exc}); placeholders hold text"
            ) from exc
    return templates


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"prompt file {str(path)!r} does not exist")
    try:
        if path.suffix == ".toml":
            if sys.version_info < (3, 11):
                raise ConfigError("TOML prompt files need Python 3.11+; use a .json file instead")
            import tomllib

            return tomllib.loads(path.read_text(encoding="utf-8"))
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"prompt file {str(path)!r} is not valid {path.suffix[1:] or 'JSON'}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"prompt file {str(path)!r} must hold one object mapping template names to strings")
    return data


def load_prompts(
    protocol: ActionProtocol, source: str | os.PathLike[str] | PromptTemplates | None = None
) -> PromptTemplates:
    """The protocol's default templates, overridden by ``source`` (a file path or a PromptTemplates)."""
    default_text = resources.files("mmsearch_env").joinpath(f"templates/{protocol.name}.json").read_text("utf-8")
    templates = PromptTemplates(**json.loads(default_text))
    if isinstance(source, PromptTemplates):
        crop_texts = {
            name: getattr(templates, name)
            for name in ("crop_instruction", "region_results_header")
            if getattr(source, name) is None
        }
        return _check(replace(source, **crop_texts), "prompts")
    if source is None:
        return templates
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(
            f"prompts must be a path to a JSON/TOML file or a PromptTemplates, got {type(source).__name__}"
        )
    overrides = _read_file(Path(source))
    names = [f.name for f in fields(PromptTemplates)]
    for key in overrides:
        if key == "image_position":
            raise ConfigError(
                f"prompt file {str(source)!r}: image_position is an environment argument, not a template; "
                "pass it to gym.make('MMSearch-v0', image_position=...) instead"
            )
        if key not in names:
            raise ConfigError(f"prompt file {str(source)!r}: unknown template {key!r}.{did_you_mean(key, names)}")
    if "instruction" in overrides:  # the user's own instruction, not our no-image wording, unless they give both
        overrides.setdefault("instruction_no_image", None)
    return _check(replace(templates, **overrides), f"prompt file {str(source)!r}")


_TOOL_LABELS = {"image_search": "image search", "text_search": "text search"}


def render_tool_result(
    templates: PromptTemplates,
    protocol: ActionProtocol,
    response: SearchResponse,
    *,
    question: str,
    query: str | None,
    can_image_search: bool,
    can_text_search: bool,
    thumbnail_size: int,
    region: tuple[int, int, int, int] | None = None,
    region_image: Image.Image | None = None,
) -> dict[str, Any]:
    """The chat message that returns ``response`` to the model.

    Every piece of web text is escaped (:func:`~mmsearch_env.text.escape_external`), so results
    cannot inject protocol tags or chat-template tokens; the repeated question has its chat-template
    tokens neutralised (:func:`~mmsearch_env.text.neutralize_control_tokens`). A failed search has no ``<information>``
    wrapper: the model is told the tool failed and to go on. An image search of a ``region``
    (pixels) shows that region (``region_image``) before its results.
    """
    parts: list[dict[str, Any]] = []
    text: list[str] = []

    def flush() -> None:
        if text:
            parts.append({"type": "text", "text": "".join(text)})
            text.clear()

    if response.ok:
        if protocol.wrap_information:
            text.append("<information>")
        if response.tool == "image_search" and region is not None and templates.region_results_header:
            text.append(templates.region_results_header.format(box=",".join(str(v) for v in region)))
            shown = _thumbnail(region_image, thumbnail_size)
            if shown is not None:
                flush()
                parts.append({"type": "image", "image": shown})
        elif response.tool == "image_search":
            text.append(templates.image_results_header)
        else:
            safe_query = escape_external(query or "", max_chars=MAX_TITLE_CHARS, single_line=True)
            text.append(templates.text_results_header.format(query=safe_query))
        if not response.results:
            text.append("\n" + templates.no_results)
        for index, result in enumerate(response.results, start=1):
            title = escape_external(result.title, max_chars=MAX_TITLE_CHARS, single_line=True)
            url = escape_external(result.url, max_chars=MAX_URL_CHARS, single_line=True)
            text.append(f"\n{index}. ")
            if response.tool == "image_search":
                thumb = _thumbnail(result.thumbnail, thumbnail_size)
                if thumb is not None:
                    flush()
                    parts.append({"type": "image", "image": thumb})
                text.append(templates.image_result_item.format(title=title, url=url, index=index))
            else:
                summary = escape_external(result.summary or "", max_chars=MAX_SUMMARY_CHARS)
                text.append(templates.text_result_item.format(title=title, url=url, summary=summary, index=index))
        if protocol.wrap_information:
            text.append("</information>")
    else:
        error = escape_external(response.error or "unknown error", max_chars=MAX_TITLE_CHARS, single_line=True)
        text.append(templates.search_error.format(tool_label=_TOOL_LABELS[response.tool], error=error))

    options = []
    if can_image_search:
        options.append(templates.image_search_option)
    if can_text_search:
        options.append(templates.text_search_option)
    if options:
        next_step = templates.next_step_search.format(search_options=" or ".join(options))
    else:
        next_step = templates.next_step_answer
    # the dataset's question is repeated in every result message: as untrusted as the web text around it
    followup = templates.followup.format(question=neutralize_control_tokens(question), next_step=next_step)
    text.append("\n\n" + followup)
    flush()
    return {"role": protocol.tool_result_role, "content": parts}


def _thumbnail(image: Any, size: int) -> Image.Image | None:
    """An RGB copy no larger than ``size`` on its long side (bounds the model's image tokens).

    ``None`` when there is no usable image: a thumbnail that fails to decode is dropped, not raised.
    """
    if not isinstance(image, Image.Image):
        return None
    try:
        image = image.convert("RGB") if image.mode != "RGB" else image.copy()
        image.thumbnail((size, size))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return image
