"""The TRL ``environment_factory`` adapter: one MMSearch-v0 episode per rollout, its searches as tools."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from mmsearch_env.config import EnvConfig
from mmsearch_env.env import MMSearchEnv
from mmsearch_env.errors import BoxError, ConfigError
from mmsearch_env.protocol import get_protocol
from mmsearch_env.regions import parse_box
from mmsearch_env.reward import RewardBreakdown
from mmsearch_env.search import (
    ImageSearchRequest,
    SearchResponse,
    SearchWrapper,
    TextSearchRequest,
    ToolName,
    call_search,
    make_search,
)

__all__ = [
    "MMSearchToolEnv",
    "RecordingSearch",
    "RolloutEpisode",
    "TagsCropToolEnv",
    "TagsToolEnv",
    "ToolCallsCropToolEnv",
    "ToolCallsToolEnv",
    "env_factory",
]


class RecordingSearch(SearchWrapper):
    """A search wrapper that records what its backend answered, then serves the same answers again.

    While recording, each call goes to ``backend`` (through :func:`call_search`, so what is recorded is
    the checked response the env would see) and its response is kept. After :meth:`start_replay`,
    calls are answered from the record in order, so replaying a rollout's turns through the env to
    score them searches nothing twice. A replayed call the record does not hold (the trainer's parser
    and the env's disagreed on a turn) gets a failed response, a value like any other backend failure.

    ``owns_backend``: :meth:`close` closes ``backend`` only when True (it was built for this recorder);
    a backend passed in by a caller stays the caller's to close.
    """

    def __init__(self, backend: Any, *, owns_backend: bool = False) -> None:
        super().__init__(backend)
        self.name = "recording"
        self.owns_backend = owns_backend
        self.recorded: list[SearchResponse] = []
        self.replaying = False
        self._cursor = 0

    def start_recording(self) -> None:
        """Forget the record and send the next calls to the backend."""
        self.replaying, self._cursor = False, 0
        self.recorded = []

    def start_replay(self) -> None:
        """Answer the next calls from the record, from its first response."""
        self.replaying, self._cursor = True, 0

    def _next(self, tool: ToolName, request: ImageSearchRequest | TextSearchRequest) -> SearchResponse:
        if not self.replaying:
            response = call_search(self.backend, tool, request)
            self.recorded.append(response)
            return response
        if self._cursor < len(self.recorded) and self.recorded[self._cursor].tool == tool:
            response = self.recorded[self._cursor]
            self._cursor += 1
            return response
        return SearchResponse(tool=tool, error="this search was not run during the rollout")

    def image_search(self, request: ImageSearchRequest) -> SearchResponse:
        return self._next("image_search", request)

    def text_search(self, request: TextSearchRequest) -> SearchResponse:
        return self._next("text_search", request)

    def close(self) -> None:
        if self.owns_backend:
            self.backend.close()


class RolloutEpisode:
    """The env episode behind one rollout: the searches the model's tool calls run, then its score.

    The env searches through a :class:`RecordingSearch`, so :meth:`score_turns` can replay the
    model's turns through the same env state machine without searching again. It owns the search
    backend when it built it from a name (``search`` a string or None) and closes it in :meth:`close`.
    """

    def __init__(self, env_kwargs: Mapping[str, Any]) -> None:
        config = EnvConfig.coerce(None, **dict(env_kwargs))
        search = config.search
        if search is None:  # the env's own default: the built-in engine that matches a built-in dataset
            search = "sample" if config.dataset == "sample" else "corpus"
        self.recorder = RecordingSearch(
            make_search(search, config.search_options), owns_backend=isinstance(search, str)
        )
        self.env = MMSearchEnv(config.replace(search=self.recorder, search_options=None))
        self.example_id: str | None = None
        self.last_info: dict[str, Any] = {}
        self.breakdown: RewardBreakdown | None = None

    def start(self, example_id: str) -> None:
        """Start recording a new episode of ``example_id``."""
        self.example_id = example_id
        self.recorder.start_recording()
        self.env.reset(options={"example_id": example_id})
        self.last_info = {}
        self.breakdown = None

    def search(self, kind: ToolName, query: str | None, box: Any = None) -> list[dict[str, Any]] | str:
        """Step the env with the protocol's turn for this search; the tool result the model reads.

        ``box``: an image search's region (a list of four numbers or ``"x1,y1,x2,y2"``), read only when
        the env takes boxes (``image_crops``); a box the env cannot read ends the episode as malformed.
        """
        if self.env.episode_over:
            # TRL has no per-rollout stop: after the env ended the episode (a search past a limit or on the
            # last turn), further calls run nothing. The reward is the env's, fixed when it ended.
            return "No search was run: the episode has ended. Give your final answer."
        turn = self._turn(kind, query, box if kind == "image_search" and self.env.image_crops else None)
        observation, _, terminated, truncated, info = self.env.step(turn)
        self.last_info = info
        if terminated or truncated:
            return f"No search was run ({info['end_reason'].replace('_', ' ')}). Give your final answer."
        content = observation["messages"][-1]["content"]
        if self.env.config.image_position == "none":  # the text-only mode: titles, no thumbnails
            return "".join(block["text"] for block in content if block.get("type") == "text")
        return content

    def _turn(self, kind: ToolName, query: str | None, box: Any) -> str:
        protocol = self.env.protocol
        if box is None:
            return protocol.format_action(kind, query, reason="Searching.")
        try:
            return protocol.format_action(kind, reason="Searching.", box=parse_box(box))
        except BoxError:  # written as given, so the env records the malformed turn and says why
            if protocol.name == "tags":
                return f"<reason>Searching.</reason>\n<search><img>{box}</search>"
            call = {"name": "image_search", "arguments": {"box": box}}
            return f"<tool_call>\n{json.dumps(call, ensure_ascii=False, default=str)}\n</tool_call>"

    def score_turns(self, turns: Sequence[str]) -> tuple[RewardBreakdown, dict[str, Any]]:
        """The env's reward for the model's actual ``turns``: replay them with the recorded searches.

        Returns the breakdown and the last ``info`` (``end_reason`` ``"unfinished"`` if the turns ran
        out before the episode ended, e.g. a completion cut by the length limit; the breakdown is then
        :meth:`MMSearchEnv.score` of the turns so far).
        """
        if self.example_id is None:
            raise ConfigError("score_turns() before start(): TRL calls reset(**row) at the start of each rollout")
        self.recorder.start_replay()
        self.env.reset(options={"example_id": self.example_id})
        info: dict[str, Any] = {}
        for turn in turns:
            _, _, terminated, truncated, info = self.env.step(turn)
            if terminated or truncated:
                break
        breakdown = self.env.score()
        if not self.env.episode_over:
            info = {**info, "end_reason": "unfinished", "reward_parts": breakdown.as_dict()}
        self.breakdown = breakdown
        return breakdown, info

    def close(self) -> None:
        """Close the env and, when this episode built it, the search backend."""
        self.env.close()
        self.recorder.close()


class MMSearchToolEnv:
    """One rollout's MMSearch-v0 episode, exposed to TRL's ``environment_factory``.

    ``reset(**row)`` starts the episode of the row's ``example_id``; the public methods of the
    protocol subclasses are the model's tools. TRL turns every public method (but ``reset``) into a
    tool, so everything else lives on :attr:`episode` (a :class:`RolloutEpisode`):
    :class:`~agents.grpo.reward.EnvReward` scores a rollout with ``episode.score_turns(turns)``.
    Use :func:`env_factory` to build the right subclass.
    """

    def __init__(self, env_kwargs: Mapping[str, Any]) -> None:
        self.episode = RolloutEpisode(env_kwargs)

    @property
    def env(self) -> MMSearchEnv:
        """The episode's :class:`MMSearchEnv` (a property: TRL lists methods only as tools)."""
        return self.episode.env

    def reset(self, example_id: str, **row: Any) -> None:
        """Start the episode of ``example_id`` (the dataset's other columns are not needed)."""
        self.episode.start(example_id)


class ToolCallsToolEnv(MMSearchToolEnv):
    """Tools for the ``"tool_calls"`` protocol (JSON calls named ``image_search`` / ``text_search``)."""

    def image_search(self) -> list[dict[str, Any]] | str:
        """Reverse image search of the question's image.

        Returns:
            Up to 5 web pages showing a similar image, each with a thumbnail and a title.
        """
        return self.episode.search("image_search", None)

    def text_search(self, query: str) -> list[dict[str, Any]] | str:
        """Web search for a text query.

        Args:
            query: What to search for; short and specific.

        Returns:
            Up to 5 web pages, each with its link and a short summary.
        """
        return self.episode.search("text_search", query)


class TagsToolEnv(MMSearchToolEnv):
    """Tools for the paper's tag protocol: ``<search><img></search>`` is the tool ``search``."""

    def search(self, query: str = "") -> list[dict[str, Any]] | str:
        """Reverse image search of the question's image (the tag protocol's <search><img></search>).

        Args:
            query: Ignored; the image searched is always the question's.

        Returns:
            Up to 5 web pages showing a similar image, each with a thumbnail and a title.
        """
        return self.episode.search("image_search", None)

    def text_search(self, query: str) -> list[dict[str, Any]] | str:
        """Web search for a text query (the tag protocol's <text_search>QUERY</text_search>).

        Args:
            query: What to search for; short and specific.

        Returns:
            Up to 5 web pages, each with its link and a short summary.
        """
        return self.episode.search("text_search", query)


class ToolCallsCropToolEnv(ToolCallsToolEnv):
    """:class:`ToolCallsToolEnv` for an env with ``image_crops``: ``image_search`` takes a region.

    A subclass, so that the paper's setting shows the model exactly the paper's tools (TRL builds each
    tool's schema from its method's signature and docstring).
    """

    def image_search(self, box: list[float] | None = None) -> list[dict[str, Any]] | str:  # type: ignore[override]
        """Reverse image search of the question's image, or of a region of it.

        Args:
            box: Optional region to search, [x1, y1, x2, y2] (left, top, right, bottom): fractions of
                the image's width and height when all four are between 0 and 1, else pixels. Omit it
                to search the whole image.

        Returns:
            The region searched, then up to 5 web pages showing a similar image, each with a thumbnail and a title.
        """
        return self.episode.search("image_search", None, box)


class TagsCropToolEnv(TagsToolEnv):
    """:class:`TagsToolEnv` for an env with ``image_crops``: ``search`` takes a region."""

    def search(self, query: str = "", box: list[float] | None = None) -> list[dict[str, Any]] | str:  # type: ignore[override]
        """Reverse image search of the question's image, or of a region of it (<search><img>BOX</search>).

        Args:
            query: Ignored; the image searched is the question's.
            box: Optional region to search, [x1, y1, x2, y2] (left, top, right, bottom): fractions of
                the image's width and height when all four are between 0 and 1, else pixels. Omit it
                to search the whole image.

        Returns:
            The region searched, then up to 5 web pages showing a similar image, each with a thumbnail and a title.
        """
        # The tags response parser passes what stood between <search> and </search> as the query:
        # "<img>" for the whole image, "<img>x1,y1,x2,y2" for a region.
        if box is None and query.strip().startswith("<img>") and query.strip() != "<img>":
            box = query.strip()[len("<img>") :]
        return self.episode.search("image_search", None, box)


class _EnvFactory:
    """Picklable ``environment_factory``: a new adapter of the protocol's class per call."""

    def __init__(self, env_kwargs: Mapping[str, Any]) -> None:
        self.env_kwargs = dict(env_kwargs)
        tags = get_protocol(self.env_kwargs.get("protocol", "tags")).name == "tags"
        if self.env_kwargs.get("image_crops"):
            self.cls: type[MMSearchToolEnv] = TagsCropToolEnv if tags else ToolCallsCropToolEnv
        else:
            self.cls = TagsToolEnv if tags else ToolCallsToolEnv

    def __call__(self) -> MMSearchToolEnv:
        return self.cls(self.env_kwargs)


def env_factory(env_kwargs: Mapping[str, Any]) -> _EnvFactory:
    """The ``environment_factory`` for these ``MMSearch-v0`` keyword arguments."""
    return _EnvFactory(env_kwargs)
