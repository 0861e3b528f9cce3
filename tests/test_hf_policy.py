"""HFPolicy: a local HF model (tiny VLM, tiny text LLM) writes turns for MMSearch-v0 episodes."""

from __future__ import annotations

import contextlib

import gymnasium as gym
import pytest
from _train_deps import require_train_extra
from model_servers import tiny_llm

import mmsearch_env  # noqa: F401

require_train_extra()

from agents import run_episodes, summarize  # noqa: E402
from agents.hf_policy import HFPolicy, text_only_messages  # noqa: E402
from agents.policy import Policy  # noqa: E402
from agents.tiny_vlm import build_tiny_vlm  # noqa: E402
from mmsearch_env.errors import ConfigError  # noqa: E402


@pytest.fixture(scope="module")
def vlm_path():
    return build_tiny_vlm()


@pytest.fixture(scope="module")
def llm_path(tmp_path_factory, vlm_path):
    """A tiny text-only Qwen2 LLM sharing the tiny VLM's tokenizer."""
    return tiny_llm(tmp_path_factory.mktemp("tiny-llm"), vlm_path)


@pytest.mark.parametrize("protocol", ["tags", "tool_calls"])
def test_vlm_policy_runs_env_episodes(vlm_path, protocol):
    policy = HFPolicy(vlm_path, protocol=protocol, max_new_tokens=12, batch_size=2)
    assert isinstance(policy, Policy) and policy.is_vlm
    env = gym.make("MMSearch-v0", dataset="sample", protocol=protocol)
    finals = run_episodes(env, policy, range(3), progress=False)
    assert len(finals) == 3
    assert all(f["end_reason"] for f in finals)
    summary = summarize(finals, env.unwrapped.max_searches_per_episode)
    assert summary.episodes == 3 and 0.0 <= summary.mean_reward <= 1.0


def test_batched_greedy_equals_one_by_one(vlm_path):
    env = gym.make("MMSearch-v0", dataset="sample")
    observations, infos = zip(*(env.reset(options={"index": i}) for i in range(3)), strict=True)
    batched = HFPolicy(vlm_path, max_new_tokens=8, batch_size=3).act_batch(observations, infos)
    single = HFPolicy(vlm_path, max_new_tokens=8, batch_size=1).act_batch(observations, infos)
    assert len(batched) == 3 and all(isinstance(t, str) for t in batched)
    assert batched == single  # left padding does not change greedy outputs


def test_text_only_model_sees_titles_not_pixels(llm_path):
    env = gym.make("MMSearch-v0", dataset="sample")
    obs, info = env.reset(options={"example_id": "sample-arvenia-image-text"})
    obs, *_ = env.step("<reason>?</reason><search><img></search>")
    messages = text_only_messages(obs["messages"])
    assert all(isinstance(m["content"], str) for m in messages)
    assert "title: Flag of Arvenia" in messages[-1]["content"]
    policy = HFPolicy(llm_path, max_new_tokens=6)
    assert not policy.is_vlm
    with pytest.warns(UserWarning, match="text-only model but the prompt shows the question's image"):
        (turn,) = policy.act_batch([obs], [info])  # said once, naming the text-only mode
    assert isinstance(turn, str)


def test_bad_paths_say_what_to_do(tmp_path, vlm_path):
    with pytest.raises(ConfigError, match="not a model folder"):
        HFPolicy(tmp_path)
    with pytest.raises(ConfigError, match="not a peft adapter folder"):
        HFPolicy(vlm_path, adapter=tmp_path)
    with pytest.raises(ConfigError, match="seed must be a non-negative int"):
        HFPolicy(vlm_path, temperature=1.0, seed="7")


