"""MMSearch-v0 as a Gymnasium environment: API checks, episode rules, info, rendering, vectorisation."""

from __future__ import annotations

import asyncio
import io
import re
import time
import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env, data_equivalence
from PIL import Image

import mmsearch_env  # noqa: F401  (registers MMSearch-v0)
from mmsearch_env.errors import ConfigError, InvalidActionError, ResetNeededError
from mmsearch_env.records import EpisodeRecord
from mmsearch_env.reward import score_trajectory
from mmsearch_env.search import SearchBackendBase, SearchResponse, SearchResult

IMG = "<reason>I do not know this flag.</reason><search><img></search>"
TXT = "<reason>I need the capital.</reason><text_search>capital of Arvenia</text_search>"
ANS = "<reason>Done.</reason><answer>{}</answer>"
ARVENIA_CAPITAL = {"example_id": "sample-arvenia-image-text"}


def run(env, actions, options=ARVENIA_CAPITAL, seed=None):
    obs, info = env.reset(seed=seed, options=options)
    steps = []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        steps.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            break
    return steps


@pytest.fixture
def env():
    e = gym.make("MMSearch-v0", dataset="sample", search="sample")
    yield e
    e.close()


# -- Gymnasium API ---------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["tags", "tool_calls"])
def test_check_env_passes_without_warnings(protocol):
    env = gym.make("MMSearch-v0", dataset="sample", search="sample", protocol=protocol)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)


