"""Table tests of the two action protocols: what each assistant turn parses to, and back."""

from __future__ import annotations

import json
import re

import pytest

from mmsearch_env.errors import ConfigError
from mmsearch_env.protocol import Action, TagsProtocol, ToolCallsProtocol, get_protocol
from mmsearch_env.text import PROTOCOL_TAG_RE

R = "<reason>I am not sure.</reason>"


def case(text: str, kind: str, content: str | None, well_formed: bool, reason: str):
    return pytest.param(text, kind, content, well_formed, id=reason)


def tool_call(payload: object) -> str:
    return f"<tool_call>{json.dumps(payload)}</tool_call>"


# ---------------------------------------------------------------------------------------------------
# tags protocol

TAGS_CASES = [
    # answers
    case(f"{R}<answer>Paris</answer>", "answer", "Paris", True, "direct answer"),
    case(f"{R}\n<answer> Paris </answer>\n", "answer", "Paris", True, "newline before action, spaces trimmed"),
    case(f"{R}<answer>New   York\nCity</answer>", "answer", "New York City", True, "whitespace in answer collapsed"),
    case(f"{R}<answer></answer>", "answer", "", False, "empty answer is an answer, but not well formed"),
    case(f"{R}<answer>  </answer>", "answer", "", False, "whitespace-only answer is empty"),
    case("<answer>Paris</answer>", "answer", "Paris", False, "no reason: kind ok, not well formed"),
    case(f"Hmm. {R}<answer>Paris</answer>", "answer", "Paris", False, "text before <reason>"),
    case(f"{R} so <answer>Paris</answer>", "answer", "Paris", False, "text between </reason> and the action"),
    case("<reason>a</reason><reason>b</reason><answer>Paris</answer>", "answer", "Paris", False, "two reason pairs"),
    case("<reason>unclosed <answer>Paris</answer>", "answer", "Paris", False, "reason never closed"),
    case(
        f"{R}<text_search>capital</text_search><answer>Paris</answer>",
        "answer",
        "Paris",
        False,
        "text search then answer: the end wins, two action tags",
    ),
    case(
        f"{R}<search><img></search><answer>Paris</answer>",
        "answer",
        "Paris",
        False,
        "image search then answer: the end wins, two action tags",
    ),
    case(
        f"{R}<answer>Lyon</answer><answer>Paris</answer>",
        "answer",
        "Paris",
        False,
        "two answers: the last pair is the answer",
    ),
    case(
        f"{R}<information>fake results</information><answer>Paris</answer>",
        "answer",
        "Paris",
        False,
        "<information> typed by the model",
    ),
    case(
        f"{R}<answer>Paris <information>x</information></answer>",
        "answer",
        "Paris x",
        False,
        "protocol tags inside the answer are stripped",
    ),
    case(f"{R}<answer>Par\x00is\x1b</answer>", "answer", "Paris", True, "control characters dropped"),
    case(f"{R}<answer>Par\ud800is</answer>", "answer", "Par\ufffdis", True, "lone surrogate replaced"),
    case(f"{R}<answer>Paris</answer>\x7f", "answer", "Paris", True, "trailing DEL dropped before the end check"),
    case(f"{R}Paris</answer>", "invalid", None, False, "</answer> without <answer>"),
    case(f"{R}<answer>Paris</answer> I hope.", "invalid", None, False, "answer not at the very end"),
    # image search
    case(f"{R}<search><img></search>", "image_search", None, True, "image search"),
    case(f"{R}<search> <img>\n</search>", "image_search", None, True, "whitespace inside <search><img></search>"),
    case(f"{R}<search><img></search>  \n\t", "image_search", None, True, "whitespace after the action"),
    case(f"{R}\n\n<search><img></search>", "image_search", None, True, "blank lines before the action"),
    case(f"{R}<search>x<img></search>", "invalid", None, False, "text inside <search> before <img>"),
    case(f"{R}<search></search>", "invalid", None, False, "<search> without <img>"),
    case(f"{R}<img></search>", "invalid", None, False, "<img></search> without <search>"),
    case(f"{R}<search><img></search> then answer", "invalid", None, False, "image search not at the very end"),
    case(
        f"{R}<search><img></search><search><img></search>",
        "image_search",
        None,
        False,
        "two image searches",
    ),
    # text search
    case(f"{R}<text_search>capital of Arvenia</text_search>", "text_search", "capital of Arvenia", True, "text search"),
    case(
        f"{R} <text_search>  capital\n of   Arvenia </text_search> ",
        "text_search",
        "capital of Arvenia",
        True,
        "query whitespace collapsed",
    ),
    case(
        f"{R}<text_search>first</text_search><text_search>second</text_search>",
        "text_search",
        "second",
        False,
        "the LAST text_search pair is the query",
    ),
    case(
        f"{R}<text_search>capital <answer>Velmont</answer> now</text_search>",
        "text_search",
        "capital Velmont now",
        False,
        "protocol tags inside the query are stripped, and count",
    ),
    case(
        f"{R}<text_search>a </information><information> b</text_search>",
        "text_search",
        "a b",
        False,
        "information tags inside the query",
    ),
    case(f"{R}<text_search></text_search>", "invalid", None, False, "empty query"),
    case(f"{R}<text_search> \n </text_search>", "invalid", None, False, "whitespace-only query"),
    case(f"{R}<text_search><answer></answer></text_search>", "invalid", None, False, "query of tags only is empty"),
    case(f"{R}capital</text_search>", "invalid", None, False, "</text_search> without <text_search>"),
    case(f"{R}<text_search>capital</text_search>.", "invalid", None, False, "text search not at the very end"),
    # no action
    case("", "invalid", None, False, "empty turn"),
    case("   \n\t", "invalid", None, False, "whitespace-only turn"),
    case("I think it is Paris.", "invalid", None, False, "plain text"),
    case(f"{R}", "invalid", None, False, "reason only"),
    case(f"{R}<answer>Paris", "invalid", None, False, "answer never closed"),
]


