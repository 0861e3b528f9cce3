"""Baseline policies: the turns they write, in both protocols, and that they respect the limits."""

from __future__ import annotations

import pytest

from agents.baselines import DirectAnswerPolicy, ExtractiveReader, ForcedSearchPolicy, RAGWorkflowPolicy, RandomPolicy
from agents.policy import Policy, PolicyBase
from agents.rollout import rollout
from agents.scripted import OraclePolicy
from mmsearch_env.data import load_dataset
from mmsearch_env.protocol import get_protocol

EXAMPLES = load_dataset("sample", None)
PROTOCOLS = ["tags", "tool_calls"]


def run(policy, protocol="tags", n=8, **env):
    return rollout(
        policy,
        range(n),
        env_config={"dataset": "sample", "split": None, "protocol": protocol, **env},
        concurrency=8,
        progress=False,
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_each_baseline_is_a_policy_writing_well_formed_turns(protocol):
    expected_shapes = {"direct": {"A"}, "rag": {"I>T>A"}, "random": {"A", "I>A", "T>A", "I>T>A", "T>I>A", "T>T>A"}}
    for policy in (
        DirectAnswerPolicy(protocol=protocol),
        RAGWorkflowPolicy(protocol=protocol),
        RandomPolicy(protocol=protocol),
    ):
        assert isinstance(policy, Policy)
        result = run(policy, protocol, n=16)
        p = get_protocol(protocol)
        for record in result.records:
            assert record.reward_parts["shape"] in expected_shapes[policy.name], (policy.name, record.turns)
            assert all(p.parse(t).well_formed for t in record.turns), record.turns
            assert record.end_reason == "answer"


def test_the_oracle_is_a_policy():
    assert isinstance(OraclePolicy(EXAMPLES), Policy)


def test_direct_never_searches_and_rag_always_does():
    direct = run(DirectAnswerPolicy()).summary()
    rag = run(RAGWorkflowPolicy()).summary()
    assert direct.search_ratio_episodes == 0 and direct.accuracy == 0  # model-free: it read nothing
    assert rag.search_ratio_episodes == 1 and rag.search_ratio_calls == 1
    assert rag.accuracy > 0  # the reader finds names in real retrieval results


@pytest.mark.parametrize("policy", [RAGWorkflowPolicy(), RandomPolicy(), OraclePolicy(EXAMPLES)], ids=lambda p: p.name)
def test_with_search_disabled_every_policy_answers_at_once(policy):
    result = run(policy, n=16, max_image_searches=0, max_text_searches=0, search="disabled")
    assert all(r.reward_parts["shape"] == "A" for r in result.records)


def test_random_depends_only_on_seed_example_and_turn():
    first = [r.turns for r in run(RandomPolicy(seed=3), n=16).records]
    again = rollout(
        RandomPolicy(seed=3),
        list(reversed(range(16))),
        env_config={"dataset": "sample", "split": None},
        concurrency=3,
        progress=False,
    )
    assert [r.turns for r in sorted(again.records, key=lambda r: r.index)] == first
    other = [r.turns for r in run(RandomPolicy(seed=4), n=16).records]
    assert other != first and RandomPolicy(seed=4).name == "random-4"


class Answerer(PolicyBase):
    """A stand-in model: answers "Velmont" or asks for a search, and reports token usage."""

    def __init__(self, search=False):
        self.name, self.search, self.seen_turns = "stub-model", search, []
        self.protocol = get_protocol("tags")

    def act_batch(self, observations, infos):
        self.seen_turns += [i["turn"] for i in infos]
        self.last_usage = [{"prompt_tokens": 7, "completion_tokens": 1} for _ in infos]
        if self.search:
            return [self.protocol.format_action("text_search", "more", reason="x") for _ in infos]
        return [self.protocol.format_action("answer", "Velmont", reason="x") for _ in infos]


def test_workflows_around_a_model():
    model = Answerer()
    result = run(RAGWorkflowPolicy(model), n=4)
    assert model.seen_turns == [2, 2, 2, 2]  # the model only writes the answer turn
    assert {r.answer for r in result.records} == {"Velmont"}
    assert all(r.usage == {"prompt_tokens": 7, "completion_tokens": 1} for r in result.records)
    assert RAGWorkflowPolicy(model).name == "rag[stub-model]"
    # A direct-answer workflow keeps the model out of searching: its search turn becomes an answer.
    result = run(DirectAnswerPolicy(Answerer(search=True)), n=4)
    assert all(r.reward_parts["shape"] == "A" for r in result.records)


def test_forced_search_hands_the_rest_to_the_inner_policy():
    model = Answerer(search=True)  # would search again, and forced search keeps its turn as written
    result = run(ForcedSearchPolicy(model), n=2)
    assert model.seen_turns == [2, 2]
    assert all(r.end_reason == "search_on_last_turn" for r in result.records)
    oracle = run(ForcedSearchPolicy(OraclePolicy(EXAMPLES)), n=16).summary()
    assert oracle.accuracy == 1.0 and oracle.search_ratio_calls == 1.0


def msgs(*tool_texts, query=None):
    out = [{"role": "user", "content": [{"type": "text", "text": "question"}]}]
    if query:
        out.append({"role": "assistant", "content": [{"type": "text", "text": f"<text_search>{query}</text_search>"}]})
    out += [{"role": "user", "content": [{"type": "text", "text": t}]} for t in tool_texts]
    return out


@pytest.mark.parametrize(
    ("question", "messages", "expected"),
    [
        ("Which country?", msgs(), "unknown"),  # nothing read
        ("Which country's flag?", msgs("1. title: Flag of Arvenia\n2. title: Flag of Belmora"), "Arvenia"),  # rank 1
        (
            "What is the capital of Arvenia?",
            msgs("1. (link: u) Arvenia is a country. The capital of Arvenia is Velmont.", query="Arvenia capital"),
            "Velmont",  # names in the question / the query are not the answer
        ),
        ("When was Belmora founded?", msgs("1. (link: u) Belmora was founded in 1788."), "1788"),
    ],
)
def test_extractive_reader(question, messages, expected):
    observation = {"question": question, "messages": messages}
    assert ExtractiveReader()(observation, {}, get_protocol("tags")) == expected
