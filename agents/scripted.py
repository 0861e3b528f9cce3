"""Scripted policies: no model, just the ideal search plan, to prove the tasks are solvable."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from agents.policy import PolicyBase
from mmsearch_env.data import Example
from mmsearch_env.protocol import ActionProtocol, get_protocol
from mmsearch_env.regions import Box
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

    It knows each question's label (what the question needs) and the query to type — for
    image-then-text questions with a ``query_template`` (the corpus set), the query is built from the
    top image-search title, so a wrong identification leads to a wrong lookup — but not the answer's
    location: after its searches it answers with the ground truth *only if the ground
    truth (or an alias) appears in the search results it received*, and says "unknown" otherwise.
    So its accuracy measures whether the search tools really retrieve the answer. Questions labelled
    ``"none"`` (answerable from the image) are answered directly, as a model that can see would.

    With ``use_search=False`` it never searches and answers only the ``"none"`` questions: the
    floor that search has to beat. With ``use_true_box=True``, on a question that knows where its
    picture is (``metadata["true_box"]``: screenshot scenes) and an env that takes boxes
    (``image_crops``), its image search names that region: the ceiling a crop-choosing policy can reach.

    Args:
        examples: the dataset (for the labels and queries, looked up by ``info["example_id"]``).
        use_search: follow the plan (True) or never search (False).
        protocol: the environment's protocol, to write well-formed turns.
        use_true_box: search the question's true region when it has one and the env takes boxes.
    """

    model_free = True  # a scripted plan: evaluation reports label it a plumbing check

    def __init__(
        self,
        examples: Iterable[Example],
        *,
        use_search: bool = True,
        protocol: str | ActionProtocol = "tags",
        use_true_box: bool = False,
    ):
        self.examples = {example.id: example for example in examples}
        self.use_search = use_search
        self.use_true_box = use_true_box
        self.protocol = get_protocol(protocol, crops=True if use_true_box else None)

    @property
    def name(self) -> str:
        if not self.use_search:
            return "oracle-no-search"
        return "oracle-true-box" if self.use_true_box else "oracle-plan"

    def act(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> str:
        example = self.examples[info["example_id"]]
        plan = PLANS.get(example.search_need or "", ()) if self.use_search else ()
        step = int(info["turn"])
        if step < len(plan) and info.get(f"can_{plan[step]}", True):  # the env says what the turn may do
            tool = plan[step]
            query = self._query(example, observation) if tool == "text_search" else None
            true_box = example.metadata.get("true_box")
            # "image_size" is in info only when the env takes boxes (image_crops)
            if tool == "image_search" and self.use_true_box and true_box and "image_size" in info:
                box = Box(*(float(v) for v in true_box))
                return self.protocol.format_action(tool, reason="The picture is in this region.", box=box)
            return self.protocol.format_action(tool, query, reason=f"The plan's step {step + 1} is {tool}.")
        if example.search_need == "none":
            return self.protocol.format_action("answer", example.answer, reason="The image shows it.")
        seen = _tool_text(observation["messages"])
        for target in (example.answer, *example.candidate_answers):
            norm = normalize_answer(target)
            if norm and re.search(rf"\b{re.escape(norm)}\b", seen):
                return self.protocol.format_action("answer", example.answer, reason="The results state it.")
        return self.protocol.format_action("answer", "unknown", reason="Nothing I read states it.")

    @staticmethod
    def _query(example: Example, observation: Mapping[str, Any]) -> str:
        """The text query: for image-then-text questions built from the top image result's title (so the
        image search really has to identify the entity), else the example's ``text_query``."""
        template = example.metadata.get("query_template")
        if template:
            title = _top_title(observation["messages"])
            if title:
                return template.format(e=title)
        return example.metadata.get("text_query") or example.question


_TITLE_RE = re.compile(r"title: ([^\n<]+)")


def _top_title(messages: list[dict[str, Any]]) -> str | None:
    """The first result title of the latest image-search result in the conversation."""
    for message in reversed(messages[1:]):
        if message["role"] in ("user", "tool"):
            text = "".join(b["text"] for b in message["content"] if b["type"] == "text")
            match = _TITLE_RE.search(text)
            if match:
                return match.group(1).strip()
    return None


def _tool_text(messages: list[dict[str, Any]]) -> str:
    """Normalised text of every tool-result message (those after the first user message)."""
    texts = []
    for message in messages[1:]:
        if message["role"] in ("user", "tool"):
            texts.extend(b["text"] for b in message["content"] if b["type"] == "text")
    return normalize_answer(" ".join(texts))
