"""The MMSearch-R1 outcome reward, one pure function per part.

``reward = (1 - α) · accuracy · penalty + α · format`` with α = ``format_weight`` (0.1) and
``penalty = 1 - search_penalty`` (0.9) when the answer is correct *and* any search was made (once, not
per search), else 1. The six values this gives under the defaults:

=========================  ==============  ================
trajectory                 good format     bad format
=========================  ==============  ================
correct, no search         1.0             0.9
correct, searched          0.91            0.81
wrong (or no answer)       0.1             0.0
=========================  ==============  ================

Two opt-in generalisations, off by default: ``penalty_mode="per_call"`` charges each search
(``penalty = max(0, 1 - search_penalty · searches)`` for a correct answer, so one search costs what
the paper's once-per-episode penalty costs), and a :class:`~mmsearch_env.grammar.FormatGrammar` with
higher caps rewards trajectories with more searches (multi-turn query refinement).

:func:`score_trajectory` is the scorer the environment, the trainer and the evaluator all call, so a
reward means the same thing everywhere. The classes at the bottom wrap it as TRL reward functions
(``(completions, **columns) -> list[float]``).
"""

from __future__ import annotations

import json
import numbers
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from mmsearch_env.errors import ConfigError, did_you_mean
from mmsearch_env.grammar import PAPER_GRAMMAR, FormatGrammar
from mmsearch_env.protocol import Action, ActionProtocol, get_protocol

__all__ = [
    "ALLOWED_SHAPES",
    "FORMAT_WEIGHT",
    "PENALTY_MODES",
    "SEARCH_PENALTY",
    "AccuracyReward",
    "FormatReward",
    "OutcomeReward",
    "RewardBreakdown",
    "exact_match",
    "format_score",
    "normalize_answer",
    "score_trajectory",
    "search_penalty_factor",
    "trajectory_shape",
]

_PUNCT_TABLE = str.maketrans("", "", string.punctuation)
_ARTICLES_RE = re.compile(r"\b(?:a|an|the)\b")

#: The paper's search penalty p: a correct answer that searched keeps ``1 - p`` of its accuracy reward.
SEARCH_PENALTY = 0.1
#: The paper's format weight α: ``reward = (1 - α) · accuracy · penalty + α · format``.
FORMAT_WEIGHT = 0.1

#: How the search penalty is charged: once per episode (the paper's) or per search call.
PENALTY_MODES = ("once", "per_call")

#: Trajectory shapes that earn the format score under the paper's grammar (I = image search, T = text
#: search, A = answer): :data:`~mmsearch_env.grammar.PAPER_GRAMMAR`'s shapes.
ALLOWED_SHAPES = frozenset(PAPER_GRAMMAR.shapes())
_SHAPE_LETTER = {"answer": "A", "image_search": "I", "text_search": "T", "invalid": "X"}


def normalize_answer(text: str) -> str:
    """Lowercase, remove ASCII punctuation, remove the words a/an/the, collapse whitespace.

    >>> normalize_answer("  The U.S.A.!  ")
    'usa'
    >>> normalize_answer("An Apple a day")
    'apple day'
    """
    text = text.lower().translate(_PUNCT_TABLE)
    return " ".join(_ARTICLES_RE.sub(" ", text).split())


def exact_match(answer: str | None, ground_truth: str, candidate_answers: Iterable[str] = ()) -> float:
    """1.0 if the normalised answer equals the normalised ground truth or any candidate answer.

    An empty normalised answer never matches (so ``"the"`` cannot match a ground truth of ``"a"``).

    >>> exact_match("United States", "USA", ["United States", "America"])
    1.0
    >>> exact_match("Canada", "USA")
    0.0
    """
    if answer is None:
        return 0.0
    norm = normalize_answer(answer)
    if not norm:
        return 0.0
    targets = {normalize_answer(t) for t in (ground_truth, *candidate_answers) if isinstance(t, str)}
    return 1.0 if norm in targets else 0.0


def search_penalty_factor(
    correct: float, num_searches: int, search_penalty: float = SEARCH_PENALTY, mode: str = "once"
) -> float:
    """The share of a correct answer's accuracy reward it keeps after its searches; 1 for a wrong one.

    ``mode="once"`` (the paper's): ``1 - search_penalty`` when any search was made.
    ``mode="per_call"``: ``max(0, 1 - search_penalty · num_searches)``, each search charged.

    >>> search_penalty_factor(1.0, 2)
    0.9
    >>> search_penalty_factor(0.0, 2)
    1.0
    >>> search_penalty_factor(1.0, 3, mode="per_call")
    0.7
    """
    if mode not in PENALTY_MODES:
        raise ConfigError(
            f"penalty mode must be one of {list(PENALTY_MODES)}, got {mode!r}" + did_you_mean(str(mode), PENALTY_MODES)
        )
    if not correct or num_searches <= 0:
        return 1.0
    if mode == "once":
        return 1.0 - search_penalty
    return round(max(0.0, 1.0 - search_penalty * num_searches), 10)


