"""Scripted policies: no model, just the ideal search plan, to prove the tasks are solvable."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from agents.policy import PolicyBase
from mmsearch_env.data import Example
from mmsearch_env.protocol import ActionProtocol, get_protocol
from mmsearch_env.reward import normalize_answer

__all__ = ["OraclePolicy"]

#: The search plan for each ``search_need`` label.
PLANS = {
    "none": (),
    "image": ("image_search",),
    "text": ("text_search",),
    "image+text": ("image_search", "text_search"),
}


class OraclePolicy(PolicyBase):
    """Follows the ideal search plan of each question and answers only from what it read.

    It knows each question's label (what the question needs) and the query to type, but not the
    answer's location: after its searches it answers with the ground truth *only if the ground
    truth (or an alias) appears in the search results it received*, and says "unknown" otherwise.
    So its accuracy measures whether the search tools really retrieve the answer. Questions labelled
    ``"none"`` (answerable from the image) are answered directly, as a model that can see would.

    With ``use_search=False`` it never searches and answers only the ``"none"`` questions: the
    floor that search has to beat.

    Args:
        examples: the dataset (for the labels and queries, looked up by ``info["example_id"]``).
        use_search: follow the plan (True) or never search (False).
        protocol: the environment's protocol, to write well-formed turns.
    """

    def __init__(
        self, examples: Iterable[Example], *, use_search: bool = True, protocol: str | ActionProtocol = "tags"
    ):
        self.examples = {example.id: example for example in examples}
        self.use_search = use_search
        self.protocol = get_protocol(protocol)

    @property
    def name(self) -> str:
        return "oracle-plan" if self.use_search else "oracle-no-search"

    def act(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> str:
        example = self.examples[info["example_id"]]
        plan = PLANS.get(example.search_need or "", ()) if self.use_search else ()
        step = int(info["turn"])
        if step < len(plan) and info.get(f"can_{plan[step]}", True):  # the rollout engine says what is allowed
            tool = plan[step]
            query = (example.metadata.get("text_query") or example.question) if tool == "text_search" else None
            return self.protocol.format_action(tool, query, reason=f"The plan's step {step + 1} is {tool}.")
        if example.search_need == "none":
            return self.protocol.format_action("answer", example.answer, reason="The image shows it.")
        seen = _tool_text(observation["messages"])
        for target in (example.answer, *example.candidate_answers):
            norm = normalize_answer(target)
            if norm and re.search(rf"\b{re.escape(norm)}\b", seen):
                return self.protocol.format_action("answer", example.answer, reason="The results state it.")
        return self.protocol.format_action("answer", "unknown", reason="Nothing I read states it.")


def _tool_text(messages: list[dict[str, Any]]) -> str:
    """Normalised text of every tool-result message (those after the first user message)."""
    texts = []
    for message in messages[1:]:
        if message["role"] in ("user", "tool"):
            texts.extend(b["text"] for b in message["content"] if b["type"] == "text")
    return normalize_answer(" ".join(texts))
