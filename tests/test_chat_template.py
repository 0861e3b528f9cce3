"""Observations are ready for ``apply_chat_template``: rendered through a real Hugging Face tokenizer.

The tokenizer is built locally (no hub) with a Qwen2-VL-style multimodal chat template, which turns
every image block into one image placeholder. The count of placeholders must equal the count of
images the observation carries (the model's "image features and image tokens do not match" check),
for both protocols, including tool-result turns with thumbnails.
"""

from __future__ import annotations

import gymnasium as gym
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import mmsearch_env  # noqa: F401

# A Qwen2-VL-style template: content may be a string or a list of image/text blocks; tool messages
# are wrapped in <tool_response> inside a user turn, as Qwen's templates do.
TEMPLATE = (
    "{% for m in messages %}"
    "{% if m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{% else %}<|im_start|>{{ m.role }}\n{% endif %}"
    "{% if m.content is string %}{{ m.content }}{% else %}"
    "{% for b in m.content %}"
    "{% if b.type == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% elif b.type == 'text' %}{{ b.text }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if m.role == 'tool' %}\n</tool_response>{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer():
    specials = ["<unk>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"]
    core = Tokenizer(models.WordLevel({t: i for i, t in enumerate(specials)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", additional_special_tokens=specials[1:])
    tok.chat_template = TEMPLATE
    return tok


def count_images(messages):
    return sum(b["type"] == "image" for m in messages for b in m["content"])


@pytest.mark.parametrize(
    ("protocol", "turns"),
    [
        (
            "tags",
            [
                "<reason>Unknown flag.</reason><search><img></search>",
                "<reason>Need the capital.</reason><text_search>capital of Arvenia</text_search>",
            ],
        ),
        (
            "tool_calls",
            [
                '<tool_call>{"name": "image_search", "arguments": {}}</tool_call>',
                '<tool_call>{"name": "text_search", "arguments": {"query": "capital of Arvenia"}}</tool_call>',
            ],
        ),
    ],
)
def test_every_observation_renders_with_matching_image_tokens(tokenizer, protocol, turns):
    env = gym.make("MMSearch-v0", dataset="sample", search="sample", protocol=protocol)
    obs, _ = env.reset(options={"example_id": "sample-arvenia-image-text"})
    observations = [obs]
    for turn in turns:
        obs, *_ = env.step(turn)
        observations.append(obs)
    tools = env.unwrapped.protocol.tool_schemas() or None
    for obs in observations:
        text = tokenizer.apply_chat_template(obs["messages"], tools=tools, tokenize=False, add_generation_prompt=True)
        assert text.count("<|image_pad|>") == count_images(obs["messages"])
        assert text.endswith("<|im_start|>assistant\n")
        ids = tokenizer.apply_chat_template(obs["messages"], tokenize=True, add_generation_prompt=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        assert ids.count(tokenizer.convert_tokens_to_ids("<|image_pad|>")) == count_images(obs["messages"])
    # the image-search result turn really carries thumbnails: 1 question image + 5 thumbnails
    assert count_images(observations[1]["messages"]) == 6
    final = tokenizer.apply_chat_template(observations[-1]["messages"], tokenize=False)
    assert final.count("<|im_start|>assistant") == 2
    if protocol == "tool_calls":
        assert final.count("<tool_response>") == 2
    else:
        assert final.count("<information>") == 2