def trajectory_shape(actions: Sequence[Action]) -> str:
    """The trajectory as letters joined by ``>``: I(mage), T(ext), A(nswer), X (invalid).

    >>> from mmsearch_env.protocol import Action
    >>> trajectory_shape([Action("image_search"), Action("answer", "x")])
    'I>A'
    """
    return ">".join(_SHAPE_LETTER[a.kind] for a in actions)


def format_score(actions: Sequence[Action], grammar: FormatGrammar = PAPER_GRAMMAR) -> float:
    """1.0 when ``grammar`` accepts the trajectory (:class:`~mmsearch_env.grammar.FormatGrammar`), else 0.

    The paper's grammar (the default) allows: direct answer; image or text search then answer; image
    search, text search, answer. Anything else (two text searches, text before image, no answer)
    scores 0.
    """
    return 1.0 if grammar.accepts(actions) else 0.0


@dataclass(frozen=True)
class RewardBreakdown:
    """The reward and each of its parts, for logging (``as_dict()``) and tests."""

    reward: float
    accuracy: float
    format: float
    penalty: float
    answer: str | None
    image_searches: int
    text_searches: int
    shape: str

    @property
    def num_searches(self) -> int:
        return self.image_searches + self.text_searches

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_reward_weights(search_penalty: float, format_weight: float) -> None:
    """Raise :class:`ConfigError` unless both weights are numbers in [0, 1]."""
    for name, value in (("search_penalty", search_penalty), ("format_weight", format_weight)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
            raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}; the paper uses 0.1")


def score_trajectory(
    turns: Sequence[str],
    ground_truth: str,
    candidate_answers: Iterable[str] = (),
    *,
    search_penalty: float = SEARCH_PENALTY,
    format_weight: float = FORMAT_WEIGHT,
    protocol: str | ActionProtocol = "tags",
    grammar: FormatGrammar = PAPER_GRAMMAR,
    penalty_mode: str = "once",
) -> RewardBreakdown:
    """Score a finished trajectory given its assistant turns, as the environment does.

    The searches counted are the search actions of every turn but the last (those the episode ran);
    the answer is the last turn's answer, if it has one. ``grammar`` and ``penalty_mode`` are the
    opt-in generalisations of the module docstring (the paper's rules by default).

    >>> score_trajectory(["<reason>Known.</reason><answer>Paris</answer>"], "paris").reward
    1.0
    >>> score_trajectory(
    ...     ["<reason>?</reason><search><img></search>", "<reason>Found.</reason><answer>Paris</answer>"],
    ...     "Paris",
    ... ).reward
    0.91
    """
    check_reward_weights(search_penalty, format_weight)
    parser = get_protocol(protocol)
    actions = [parser.parse(turn) for turn in turns]
    return score_actions(
        actions,
        ground_truth,
        candidate_answers,
        search_penalty=search_penalty,
        format_weight=format_weight,
        grammar=grammar,
        penalty_mode=penalty_mode,
    )


def score_actions(
    actions: Sequence[Action],
    ground_truth: str,
    candidate_answers: Iterable[str] = (),
    *,
    search_penalty: float = SEARCH_PENALTY,
    format_weight: float = FORMAT_WEIGHT,
    grammar: FormatGrammar = PAPER_GRAMMAR,
    penalty_mode: str = "once",
) -> RewardBreakdown:
    """:func:`score_trajectory` on turns already parsed (the environment keeps its parsed actions)."""
    executed = actions[:-1]
    image_searches = sum(a.kind == "image_search" for a in executed)
    text_searches = sum(a.kind == "text_search" for a in executed)
    final = actions[-1] if actions else None
    answer = final.content if final is not None and final.kind == "answer" else None
    accuracy = exact_match(answer, ground_truth, candidate_answers)
    penalty = search_penalty_factor(accuracy, image_searches + text_searches, search_penalty, penalty_mode)
    fmt = format_score(actions, grammar)
    # Rounded so that the documented values compare equal (0.9 * 0.9 + 0.1 is 0.9100000000000001).
    reward = round((1.0 - format_weight) * accuracy * penalty + format_weight * fmt, 10)
    return RewardBreakdown(
        reward=reward,
        accuracy=accuracy,
        format=fmt,
        penalty=penalty,
        answer=answer,
        image_searches=image_searches,
        text_searches=text_searches,
        shape=trajectory_shape(actions),
    )


