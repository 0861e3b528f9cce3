"""GRPO in TRL with the env adapter: masks, images, reward, LoRA round trip, a few real steps.

Generations are scripted (:mod:`agents.scripted_model`): the model's forward, loss and gradients are
real, but what it says is fixed, so the numbers below are exact.
"""

from __future__ import annotations

import json
import os
import re

import pytest
import torch_guard  # noqa: F401  (skips the module without the training extra)
from env_flags import ENV_FLAG_VALUES

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch
from safetensors.torch import load_file

from agents.grpo import (
    EnvReward,
    MMSearchGRPOConfig,
    TagsToolEnv,
    ToolCallsToolEnv,
    build_trainer,
    cpu_preset,
    env_factory,
    make_train_dataset,
    prepare_processing_class,
    split_turns,
)
from agents.hf_policy import HFPolicy, load_processing_class
from agents.scripted_model import plan_script, scripted_vlm
from agents.tiny_vlm import build_tiny_vlm
from mmsearch_env.data import load_dataset
from mmsearch_env.errors import ConfigError
from mmsearch_env.protocol import get_protocol
from mmsearch_env.reward import score_trajectory
from mmsearch_env.search.base import SearchBackendBase

IDS = ("sample-arvenia-image", "sample-arvenia-text", "sample-arvenia-none")


@pytest.fixture(scope="module")
def dataset_file(tmp_path_factory):
    """Three sample questions with distinct texts (so a script can tell them apart), as a JSONL dataset."""
    folder = tmp_path_factory.mktemp("grpo-data")
    by_id = {e.id: e for e in load_dataset("sample", None)}
    with (folder / "questions.jsonl").open("w") as f:
        for example_id in IDS:
            e = by_id[example_id]
            e.image.save(folder / f"{example_id}.png")
            row = {"id": e.id, "question": e.question, "image": f"{example_id}.png", "answer": e.answer}
            row.update(candidate_answers=list(e.candidate_answers), search_need=e.search_need)
            f.write(json.dumps(row) + "\n")
    return str(folder / "questions.jsonl"), by_id


def plans(protocol: str, by_id) -> dict[str, list[list[str]]]:
    p = get_protocol(protocol)
    q = {i: by_id[i].question for i in IDS}
    return {
        q["sample-arvenia-image"]: [
            [p.format_action("image_search", reason="Unknown flag."), p.format_action("answer", "Arvenia")],
            [p.format_action("answer", "Belmora", reason="A guess.")],
        ],
        q["sample-arvenia-text"]: [
            [p.format_action("text_search", "currency of Arvenia"), p.format_action("answer", "arven crown")],
            [p.format_action("answer", "euro", reason="A guess.")],
        ],
        q["sample-arvenia-none"]: [
            [p.format_action("answer", "star", reason="I can see it.")],
            # a second image search is past the limit: the env ends the episode there (reward 0.0)
            [
                p.format_action("image_search"),
                p.format_action("image_search", reason="Again."),
                "<answer>star</answer>",
            ],
        ],
    }


def make_trainer(tmp_path, dataset_file, protocol, **overrides):
    path, by_id = dataset_file
    base = build_tiny_vlm()
    model = scripted_vlm(base, plan_script(plans(protocol, by_id)), seed=1)
    settings = dict(
        dataset=path,
        search="sample",  # the sample questions' own web
        split=None,
        protocol=protocol,
        warm_start_epochs=0,
        per_device_train_batch_size=6,
        num_generations=2,
        max_steps=2,
        learning_rate=5e-2,
        save_steps=1000,
        report_to=[],
        metrics_plot=False,
    )
    settings.update(overrides)
    config = cpu_preset(str(tmp_path / "run"), **settings)
    return build_trainer(config, model=model, processor=load_processing_class(base)), by_id


def test_config_has_paper_defaults_and_checks_fields(tmp_path):
    c = MMSearchGRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    assert (c.num_generations, c.learning_rate, c.beta, c.epsilon, c.temperature) == (8, 2e-6, 0.001, 0.2, 1.0)
    assert (c.max_turns, c.max_image_searches, c.max_text_searches) == (3, 1, 2)
    assert (c.search_penalty, c.format_weight, c.protocol, c.dataset) == (0.1, 0.1, "tags", "corpus")
    assert c.max_tool_calling_iterations == 2  # the last turn must answer
    capped = MMSearchGRPOConfig(output_dir=str(tmp_path), max_turn_tokens=7, use_cpu=True, report_to=[])
    assert capped.generation_kwargs["max_new_tokens"] == 7
    with pytest.raises(ConfigError, match="Did you mean 'tool_calls'"):
        MMSearchGRPOConfig(output_dir=str(tmp_path), protocol="tool_call", use_cpu=True, report_to=[])
    with pytest.raises(ConfigError, match=re.escape("use_vllm (the gpu preset) needs a real model: pass --model_path")):
        MMSearchGRPOConfig(output_dir=str(tmp_path), use_vllm=True, use_cpu=True, report_to=[])


