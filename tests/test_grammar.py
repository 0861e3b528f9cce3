"""The format grammar: a rule table, and the proof that under the default limits it is the paper's
four-shape check on every trajectory the default environment can produce."""

from __future__ import annotations

import copy
import itertools
import pickle

import pytest

from mmsearch_env.env import MMSearchEnv
from mmsearch_env.grammar import PAPER_GRAMMAR, FormatGrammar
from mmsearch_env.protocol import Action
from mmsearch_env.reward import OutcomeReward, score_actions, search_penalty_factor, trajectory_shape

A, I, T = Action("answer", "a", True), Action("image_search", None, True), Action("text_search", "q", True)  # noqa: E741 (the shapes letters: I = image search)
A_BAD, I_BAD, T_BAD = (
    Action("answer", "a", False),
    Action("image_search", None, False),
    Action("text_search", "q", False),
)
X = Action("invalid", error="no action")

RULES = [
    (PAPER_GRAMMAR, [A], True, "direct answer"),
    (PAPER_GRAMMAR, [I, A], True, "image then answer"),
    (PAPER_GRAMMAR, [T, A], True, "text then answer"),
    (PAPER_GRAMMAR, [I, T, A], True, "image, text, answer"),
    (PAPER_GRAMMAR, [T, T, A], False, "two text searches: over the paper's cap"),
    (PAPER_GRAMMAR, [T, I, A], False, "image after text"),
    (PAPER_GRAMMAR, [I, I, A], False, "two image searches"),
    (PAPER_GRAMMAR, [I], False, "no answer"),
    (PAPER_GRAMMAR, [], False, "nothing"),
    (PAPER_GRAMMAR, [A_BAD], False, "a turn that is not well formed"),
    (PAPER_GRAMMAR, [I_BAD, A], False, "a bad search turn"),
    (PAPER_GRAMMAR, [X], False, "an invalid turn"),
    (PAPER_GRAMMAR, [A, A], False, "a turn after the answer"),
    (FormatGrammar(text_searches=2), [T, T, A], True, "refinement: two text searches allowed"),
    (FormatGrammar(text_searches=3), [I, T, T, T, A], True, "image, then three refinements"),
    (FormatGrammar(text_searches=3), [T, T, T, T, A], False, "four text searches over a cap of three"),
    (FormatGrammar(image_searches=3), [I, I, I, A], True, "three crops"),
    (FormatGrammar(image_searches=2, images_first=False), [T, I, A], True, "any order when asked"),
    (FormatGrammar(image_searches=0, text_searches=0), [A], True, "no searches allowed: answer only"),
    (FormatGrammar(image_searches=0, text_searches=0), [I, A], False, "no searches allowed"),
]


@pytest.mark.parametrize(("grammar", "actions", "accepted", "reason"), RULES, ids=[r[-1] for r in RULES])
def test_grammar_rules(grammar, actions, accepted, reason):
    assert grammar.accepts(actions) is accepted


def test_prefixes_are_judged_turn_by_turn():
    assert PAPER_GRAMMAR.accepts_prefix([]) and PAPER_GRAMMAR.accepts_prefix([I, T])
    assert not PAPER_GRAMMAR.accepts_prefix([T, T])
    assert PAPER_GRAMMAR.run([T, I]).problem == "an image search after a text search"


# -- the reduction: the paper's check, as it was written, against the grammar ---------------------------
PAPER_SHAPES = frozenset({"A", "I>A", "T>A", "I>T>A"})
PAPER_PREFIXES = frozenset({"", "I", "T", "I>T"}) | PAPER_SHAPES


def paper_format(actions):
    ok = bool(actions) and all(a.well_formed for a in actions) and trajectory_shape(actions) in PAPER_SHAPES
    return 1.0 if ok else 0.0


def paper_prefix_ok(actions):
    return all(a.well_formed for a in actions) and trajectory_shape(actions) in PAPER_PREFIXES


def test_the_grammar_is_the_four_shapes_on_every_short_action_sequence():
    kinds = [A, I, T, A_BAD, I_BAD, T_BAD, X]
    checked = 0
    for length in range(5):
        for actions in itertools.product(kinds, repeat=length):
            assert PAPER_GRAMMAR.accepts(actions) == bool(paper_format(actions)), trajectory_shape(actions)
            assert PAPER_GRAMMAR.accepts_prefix(actions) == paper_prefix_ok(actions), trajectory_shape(actions)
            checked += 1
    assert checked == sum(7**n for n in range(5))
    assert PAPER_GRAMMAR.shapes() == PAPER_SHAPES


