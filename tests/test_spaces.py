"""Our Gymnasium spaces accept exactly what the environment produces, and sample from their own RNG."""

from __future__ import annotations

import pytest
from PIL import Image

from mmsearch_env.protocol import TagsProtocol, ToolCallsProtocol
from mmsearch_env.spaces import AssistantTurn, ChatMessages, PILImage, StructuredAction, UnicodeText

IMAGE = Image.new("RGB", (4, 4))


@pytest.mark.parametrize(
    ("space", "inside", "outside"),
    [
        (UnicodeText(), ["", "é \ud800"], [b"x", None, 3]),
        (UnicodeText(max_length=3), ["abc"], ["abcd"]),
        (PILImage(), [IMAGE], [Image.new("L", (4, 4)), "image"]),
        (
            ChatMessages(),
            [[], [{"role": "tool", "content": [{"type": "text", "text": "x"}, {"type": "image", "image": IMAGE}]}]],
            [
                [{"role": "robot", "content": []}],  # unknown role
                [{"role": "user", "content": "plain string"}],  # content must be a block list
                [{"role": "user", "content": [{"type": "image", "image": "path.png"}]}],  # image must be PIL
                [{"role": "user", "content": [{"type": "video"}]}],
                ({"role": "user", "content": []},),  # a tuple is not a list
            ],
        ),
        (
            StructuredAction(),
            [{"type": "image_search"}, {"type": "answer", "answer": "x", "reason": "r"}],
            [{"type": "answer"}, {"type": "text_search", "query": 1}, {"type": "image_search", "query": "x"}, "x"],
        ),
    ],
)
def test_contains(space, inside, outside):
    assert all(x in space for x in inside)
    assert not any(x in space for x in outside)


@pytest.mark.parametrize("protocol", [TagsProtocol(), ToolCallsProtocol()])
def test_assistant_turn_samples_parse_and_are_seeded(protocol):
    space = AssistantTurn(protocol, seed=5)
    samples = [space.sample() for _ in range(30)]
    assert {protocol.parse(s).kind for s in samples} == {"answer", "image_search", "text_search"}
    assert all(protocol.parse(s).well_formed for s in samples)
    again = AssistantTurn(protocol, seed=5)
    assert [again.sample() for _ in range(30)] == samples
    assert space == AssistantTurn(protocol) and space != AssistantTurn(
        TagsProtocol() if protocol.name != "tags" else ToolCallsProtocol()
    )


def test_image_and_chat_samples_are_members():
    for space in (PILImage(seed=1), ChatMessages(seed=1), StructuredAction(seed=1)):
        assert space.sample() in space
        assert not space.is_np_flattenable