def test_split_turns_handles_cut_completions():
    assert split_turns([5, 2, 9, 1, 7, 8], header_ids=[1, 7], end_ids=[2]) == [[5], [8]]  # second turn cut
    assert split_turns([2], header_ids=[1], end_ids=[2]) == [[]]


@pytest.mark.parametrize("protocol", ["tags", "tool_calls"])
def test_rollout_masks_tool_tokens_feeds_thumbnails_and_scores_like_the_env(tmp_path, dataset_file, protocol):
    trainer, by_id = make_trainer(tmp_path, dataset_file, protocol)
    tok = trainer.processing_class.tokenizer
    rows = make_train_dataset(trainer.args.env_kwargs())
    by_example = {row["example_id"]: row for row in rows}
    batch = [by_example[i] for i in IDS for _ in range(2)]
    out = trainer._generate_and_score_completions(batch)
    reward: EnvReward = trainer.mmsearch_reward
    parser = get_protocol(protocol)
    image_pad = trainer.processing_class.image_token_id
    image_searches = 0
    for row in range(len(batch)):
        ids = out["completion_ids"][row][out["completion_mask"][row].bool()]
        mask = out["tool_mask"][row][out["completion_mask"][row].bool()]
        turns = reward.turns(ids.tolist())
        example = by_id[batch[row]["example_id"]]
        plan = next(p for p in plans(protocol, by_id)[example.question] if p[0] == turns[0])
        assert turns == plan[: len(turns)]
        # model tokens (mask 1) are exactly the turns the script wrote, each closed by <|im_end|>
        model_text = tok.decode(ids[mask.bool()], skip_special_tokens=False)
        assert model_text == "".join(t + "<|im_end|>" for t in turns)
        # tool-result tokens (mask 0) sit between turns, and hold every image token of the completion
        assert int((mask == 0).sum()) > 0 if len(turns) > 1 else int((mask == 0).sum()) == 0
        assert (mask[ids == image_pad] == 0).all()
        ran_image_search = parser.parse(turns[0]).kind == "image_search" and len(turns) > 1
        assert bool((ids == image_pad).any()) == ran_image_search
        image_searches += ran_image_search
        # the reward is the env scorer's value for the turns the env consumed
        breakdown, info = reward.last[row]
        consumed = turns[: info["turn"]]
        assert breakdown == score_trajectory(consumed, example.answer, example.candidate_answers, protocol=protocol)
        assert breakdown.reward in {0.0, 0.1, 0.91, 1.0}
    assert image_searches > 0, "the seeded script drew no image search; change the seed"
    # thumbnails reach the forward pass: the question's image per rollout plus five thumbnails per image search
    assert sum(out["num_images"]) == len(batch) + 5 * image_searches
    assert out["image_grid_thw"].shape[0] == sum(out["num_images"])


@pytest.mark.parametrize("protocol", ["tags", "tool_calls"])
def test_real_generation_after_an_image_tool_result(tmp_path, dataset_file, protocol):
    """TRL #5663 / #6274: images inside tool messages must render as image tokens and their pixels
    must be sliced per rollout. The first turn (an image search) is scripted; the second is generated
    by the real model with the thumbnails in its context, which fails if tokens and features disagree."""
    path, by_id = dataset_file
    p = get_protocol(protocol)
    script = plan_script({by_id[i].question: [p.format_action("image_search"), None] for i in IDS})
    base = build_tiny_vlm()
    config = cpu_preset(
        str(tmp_path / "run"), dataset=path, search="sample", split=None, protocol=protocol, warm_start_epochs=0,
        per_device_train_batch_size=6, num_generations=2, max_completion_length=512, max_turn_tokens=8, report_to=[],
        metrics_plot=False,
    )  # fmt: skip
    trainer = build_trainer(config, model=scripted_vlm(base, script), processor=load_processing_class(base))
    rows = {row["example_id"]: row for row in make_train_dataset(config.env_kwargs())}
    batch = [rows[i] for i in IDS for _ in range(2)]
    out = trainer._generate_and_score_completions(batch)
    # every rollout ran its image search: the question image + 5 thumbnails, in the rollout's order
    assert out["num_images"] == [6] * len(batch)
    env = trainer.environment_factories[None]().env
    expected_images = []
    for row in batch:
        obs, _ = env.reset(options={"example_id": row["example_id"]})
        obs, *_ = env.step(p.format_action("image_search"))
        expected_images += [b["image"] for m in obs["messages"] for b in m["content"] if b["type"] == "image"]
    expected = trainer.processing_class.image_processor(images=expected_images, return_tensors="pt")
    assert torch.equal(out["image_grid_thw"], expected["image_grid_thw"])
    assert torch.allclose(out["pixel_values"], expected["pixel_values"])
    image_pad = trainer.processing_class.image_token_id
    tokens = int((out["completion_ids"] == image_pad).sum()) + int((out["prompt_ids"] == image_pad).sum())
    assert tokens == int(expected["image_grid_thw"].prod(-1).sum()) // 4


