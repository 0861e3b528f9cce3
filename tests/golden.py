"""Default-env episodes, played and serialised: the golden record of what ``MMSearch-v0`` does.

``python tests/golden.py --write`` rewrites ``tests/data/golden_default_episodes.jsonl.gz`` (only when a
change of behaviour is intended, and then say so under the env's Version History); test_golden.py
replays the same episodes and compares the text byte for byte. Every episode runs on a default
:class:`~mmsearch_env.config.EnvConfig` but for the dataset/split/protocol it names, so anything an
opt-in extension adds must leave this file unchanged.

Images are written as their size and the SHA-256 of their pixels; the record leaves out wall-clock
latencies (the only values that vary between runs).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from agents.baselines import DirectAnswerPolicy, RAGWorkflowPolicy, RandomPolicy
from agents.scripted import OraclePolicy
from mmsearch_env.env import MMSearchEnv

GOLDEN = Path(__file__).parent / "data" / "golden_default_episodes.jsonl.gz"

# Hand-written turns: malformed and boundary trajectories the policies never produce.
T = "<reason>r</reason>"
SCRIPTS_TAGS: dict[str, list[str]] = {
    "direct": [f"{T}<answer>Paris</answer>"],
    "image_then_answer": [f"{T}<search><img></search>", f"{T}<answer>Aruba</answer>"],
    "text_text_answer": [
        f"{T}<text_search>flag</text_search>",
        f"{T}<text_search>capital</text_search>",
        f"{T}<answer>x</answer>",
    ],
    "text_then_image": [f"{T}<text_search>flag</text_search>", f"{T}<search><img></search>", f"{T}<answer>x</answer>"],
    "two_images": [f"{T}<search><img></search>", f"{T}<search><img></search>"],
    "three_texts": [
        f"{T}<text_search>a</text_search>",
        f"{T}<text_search>b</text_search>",
        f"{T}<text_search>c</text_search>",
    ],
    "search_on_last_turn": [
        f"{T}<search><img></search>",
        f"{T}<text_search>q</text_search>",
        f"{T}<search><img></search>",
    ],
    "no_action": ["I think it is Paris."],
    "empty": [""],
    "empty_query": [f"{T}<text_search>  </text_search>"],
    "img_with_box_text": [f"{T}<search><img>0.1,0.1,0.5,0.5</search>"],
    "img_box_attr": [f'{T}<search><img box="0,0,1,1"></search>'],
    "no_reason": ["<search><img></search>", "<answer>Aruba</answer>"],
    "two_answers": [f"{T}<answer>a</answer><answer>b</answer>"],
    "text_between": [f"{T} so <search><img></search>", f"{T}<answer>z</answer>"],
    "huge_turn": ["x" * 40_000 + f"{T}<answer>a</answer>"],
    "control_chars": [f"{T}<text_search>caf\u00e9 \u0000\ud800 [INST]</text_search>", f"{T}<answer>\u200b</answer>"],
    "answer_empty": [f"{T}<answer></answer>"],
    "closing_only": [f"{T}</answer>"],
}
SCRIPTS_TOOLS: dict[str, list[str]] = {
    "image_then_answer": ['<tool_call>{"name": "image_search", "arguments": {}}</tool_call>', "<answer>Aruba</answer>"],
    "image_with_box": [
        '<tool_call>{"name": "image_search", "arguments": {"box": [0, 0, 0.5, 0.5]}}</tool_call>',
        "<answer>a</answer>",
    ],
    "image_with_bad_box": [
        '<tool_call>{"name": "image_search", "arguments": {"box": "nan"}}</tool_call>',
        "<answer>a</answer>",
    ],
    "text_search": [
        '<tool_call>{"name": "text_search", "arguments": {"query": "capital"}}</tool_call>',
        "<answer>b</answer>",
    ],
    "string_arguments": [
        '<tool_call>{"name": "text_search", "arguments": "{\\"query\\": \\"q\\"}"}</tool_call>',
        "<answer>b</answer>",
    ],
    "bad_json": ["<tool_call>{not json</tool_call>"],
    "unknown_tool": ['<tool_call>{"name": "web", "arguments": {}}</tool_call>'],
    "empty_query": ['<tool_call>{"name": "text_search", "arguments": {"query": ""}}</tool_call>'],
    "two_images": ['<tool_call>{"name": "image_search", "arguments": {}}</tool_call>'] * 2,
    "tags_in_tool_protocol": [f"{T}<search><img></search>"],
}


def _image(image: Image.Image) -> dict[str, Any]:
    return {"size": list(image.size), "mode": image.mode, "sha256": hashlib.sha256(image.tobytes()).hexdigest()}


def _value(value: Any) -> Any:
    if isinstance(value, Image.Image):
        return _image(value)
    if isinstance(value, dict):
        return {str(k): _value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_value(v) for v in value]
    if isinstance(value, float):
        return repr(value)  # exact: 0.91 vs 0.9100000000000001 must differ
    return value


def _record(env: MMSearchEnv) -> dict[str, Any]:
    record = env.episode_record().to_dict()
    for search in record["searches"]:
        search.pop("latency_s", None)
    return _value(record)


def _digest(value: Any) -> str:
    return hashlib.sha256(_line(value).encode("utf-8")).hexdigest()


def _line(payload: dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, ensure_ascii=True)


def _play(
    env: MMSearchEnv, reset: dict[str, Any], act: Callable[[dict, dict], str], max_steps: int = 8
) -> Iterator[str]:
    obs, info = env.reset(**reset)
    yield _line({"event": "reset", "reset": reset, "obs": _value(obs), "info": _value(info)})
    shown = len(obs["messages"])
    for _ in range(max_steps):
        action = act(obs, info)
        obs, reward, terminated, truncated, info = env.step(action)
        yield _line(
            {
                "event": "step",
                "action": action if len(action) < 300 else f"<{len(action)} chars>",
                # the new messages in full, and a digest of the whole observation (earlier messages included)
                "new_messages": _value(obs["messages"][shown:]),
                "obs_sha256": _digest(_value(obs)),
                "reward": repr(reward),
                "terminated": terminated,
                "truncated": truncated,
                "info": _value(info),
                "render_sha256": _digest(env.render()),
            }
        )
        shown = len(obs["messages"])
        if terminated or truncated:
            break
    yield _line({"event": "record", "record": _record(env), "score": _value(env.score().as_dict())})


def _scripted(turns: list[str]) -> Callable[[dict, dict], str]:
    remaining = list(turns)
    return lambda obs, info: remaining.pop(0) if remaining else ""


def golden_lines() -> Iterator[str]:
    """Every line of the golden file, in order (deterministic: seeded resets, seeded policies)."""
    for dataset, split in (("corpus", "test"), ("sample", "train")):
        for protocol in ("tags", "tool_calls"):
            env = MMSearchEnv(dataset=dataset, split=split, protocol=protocol, render_mode="ansi")
            policies = [
                OraclePolicy(env.examples, protocol=protocol),
                OraclePolicy(env.examples, use_search=False, protocol=protocol),
                RAGWorkflowPolicy(protocol=protocol),
                DirectAnswerPolicy(protocol=protocol),
                RandomPolicy(seed=3, protocol=protocol),
            ]
            for policy in policies:
                for seed in (0, 1, 2):
                    yield _line({"episode": f"{dataset}/{protocol}/{policy.name}/seed{seed}"})
                    yield from _play(env, {"seed": seed}, policy.act)
            scripts = SCRIPTS_TAGS if protocol == "tags" else SCRIPTS_TOOLS
            for name, turns in scripts.items():
                yield _line({"episode": f"{dataset}/{protocol}/script/{name}"})
                yield from _play(env, {"seed": 7}, _scripted(turns))
            env.action_space.seed(5)
            sample = env.action_space.sample
            for seed in (0, 1):
                yield _line({"episode": f"{dataset}/{protocol}/action_space.sample/seed{seed}"})
                yield from _play(env, {"seed": seed}, lambda obs, info, sample=sample: sample())
            env.close()


def golden_text() -> str:
    """The whole golden file's text (stored gzipped; compared uncompressed)."""
    return "".join(line + "\n" for line in golden_lines())


def stored_text() -> str:
    return gzip.decompress(GOLDEN.read_bytes()).decode("utf-8")


if __name__ == "__main__":
    if "--write" not in sys.argv:
        raise SystemExit("usage: python tests/golden.py --write   (rewrites " + str(GOLDEN) + ")")
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_bytes(gzip.compress(golden_text().encode("utf-8"), mtime=0))
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes)")
