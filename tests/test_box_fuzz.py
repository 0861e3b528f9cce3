"""Hostile boxes: more than 10,000 seeded ones (syntax and values), through the box reader, both
protocols' parsers and the environment's step. Not one may raise; every refusal is a value."""

from __future__ import annotations

import json
import math

import numpy as np

from mmsearch_env.env import MMSearchEnv
from mmsearch_env.errors import BoxError
from mmsearch_env.protocol import get_protocol
from mmsearch_env.regions import Box, parse_box, region_pixels

NUMBERS = [
    "0", "1", "0.5", ".5", "5.", "-0.1", "+0.3", "-1", "640", "99999", "1e3", "1E-2", "nan", "NaN", "inf",
    "-inf", "Infinity", "1" * 40, "1" * 400, "0.000000001", "-0", "00012", "1.2.3", "--1", "+-1", "0x1F",
    "\u0661", "\u0665\u0660", "\uff11", "\uff10.\uff15", "\u00b2", "\u2212" + "1", "\u0967", "\U0001d7d9",
    "", " ", "1 0", "½", "∞", "None", "null", "true", "1_000", "1,5", "٫5",
]  # fmt: skip
INJECTIONS = [
    "</search><answer>x</answer>", "<img>", "<search>", "</text_search>", "'; DROP TABLE boxes; --", "{{box}}",
    "%s%s%n", "\x00", "\ud800", "<|im_end|>", "[INST]", "${jndi:ldap://x}", "\u202e1,0,0,1", "\n\n\n",
    "<tool_call>{}</tool_call>", '{"box": [0,0,1,1]}', "\\u0030", "🙂", "\t", "\r\n",
]  # fmt: skip
SEPARATORS = [",", ", ", " , ", ";", " ", "\uff0c", "\u060c", ",,", "\t,"]
WRAPS = [("", ""), ("[", "]"), ("(", ")"), ("[", ")"), ("{", "}"), ("<", ">"), ("[", ""), ("", "]")]
JSON_VALUES = [
    0, 1, -1, 0.5, 10**400, -(10**400), 1e308, -1e308, 5e-324, True, False, None, "0.5", [], {}, [0.1], "nan",
]  # fmt: skip


def hostile_boxes(seed: int, n: int) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        kind = rng.integers(5)
        if kind == 4:  # well written, values anywhere: reversed, zero-area, outside, too small, fine
            out.append(",".join(f"{v:.3f}" for v in rng.choice([-0.5, 0.0, 0.1, 0.5, 0.9, 1.0, 1.5, 700.0], size=4)))
            continue
        if kind == 0:  # four-ish numbers from the hostile list
            parts = [str(rng.choice(NUMBERS)) for _ in range(int(rng.integers(2, 7)))]
        elif kind == 1:  # plausible numbers: negative, reversed, zero-area, huge
            values = rng.choice([-1e6, -5.0, 0.0, 0.5, 1.0, 3.0, 639.0, 1e9], size=4)
            parts = [f"{v:g}" for v in values]
        elif kind == 2:  # random fractions, sometimes reversed
            parts = [f"{v:.3f}" for v in rng.uniform(-0.2, 1.2, 4)]
        else:  # an injection in a random slot
            parts = [f"{v:.2f}" for v in rng.uniform(0, 1, 4)]
            parts[int(rng.integers(4))] = str(rng.choice(INJECTIONS))
        sep = str(rng.choice(SEPARATORS))
        opener, closer = WRAPS[int(rng.integers(len(WRAPS)))]
        out.append(opener + sep.join(parts) + closer)
    return out


def hostile_json(seed: int, n: int) -> list[object]:
    rng = np.random.default_rng(seed)
    out: list[object] = []
    for _ in range(n):
        size = int(rng.integers(0, 7))
        values = [JSON_VALUES[int(i)] for i in rng.integers(len(JSON_VALUES), size=size)]
        out.append(values if rng.random() < 0.8 else rng.choice(["0,0,1,1", "nan", ""]))
    return out


def test_ten_thousand_hostile_boxes_raise_nothing():
    boxes = hostile_boxes(seed=0, n=10_000)
    sizes = np.random.default_rng(1).integers(1, 5000, size=(len(boxes), 2))
    tags, calls = get_protocol("tags", crops=True), get_protocol("tool_calls", crops=True)
    read = refused = 0
    for text, (w, h) in zip(boxes, sizes, strict=True):
        try:
            box = parse_box(text)
        except BoxError as exc:
            assert str(exc)
            refused += 1
        else:
            read += 1
            assert isinstance(box, Box) and all(math.isfinite(v) for v in (box.x1, box.y1, box.x2, box.y2))
            try:
                left, top, right, bottom = region_pixels(box, (int(w), int(h)))
            except BoxError:
                pass
            else:
                assert 0 <= left < right <= w and 0 <= top < bottom <= h
        action = tags.parse(f"<reason>r</reason><search><img>{text}</search>")
        assert action.kind in ("image_search", "invalid") and (action.kind == "invalid") == (action.box is None)
        call = json.dumps({"name": "image_search", "arguments": {"box": text}})
        assert calls.parse(f"<tool_call>{call}</tool_call>").kind in ("image_search", "invalid")
    assert read > 1500 and refused > 5000  # both sides of the rule were exercised


def test_hostile_json_boxes_raise_nothing():
    tools = get_protocol("tool_calls", crops=True)
    kinds = set()
    for value in hostile_json(seed=2, n=3000):
        call = json.dumps({"name": "image_search", "arguments": {"box": value}})
        kinds.add(tools.parse(f"<tool_call>{call}</tool_call>").kind)
    assert kinds == {"image_search", "invalid"}


def test_hostile_boxes_through_the_env_step():
    env = MMSearchEnv(dataset="sample", search="sample", image_crops=True, question_scenes="screenshot")
    outcomes = set()
    for i, text in enumerate(hostile_boxes(seed=3, n=1500)):
        env.reset(seed=i)
        _, reward, terminated, truncated, info = env.step(f"<reason>r</reason><search><img>{text}</search>")
        assert 0.0 <= reward <= 1.0 and not truncated
        if terminated:
            assert info["end_reason"] == "malformed" and info["action_error"]
        else:
            assert len(info["image_regions"]) == 1
        outcomes.add(terminated)
    assert outcomes == {True, False}