def test_import_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, gymnasium as gym, mmsearch_env; gym.make('MMSearch-v0'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_same_seed_same_episode(env):
    actions = [IMG, TXT, ANS.format("Velmont")]
    first = run(env, actions, options=None, seed=7)
    second = run(env, actions, options=None, seed=7)
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert data_equivalence(a, b, exact=True)


def test_seeds_pick_examples_with_the_env_rng(env):
    picked = {env.reset(seed=s)[1]["example_id"] for s in range(40)}
    assert len(picked) > 10  # uniform over 40 train questions, not one fixed question
    assert {env.reset(seed=3)[1]["example_id"] for _ in range(3)} == {env.reset(seed=3)[1]["example_id"]}


def test_spec_round_trips_to_json():
    env = gym.make("MMSearch-v0", dataset="sample", split="test", search="sample", protocol="tool_calls", max_turns=4)
    spec = gym.envs.registration.EnvSpec.from_json(env.spec.to_json())
    again = spec.make()
    assert again.unwrapped.max_turns == 4
    assert again.unwrapped.protocol.name == "tool_calls"
    assert {e.id for e in again.unwrapped.examples} == {e.id for e in env.unwrapped.examples}


def test_sync_vector_env():
    envs = gym.make_vec("MMSearch-v0", num_envs=2, vectorization_mode="sync")
    obs, infos = envs.reset(seed=[1, 2])
    assert len(obs["messages"]) == 2 and len(obs["question"]) == 2
    obs, rewards, terminated, truncated, infos = envs.step((IMG, ANS.format("nothing")))
    assert list(terminated) == [False, True]
    assert list(rewards) == [0.0, 0.1]
    assert list(infos["image_searches"]) == [1, 0]
    # next-step autoreset: the finished sub-env restarts on the following step, whatever its action
    obs, rewards, terminated, truncated, infos = envs.step((ANS.format("x"), ANS.format("y")))
    assert bool(terminated[0]) and not bool(terminated[1])
    envs.close()


def test_async_vector_env_without_shared_memory():
    """Observations are Python objects, so AsyncVectorEnv passes them by pickling (no shared memory)."""
    envs = gym.make_vec("MMSearch-v0", num_envs=2, vectorization_mode="async", vector_kwargs={"shared_memory": False})
    try:
        obs, infos = envs.reset(seed=[1, 2])
        assert all(isinstance(m, list) for m in obs["messages"])
        obs, rewards, terminated, truncated, infos = envs.step((IMG, ANS.format("nothing")))
        assert list(terminated) == [False, True] and list(infos["image_searches"]) == [1, 0]
        assert len(obs["messages"][0]) == 3  # the image-search result came back through the pipe
    finally:
        envs.close()


def test_gym_make_passive_checker_is_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = gym.make("MMSearch-v0", dataset="sample", search="sample")
        env.reset(seed=0)
        env.step(IMG)


# -- observations ------------------------------------------------------------------------------------


def test_reset_observation_is_chat_ready(env):
    obs, info = env.reset(options=ARVENIA_CAPITAL)
    assert set(obs) == {"messages", "question", "image"}
    (first,) = obs["messages"]
    assert first["role"] == "user"
    assert [b["type"] for b in first["content"]] == ["image", "text"]
    assert first["content"][0]["image"] is obs["image"]
    assert obs["question"] in first["content"][1]["text"]
    assert "<search><img></search>" in first["content"][1]["text"]
    assert info == {
        "example_id": "sample-arvenia-image-text",
        "turn": 0,
        "image_searches": 0,
        "text_searches": 0,
        "search_failures": 0,
        "can_image_search": True,
        "can_text_search": True,
        "search_cost_usd": 0.0,
        "action": None,
        "action_error": None,
        "format_ok": True,
    }


def test_image_search_turn_has_thumbnails_and_question(env):
    (step,) = run(env, [IMG])
    obs, reward, terminated, truncated, info = step
    roles = [m["role"] for m in obs["messages"]]
    assert roles == ["user", "assistant", "user"]
    result = obs["messages"][-1]["content"]
    images = [b["image"] for b in result if b["type"] == "image"]
    text = "".join(b["text"] for b in result if b["type"] == "text")
    assert len(images) == 5 and all(max(i.size) <= 256 for i in images)
    assert text.startswith("<information>")
    assert "title: Flag of Arvenia" in text  # the right page comes back
    assert text.index("</information>") < text.index(obs["question"])  # question repeated after
    assert "<text_search>" in text.split("</information>")[1]  # text search still allowed
    assert "<search><img></search>" not in text.split("</information>")[1]  # image search used up


def test_text_search_turn_and_last_turn_instruction(env):
    steps = run(env, [IMG, TXT])
    obs = steps[-1][0]
    text = obs["messages"][-1]["content"][0]["text"]
    assert '"capital of Arvenia"' in text
    assert "(link: https://sample.mmsearch.invalid/wiki/Arvenia)" in text
    assert "Velmont" in text
    assert "No more searches are allowed" in text  # the next turn is the last


def test_observations_do_not_alias_env_state(env):
    obs, _ = env.reset(options=ARVENIA_CAPITAL)
    obs["messages"].append({"role": "user", "content": []})
    obs["messages"][0]["content"].clear()
    obs2, *_ = env.step(IMG)
    assert len(obs2["messages"]) == 3
    assert obs2["messages"][0]["content"][1]["type"] == "text"


def test_tool_calls_protocol_uses_tool_role():
    env = gym.make("MMSearch-v0", dataset="sample", search="sample", protocol="tool_calls")
    call = '<tool_call>{"name": "text_search", "arguments": {"query": "capital of Arvenia"}}</tool_call>'
    steps = run(env, [call, "It is <answer>Velmont</answer>"])
    obs, reward, terminated, *_ = steps[-1]
    assert [m["role"] for m in obs["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert "<information>" not in obs["messages"][2]["content"][0]["text"]
    assert (reward, terminated) == (0.91, True)
    assert [t["function"]["name"] for t in env.unwrapped.protocol.tool_schemas()] == ["image_search", "text_search"]


# -- episode rules -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actions", "end_reason", "terminated", "reward", "steps"),
    [
        ([ANS.format("Velmont")], "answer", True, 1.0, 1),
        ([IMG, TXT, ANS.format("Velmont")], "answer", True, 0.91, 3),
        (["Velmont"], "malformed", True, 0.0, 1),
        (["<reason>x</reason><text_search>  </text_search>"], "malformed", True, 0.0, 1),
        ([IMG, IMG], "image_search_limit", False, 0.0, 2),
        ([IMG, TXT, TXT], "search_on_last_turn", False, 0.0, 3),
        ([TXT, TXT, ANS.format("Velmont")], "answer", True, 0.81, 3),  # allowed, but not a good shape
    ],
)
def test_end_reasons(env, actions, end_reason, terminated, reward, steps):
    result = run(env, actions)
    assert len(result) == steps
    obs, r, term, trunc, info = result[-1]
    assert info["end_reason"] == end_reason
    assert (term, trunc) == (terminated, not terminated)
    assert r == reward
    for _, r_mid, term_mid, trunc_mid, _ in result[:-1]:
        assert (r_mid, term_mid, trunc_mid) == (0.0, False, False)


def test_text_search_limit_and_unrun_search():
    env = gym.make("MMSearch-v0", dataset="sample", search="sample", max_turns=5, max_text_searches=2)
    result = run(env, [TXT, TXT, TXT])
    info = result[-1][4]
    assert info["end_reason"] == "text_search_limit"
    assert info["text_searches"] == 2  # the third was not run
    assert result[-1][3] is True


def test_zero_search_budget_truncates_any_search():
    env = gym.make("MMSearch-v0", dataset="sample", search="sample", max_image_searches=0, max_text_searches=0)
    (step,) = run(env, [IMG])
    assert step[4]["end_reason"] == "image_search_limit"
    assert env.unwrapped.max_searches_per_episode == 0


def test_terminal_info_and_reward_match_scorer(env):
    steps = run(env, [IMG, TXT, ANS.format("velmont")])
    info = steps[-1][4]
    assert info["answer"] == "velmont" and info["correct"] is True and info["format_ok"] is True
    assert info["ground_truth"] == "Velmont"
    assert info["reward_parts"] == {
        "reward": 0.91,
        "accuracy": 1.0,
        "format": 1.0,
        "penalty": 0.9,
        "answer": "velmont",
        "image_searches": 1,
        "text_searches": 1,
        "shape": "I>T>A",
    }
    record = env.unwrapped.episode_record()
    assert score_trajectory(record.turns, "Velmont").reward == steps[-1][1] == record.reward
    assert [s.tool for s in record.searches] == ["image_search", "text_search"]
    assert all(s.ok and s.latency_s >= 0 for s in record.searches)
    assert (record.image_searches, record.text_searches, record.correct) == (1, 1, True)
    assert EpisodeRecord.from_json(record.to_json()) == record


def test_format_ok_tracks_each_step(env):
    steps = run(env, ["no reason <search><img></search>", ANS.format("Velmont")])
    assert steps[0][4]["format_ok"] is False and steps[0][4]["action"] == "image_search"
    assert steps[1][1] == 0.81


def test_custom_limits_and_weights():
    env = gym.make("MMSearch-v0", dataset="sample", search="sample", search_penalty=0.5, format_weight=0.2)
    assert run(env, [IMG, ANS.format("Velmont")])[-1][1] == pytest.approx(0.8 * 0.5 + 0.2)


# -- misuse raises our errors --------------------------------------------------------------------------


def test_step_before_reset_and_after_end():
    env = gym.make("MMSearch-v0", dataset="sample", search="sample").unwrapped
    with pytest.raises(ResetNeededError, match=re.escape("call env.reset()")):
        env.step(ANS.format("x"))
    env.reset(seed=0)
    env.step(ANS.format("x"))
    with pytest.raises(ResetNeededError, match=re.escape("the episode has ended (answer); call env.reset()")):
        env.step(ANS.format("x"))


@pytest.mark.parametrize("action", [None, 3, b"<answer>x</answer>", {"type": "answer"}])
def test_non_str_action_raises(env, action):
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=re.escape("actions are assistant turns (str)")):
        env.step(action)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_turns": 0}, "max_turns must be an int >= 1, got 0"),
        ({"max_text_searches": 1.5}, "max_text_searches must be an int >= 0, got 1.5"),
        ({"search_penalty": 2}, "search_penalty must be a number in [0, 1], got 2"),
        ({"protocol": "tag"}, "unknown protocol 'tag'; expected one of ['tags', 'tool_calls']. Did you mean 'tags'?"),
        ({"search": "sampel"}, "unknown search backend 'sampel'"),
        ({"search": "copus"}, "Did you mean 'corpus'?"),
        ({"dataset": "sampl"}, "Did you mean 'sample'?"),
        ({"split": "tset"}, "dataset 'corpus' has no split 'tset'"),
        ({"dataset": "sample", "split": "tset"}, "dataset 'sample' has no split 'tset'"),
        ({"render_mode": "human"}, "render_mode must be None or one of ['ansi']"),
        ({"search_timeout": 0}, "search_timeout must be a positive number of seconds"),
        ({"search": object()}, "search must be a backend name"),
    ],
)
def test_bad_kwargs_explain_the_fix(kwargs, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Gymnasium's own warning about an unknown render_mode
        with pytest.raises(ConfigError, match=re.escape(message)):
            gym.make("MMSearch-v0", **kwargs)


def test_bad_reset_options(env):
    with pytest.raises(ConfigError, match="no example with id 'nope'"):
        env.reset(options={"example_id": "nope"})
    with pytest.raises(ConfigError, match=re.escape("'index' must be an int in [0, 40)")):
        env.reset(options={"index": 40})
    with pytest.raises(ConfigError, match="unknown reset option"):
        env.reset(options={"idx": 1})


# -- search failures are values --------------------------------------------------------------------------


class Exploding(SearchBackendBase):
    name = "exploding"

    def image_search(self, request):
        raise ConnectionError("backend down")

    def text_search(self, request):
        return "not a response"


class Slow(SearchBackendBase):
    name = "slow"

    def text_search(self, request):
        time.sleep(2.0)
        return SearchResponse("text_search")


class AsyncOnly:
    name = "async-only"

    async def aimage_search(self, request):
        await asyncio.sleep(0)
        return SearchResponse(
            "image_search", (SearchResult("Async page", "https://a.invalid/x", thumbnail=request.image),)
        )

    async def atext_search(self, request):
        return SearchResponse(
            "text_search", (SearchResult("T", "https://a.invalid/t", summary=f"about {request.query}"),)
        )


def test_backend_errors_become_tool_error_turns():
    env = gym.make("MMSearch-v0", dataset="sample", search=Exploding())
    steps = run(env, [IMG, TXT, ANS.format("Velmont")])
    (o1, _, _, _, i1), (o2, _, _, _, i2), (_, reward, terminated, _, i3) = steps
    assert i1["search_error"] == "ConnectionError: backend down"
    assert "image search failed (ConnectionError: backend down)" in o1["messages"][-1]["content"][0]["text"]
    assert "<information>" not in o1["messages"][-1]["content"][0]["text"]
    assert "returned str, expected a SearchResponse" in i2["search_error"]
    assert i3["search_failures"] == 2 and i3["image_searches"] == 1 and i3["text_searches"] == 1
    assert (reward, terminated) == (0.91, True)  # a failed search still counts as a search


def test_disabled_backend():
    env = gym.make("MMSearch-v0", dataset="sample", search="disabled")
    (o, r, term, trunc, info), *_ = run(env, [TXT])
    assert info["search_error"] == "search is disabled in this environment"
    assert info["search_failures"] == 1 and not term


def test_slow_backend_times_out():
    env = gym.make("MMSearch-v0", dataset="sample", search=Slow(), search_timeout=0.2)
    started = time.perf_counter()
    (o, r, term, trunc, info), *_ = run(env, [TXT])
    assert time.perf_counter() - started < 1.5
    assert info["search_error"] == "timed out after 0.2 s"
    # a backend without image search says so
    env2 = gym.make("MMSearch-v0", dataset="sample", search=Slow())
    (o, r, term, trunc, info), *_ = run(env2, [IMG])
    assert info["search_error"] == "the 'slow' backend does not support image search"


def test_async_only_backend_in_step_and_astep():
    env = gym.make("MMSearch-v0", dataset="sample", search=AsyncOnly())
    (obs, *_), *_ = run(env, [IMG])
    assert "title: Async page" in obs["messages"][-1]["content"][-1]["text"] or any(
        "Async page" in b.get("text", "") for b in obs["messages"][-1]["content"]
    )

    async def episode():
        base = env.unwrapped
        base.reset(options=ARVENIA_CAPITAL)
        await base.astep(IMG)
        obs, reward, terminated, truncated, info = await base.astep(TXT)
        assert "about capital of Arvenia" in obs["messages"][-1]["content"][0]["text"]
        return await base.astep(ANS.format("Velmont"))

    *_, info = asyncio.run(episode())
    assert info["reward_parts"]["reward"] == 0.91


# -- datasets through make -----------------------------------------------------------------------------------


def test_list_dataset_with_bytes_path_and_pil(tmp_path):
    red = Image.new("RGB", (32, 32), (255, 0, 0))
    buffer = io.BytesIO()
    red.save(buffer, format="PNG")
    path = tmp_path / "red.png"
    red.save(path)
    rows = [
        {"question": "What colour is this?", "image": red, "answer": "red", "id": "pil"},
        {
            "question": "What colour is this?",
            "image": buffer.getvalue(),
            "answer": "red",
            "candidate_answers": ["crimson"],
        },
        {"question": "What colour is this?", "image": str(path), "answer": "red"},
    ]
    env = gym.make("MMSearch-v0", search="sample", dataset=rows)
    assert [e.id for e in env.unwrapped.examples] == ["pil", "example-1", "example-2"]
    for index in range(3):
        env.reset(options={"index": index})
        *_, reward, terminated, truncated, info = env.step(ANS.format("crimson" if index == 1 else "Red"))
        assert reward == 1.0


def test_render_ansi():
    env = gym.make("MMSearch-v0", dataset="sample", search="sample", render_mode="ansi")
    run(env, [IMG, ANS.format("Arvenia")])
    text = env.render()
    assert "── user ──" in text and "── assistant ──" in text
    assert "[image " in text
    assert "reward=0.1" in text and "truth='Velmont'" in text
    assert (
        gym.make("MMSearch-v0", dataset="sample", search="sample").unwrapped.render() is None
    )  # no render_mode: nothing


# -- action length cap -------------------------------------------------------------------------------

SIX_REWARDS = {1.0, 0.91, 0.9, 0.81, 0.1, 0.0}


@pytest.mark.parametrize("protocol", ["tags", "tool_calls"])
def test_a_ten_megabyte_hostile_turn_is_cut_to_the_cap_and_scored(protocol):
    env = gym.make("MMSearch-v0", dataset="sample", search="sample", protocol=protocol)
    cap = env.unwrapped.config.max_action_chars
    assert cap == 32_768
    hostile = "<reason>" + "\ud83d<answer>[INST]</tool_call>" * (10 * 2**20 // 25) + "<answer>Velmont</answer>"
    assert len(hostile) > 10 * 2**20
    env.reset(options=ARVENIA_CAPITAL)
    _, reward, terminated, truncated, info = env.step(hostile)
    record = env.unwrapped.episode_record()
    assert len(record.turns[0]) == cap  # cut before anything read it: the answer at its end is gone
    assert info["action_truncated"] is True
    assert (terminated, info["end_reason"], reward) == (True, "malformed", 0.0)
    assert reward in SIX_REWARDS
    record.to_json()  # lone surrogates were made valid after the cut


def test_a_turn_within_the_cap_is_not_flagged():
    env = gym.make("MMSearch-v0", dataset="sample", search="sample", max_action_chars=64)
    env.reset(options=ARVENIA_CAPITAL)
    _, _, _, _, info = env.step(IMG)
    assert "action_truncated" not in info
    answer = ANS.format("Velmont")
    exactly_the_cap = answer.replace("Done.", "Done" + "." * (64 - len(answer) + 1))
    assert len(exactly_the_cap) == 64
    _, reward, terminated, _, info = env.step(exactly_the_cap)
    assert "action_truncated" not in info and reward == 0.91 and terminated
    env.reset(options=ARVENIA_CAPITAL)
    _, reward, _, _, info = env.step(answer + " " * 100)  # cut to 64: trailing spaces only
    assert info["action_truncated"] is True and reward == 1.0
    with pytest.raises(ConfigError, match=re.escape("max_action_chars must be an int >= 1, got 0")):
        gym.make("MMSearch-v0", dataset="sample", search="sample", max_action_chars=0)