R = "<reason>r</reason>"
TURNS = {  # one assistant turn per class of action the parser can return
    "A": f"{R}<answer>Velmont</answer>",
    "A-bad": "<answer>Velmont</answer>",
    "I": f"{R}<search><img></search>",
    "I-bad": "<search><img></search>",
    "T": f"{R}<text_search>capital</text_search>",
    "T-bad": f"{R} text <text_search>capital</text_search>",
    "X": "no action here",
}


def _trajectories(env, prefix=()):
    """Every trajectory of the default env over TURNS: depth-first, each replayed from reset."""
    env.reset(seed=0, options={"index": 0})
    infos = []
    for name in prefix:
        *_, terminated, truncated, info = env.step(TURNS[name])
        infos.append(info)
        if terminated or truncated:
            yield prefix, infos, env
            return
    for name in TURNS:
        yield from _trajectories(env, (*prefix, name))


def test_old_check_equals_the_grammar_on_every_trajectory_the_default_env_produces():
    env = MMSearchEnv(dataset="sample", search="sample")
    assert (env.max_turns, env.max_image_searches, env.max_text_searches) == (3, 1, 2)
    seen = 0
    for prefix, infos, ended in _trajectories(env):
        actions = [Action(a.kind, a.content, a.well_formed) for a in ended.episode_record().actions]
        for turn, info in enumerate(infos, start=1):
            assert info["format_ok"] == paper_prefix_ok(actions[:turn]), prefix
        assert infos[-1]["reward_parts"]["format"] == paper_format(actions), prefix
        seen += 1
    # Ends in turn 1 (A, A-bad, X); in turn 2 after an image search (those three, or a second image
    # search past the limit) or after a text search (those three); every turn-3 action ends.
    assert seen == 3 + 2 * 5 + 2 * 3 + (2 * 2 + 2 * 4) * 7 == 103


# -- the penalty ---------------------------------------------------------------------------------------
PENALTIES = [
    (1.0, 0, "once", 1.0, "no search"),
    (1.0, 1, "once", 0.9, "one search"),
    (1.0, 3, "once", 0.9, "once, whatever the count"),
    (0.0, 3, "once", 1.0, "a wrong answer is not penalised"),
    (1.0, 1, "per_call", 0.9, "one call costs what the paper's penalty costs"),
    (1.0, 4, "per_call", 0.6, "each call charged"),
    (1.0, 20, "per_call", 0.0, "floored at zero"),
    (0.0, 4, "per_call", 1.0, "wrong answers still not penalised"),
]


@pytest.mark.parametrize(("correct", "n", "mode", "factor", "reason"), PENALTIES, ids=[p[-1] for p in PENALTIES])
def test_search_penalty_factor(correct, n, mode, factor, reason):
    assert search_penalty_factor(correct, n, 0.1, mode) == factor


def test_per_call_penalty_and_refinement_budget_in_the_env():
    env = MMSearchEnv(
        dataset="sample", search="sample", max_turns=4, max_text_searches=3, format_text_searches=3,
        penalty_mode="per_call",
    )  # fmt: skip
    env.reset(seed=0)
    for query in ("a", "b", "c"):
        *_, info = env.step(f"{R}<text_search>{query}</text_search>")
        assert info["format_ok"]
    _, reward, terminated, _, info = env.step(f"{R}<answer>{env.example.answer}</answer>")
    assert terminated and info["reward_parts"]["penalty"] == 0.7 and reward == round(0.9 * 0.7 + 0.1, 10)
    actions = [Action(a.kind, a.content, a.well_formed) for a in env.episode_record().actions]
    breakdown = score_actions(actions, env.example.answer)
    assert (breakdown.format, breakdown.penalty) == (0.0, 0.9)  # the paper's rules score it differently


def test_the_trl_reward_is_picklable_and_scores_like_the_env():
    original = OutcomeReward(penalty_mode="per_call", format_text_searches=2)
    assert pickle.dumps(original)  # worker processes receive it pickled
    reward = copy.deepcopy(original)  # rebuilt through the same __reduce_ex__ as unpickling
    completion = [
        {"role": "assistant", "content": f"{R}<text_search>a</text_search>"},
        {"role": "user", "content": "results"},
        {"role": "assistant", "content": f"{R}<text_search>b</text_search>"},
        {"role": "assistant", "content": f"{R}<answer>Paris</answer>"},
    ]
    assert reward([completion], answer=["paris"]) == [round(0.9 * 0.8 + 0.1, 10)]
    assert OutcomeReward()([completion], answer=["paris"]) == [0.81]
    with pytest.raises(ValueError, match="per_call"):
        OutcomeReward(penalty_mode="per-call")
