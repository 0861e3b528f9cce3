"""Action protocols: how an assistant turn (text) becomes an :class:`Action`, and back.

Two protocols share one :class:`Action` type, so the environment, the reward and the trainer never
look at raw text twice:

* ``"tags"`` — the MMSearch-R1 paper's protocol. A turn reasons inside ``<reason>…</reason>`` and
  *ends* with exactly one action: ``<search><img></search>`` (reverse image search of the question's
  image), ``<text_search>QUERY</text_search>`` or ``<answer>ANSWER</answer>``.
* ``"tool_calls"`` — the chat-template native way (Hermes / Qwen format). A turn ends with one
  ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` calling ``image_search`` or
  ``text_search``, or with ``<answer>ANSWER</answer>``.

A protocol built with ``crops=True`` (the env's ``image_crops`` option) also reads a region on the
image search: ``<search><img>x1,y1,x2,y2</search>`` in tags, ``{"box": [x1, y1, x2, y2]}`` (or the
same as a string) in the ``image_search`` call; the syntax is :mod:`mmsearch_env.regions`'s, and an
unreadable box makes the turn invalid. Without ``crops`` a box is not read: anything inside
``<search><img></search>`` is malformed, and an ``image_search`` call's arguments are ignored, as in
the paper.

Parsing is two-level, as in the paper: :attr:`Action.kind` says what the turn *does* (lenient: only
the end of the turn matters), :attr:`Action.well_formed` says whether it matches the per-turn grammar
exactly (one reasoning part, one action, no other action tags), which the format reward uses.
Parsing never raises and runs in linear time on any string.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from mmsearch_env.errors import BoxError, ConfigError, did_you_mean
from mmsearch_env.regions import BOX_SYNTAX, MAX_BOX_CHARS, Box, parse_box
from mmsearch_env.text import clean_text, strip_tags

__all__ = [
    "PROTOCOLS",
    "TAG_TOKENS",
    "Action",
    "ActionKind",
    "ActionProtocol",
    "TagsProtocol",
    "ToolCallsProtocol",
    "get_protocol",
]

ActionKind = Literal["answer", "image_search", "text_search", "invalid"]
SEARCH_KINDS = ("image_search", "text_search")


@dataclass(frozen=True)
class Action:
    """One parsed assistant turn.

    Attributes:
        kind: ``"answer"``, ``"image_search"``, ``"text_search"`` or ``"invalid"`` (no action at the end
            of the turn, an empty query, a broken tool call): an invalid turn ends the episode.
        content: the answer text or the search query (protocol tags removed); ``None`` otherwise.
        well_formed: the turn matches its protocol's per-turn grammar exactly (format reward).
        error: why the turn is invalid or not well formed, in words; ``None`` for a clean turn.
        box: the region an image search names (protocols with ``crops`` only); ``None``: the whole image.
    """

    kind: ActionKind
    content: str | None = None
    well_formed: bool = False
    error: str | None = None
    box: Box | None = None

    @property
    def is_search(self) -> bool:
        return self.kind in SEARCH_KINDS


class ActionProtocol:
    """Base class of the text ⇄ :class:`Action` protocols (parse, and write canonical turns)."""

    name: ClassVar[str]
    #: role of the message that carries tool results back to the model
    tool_result_role: ClassVar[str]
    #: whether tool results are wrapped in ``<information>…</information>``
    wrap_information: ClassVar[bool]

    def __init__(self, *, crops: bool = False) -> None:
        #: whether an image search may name a region of the image (see the module docstring)
        self.crops = bool(crops)

    def parse(self, text: str) -> Action:
        raise NotImplementedError

    def format_action(
        self, kind: str, content: str | None = None, reason: str | None = None, *, box: Box | None = None
    ) -> str:
        """Write a well-formed turn for ``kind`` (used by the structured-action wrapper and scripts).

        Tags in ``content`` and ``reason`` are removed so that the turn parses back to the same action.
        ``box`` (an image search's region) needs a protocol built with ``crops=True``.
        """
        raise NotImplementedError

    def tool_schemas(self) -> list[dict[str, Any]]:
        """JSON schemas of the tools, for ``apply_chat_template(tools=...)`` (empty for tags)."""
        return []

    def _check_box(self, kind: str, box: Box | None) -> None:
        if box is not None and (kind != "image_search" or not self.crops):
            raise ConfigError(
                f"a box goes only on an image search of a protocol built with crops=True (got kind {kind!r}, "
                f"crops={self.crops}); make the env with image_crops=True"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(crops=True)" if self.crops else f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.crops == other.crops  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self.crops))


def _read_box(value: Any) -> Action:
    """An image search of the region ``value`` names, or an invalid action saying why it cannot be read."""
    try:
        return Action("image_search", box=parse_box(value))
    except BoxError as exc:
        return Action("invalid", error=f"the image search box is malformed: {exc}; write {BOX_SYNTAX}")


def _split_answer(text: str) -> Action | None:
    """The ``<answer>…</answer>`` ending shared by both protocols; ``None`` if the turn ends otherwise."""
    if not text.endswith("</answer>"):
        return None
    start = text.rfind("<answer>")
    if start == -1:
        return Action("invalid", error="the turn ends with </answer> but has no <answer> before it")
    return Action("answer", content=strip_tags(text[start + len("<answer>") : -len("</answer>")]))


def _unknown_kind(kind: str) -> ConfigError:
    kinds = ["answer", "image_search", "text_search"]
    return ConfigError(f"unknown action kind {kind!r}; expected one of {kinds}." + did_you_mean(kind, kinds))


def _counts(text: str, tags: tuple[str, ...]) -> dict[str, int]:
    return {tag: text.count(tag) for tag in tags}


#: Every tag of the paper's protocol (tokenizers built for it make each one a single token).
TAG_TOKENS = (
    "<reason>",
    "</reason>",
    "<answer>",
    "</answer>",
    "<search>",
    "</search>",
    "<img>",
    "<text_search>",
    "</text_search>",
    "<information>",
    "</information>",
)


class TagsProtocol(ActionProtocol):
    """The paper's tag protocol.

    >>> p = TagsProtocol()
    >>> p.parse("<reason>I know it.</reason><answer>Paris</answer>")
    Action(kind='answer', content='Paris', well_formed=True, error=None, box=None)
    >>> p.parse("<reason>Unsure.</reason> <text_search>capital of Arvenia</text_search>").content
    'capital of Arvenia'
    >>> p.parse("I think it is Paris.").kind
    'invalid'
    """

    name = "tags"
    tool_result_role = "user"
    wrap_information = True
    _TAGS = TAG_TOKENS
    _EXPECTED: ClassVar[dict[str, dict[str, int]]] = {
        "answer": {"<answer>": 1, "</answer>": 1},
        "image_search": {"<search>": 1, "</search>": 1, "<img>": 1},
        "text_search": {"<text_search>": 1, "</text_search>": 1},
    }
    _OPENERS: ClassVar[dict[str, str]] = {
        "answer": "<answer>",
        "image_search": "<search>",
        "text_search": "<text_search>",
    }

    def parse(self, text: str) -> Action:
        text = clean_text(text).rstrip()
        action = _split_answer(text) or self._split_search(text)
        if action is None:
            return Action(
                "invalid",
                error="the turn does not end with an action: <answer>…</answer>, "
                "<search><img></search> or <text_search>…</text_search>",
            )
        if action.kind == "invalid":
            return action
        problem = self._format_problem(text, action)
        return Action(action.kind, action.content, well_formed=problem is None, error=problem, box=action.box)

    def _split_search(self, text: str) -> Action | None:
        if text.endswith("</search>"):
            head = text[: -len("</search>")].rstrip()
            if head.endswith("<img>") and head[: -len("<img>")].rstrip().endswith("<search>"):
                return Action("image_search")
            if self.crops:
                return self._split_crop(head)
            return Action("invalid", error="the turn ends with </search> but not with <search><img></search>")
        if text.endswith("</text_search>"):
            start = text.rfind("<text_search>")
            if start == -1:
                return Action("invalid", error="the turn ends with </text_search> but has no <text_search>")
            query = strip_tags(text[start + len("<text_search>") : -len("</text_search>")])
            if not query:
                return Action("invalid", error="the text search query is empty")
            return Action("text_search", content=query)
        return None

    @staticmethod
    def _split_crop(head: str) -> Action:
        """``head`` is the turn before its final ``</search>``: ``…<search><img>BOX``."""
        start = head.rfind("<img>")
        if start == -1 or not head[:start].rstrip().endswith("<search>"):
            return Action(
                "invalid",
                error="the turn ends with </search> but not with <search><img></search> or <search><img>x1,y1,x2,y2</search>",
            )
        box_text = head[start + len("<img>") :]
        if len(box_text) > MAX_BOX_CHARS or "<" in box_text:
            return Action("invalid", error=f"the image search box must be four numbers only: {BOX_SYNTAX}")
        return _read_box(box_text)

    def _format_problem(self, text: str, action: Action) -> str | None:
        counts = _counts(text, self._TAGS)
        expected = {tag: 0 for tag in self._TAGS}
        expected.update({"<reason>": 1, "</reason>": 1, **self._EXPECTED[action.kind]})
        wrong = [tag for tag in self._TAGS if counts[tag] != expected[tag]]
        if wrong:
            return f"tag count off for {', '.join(wrong)}: each turn has one <reason> pair and one action"
        if not text.lstrip().startswith("<reason>"):
            return "the turn must start with <reason>"
        between = text[text.index("</reason>") + len("</reason>") : text.index(self._OPENERS[action.kind])]
        if between.strip():
            return "only whitespace may stand between </reason> and the action"
        if action.kind == "answer" and not action.content:
            return "the answer is empty"
        return None

    def format_action(
        self, kind: str, content: str | None = None, reason: str | None = None, *, box: Box | None = None
    ) -> str:
        self._check_box(kind, box)
        reason_text = strip_tags(reason or "") or "Deciding the next step."
        body = strip_tags(content or "")
        if kind == "answer":
            action = f"<answer>{body}</answer>"
        elif kind == "image_search":
            action = f"<search><img>{box if box is not None else ''}</search>"
        elif kind == "text_search":
            action = f"<text_search>{body}</text_search>"
        else:
            raise _unknown_kind(kind)
        return f"<reason>{reason_text}</reason>\n{action}"


class ToolCallsProtocol(ActionProtocol):
    """JSON tool calls in the Hermes / Qwen ``<tool_call>`` format, answers in ``<answer>`` tags.

    >>> p = ToolCallsProtocol()
    >>> p.parse('Let me look. <tool_call>{"name": "text_search", "arguments": {"query": "Arvenia"}}</tool_call>')
    Action(kind='text_search', content='Arvenia', well_formed=True, error=None, box=None)
    >>> p.parse('<tool_call>{"name": "web", "arguments": {}}</tool_call>').error
    "unknown tool 'web'; the tools are image_search and text_search"
    """

    name = "tool_calls"
    tool_result_role = "tool"
    wrap_information = False
    _TAGS = ("<tool_call>", "</tool_call>", "<answer>", "</answer>", "<tool_response>", "<information>")

    def parse(self, text: str) -> Action:
        text = clean_text(text).rstrip()
        action = _split_answer(text) or self._split_tool_call(text)
        if action is None:
            return Action(
                "invalid",
                error="the turn does not end with an action: a <tool_call>…</tool_call> or <answer>…</answer>",
            )
        if action.kind == "invalid":
            return action
        counts = _counts(text, self._TAGS)
        pair = ("<answer>", "</answer>") if action.kind == "answer" else ("<tool_call>", "</tool_call>")
        wrong = [tag for tag in self._TAGS if counts[tag] != (1 if tag in pair else 0)]
        if wrong:
            problem: str | None = f"tag count off for {', '.join(wrong)}: each turn has exactly one action"
        elif action.kind == "answer" and not action.content:
            problem = "the answer is empty"
        else:
            problem = None
        return Action(action.kind, action.content, well_formed=problem is None, error=problem, box=action.box)

    def _split_tool_call(self, text: str) -> Action | None:
        if not text.endswith("</tool_call>"):
            return None
        start = text.rfind("<tool_call>")
        if start == -1:
            return Action("invalid", error="the turn ends with </tool_call> but has no <tool_call>")
        payload = text[start + len("<tool_call>") : -len("</tool_call>")]
        try:
            call = json.loads(payload)
        except (ValueError, RecursionError):
            return Action("invalid", error="the tool call is not valid JSON")
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return Action("invalid", error='the tool call must be a JSON object with a "name" string')
        name, arguments = call["name"], call.get("arguments", {})
        if isinstance(arguments, str):  # some models emit the arguments JSON-encoded once more
            try:
                arguments = json.loads(arguments)
            except (ValueError, RecursionError):
                return Action("invalid", error="the tool call's arguments are not valid JSON")
        if not isinstance(arguments, dict):
            return Action("invalid", error='the tool call\'s "arguments" must be a JSON object')
        if name == "image_search":
            if self.crops and arguments.get("box") is not None:
                return _read_box(arguments["box"])
            return Action("image_search")
        if name == "text_search":
            query = arguments.get("query")
            query = strip_tags(query) if isinstance(query, str) else ""
            if not query:
                return Action("invalid", error='text_search needs a non-empty "query" string')
            return Action("text_search", content=query)
        return Action("invalid", error=f"unknown tool {name!r}; the tools are image_search and text_search")

    def format_action(
        self, kind: str, content: str | None = None, reason: str | None = None, *, box: Box | None = None
    ) -> str:
        self._check_box(kind, box)
        reason_text = strip_tags(reason or "")
        prefix = f"{reason_text}\n" if reason_text else ""
        if kind == "answer":
            return f"{prefix}<answer>{strip_tags(content or '')}</answer>"
        if kind == "image_search":
            arguments = {} if box is None else {"box": [box.x1, box.y1, box.x2, box.y2]}
            call: dict[str, Any] = {"name": "image_search", "arguments": arguments}
        elif kind == "text_search":
            call = {"name": "text_search", "arguments": {"query": strip_tags(content or "")}}
        else:
            raise _unknown_kind(kind)
        return f"{prefix}<tool_call>\n{json.dumps(call, ensure_ascii=False)}\n</tool_call>"

    def tool_schemas(self) -> list[dict[str, Any]]:
        image_properties: dict[str, Any] = {}
        description = (
            "Reverse image search of the question's image. Returns up to 5 web pages that show a matching "
            "image, each with a thumbnail and a title."
        )
        if self.crops:
            description += " Give a box to search only that region of the image."
            image_properties["box"] = {
                "type": "array",
                "items": {"type": "number"},
                "minItems": 4,
                "maxItems": 4,
                "description": f"optional region to search: {BOX_SYNTAX}; omit it to search the whole image",
            }
        return [
            {
                "type": "function",
                "function": {
                    "name": "image_search",
                    "description": description,
                    "parameters": {"type": "object", "properties": image_properties, "required": []},
                },
            },
            {
                "type": "function",
                "function": {
                    "name": "text_search",
                    "description": "Web search for a text query. Returns up to 5 web pages, each with "
                    "its link and a short summary.",
                    "parameters": {
                        "type": "object",
                        "properties": {"query": {"type": "string", "description": "what to search for"}},
                        "required": ["query"],
                    },
                },
            },
        ]


PROTOCOLS: dict[str, type[ActionProtocol]] = {"tags": TagsProtocol, "tool_calls": ToolCallsProtocol}


def get_protocol(protocol: str | ActionProtocol, *, crops: bool | None = None) -> ActionProtocol:
    """Return the protocol object for a name (``"tags"``, ``"tool_calls"``) or pass one through.

    ``crops``: build it reading image-search boxes (True) or not (False); ``None`` keeps a passed
    object's setting (a name gives a protocol without crops).
    """
    if isinstance(protocol, ActionProtocol):
        if crops is None or bool(crops) == protocol.crops:
            return protocol
        return type(protocol)(crops=crops)
    if isinstance(protocol, str) and protocol in PROTOCOLS:
        return PROTOCOLS[protocol](crops=bool(crops))
    raise ConfigError(
        f"unknown protocol {protocol!r}; expected one of {sorted(PROTOCOLS)}."
        + (did_you_mean(protocol, PROTOCOLS) if isinstance(protocol, str) else "")
    )