def test_seeded_sampling_does_not_depend_on_batching(vlm_path):
    env = gym.make("MMSearch-v0", dataset="sample")
    observations, infos = zip(*(env.reset(options={"index": i}) for i in range(3)), strict=True)
    kwargs = {"max_new_tokens": 8, "temperature": 1.0, "seed": 7}
    batched = HFPolicy(vlm_path, batch_size=3, **kwargs)
    first = batched.act_batch(observations, infos)
    # one by one, in the reverse order: each episode still gets the same sample
    alone = HFPolicy(vlm_path, batch_size=1, **kwargs)
    pairs = list(zip(observations, infos, strict=True))
    assert [alone.act_batch([o], [i])[0] for o, i in reversed(pairs)][::-1] == first
    # a second draw of the same conversations is a new sample (K rollouts of a question differ) ...
    second = batched.act_batch(observations, infos)
    assert second != first
    # ... and it too is reproduced by a fresh policy with the same seed
    again = HFPolicy(vlm_path, batch_size=2, **kwargs)
    again.act_batch(observations, infos)
    assert again.act_batch(observations, infos) == second
    assert HFPolicy(vlm_path, batch_size=3, **{**kwargs, "seed": 8}).act_batch(observations, infos) != first


def test_seeded_gumbel_draws_follow_the_softmax():
    import torch

    from agents.hf_policy import _SeededGumbel

    scores = torch.tensor([[2.0, 1.0, 0.0, -1.0, float("-inf")]])
    temperature = 0.7
    draws = 4000
    counts = torch.zeros(5)
    for seed in range(draws):
        processor = _SeededGumbel([torch.Generator().manual_seed(seed)], temperature)
        counts[processor(None, scores).argmax(-1)] += 1
    expected = (scores / temperature).softmax(-1)[0]
    assert counts[4] == 0  # a masked token is never drawn
    assert torch.allclose(counts / draws, expected, atol=0.025), (counts / draws, expected)


def test_seeded_curation_repeats_however_episodes_are_batched(tmp_path, vlm_path):
    from agents.curate import curate
    from agents.rollout import read_trajectories
    from mmsearch_env.errors import DatasetError

    def rollouts(out, concurrency):
        policy = HFPolicy(vlm_path, max_new_tokens=8, batch_size=4, temperature=1.0, seed=3)
        # the untrained model may label every question "dropped": then no subset, but the rollouts stay
        with contextlib.suppress(DatasetError):
            curate(policy, "sample", "validation", out=out, rollouts=2, concurrency=concurrency, progress=False,
                   plot=False, on_shortfall="keep-all")  # fmt: skip
        files = sorted((out / "rollouts").glob("*.jsonl"))
        # (episodes are written as they finish: compare them by question)
        return {f.name: {r.example_id: r.turns for r in read_trajectories(f)} for f in files}

    one_by_one, batched = rollouts(tmp_path / "a", 1), rollouts(tmp_path / "b", 4)
    assert len(one_by_one) == 4 and one_by_one == batched
    assert one_by_one["search.r0.jsonl"] != one_by_one["search.r1.jsonl"]  # the K rollouts are samples


def test_curate_seeds_an_hf_spec_policy(tmp_path, vlm_path):
    import torch

    from agents.curate import curate
    from agents.rollout import read_trajectories
    from mmsearch_env.errors import DatasetError

    def turns(out, seed):
        torch.manual_seed(len(str(out)))  # another global generator state each call: only the seed may matter
        with contextlib.suppress(DatasetError):
            curate(f"hf:{vlm_path}", "sample", "validation", out=out, rollouts=1, limit=1, seed=seed,
                   progress=False, plot=False, on_shortfall="keep-all")  # fmt: skip
        return [r.turns for r in read_trajectories(out / "rollouts" / "search.r0.jsonl")]

    first = turns(tmp_path / "a", 5)
    assert first and turns(tmp_path / "bb", 5) == first
    assert turns(tmp_path / "ccc", 6) != first


def test_turns_report_tokens_and_why_they_ended(llm_path):
    env = gym.make("MMSearch-v0", dataset="sample", image_position="none")
    observations, infos = zip(*(env.reset(options={"index": i}) for i in range(2)), strict=True)
    assert "not shown to you" in observations[0]["messages"][0]["content"][0]["text"]
    policy = HFPolicy(llm_path, max_new_tokens=3, batch_size=2)
    policy.act_batch(observations, infos)
    # the random model does not write its end-of-turn token within 3 tokens: each turn was cut
    assert [u["finish_reason"] for u in policy.last_usage] == ["length", "length"]
    assert [u["completion_tokens"] for u in policy.last_usage] == [3, 3]
    assert all(u["prompt_tokens"] > 50 for u in policy.last_usage)