# ---------------------------------------------------------------------------------------------------
# TRL reward functions. They are small classes rather than closures because TRL may pickle reward
# functions into worker processes, and their parameters must travel with them.


def assistant_turns(completion: str | Sequence[Mapping[str, Any]]) -> list[str]:
    """The assistant turns of one TRL completion: a plain string, or a list of chat messages.

    Structured ``tool_calls`` on a message are written back as ``<tool_call>`` text so that the
    ``tool_calls`` protocol can parse them.
    """
    if isinstance(completion, str):
        return [completion]
    turns = []
    for message in completion:
        if message.get("role") != "assistant":
            continue
        content = message.get("content") or ""
        if not isinstance(content, str):
            content = "".join(b.get("text", "") for b in content if isinstance(b, Mapping) and b.get("type") == "text")
        for call in message.get("tool_calls") or []:
            function = call.get("function", call)
            args = function.get("arguments", {})
            content += (
                "<tool_call>"
                + json.dumps({"name": function.get("name"), "arguments": args}, ensure_ascii=False)
                + "</tool_call>"
            )
        turns.append(content)
    return turns


class _TrlReward:
    """Shared plumbing: pick the ground-truth columns out of TRL's keyword arguments."""

    part = "reward"

    def __init__(
        self,
        search_penalty: float = SEARCH_PENALTY,
        format_weight: float = FORMAT_WEIGHT,
        protocol: str = "tags",
        *,
        penalty_mode: str = "once",
        format_image_searches: int = 1,
        format_text_searches: int = 1,
        image_crops: bool = False,
    ):
        check_reward_weights(search_penalty, format_weight)
        search_penalty_factor(1.0, 1, search_penalty, penalty_mode)  # a typo in the mode fails here
        self.search_penalty = search_penalty
        self.format_weight = format_weight
        self.protocol = get_protocol(protocol).name
        self.penalty_mode = penalty_mode
        self.grammar = FormatGrammar(int(format_image_searches), int(format_text_searches))
        self.image_crops = bool(image_crops)
        self.__name__ = f"mmsearch_{self.part}"

    def __call__(
        self,
        completions: Sequence[str | Sequence[Mapping[str, Any]]],
        answer: Sequence[str] | None = None,
        candidate_answers: Sequence[Sequence[str] | None] | None = None,
        **kwargs: Any,
    ) -> list[float]:
        if answer is None:
            raise ConfigError(
                "the reward needs the ground truth: give the dataset an 'answer' column "
                f"(got columns {sorted(kwargs)})."
            )
        candidates = candidate_answers or [()] * len(completions)
        scores = []
        for completion, truth, cands in zip(completions, answer, candidates, strict=True):
            breakdown = score_trajectory(
                assistant_turns(completion),
                truth,
                cands or (),
                search_penalty=self.search_penalty,
                format_weight=self.format_weight,
                protocol=get_protocol(self.protocol, crops=self.image_crops),
                grammar=self.grammar,
                penalty_mode=self.penalty_mode,
            )
            scores.append(float(getattr(breakdown, self.part)))
        return scores


class OutcomeReward(_TrlReward):
    """The full MMSearch-R1 reward as a TRL reward function.

    The keyword-only options are the env's opt-in settings of the same names (``penalty_mode``,
    ``format_image_searches``, ``format_text_searches``, ``image_crops``); the defaults are the paper's.

    >>> OutcomeReward()(["<reason>k</reason><answer>Paris</answer>", "Paris"], answer=["paris", "paris"])
    [1.0, 0.0]
    >>> turns = ["<reason>a</reason><text_search>q1</text_search>", "<reason>b</reason><text_search>q2</text_search>",
    ...          "<reason>c</reason><answer>Paris</answer>"]
    >>> refine = [{"role": "assistant", "content": turn} for turn in turns]  # tool messages left out
    >>> OutcomeReward(penalty_mode="per_call", format_text_searches=2)([refine], answer=["paris"])
    [0.82]
    """

    part = "reward"


class AccuracyReward(_TrlReward):
    """Exact-match accuracy (0/1) of the final answer, for logging next to the reward."""

    part = "accuracy"


class FormatReward(_TrlReward):
    """The format score (0/1): every turn well formed and an allowed trajectory shape."""

    part = "format"