def test_reward_values_for_known_plans(tmp_path, dataset_file):
    trainer, by_id = make_trainer(tmp_path, dataset_file, "tags")
    p = get_protocol("tags")
    factory = trainer.environment_factories[None]
    cases = [
        ("sample-arvenia-image", [p.format_action("image_search"), p.format_action("answer", "Arvenia")], 0.91),
        ("sample-arvenia-none", [p.format_action("answer", "star")], 1.0),
        ("sample-arvenia-text", [p.format_action("answer", "euro")], 0.1),
        # past the image limit: the env ends the episode at turn 2, whatever turn 3 says
        ("sample-arvenia-none", [p.format_action("image_search")] * 2 + [p.format_action("answer", "star")], 0.0),
        ("sample-arvenia-image", ["no action at all"], 0.0),
    ]
    for example_id, turns, value in cases:
        tool_env = factory()
        tool_env.reset(example_id=example_id)
        for turn in turns[:-1]:
            action = p.parse(turn)
            if action.kind == "image_search":
                tool_env.search()
        breakdown, _ = tool_env.episode.score_turns(turns)
        assert breakdown.reward == value, (example_id, turns)


def test_grpo_steps_train_lora_and_the_adapter_round_trips(tmp_path, dataset_file, capsys):
    trainer, _ = make_trainer(tmp_path, dataset_file, "tags", max_steps=2, lora_target_modules=["q_proj", "v_proj"])
    base_path = build_tiny_vlm()
    base_weights = load_file(str(base_path / "model.safetensors"))
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    assert lora_before, "LoRA was not applied"
    capsys.readouterr()
    trainer.train()
    assert trainer.state.global_step == 2
    # console: one readable line per logging step, not TRL's metrics dict, and no bar off a terminal
    console = capsys.readouterr()
    assert "GRPO step 2/2 · reward " in console.err and "{'loss'" not in console.out + console.err
    assert "\r" not in console.out + console.err
    logged = [h for h in trainer.state.log_history if "reward" in h]
    assert len(logged) == 2 and all("mmsearch/accuracy" in h and "mmsearch/search_ratio" in h for h in logged)
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == 2
    assert "mmsearch/image_search_ratio" in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    changed = [n for n, p in trainer.model.named_parameters() if "lora_B" in n and not torch.equal(p, lora_before[n])]
    assert changed, "GRPO steps did not change any LoRA weight"
    # the base weights are untouched: LoRA trains only the adapter
    for name, param in trainer.model.get_base_model().named_parameters():
        if "lora_" in name:
            continue
        key = name.replace("base_layer.", "")
        if key in base_weights:
            assert torch.equal(param.detach(), base_weights[key]), name
    adapter_dir = tmp_path / "adapter"
    trainer.save_model(str(adapter_dir))
    assert (adapter_dir / "adapter_config.json").is_file()
    saved = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert sorted(saved["target_modules"]) == ["q_proj", "v_proj"]
    # reload into the eval policy: same LoRA weights, and the adapter changes the model's outputs
    policy = HFPolicy(base_path, adapter=adapter_dir, max_new_tokens=4)
    trained = dict(trainer.model.named_parameters())
    loaded = dict(policy.model.named_parameters())
    for name in changed:
        assert torch.allclose(loaded[name].cpu(), trained[name].detach().cpu()), name
    plain = HFPolicy(base_path, max_new_tokens=4)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        assert not torch.allclose(policy.model(input_ids=ids).logits, plain.model(input_ids=ids).logits)