# ---------------------------------------------------------------------------------------------------
# tool_calls protocol

TEXT_CALL = tool_call({"name": "text_search", "arguments": {"query": "capital of Arvenia"}})
IMAGE_CALL = tool_call({"name": "image_search", "arguments": {}})

TOOL_CALLS_CASES = [
    # answers
    case("<answer>Paris</answer>", "answer", "Paris", True, "direct answer"),
    case("It is Paris, I know it.\n<answer>Paris</answer>\n", "answer", "Paris", True, "free reasoning before answer"),
    case("<answer></answer>", "answer", "", False, "empty answer"),
    case("<information>fake</information><answer>Paris</answer>", "answer", "Paris", False, "<information> typed"),
    case(
        "<tool_response>fake</tool_response><answer>Paris</answer>", "answer", "Paris", False, "<tool_response> typed"
    ),
    case(f"{IMAGE_CALL}<answer>Paris</answer>", "answer", "Paris", False, "tool call then answer: two actions"),
    case("<answer>Paris <tool_call>{}</tool_call></answer>", "answer", "Paris {}", False, "tool_call tags in answer"),
    case("Paris</answer>", "invalid", None, False, "</answer> without <answer>"),
    case("<answer>Paris</answer> done", "invalid", None, False, "answer not at the very end"),
    # image search
    case(IMAGE_CALL, "image_search", None, True, "image_search call"),
    case(tool_call({"name": "image_search"}), "image_search", None, True, "image_search without arguments"),
    case(
        f"Let me look.\n<tool_call>\n{json.dumps({'name': 'image_search'})}\n</tool_call>  ",
        "image_search",
        None,
        True,
        "reasoning, newlines around the JSON, trailing spaces",
    ),
    # text search
    case(TEXT_CALL, "text_search", "capital of Arvenia", True, "text_search call"),
    case(
        tool_call({"name": "text_search", "arguments": json.dumps({"query": "Arvenia"})}),
        "text_search",
        "Arvenia",
        True,
        "arguments JSON-encoded as a string",
    ),
    case(
        '<tool_call>{"name": "text_search", "arguments": {"query": "x \\u003canswer\\u003ey"}}</tool_call>',
        "text_search",
        "x y",
        True,
        "a tag written with JSON escapes is decoded, then stripped from the query",
    ),
    case(
        '<tool_call>{"name": "text_search", "arguments": {"query": "x <answer>y</answer>"}}</tool_call>',
        "text_search",
        "x y",
        False,
        "raw answer tags inside the tool call count against the format",
    ),
    case(
        f"{IMAGE_CALL}{TEXT_CALL}",
        "text_search",
        "capital of Arvenia",
        False,
        "two tool calls: the last one wins",
    ),
    case(f"{TEXT_CALL} done", "invalid", None, False, "tool call not at the very end"),
    case('<tool_call>{"name": "text_search", </tool_call>', "invalid", None, False, "bad JSON"),
    case(
        tool_call({"name": "text_search", "arguments": "{query"}),
        "invalid",
        None,
        False,
        "bad JSON inside string-encoded arguments",
    ),
    case(tool_call({"name": "web_search", "arguments": {"query": "x"}}), "invalid", None, False, "unknown tool name"),
    case(tool_call({"name": "text_search", "arguments": {}}), "invalid", None, False, "missing query"),
    case(tool_call({"name": "text_search"}), "invalid", None, False, "text_search without arguments"),
    case(tool_call({"name": "text_search", "arguments": {"query": 5}}), "invalid", None, False, "query not a string"),
    case(tool_call({"name": "text_search", "arguments": {"query": "  "}}), "invalid", None, False, "blank query"),
    case(
        tool_call({"name": "text_search", "arguments": {"query": "<answer></answer>"}}),
        "invalid",
        None,
        False,
        "query of tags only is empty",
    ),
    case(tool_call({"name": "text_search", "arguments": ["x"]}), "invalid", None, False, "arguments a list"),
    case(tool_call(["text_search", "x"]), "invalid", None, False, "non-object payload: a list"),
    case(tool_call("text_search"), "invalid", None, False, "non-object payload: a string"),
    case("<tool_call>null</tool_call>", "invalid", None, False, "non-object payload: null"),
    case(tool_call({"name": 1, "arguments": {}}), "invalid", None, False, "name not a string"),
    case(tool_call({"arguments": {"query": "x"}}), "invalid", None, False, "no name"),
    case("<tool_call></tool_call>", "invalid", None, False, "empty tool call"),
    case('{"name": "image_search"}</tool_call>', "invalid", None, False, "</tool_call> without <tool_call>"),
    case("<tool_call>" + "[" * 100_000 + "</tool_call>", "invalid", None, False, "JSON nested past recursion"),
    case(
        '<tool_call>{"name": "image_search", "n": ' + "1" * 10_000 + "}</tool_call>",
        "invalid",
        None,
        False,
        "integer past Python's digit limit",
    ),
    # no action
    case("", "invalid", None, False, "empty turn"),
    case("I think it is Paris.", "invalid", None, False, "plain text"),
    case(f"{R}<search><img></search>", "invalid", None, False, "tags-protocol image search is not a tool call"),
]


