"""MMSearch-v0: a visual question, answered in at most a few assistant turns that may search the web."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, SupportsFloat

import gymnasium as gym
from gymnasium import spaces

from mmsearch_env.config import EnvConfig
from mmsearch_env.data import Example, load_dataset, screenshot_scenes
from mmsearch_env.errors import BoxError, ConfigError, InvalidActionError, ResetNeededError
from mmsearch_env.grammar import FormatGrammar
from mmsearch_env.prompts import load_prompts, render_tool_result
from mmsearch_env.protocol import Action, get_protocol
from mmsearch_env.records import ActionRecord, EpisodeRecord, ResultRecord, SearchRecord
from mmsearch_env.regions import BOX_SYNTAX, crop_region, region_pixels
from mmsearch_env.reward import RewardBreakdown, score_actions
from mmsearch_env.search import (
    ImageSearchRequest,
    SearchResponse,
    TextSearchRequest,
    acall_search,
    call_search,
    make_search,
)
from mmsearch_env.spaces import AssistantTurn, ChatMessages, PILImage, UnicodeText
from mmsearch_env.text import clean_text, neutralize_control_tokens

__all__ = ["TERMINATION_REASONS", "TRUNCATION_REASONS", "MMSearchEnv"]

#: ``info["end_reason"]`` values that set ``terminated`` (the task ended).
TERMINATION_REASONS = ("answer", "malformed")
#: ``info["end_reason"]`` values that set ``truncated`` (a search budget ran out).
TRUNCATION_REASONS = ("search_on_last_turn", "image_search_limit", "text_search_limit")


@dataclass
class _Episode:
    example: Example
    image: Any
    messages: list[dict[str, Any]]
    turns: list[str] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    responses: list[SearchResponse] = field(default_factory=list)
    image_searches: int = 0
    text_searches: int = 0
    search_failures: int = 0
    #: per image search run: its region in pixels, or None for the whole image (image_crops only)
    regions: list[tuple[int, int, int, int] | None] = field(default_factory=list)
    pending_region: tuple[int, int, int, int] | None = None  # the region of the search being run
    action_truncated: bool = False  # the last turn was cut to max_action_chars
    end_reason: str | None = None
    breakdown: RewardBreakdown | None = None


class MMSearchEnv(gym.Env[dict[str, Any], str]):
    """Answer a visual question, searching the web only when needed (MMSearch-R1).

    ==================  ==========================================================================
    id                  ``MMSearch-v0``
    action              ``str``: one assistant turn (``AssistantTurn`` space)
    observation         ``dict``: ``messages`` (HF multimodal chat), ``question`` (str), ``image`` (PIL)
    tools               image search (the question's image), text search (a query)
    default limits      3 turns, 1 image search, 2 text searches, no search in the last turn
    reward              ``0.9 · accuracy · (0.9 if searched) + 0.1 · format`` on the last step
    ==================  ==========================================================================

    ## Description

    One episode is one visual question from ``dataset``. The agent writes assistant turns; a turn may
    end with a search, whose results come back as the next user (``"tags"``) or tool
    (``"tool_calls"``) message, or with an answer, which ends the episode and is scored. This is
    the rollout of MMSearch-R1 (arXiv 2506.20670), with the search tools behind one interface
    (``search``): by default real offline image and text search over the embedded knowledge corpus
    (``"corpus"``: ~11.9k pages — countries, elements, brands, emoji, Wikipedia summaries), and the
    question set generated from it (``dataset="corpus"``: ~4.9k questions, entity-disjoint splits).

    ## Action Space

    Any ``str``. How it is read depends on ``protocol``:

    * ``"tags"`` (default, the paper's): reason inside ``<reason>…</reason>``, then end the turn with
      exactly one of ``<search><img></search>`` (image search), ``<text_search>QUERY</text_search>``
      (text search; the last such pair is the query) or ``<answer>ANSWER</answer>``.
    * ``"tool_calls"``: end the turn with ``<tool_call>{"name": "image_search" | "text_search",
      "arguments": {...}}</tool_call>`` or with ``<answer>ANSWER</answer>``.

    With ``image_crops=True`` an image search may name a region of the question's image, and only
    that region is searched: ``<search><img>x1,y1,x2,y2</search>`` (tags) or ``"arguments": {"box":
    [x1, y1, x2, y2]}`` (tool calls). One syntax rule (:mod:`mmsearch_env.regions`): left, top,
    right, bottom, as fractions of the width and height when all four are in [0, 1], else as pixels;
    clipped to the image; at least 8 pixels each way. A box that cannot be read, is reversed or
    empty is malformed (``info["action_error"]`` says why). Without ``image_crops`` a box is not read.

    Only the end of the turn decides the action. A turn that ends with no action, with an empty
    query, or with a broken tool call is *malformed*: the episode ends (there is no retry) and the
    reward is 0. Protocol tags inside a query or answer are removed. ``step`` never raises on agent
    text (empty, huge, invalid Unicode, hostile); it raises :class:`InvalidActionError` for a non-str.
    For dict actions use :class:`mmsearch_env.wrappers.StructuredActions`.

    ## Observation Space

    A ``dict`` with ``messages``: the conversation so far, ready for
    ``processor.apply_chat_template`` — first a user message holding the question's image and the
    instruction (which repeats the question), then for each turn the assistant message and, after a
    search, the results message: ``<information>`` (tags protocol), a header, up to 5 numbered
    results (image search: thumbnail image + ``title: …``; text search: ``(link: URL) summary``),
    ``</information>``, the question again and what the agent may do next. A failed search gives a
    short error text instead (no ``<information>``) and the episode goes on. Web text is escaped, so
    results cannot inject tags; chat-template control tokens (``[INST]``, ``<|eot_id|>``,
    ``<start_of_turn>``, ...) in web text and in the question as shown in messages are rewritten as
    ``(INST)``, ``(eot_id)``, ... Also ``question`` (the dataset's text, as is) and ``image`` (the
    question's RGB image). With ``image_crops`` the instruction also gives the box syntax and the
    image's size, and a region's results message shows the region searched (an image) first.

    ## Rewards

    0 on every step but the last. On the last step ``(1 - format_weight) · accuracy · penalty +
    format_weight · format`` (:func:`mmsearch_env.reward.score_trajectory`): accuracy is exact match
    after normalisation against the answer or any candidate answer; penalty is ``1 - search_penalty``
    if the answer is correct and any search ran; format is 1 when every turn is well formed and the
    trajectory is answer / image→answer / text→answer / image→text→answer. Default values: 1.0,
    0.91, 0.9, 0.81, 0.1, 0.0. Opt-in: ``format_image_searches`` / ``format_text_searches`` raise the
    format grammar's caps (:class:`mmsearch_env.grammar.FormatGrammar`: searches, then one answer,
    images before texts), and ``penalty_mode="per_call"`` charges each search:
    ``penalty = max(0, 1 - search_penalty · searches)``.

    ## Starting State

    ``reset`` picks a question uniformly with ``self.np_random`` (seeded by ``reset(seed=...)``), or
    the one named by ``options={"index": i}`` or ``options={"example_id": "..."}``.

    ## Episode End

    * *Termination* ``"answer"``: the turn ends with an answer.
    * *Termination* ``"malformed"``: the turn ends with no valid action.
    * *Truncation* ``"search_on_last_turn"``: a search in turn ``max_turns`` (not run).
    * *Truncation* ``"image_search_limit"`` / ``"text_search_limit"``: a search past its limit (not run).

    ``info["end_reason"]`` names which. Every truncation is still scored (no answer: 0 accuracy).

    ## Info

    Every step: ``example_id``, ``turn``, ``image_searches``, ``text_searches``, ``search_failures``,
    ``search_cost_usd`` (dollars spent on this episode's searches), ``can_image_search`` /
    ``can_text_search`` (whether the next turn may run that search: the allowed actions),
    ``action`` (the kind parsed), ``action_error``, ``format_ok`` (all turns so far well formed and
    on an allowed path), ``search_error`` (on a step whose search failed), ``action_truncated``
    (``True``, only on a step whose turn was longer than ``max_action_chars`` and was cut to that many
    characters before anything read it; the transcript and record keep the cut turn). With
    ``image_crops`` also ``image_size`` (``[width, height]`` of the question's image) and
    ``image_regions`` (per image search run: ``[left, top, right, bottom]`` pixels, or ``None`` for
    the whole image). Last step also:
    ``end_reason``, ``answer``, ``correct``, ``ground_truth``, ``reward_parts``.

    ## Arguments

    Every argument is a field of :class:`mmsearch_env.config.EnvConfig` (defaults, validation and help
    text live there); ``MMSearchEnv(config=EnvConfig(...))`` and ``gym.make("MMSearch-v0", **kwargs)``
    are the same. The search backend is closed by :meth:`close` only when the env built it from a name
    (:attr:`owns_search`).

    * ``dataset``: ``"corpus"`` (default: the embedded question set), ``"sample"`` (a tiny invented
      world, used as a test fixture), a ``.jsonl`` path, or a list of rows (dicts with
      ``question``, ``image`` as PIL image / path / bytes, ``answer``, optional ``candidate_answers``,
      ``id``, ``category``, ``search_need``).
    * ``split``: split of a built-in dataset (``"train"``, ``"validation"``, ``"test"``, ``None``).
    * ``search``: backend name (``"corpus"``, ``"sample"``, ``"local"``, ``"disabled"``, and the live and
      wrapper backends of :data:`mmsearch_env.search.SEARCH_BACKENDS`) or object; ``None`` (default)
      picks the built-in engine matching a built-in dataset (``"sample"`` for ``dataset="sample"``,
      else ``"corpus"``); ``search_options``: dict of keyword arguments for a named backend (``"local"`` takes
      ``{"pages": "pages.jsonl"}``: your own pages, searched in-process; ``"corpus"`` takes the
      search-quality knobs ``drop_prob``, ``distractors``, ``shuffle``, ``degrade``, seeded by the
      env's RNG — see :class:`mmsearch_env.search.corpus.CorpusSearch`).
    * ``protocol``: ``"tags"`` or ``"tool_calls"``; ``prompts``: a JSON/TOML file of templates;
      ``image_position``: ``"first"`` (the question's image before the instruction, as in the paper),
      ``"last"`` or ``"none"`` (not shown, for text-only policies; image search still searches it).
    * ``max_turns`` (3), ``max_image_searches`` (1), ``max_text_searches`` (2),
      ``search_penalty`` (0.1), ``format_weight`` (0.1).
    * ``max_action_chars`` (32,768): characters of a turn the env reads (a longer one is cut first).
    * Opt-in extensions (DeepMMSearch-R1's tools), off by default: ``image_crops`` (False): region
      image search; ``format_image_searches`` / ``format_text_searches`` (1 / 1): searches the format
      score allows; ``penalty_mode`` (``"once"`` or ``"per_call"``); ``question_scenes``
      (``"plain"`` or ``"screenshot"``: each question image drawn small inside a busy page among
      other pictures, its true region in ``example.metadata["true_box"]``) and ``scene_seed``.
    * ``thumbnail_size`` (256): long side of result thumbnails; ``search_timeout`` (seconds or
      None): a slower search becomes a tool error.
    * ``render_mode``: ``"ansi"`` returns the transcript as text.

    ## Example

    >>> import gymnasium as gym, mmsearch_env
    >>> env = gym.make("MMSearch-v0", split="test")
    >>> obs, info = env.reset(seed=0, options={"example_id": "corpus-00000"})
    >>> obs["question"]
    'Identify the nation that flies this flag.'
    >>> obs, reward, terminated, truncated, info = env.step(
    ...     "<reason>I do not know this flag.</reason><search><img></search>")
    >>> info["image_searches"], reward, terminated
    (1, 0.0, False)
    >>> results = obs["messages"][-1]["content"]  # text, then per result: a thumbnail and its title
    >>> [block["type"] for block in results][:3]
    ['text', 'image', 'text']
    >>> "title: Aruba" in "".join(b["text"] for b in results if b["type"] == "text")
    True
    >>> obs, reward, terminated, truncated, info = env.step(
    ...     "<reason>The top result is Aruba.</reason><answer>Aruba</answer>")
    >>> reward, terminated, info["end_reason"]
    (0.91, True, 'answer')

    ## Version History

    * v0: initial version (MMSearch-R1 protocol and reward). Later v0 releases add opt-in settings
      only (region image search, search budgets, per-call penalty, screenshot scenes); their
      defaults keep the paper's protocol and reward, byte for byte. Corpus search ranks pages whose
      scores tie at the candidate cut by page order, the same on every CPU (the cut used to depend
      on the CPU's sorting kernel, which changed which tied page a text search returned).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, config: EnvConfig | Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        self.config = EnvConfig.coerce(config, **kwargs)
        config = self.config
        self.examples: Sequence[Example] = load_dataset(config.dataset, config.split)
        if config.question_scenes == "screenshot":
            self.examples = screenshot_scenes(self.examples, seed=config.scene_seed)
        self._index_of: dict[str, int] | None = None  # built on the first reset by example_id
        self.protocol = get_protocol(config.protocol, crops=True if config.image_crops else None)
        self.prompts = load_prompts(self.protocol, config.prompts)
        search = config.search
        if search is None:  # the built-in engine that matches a built-in dataset
            search = "sample" if isinstance(config.dataset, str) and config.dataset == "sample" else "corpus"
        # A backend built here from a name is ours to close; an object passed in belongs to the caller
        # (rollout pools and the trainer share one backend between many envs).
        self._owns_search = isinstance(search, str)
        self.search = make_search(search, config.search_options)
        self.max_turns = int(config.max_turns)
        self.max_image_searches = int(config.max_image_searches)
        self.max_text_searches = int(config.max_text_searches)
        self.search_penalty = float(config.search_penalty)
        self.format_weight = float(config.format_weight)
        self.penalty_mode = config.penalty_mode
        #: which trajectories earn the format score (the paper's four shapes by default)
        self.grammar = FormatGrammar(int(config.format_image_searches), int(config.format_text_searches))
        self.image_crops = bool(config.image_crops)
        self.thumbnail_size = int(config.thumbnail_size)
        self.search_timeout = config.search_timeout
        self.render_mode = config.render_mode

        self.action_space = AssistantTurn(self.protocol)
        self.observation_space = spaces.Dict(
            {"messages": ChatMessages(), "question": UnicodeText(), "image": PILImage()}
        )
        self._episode: _Episode | None = None
        self._done = False

    # -- public API ------------------------------------------------------------------------------------
    @property
    def example(self) -> Example:
        """The current episode's question (raises before the first ``reset``)."""
        return self._require_episode().example

    @property
    def max_searches_per_episode(self) -> int:
        """The most searches one episode can run (no search in the last turn)."""
        return self.config.max_searches_per_episode

    @property
    def owns_search(self) -> bool:
        """True when :meth:`close` closes the search backend: the env built it from a name.

        A backend object passed as ``search=`` belongs to the caller, who closes it once when every env
        sharing it is done.
        """
        return self._owns_search

    @property
    def episode_over(self) -> bool:
        """True once the current episode has ended (an answer, a malformed turn or a limit)."""
        return self._done

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        example = self.examples[self._pick(options)]
        image = example.image.copy()
        template = self.prompts.instruction
        if self.config.image_position == "none" and self.prompts.instruction_no_image:
            template = self.prompts.instruction_no_image  # the prompt must not speak of an image it hides
        instruction = template.format(
            question=neutralize_control_tokens(example.question),  # dataset text is untrusted too
            max_turns=self.max_turns,
            max_image_searches=self.max_image_searches,
            max_text_searches=self.max_text_searches,
        )
        if self.image_crops and self.prompts.crop_instruction:
            crop_text = self.prompts.crop_instruction.format(width=image.width, height=image.height)
            # before the question when the instruction ends with it (the defaults do), else at the end
            head, sep, question = instruction.rpartition("\n\nQuestion:")
            instruction = f"{head}\n{crop_text}{sep}{question}" if sep else f"{instruction}\n{crop_text}"
        messages: list[dict[str, Any]] = []
        if self.prompts.system:
            messages.append({"role": "system", "content": [{"type": "text", "text": self.prompts.system}]})
        blocks = [{"type": "image", "image": image}, {"type": "text", "text": instruction}]
        if self.config.image_position == "last":
            blocks.reverse()
        elif self.config.image_position == "none":
            blocks = blocks[1:]
        messages.append({"role": "user", "content": blocks})
        self._episode = _Episode(example=example, image=image, messages=messages)
        self._done = False
        return self._observation(), self._info(None)

    def step(self, action: str) -> tuple[dict[str, Any], SupportsFloat, bool, bool, dict[str, Any]]:
        parsed, end_reason = self._advance(action)
        if end_reason is not None:
            return self._finish(end_reason)
        response = call_search(self.search, parsed.kind, self._request(parsed), timeout=self.search_timeout)
        return self._after_search(parsed, response)

    async def astep(self, action: str) -> tuple[dict[str, Any], SupportsFloat, bool, bool, dict[str, Any]]:
        """:meth:`step` whose search is awaited (async backends, concurrent rollouts on one loop)."""
        parsed, end_reason = self._advance(action)
        if end_reason is not None:
            return self._finish(end_reason)
        response = await acall_search(self.search, parsed.kind, self._request(parsed), timeout=self.search_timeout)
        return self._after_search(parsed, response)

    def render(self) -> str | None:
        if self.render_mode != "ansi" or self._episode is None:
            return None
        lines = []
        for message in self._episode.messages:
            lines.append(f"── {message['role']} ──")
            for block in message["content"]:
                if block["type"] == "image":
                    lines.append(f"[image {block['image'].width}x{block['image'].height}]")
                else:
                    lines.append(block["text"])
        ep = self._episode
        if ep.breakdown is not None:
            b = ep.breakdown
            lines.append(
                f"── end: {ep.end_reason} · answer={b.answer!r} · truth={ep.example.answer!r} · "
                f"reward={b.reward} (accuracy={b.accuracy}, format={b.format}, penalty={b.penalty}) ──"
            )
        return "\n".join(lines) + "\n"

    def episode_images(self) -> dict[str, Any]:
        """The current episode's pixels, which :meth:`episode_record` (JSON only) leaves out.

        ``{"question": PIL image, "thumbnails": [[PIL image | None per result] per search]}``, in the
        order of ``episode_record()["searches"]`` and their ``results``.
        """
        ep = self._require_episode()
        return {
            "question": ep.example.image,
            "thumbnails": [[r.thumbnail for r in response.results] for response in ep.responses],
        }

    def episode_record(self) -> EpisodeRecord:
        """The current episode as an :class:`~mmsearch_env.records.EpisodeRecord` (JSON-able; no pixels).

        Before the episode ends, ``reward`` and ``reward_parts`` score it as it stands (no answer yet:
        accuracy 0) and ``end_reason`` is ``None``.
        """
        ep = self._require_episode()
        breakdown = ep.breakdown or self.score()
        return EpisodeRecord(
            example_id=ep.example.id,
            question=ep.example.question,
            ground_truth=ep.example.answer,
            candidate_answers=list(ep.example.candidate_answers),
            category=ep.example.category,
            search_need=ep.example.search_need,
            turns=list(ep.turns),
            actions=[
                ActionRecord(kind=a.kind, content=a.content, well_formed=a.well_formed, error=a.error)
                for a in ep.actions
            ],
            searches=[
                SearchRecord(
                    tool=r.tool,
                    ok=r.ok,
                    error=r.error,
                    latency_s=r.latency_s,
                    cost_usd=r.cost_usd,
                    cached=r.cached,
                    results=[ResultRecord(title=x.title, url=x.url, summary=x.summary) for x in r.results],
                )
                for r in ep.responses
            ],
            end_reason=ep.end_reason,
            reward=breakdown.reward,
            reward_parts=breakdown.as_dict(),
        )

    def score(self) -> RewardBreakdown:
        """The reward of the current episode's turns so far, scored as the env scores a finished one.

        After the episode ended this is its terminal reward. Before, it scores the turns as they stand
        (no answer yet: accuracy 0, format 0): what a trainer needs for a completion that was cut off.
        """
        ep = self._require_episode()
        if ep.breakdown is not None:
            return ep.breakdown
        return score_actions(
            ep.actions,
            ep.example.answer,
            ep.example.candidate_answers,
            search_penalty=self.search_penalty,
            format_weight=self.format_weight,
            grammar=self.grammar,
            penalty_mode=self.penalty_mode,
        )

    def close(self) -> None:
        if self._owns_search:
            self.search.close()
        super().close()

    # -- the state machine -----------------------------------------------------------------------------
    def _pick(self, options: dict[str, Any] | None) -> int:
        options = options or {}
        unknown = set(options) - {"index", "example_id"}
        if unknown:
            raise ConfigError(f"unknown reset option(s) {sorted(unknown)}; use 'index' or 'example_id'")
        if "example_id" in options:
            key = options["example_id"]
            if self._index_of is None:
                # Lazily: rollout pools make many envs over one large dataset, and most never look an id up.
                ids = getattr(self.examples, "ids", None) or [example.id for example in self.examples]
                self._index_of = {example_id: i for i, example_id in enumerate(ids)}
            if key not in self._index_of:
                raise ConfigError(f"no example with id {key!r} in this dataset ({len(self.examples)} examples)")
            return self._index_of[key]
        if "index" in options:
            index = options["index"]
            if (
                isinstance(index, bool)
                or not isinstance(index, numbers.Integral)
                or not 0 <= index < len(self.examples)
            ):
                raise ConfigError(f"reset option 'index' must be an int in [0, {len(self.examples)}), got {index!r}")
            return int(index)
        return int(self.np_random.integers(len(self.examples)))

    def _require_episode(self) -> _Episode:
        if self._episode is None:
            raise ResetNeededError("call env.reset() before using the episode")
        return self._episode

    def _advance(self, action: str) -> tuple[Action, str | None]:
        """Record the turn and decide: an end reason, or ``None`` to run the search it asks for."""
        if not isinstance(action, str):
            raise InvalidActionError(
                f"MMSearch-v0 actions are assistant turns (str), got {type(action).__name__}; "
                "for dict actions wrap the env: mmsearch_env.wrappers.StructuredActions(env)"
            )
        ep = self._require_episode()
        if self._done:
            raise ResetNeededError(f"the episode has ended ({ep.end_reason}); call env.reset() to start another")
        # Cut first: cleaning and parsing are linear, but a turn's size is the agent's to choose
        ep.action_truncated = len(action) > self.config.max_action_chars
        if ep.action_truncated:
            action = action[: self.config.max_action_chars]
        text = clean_text(action)
        parsed = self.protocol.parse(text)
        ep.pending_region = None
        if parsed.kind == "image_search" and parsed.box is not None:
            try:
                ep.pending_region = region_pixels(parsed.box, ep.example.image.size)
            except BoxError as exc:  # readable, but not a region of this image: malformed like any bad box
                parsed = Action("invalid", error=f"the image search box is malformed: {exc}; write {BOX_SYNTAX}")
        ep.turns.append(text)
        ep.actions.append(parsed)
        ep.messages.append({"role": "assistant", "content": [{"type": "text", "text": text}]})
        if parsed.kind == "invalid":
            return parsed, "malformed"
        if parsed.kind == "answer":
            return parsed, "answer"
        if len(ep.turns) >= self.max_turns:
            return parsed, "search_on_last_turn"
        if parsed.kind == "image_search" and ep.image_searches >= self.max_image_searches:
            return parsed, "image_search_limit"
        if parsed.kind == "text_search" and ep.text_searches >= self.max_text_searches:
            return parsed, "text_search_limit"
        return parsed, None

    def _request(self, parsed: Action) -> ImageSearchRequest | TextSearchRequest:
        ep = self._require_episode()
        # Drawn from the env's seeded RNG so that randomising backends (search-quality knobs) repeat
        # exactly under the same reset seed.
        seed = int(self.np_random.integers(2**63))
        if parsed.kind == "image_search" and ep.pending_region is not None:
            # Only the pixels describe a region: the image's URL and the question's id name the whole
            # image, so a backend that searches by those reports that it cannot search a region.
            region = crop_region(ep.example.image, ep.pending_region)
            return ImageSearchRequest(image=region, image_url=None, example_id=None, rng_seed=seed)
        if parsed.kind == "image_search":
            return ImageSearchRequest(
                image=ep.example.image, image_url=ep.example.image_url, example_id=ep.example.id, rng_seed=seed
            )
        return TextSearchRequest(
            query=parsed.content or "", question=ep.example.question, example_id=ep.example.id, rng_seed=seed
        )

    def _after_search(
        self, parsed: Action, response: SearchResponse
    ) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        ep = self._require_episode()
        if parsed.kind == "image_search":
            ep.image_searches += 1
            ep.regions.append(ep.pending_region)
        else:
            ep.text_searches += 1
        region = ep.pending_region if parsed.kind == "image_search" else None
        if not response.ok:
            ep.search_failures += 1
        ep.responses.append(response)
        ep.messages.append(
            render_tool_result(
                self.prompts,
                self.protocol,
                response,
                question=ep.example.question,
                query=parsed.content,
                can_image_search=self._can_search("image_search"),
                can_text_search=self._can_search("text_search"),
                thumbnail_size=self.thumbnail_size,
                region=region,
                region_image=crop_region(ep.example.image, region) if region is not None else None,
            )
        )
        info = self._info(parsed)
        if not response.ok:
            info["search_error"] = response.error
        return self._observation(), 0.0, False, False, info

    def _can_search(self, kind: str) -> bool:
        ep = self._require_episode()
        if self._done or len(ep.turns) + 1 >= self.max_turns:  # the next turn is the last: answer only
            return False
        if kind == "image_search":
            return ep.image_searches < self.max_image_searches
        return ep.text_searches < self.max_text_searches

    def _finish(self, end_reason: str) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        ep = self._require_episode()
        ep.end_reason = end_reason
        ep.breakdown = score_actions(
            ep.actions,
            ep.example.answer,
            ep.example.candidate_answers,
            search_penalty=self.search_penalty,
            format_weight=self.format_weight,
            grammar=self.grammar,
            penalty_mode=self.penalty_mode,
        )
        self._done = True
        info = self._info(ep.actions[-1])
        info.update(
            end_reason=end_reason,
            answer=ep.breakdown.answer,
            correct=bool(ep.breakdown.accuracy),
            ground_truth=ep.example.answer,
            reward_parts=ep.breakdown.as_dict(),
            format_ok=bool(ep.breakdown.format),
        )
        terminated = end_reason in TERMINATION_REASONS
        return self._observation(), ep.breakdown.reward, terminated, not terminated, info

    def _observation(self) -> dict[str, Any]:
        ep = self._require_episode()
        # Fresh containers every call: users keep observations, and must not alias the env's state.
        messages = [{"role": m["role"], "content": [dict(b) for b in m["content"]]} for m in ep.messages]
        return {"messages": messages, "question": ep.example.question, "image": ep.image}

    def _info(self, parsed: Action | None) -> dict[str, Any]:
        ep = self._require_episode()
        info = {
            "example_id": ep.example.id,
            "turn": len(ep.turns),
            "image_searches": ep.image_searches,
            "text_searches": ep.text_searches,
            "search_failures": ep.search_failures,
            "search_cost_usd": float(sum(r.cost_usd for r in ep.responses)),
            "can_image_search": self._can_search("image_search"),
            "can_text_search": self._can_search("text_search"),
            "action": parsed.kind if parsed else None,
            "action_error": parsed.error if parsed else None,
            "format_ok": self.grammar.accepts_prefix(ep.actions),
        }
        if self.image_crops:  # opt-in keys: the default info stays the paper env's
            info["image_size"] = list(ep.example.image.size)
            info["image_regions"] = [list(r) if r is not None else None for r in ep.regions]
        if parsed is not None and ep.action_truncated:
            info["action_truncated"] = True
        return info