def test_full_fine_tuning_updates_the_base_weights(tmp_path, dataset_file):
    trainer, _ = make_trainer(tmp_path, dataset_file, "tool_calls", use_lora=False, max_steps=1)
    assert not any("lora_" in n for n, _ in trainer.model.named_parameters())
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert any("language_model" in n for n in changed)


@pytest.mark.parametrize(
    ("turn", "expected"),
    [
        ("<reason>?</reason>\n<search><img></search>", [("search", {"query": "<img>"})]),  # image search tag
        (
            "<reason>?</reason><text_search>capital of Arvenia</text_search>",
            [("text_search", {"query": "capital of Arvenia"})],
        ),  # text search tag: the query is the argument
        ("<reason>known</reason><answer>Paris</answer>", []),  # an answer is not a tool call
        ("I am not sure.", []),  # no action: no tool call (the env scores it malformed)
    ],
)
def test_tag_protocol_response_parser(turn, expected):
    from transformers.utils.chat_parsing.response_parser import parse_response

    from agents.grpo import TAGS_RESPONSE_TEMPLATE

    message = parse_response(turn + "<|im_end|>", TAGS_RESPONSE_TEMPLATE, prefix="<|im_start|>assistant\n")
    calls = [(c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or []]
    assert calls == expected


def test_tags_template_renders_env_observations_like_the_qwen_template():
    """Tool results rendered by TRL (role "tool", our tags template) equal the env's user turns rendered
    by the stock Qwen template: what the model sees in training is what it sees in evaluation."""
    import gymnasium as gym

    processor = load_processing_class(build_tiny_vlm())
    env = gym.make("MMSearch-v0", dataset="sample")
    obs, _ = env.reset(options={"example_id": "sample-arvenia-image-text"})
    obs, *_ = env.step("<reason>Unknown flag.</reason><search><img></search>")
    messages = obs["messages"]
    as_tool = [*messages[:-1], {**messages[-1], "role": "tool"}]
    qwen = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prepare_processing_class(processor, "tags")
    tags = processor.apply_chat_template(as_tool, tokenize=False, add_generation_prompt=True)
    assert tags == qwen
    assert tags.count("<|image_pad|>") == 6  # the question's image and five thumbnails


def test_max_train_questions_draws_a_seeded_subset_for_the_trainer_and_warm_start(tmp_path):
    kwargs = {"dataset": "sample", "split": None, "protocol": "tags"}
    rows = make_train_dataset(kwargs, limit=5, seed=3)
    again = make_train_dataset(kwargs, limit=5, seed=3)
    other = make_train_dataset(kwargs, limit=5, seed=4)
    assert len(rows) == 5 and rows["example_id"] == again["example_id"] != other["example_id"]
    everything = make_train_dataset(kwargs)
    assert set(rows["example_id"]) < set(everything["example_id"]) and len(everything) == 64
    by_id = dict(zip(everything["example_id"], everything["prompt"], strict=True))
    assert all(by_id[i] == p for i, p in zip(rows["example_id"], rows["prompt"], strict=True))  # same prompts
    with pytest.raises(ConfigError, match=re.escape("max_train_questions must be >= 1 or None, got 0")):
        MMSearchGRPOConfig(output_dir=str(tmp_path), max_train_questions=0, use_cpu=True, report_to=[])


def test_search_options_and_prompts_reach_every_env_the_trainer_builds(tmp_path):
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"instruction": "Q: {question}"}))
    options = '{"max_results": 2, "summary_sentences": 1}'
    config = MMSearchGRPOConfig(
        output_dir=str(tmp_path), dataset="sample", split=None, search="sample", search_options=options,
        prompts=str(prompts), use_cpu=True, report_to=[],
    )  # fmt: skip
    assert config.search_options == {"max_results": 2, "summary_sentences": 1}  # JSON from the command line
    kwargs = config.env_kwargs()
    assert kwargs["search_options"] == config.search_options and kwargs["prompts"] == str(prompts)
    rows = make_train_dataset(kwargs, limit=2)  # the dataset's env runs with search disabled: options dropped
    assert rows["prompt"][0][0]["content"][-1]["text"].startswith("Q: ")
    tool_env = env_factory(kwargs)()
    tool_env.reset(rows["example_id"][0])
    results = tool_env.text_search("capital of Arvenia")
    assert sum(line[:2] in ("1.", "2.", "3.") for line in results[0]["text"].splitlines()) == 2  # max_results
    with pytest.raises(ConfigError, match="search_options must be a JSON object"):
        MMSearchGRPOConfig(output_dir=str(tmp_path), search_options="{max_results: 2", use_cpu=True, report_to=[])
    with pytest.raises(ConfigError, match=re.escape("search_options must be a JSON object, got '[1]'")):
        MMSearchGRPOConfig(output_dir=str(tmp_path), search_options="[1]", use_cpu=True, report_to=[])