@pytest.mark.parametrize(
    ("protocol", "text", "kind", "content", "well_formed"),
    [pytest.param(TagsProtocol(), *c.values, id=f"tags: {c.id}") for c in TAGS_CASES]
    + [pytest.param(ToolCallsProtocol(), *c.values, id=f"tool_calls: {c.id}") for c in TOOL_CALLS_CASES],
)
def test_parse(protocol, text: str, kind: str, content: str | None, well_formed: bool) -> None:
    action = protocol.parse(text)
    assert (action.kind, action.content, action.well_formed) == (kind, content, well_formed)
    # a clean turn carries no error; anything else says why in words
    assert (action.error is None) == well_formed


def test_unknown_tool_error_names_the_tool() -> None:
    action = ToolCallsProtocol().parse(tool_call({"name": "web", "arguments": {}}))
    assert action.error == "unknown tool 'web'; the tools are image_search and text_search"


# ---------------------------------------------------------------------------------------------------
# format_action ⇄ parse

PROTOCOLS = [pytest.param(TagsProtocol(), id="tags"), pytest.param(ToolCallsProtocol(), id="tool_calls")]

CONTENTS = [
    pytest.param("Paris", "Paris", id="plain"),
    pytest.param("capital of Arvenia", "capital of Arvenia", id="several words"),
    pytest.param("  New \n York  ", "New York", id="whitespace collapsed"),
    pytest.param("x </answer> y", "x y", id="closing answer tag stripped"),
    pytest.param("<text_search>q</text_search>", "q", id="text_search tags stripped"),
    pytest.param("<search><img></search> z", "z", id="image search tags stripped"),
    pytest.param('</tool_call>{"name": "x"}<tool_call>', '{"name": "x"}', id="tool_call tags stripped"),
    pytest.param("a </information><information> b", "a b", id="information tags stripped"),
    pytest.param("Velmont <|im_end|>", "Velmont <|im_end|>", id="chat token is not a protocol tag"),
    pytest.param('say "hi" \\ {x}', 'say "hi" \\ {x}', id="JSON-special characters"),
    pytest.param("Zürich 東京", "Zürich 東京", id="non-ASCII"),
    pytest.param("a\ud800b", "a\ufffdb", id="lone surrogate replaced"),
]
REASONS = [
    pytest.param(None, id="no reason"),
    pytest.param("I know </reason><answer>No</answer> it.", id="reason with tags"),
]


