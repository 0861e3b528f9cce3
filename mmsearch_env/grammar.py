"""The format grammar: which trajectories earn the format score, as one per-turn rule set.

A trajectory (its parsed turns, in order) is *well formatted* when, read turn by turn:

1. every turn is well formed (its protocol's per-turn grammar: one reasoning part, one action);
2. every turn but the last is a search, and the last is an answer;
3. it makes at most ``image_searches`` image searches and at most ``text_searches`` text searches;
4. with ``images_first``, no image search follows a text search (look at the picture, then read).

The rules are checked as each turn arrives (:meth:`FormatGrammar.step`), so a trajectory that has
not ended yet can be judged too: :meth:`FormatGrammar.accepts_prefix` is the env's mid-episode
``info["format_ok"]``. With the paper's caps (one image search, one text search) the grammar accepts
exactly the paper's four shapes — answer; image → answer; text → answer; image → text → answer — and
a test enumerates every trajectory the default env can produce to prove it. Raising the caps (with
the env's search budgets) rewards multi-turn query refinement: text → text → answer, several crops.

>>> from mmsearch_env.protocol import Action
>>> I, T, A = Action("image_search", well_formed=True), Action("text_search", "q", True), Action("answer", "a", True)
>>> PAPER_GRAMMAR.accepts([I, T, A]), PAPER_GRAMMAR.accepts([T, T, A])
(True, False)
>>> FormatGrammar(text_searches=2).accepts([T, T, A])
True
>>> sorted(PAPER_GRAMMAR.shapes())
['A', 'I>A', 'I>T>A', 'T>A']
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from mmsearch_env.protocol import Action

__all__ = ["PAPER_GRAMMAR", "FormatGrammar", "GrammarState"]

_LETTER_KIND = {"A": "answer", "I": "image_search", "T": "text_search"}


@dataclass(frozen=True)
class GrammarState:
    """Where a trajectory stands after some turns: searches so far, whether it answered, or the rule broken."""

    image_searches: int = 0
    text_searches: int = 0
    answered: bool = False
    #: the first rule the trajectory broke, in words; ``None`` while every rule holds
    problem: str | None = None


@dataclass(frozen=True)
class FormatGrammar:
    """The rule set above, parameterised by its caps (the paper's by default).

    Attributes:
        image_searches: the most image searches a well-formatted trajectory makes.
        text_searches: the most text searches a well-formatted trajectory makes.
        images_first: whether an image search after a text search breaks the format.
    """

    image_searches: int = 1
    text_searches: int = 1
    images_first: bool = True

    def step(self, state: GrammarState, action: Action) -> GrammarState:
        """The state after one more turn (a broken rule is kept: once broken, always broken)."""
        if state.problem is not None:
            return state
        images, texts = state.image_searches, state.text_searches
        problem = None
        if state.answered:
            problem = "a turn follows the answer"
        elif not action.well_formed:
            problem = f"turn {images + texts + 1} is not well formed"
        elif action.kind == "image_search":
            images += 1
            if images > self.image_searches:
                problem = f"more than {self.image_searches} image search(es)"
            elif self.images_first and texts:
                problem = "an image search after a text search"
        elif action.kind == "text_search":
            texts += 1
            if texts > self.text_searches:
                problem = f"more than {self.text_searches} text search(es)"
        elif action.kind != "answer":
            problem = f"turn {images + texts + 1} has no valid action"
        return GrammarState(images, texts, state.answered or action.kind == "answer", problem)

    def run(self, actions: Sequence[Action]) -> GrammarState:
        """The state after every turn of ``actions``."""
        state = GrammarState()
        for action in actions:
            state = self.step(state, action)
        return state

    def accepts_prefix(self, actions: Sequence[Action]) -> bool:
        """No rule is broken yet: the trajectory can still end well formatted (or already did)."""
        return self.run(actions).problem is None

    def accepts(self, actions: Sequence[Action]) -> bool:
        """The whole trajectory is well formatted: no rule broken, and it ends with an answer."""
        state = self.run(actions)
        return state.problem is None and state.answered

    def shapes(self) -> set[str]:
        """Every accepted trajectory shape (letters I, T, A joined by ``>``, as :func:`trajectory_shape` writes)."""
        found = set()
        longest = self.image_searches + self.text_searches + 1
        for length in range(1, longest + 1):
            for letters in itertools.product("ITA", repeat=length):
                actions = [Action(_LETTER_KIND[c], "x", well_formed=True) for c in letters]
                if self.accepts(actions):
                    found.add(">".join(letters))
        return found


#: The paper's format rule: the four shapes A, I>A, T>A, I>T>A.
PAPER_GRAMMAR = FormatGrammar()