def test_the_tool_env_closes_only_a_backend_it_built(tmp_path):
    """A backend object passed in stays open for its owner; one built from a name closes with the adapter."""
    from mmsearch_env.search import make_search

    class Counting(SearchBackendBase):
        name = "counting"

        def __init__(self):
            self.inner, self.closed = make_search("sample"), 0

        def text_search(self, request):
            return self.inner.text_search(request)

        def close(self):
            self.closed += 1

    shared = Counting()
    kwargs = {"dataset": "sample", "split": None, "protocol": "tags"}
    for _ in range(2):
        tool_env = env_factory({**kwargs, "search": shared})()
        tool_env.reset("sample-arvenia-text")
        assert "arven crown" in tool_env.text_search("currency of Arvenia")[0]["text"]
        assert not tool_env.env.owns_search  # the env got the recorder object, never a name
        tool_env.episode.close()
    assert shared.closed == 0
    assert env_factory(kwargs)().episode.recorder.owns_backend  # built from the name "sample": its own


def test_tool_methods_are_the_only_public_methods():
    """TRL makes every public method (but reset) a tool: scoring and closing must live elsewhere."""
    import inspect

    for cls, tools in ((TagsToolEnv, {"search", "text_search"}), (ToolCallsToolEnv, {"image_search", "text_search"})):
        public = {n for n, _ in inspect.getmembers(cls, inspect.isfunction) if not n.startswith("_")}
        assert public == tools | {"reset"}, cls


def test_every_env_setting_is_a_training_flag(tmp_path):
    """MMSearchGRPOConfig inherits EnvConfig's fields: each one is a command-line flag of the trainer."""
    from dataclasses import fields

    from trl import TrlParser

    from mmsearch_env.config import EnvConfig

    values = ENV_FLAG_VALUES
    assert set(values) == {f.name for f in fields(EnvConfig)}  # a new env setting needs a row here
    argv = ["--output_dir", str(tmp_path), "--use_cpu", "true", "--report_to", "none"]
    for name, (text, _) in values.items():
        argv += [f"--{name}", text]
    (config,) = TrlParser((MMSearchGRPOConfig,)).parse_args_and_config(argv)
    assert config.env_config() == EnvConfig(**{name: value for name, (_, value) in values.items()})


def test_on_the_cpu_trl_scores_only_the_completion_with_the_same_log_probs(monkeypatch):
    import trl.trainer.utils as trl_utils
    from transformers import AutoModelForImageTextToText
    from trl.kernels.chunked_logprob import _use_triton
    from trl.trainer.utils import add_fused_lm_head

    from agents.grpo.trainer import score_completions_only_on_cpu

    monkeypatch.setattr(trl_utils, "_use_triton", _use_triton)  # TRL's own (a trainer built before patched it)
    model = AutoModelForImageTextToText.from_pretrained(build_tiny_vlm()).eval()
    torch.manual_seed(0)
    ids = torch.randint(10, 200, (3, 12))
    labels = ids.clone()
    labels[:, :8] = -100  # the prompt
    labels[2, 10:] = -100  # padding
    with torch.no_grad():
        reference = torch.log_softmax(model(input_ids=ids).logits[:, :-1].float(), -1)
    reference = reference.gather(-1, ids[:, 1:, None])[..., 0].masked_fill(labels[:, 1:] == -100, 0)
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    computed = trl_utils._use_triton(torch.device("cpu"))
    with torch.no_grad():
        full = model(input_ids=ids, labels=labels, fused_lm_head=True).log_probs
    assert score_completions_only_on_cpu() and score_completions_only_on_cpu()  # idempotent
    assert trl_utils._use_triton(torch.device("cpu")) and not computed
    with torch.no_grad():
        compact = model(input_ids=ids, labels=labels, fused_lm_head=True).log_probs
    assert torch.allclose(full, reference, atol=1e-5) and torch.allclose(compact, reference, atol=1e-5)
    assert (compact[labels[:, 1:] == -100] == 0).all() and (compact[labels[:, 1:] != -100] < 0).all()
