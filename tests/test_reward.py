"""The MMSearch-R1 reward: normalisation, exact match, penalty, format shapes and the six values."""

from __future__ import annotations

import copy
import pickle
import re

import pytest

from mmsearch_env.errors import ConfigError
from mmsearch_env.reward import (
    AccuracyReward,
    FormatReward,
    OutcomeReward,
    exact_match,
    normalize_answer,
    score_trajectory,
)

IMG = "<reason>I need to identify the image.</reason><search><img></search>"
TXT = "<reason>I need a fact.</reason><text_search>capital of Arvenia</text_search>"
ANS = "<reason>Now I know.</reason><answer>{}</answer>"
BAD_ANS = "The answer is <answer>{}</answer>"  # no <reason>: acted on, but not well formed


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Paris", "paris"),  # lowercase
        ("U.S.A.", "usa"),  # ASCII punctuation removed, not replaced by spaces
        ("The Eiffel Tower", "eiffel tower"),  # leading article
        ("a cat and an owl", "cat and owl"),  # every a/an/the word
        ("theatre", "theatre"),  # 'the' inside a word stays
        ("  New   York\t", "new york"),  # whitespace collapsed
        ("Café", "café"),  # non-ASCII letters are kept
        ("¿Qué?", "¿qué"),  # only ASCII punctuation is removed
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize(
    ("answer", "truth", "candidates", "expected"),
    [
        ("Velmont", "Velmont", (), 1.0),
        ("velmont.", "Velmont", (), 1.0),  # normalised equality
        ("United States", "USA", ("United States", "America"), 1.0),  # any candidate counts
        ("the USA", "U.S.A.", (), 1.0),
        ("Velmont City", "Velmont", (), 0.0),  # exact match, not containment
        ("", "Velmont", (), 0.0),
        ("the", "a", (), 0.0),  # empty after normalisation never matches
        (None, "Velmont", (), 0.0),  # no answer
    ],
)
def test_exact_match(answer, truth, candidates, expected):
    assert exact_match(answer, truth, candidates) == expected


@pytest.mark.parametrize(
    ("turns", "answer", "expected"),
    [
        # the six values of REFERENCE.md §1
        ([ANS.format("Velmont")], "Velmont", 1.0),  # correct, no search, good format
        ([IMG, ANS.format("Velmont")], "Velmont", 0.91),  # correct, searched, good format
        ([BAD_ANS.format("Velmont")], "Velmont", 0.9),  # correct, no search, bad format
        ([IMG, BAD_ANS.format("Velmont")], "Velmont", 0.81),  # correct, searched, bad format
        ([ANS.format("Paris")], "Velmont", 0.1),  # wrong, good format
        ([BAD_ANS.format("Paris")], "Velmont", 0.0),  # wrong, bad format
        # penalty once, not per search
        ([IMG, TXT, ANS.format("Velmont")], "Velmont", 0.91),
        # the allowed shapes
        ([TXT, ANS.format("Velmont")], "Velmont", 0.91),
        # disallowed shapes: two text searches, text before image
        ([TXT, TXT, ANS.format("Velmont")], "Velmont", 0.81),
        ([TXT, IMG, ANS.format("Velmont")], "Velmont", 0.81),
        ([IMG, IMG, ANS.format("Velmont")], "Velmont", 0.81),
        # wrong answers are not penalised for searching
        ([IMG, TXT, ANS.format("Paris")], "Velmont", 0.1),
        # no answer at all (search cut off, or malformed): zero
        ([IMG, TXT, TXT], "Velmont", 0.0),
        (["I think it is Velmont."], "Velmont", 0.0),
        ([], "Velmont", 0.0),
    ],
)
def test_score_trajectory_values(turns, answer, expected):
    assert score_trajectory(turns, answer).reward == expected


def test_breakdown_parts_and_counts():
    b = score_trajectory([IMG, TXT, ANS.format("velmont")], "Velmont")
    assert (b.accuracy, b.format, b.penalty) == (1.0, 1.0, 0.9)
    assert (b.image_searches, b.text_searches, b.num_searches) == (1, 1, 2)
    assert b.shape == "I>T>A"
    assert b.answer == "velmont"
    assert b.as_dict()["reward"] == 0.91


def test_search_in_last_turn_is_not_counted():
    """The last turn's search never ran (the episode ended there), so it costs nothing."""
    b = score_trajectory([IMG, TXT], "Velmont")
    assert (b.image_searches, b.text_searches) == (1, 0)


def test_weights_are_parameters():
    b = score_trajectory([IMG, ANS.format("Velmont")], "Velmont", search_penalty=0.5, format_weight=0.0)
    assert b.reward == 0.5
    assert score_trajectory([ANS.format("x")], "y", format_weight=0.3).reward == 0.3


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.1", True, None])
def test_weights_are_checked(bad):
    with pytest.raises(ConfigError, match=re.escape("search_penalty must be a number in [0, 1]")):
        score_trajectory([ANS.format("x")], "x", search_penalty=bad)


def test_tool_calls_protocol_same_semantics():
    call = '<tool_call>{"name": "image_search", "arguments": {}}</tool_call>'
    assert score_trajectory([call, "<answer>Velmont</answer>"], "Velmont", protocol="tool_calls").reward == 0.91
    assert score_trajectory(["Sure. <answer>Paris</answer>"], "Velmont", protocol="tool_calls").reward == 0.1


def test_trl_reward_functions_on_strings_and_messages():
    messages = [
        {"role": "assistant", "content": IMG},
        {"role": "user", "content": "<information>...</information>"},
        {"role": "assistant", "content": [{"type": "text", "text": ANS.format("Velmont")}]},
    ]
    completions = [ANS.format("Velmont"), messages, "no action"]
    answers = ["Velmont", "Velmont", "Velmont"]
    assert OutcomeReward()(completions, answer=answers) == [1.0, 0.91, 0.0]
    assert AccuracyReward()(completions, answer=answers) == [1.0, 1.0, 0.0]
    assert FormatReward()(completions, answer=answers) == [1.0, 1.0, 0.0]
    assert OutcomeReward()(
        ["<reason>r</reason><answer>USA</answer>"], answer=["United States"], candidate_answers=[["USA"]]
    ) == [0.91 + 0.09]


def test_trl_reward_structured_tool_calls():
    messages = [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"type": "function", "function": {"name": "text_search", "arguments": {"query": "Arvenia"}}}
            ],
        },
        {"role": "tool", "content": "results"},
        {"role": "assistant", "content": "<answer>Velmont</answer>"},
    ]
    assert OutcomeReward(protocol="tool_calls")([messages], answer=["Velmont"]) == [0.91]


def test_trl_reward_needs_answer_column_and_pickles():
    reward = OutcomeReward(search_penalty=0.2)
    with pytest.raises(ConfigError, match="give the dataset an 'answer' column"):
        reward(["x"], solution=["y"])
    # TRL may send reward functions to worker processes: they must pickle with their parameters.
    assert len(pickle.dumps(reward)) > 0
    clone = copy.deepcopy(reward)  # the same __reduce_ex__ protocol, without unpickling bytes
    assert clone.search_penalty == 0.2
    assert clone.__name__ == "mmsearch_reward"
    assert clone([IMG + "\n", ANS.format("b")], answer=["b", "b"]) == [0.0, 1.0]