@pytest.mark.parametrize("reason", REASONS)
@pytest.mark.parametrize(("content", "expected"), CONTENTS)
@pytest.mark.parametrize("kind", ["answer", "text_search"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_format_action_round_trips(protocol, kind: str, content: str, expected: str, reason: str | None) -> None:
    action = protocol.parse(protocol.format_action(kind, content, reason))
    assert action == Action(kind, expected, well_formed=True)


@pytest.mark.parametrize("reason", REASONS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_format_action_round_trips_image_search(protocol, reason: str | None) -> None:
    # content is ignored for an image search, even when it holds tags
    action = protocol.parse(protocol.format_action("image_search", "<answer>x</answer>", reason))
    assert action == Action("image_search", None, well_formed=True)


@pytest.mark.parametrize("kind", ["answer", "text_search"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_format_action_round_trips_nested_tag(protocol, kind: str) -> None:
    action = protocol.parse(protocol.format_action(kind, "Paris <<answer>answer>"))
    assert action == Action(kind, "Paris < answer>", well_formed=True)


@pytest.mark.parametrize(
    ("protocol", "text"),
    [
        pytest.param(TagsProtocol(), f"{R}<answer>< <think>answer></answer>", id="tags-answer"),
        pytest.param(TagsProtocol(), f"{R}<text_search>< <think>img></text_search>", id="tags-query"),
        pytest.param(
            ToolCallsProtocol(),
            tool_call({"name": "text_search", "arguments": {"query": "< <think>answer>"}}),
            id="tool_calls-query",
        ),
    ],
)
def test_parse_content_never_holds_a_protocol_tag(protocol, text: str) -> None:
    action = protocol.parse(text)
    assert action.content is not None
    assert PROTOCOL_TAG_RE.search(action.content) is None


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_format_action_unknown_kind(protocol) -> None:
    with pytest.raises(ConfigError, match=re.escape("unknown action kind 'answr'")) as excinfo:
        protocol.format_action("answr", "Paris")
    assert "Did you mean 'answer'?" in str(excinfo.value)


# ---------------------------------------------------------------------------------------------------
# get_protocol


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        pytest.param("tag", "Did you mean 'tags'?", id="tag"),
        pytest.param("tool_call", "Did you mean 'tool_calls'?", id="tool_call"),
    ],
)
def test_get_protocol_suggests_the_name(name: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(hint)):
        get_protocol(name)


def test_get_protocol_unknown_name_without_close_match() -> None:
    with pytest.raises(ConfigError, match=re.escape("unknown protocol 'xml'; expected one of ['tags', 'tool_calls'].")):
        get_protocol("xml")


@pytest.mark.parametrize(
    ("name", "cls"),
    [pytest.param("tags", TagsProtocol, id="tags"), pytest.param("tool_calls", ToolCallsProtocol, id="tool_calls")],
)
def test_get_protocol_by_name_and_object(name: str, cls: type) -> None:
    protocol = get_protocol(name)
    assert type(protocol) is cls and protocol.name == name
    assert get_protocol(protocol) is protocol
