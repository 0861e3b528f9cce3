import asyncio

import pytest

from agents.policy import Policy, PolicyBase


class Echo(PolicyBase):
    name = "echo"

    def act(self, observation, info):
        return f"<answer>{observation['question']}</answer>"


class Batched(PolicyBase):
    name = "batched"

    def act_batch(self, observations, infos):
        return [str(i["turn"]) for i in infos]


def test_act_gives_act_batch_and_async():
    policy = Echo()
    assert isinstance(policy, Policy)
    obs = [{"question": "a"}, {"question": "b"}]
    assert policy.act_batch(obs, [{}, {}]) == ["<answer>a</answer>", "<answer>b</answer>"]
    assert asyncio.run(policy.aact_batch(obs, [{}, {}])) == ["<answer>a</answer>", "<answer>b</answer>"]


def test_act_batch_gives_act():
    assert Batched().act({}, {"turn": 2}) == "2"


def test_neither_method_is_a_clear_error():
    with pytest.raises(NotImplementedError, match=r"must implement act\(\) or act_batch\(\)"):
        PolicyBase().act({}, {})
    with pytest.raises(NotImplementedError, match=r"must implement act\(\) or act_batch\(\)"):
        PolicyBase().act_batch([{}], [{}])
