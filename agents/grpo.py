"""GRPO training of an on-demand search policy with TRL's ``GRPOTrainer`` (+ LoRA via peft).

How the pieces fit (TRL 1.16's ``environment_factory`` hook):

* Each rollout gets one :class:`MMSearchToolEnv`, whose public methods are the tools the model
  calls. They do not search themselves: they step the *same* :class:`~mmsearch_env.env.MMSearchEnv`
  state machine that evaluation uses (limits, search backend, result rendering), and return the
  env's tool-result message (text + thumbnail images) to TRL.
* TRL appends the tool result as a ``tool`` message, masks its tokens from the loss
  (``tool_mask`` = 0, thumbnails' image tokens included) and passes the thumbnails' pixels to the
  policy's forward pass.
* The reward is the env's reward: :class:`EnvReward` splits the completion's token ids into the
  model's turns and replays them through the env, whose search backend now serves the responses
  recorded during the rollout (nothing is searched twice). Its parts (accuracy, format, searches
  by type, tool failures) are logged as separate metrics.

Why ``environment_factory`` rather than ``rollout_func``: images produced inside a ``rollout_func``
never reach the loss's forward pass in TRL 1.16, and ``tools=`` alone has no per-rollout state for
the env's limits. Both protocols run through the same loop: ``"tool_calls"`` uses TRL's Qwen3-VL
chat template and response parser; ``"tags"`` uses our template (:data:`TAGS_CHAT_TEMPLATE`:
no tool-schema block, tool results as plain user turns, as in the paper) and a response parser
that reads ``<search><img></search>`` as the tool ``search`` and ``<text_search>Q</text_search>``
as ``text_search(query=Q)``.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from mmsearch_env.config import EnvConfig
from mmsearch_env.env import MMSearchEnv
from mmsearch_env.errors import ConfigError
from mmsearch_env.protocol import get_protocol
from mmsearch_env.reward import RewardBreakdown
from mmsearch_env.search.base import SearchBackendBase, SearchResponse

__all__ = [
    "TAGS_RESPONSE_TEMPLATE",
    "EnvReward",
    "MMSearchGRPOConfig",
    "MMSearchToolEnv",
    "MetricsLogger",
    "TagsToolEnv",
    "ToolCallsToolEnv",
    "build_trainer",
    "cpu_preset",
    "gpu_preset",
    "make_train_dataset",
    "plot_metrics",
    "prepare_processing_class",
    "preset_settings",
    "split_turns",
    "supervised_fit",
    "train",
    "warm_start",
]

logger = logging.getLogger(__name__)

_TRAIN_EXTRA = "pip install torch==2.13.0 && pip install 'mmsearch-env[train]'"

#: Response parser (transformers ``response_template``) for the tag protocol: the paper's action tags
#: become tool calls, everything else stays in ``content``.
TAGS_RESPONSE_TEMPLATE: dict[str, Any] = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "tool_calls": {
            "open_pattern": r"<(?P<name>search|text_search)>",
            "close_pattern": r"</(?:search|text_search)>\s*",
            "repeats": True,
            "content": "text",
            "transform": {"type": "function", "function": {"name": "{name}", "arguments": {"query": "{content}"}}},
        },
        "content": {"close_pattern": r"<\|im_end\|>\s*", "content": "text"},
    },
}


def tags_chat_template() -> str:
    """Our Qwen-format chat template for the tag protocol (see the module docstring)."""
    return resources.files("agents").joinpath("templates/tags_chat.jinja").read_text("utf-8")


def _require_trl() -> None:
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
        import trl  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(f"GRPO training needs the training extra: {_TRAIN_EXTRA}") from exc


# ---------------------------------------------------------------------------------------------------
# Configuration

try:
    from trl import GRPOConfig as _GRPOConfigBase
except ImportError:  # pragma: no cover - keeps `import agents.grpo` working without the extra

    @dataclass
    class _GRPOConfigBase:  # type: ignore[no-redef]
        def __post_init__(self) -> None:
            _require_trl()


@dataclass
class MMSearchGRPOConfig(_GRPOConfigBase, EnvConfig):
    """TRL's ``GRPOConfig`` plus the environment, model and warm-start fields of MMSearch-R1 training.

    Paper defaults (arXiv 2506.20670): group size 8, lr 2e-6, KL β 0.001, clip ε 0.2, temperature
    1.0, 3 turns / 1 image search / 2 text searches, search penalty 0.1, format weight 0.1.
    :func:`cpu_preset` and :func:`gpu_preset` fill in the rest for each machine.
    """

    # Parameters whose defaults are the paper's, overriding TRL's
    learning_rate: float = field(default=2e-6, metadata={"help": "AdamW learning rate (paper: 2e-6)."})
    beta: float = field(default=0.001, metadata={"help": "KL coefficient (paper: 0.001)."})
    epsilon: float = field(default=0.2, metadata={"help": "PPO-style clip range (paper: 0.2)."})
    temperature: float = field(default=1.0, metadata={"help": "Rollout sampling temperature (paper: 1.0)."})
    num_generations: int | None = field(default=8, metadata={"help": "Rollouts per question (paper: 8)."})

    max_turn_tokens: int | None = field(
        default=None,
        metadata={
            "help": "Cap on the tokens of one assistant turn (paper: 2048); max_completion_length caps the whole "
            "multi-turn completion (paper: 8192). None: the whole budget per turn."
        },
    )

    # Parameters that control the training questions (the environment's settings are EnvConfig's fields)
    max_train_questions: int | None = field(
        default=None,
        metadata={"help": "Train (and warm-start) on N questions of the split, drawn with `seed` (None: all)."},
    )

    # Parameters that control the model
    model_path: str | None = field(
        default=None,
        metadata={"help": "Local Hugging Face VLM folder (Qwen2.5-VL / Qwen3-VL class); None builds the tiny VLM."},
    )
    use_lora: bool = field(default=True, metadata={"help": "Train a LoRA adapter (peft); False: full fine-tuning."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        metadata={"help": "Module name suffixes LoRA wraps (Qwen-VL: these names exist in the language model only)."},
    )

    # Parameters that control the supervised warm-start
    warm_start_epochs: int = field(
        default=0,
        metadata={
            "help": "Epochs of supervised warm-start on scripted, well-formed trajectories before GRPO (0: none). "
            "A random model needs it to emit actions at all."
        },
    )
    warm_start_lr: float = field(default=3e-3, metadata={"help": "Learning rate of the warm-start."})
    warm_start_batch_size: int = field(default=8, metadata={"help": "Episodes per warm-start step."})

    # Parameters that control the run's own logs
    metrics_plot: bool = field(default=True, metadata={"help": "Write metrics.png from metrics.jsonl at the end."})

    def __post_init__(self) -> None:
        EnvConfig.validate(self)  # TRL's __post_init__ chain does not reach EnvConfig's
        if self.max_tool_calling_iterations is None:
            # One tool call per turn and the last turn must answer: the env's episode fits in max_turns - 1
            # tool rounds, so TRL stops generating where the env stops.
            self.max_tool_calling_iterations = self.max_turns - 1
        if self.max_turn_tokens is not None:
            if self.max_turn_tokens < 1:
                raise ConfigError(f"max_turn_tokens must be >= 1 or None, got {self.max_turn_tokens}")
            # TRL generates every turn with generation_kwargs: this is where a per-turn cap goes.
            self.generation_kwargs = {**(self.generation_kwargs or {}), "max_new_tokens": self.max_turn_tokens}
        if self.use_vllm and self.model_path is None:
            raise ConfigError(
                "use_vllm (the gpu preset) needs a real model: pass --model_path /path/to/Qwen2.5-VL-7B-Instruct "
                "(a local Qwen2.5-VL / Qwen3-VL folder); the tiny built-in VLM is for CPU runs only"
            )
        if self.max_train_questions is not None and self.max_train_questions < 1:
            raise ConfigError(f"max_train_questions must be >= 1 or None, got {self.max_train_questions}")
        if self.warm_start_epochs < 0 or self.warm_start_batch_size < 1:
            raise ConfigError(
                f"warm_start_epochs must be >= 0 and warm_start_batch_size >= 1, "
                f"got {self.warm_start_epochs} and {self.warm_start_batch_size}"
            )
        super().__post_init__()

    def env_config(self) -> EnvConfig:
        """The ``MMSearch-v0`` settings this config trains on (every :class:`EnvConfig` field)."""
        return EnvConfig(**{f.name: getattr(self, f.name) for f in fields(EnvConfig)})

    def env_kwargs(self) -> dict[str, Any]:
        """:meth:`env_config` as ``gym.make`` keyword arguments."""
        return self.env_config().to_dict()


def preset_settings(name: str, **overrides: Any) -> dict[str, Any]:
    """The field values of a preset (``"cpu"`` or ``"gpu"``), updated with ``overrides``.

    ``"cpu"``: the tiny VLM, finishing in a few minutes on a laptop CPU. Deviations from the paper,
    all for speed: a warm-start (a random model cannot act), a high learning rate (hundreds of steps
    are not affordable), short turns and small groups.

    ``"gpu"``: one GPU (or ``accelerate launch`` over many) with a real Qwen-VL model
    (``model_path``) and vLLM generation; ``vllm_mode="colocate"`` shares the GPU with training,
    ``"server"`` talks to ``trl vllm-serve``. Paper hyper-parameters; batches sized for one 80 GB card.
    """
    if name == "cpu":
        settings: dict[str, Any] = {
            "output_dir": "runs/grpo-cpu",
            "model_path": None,
            # The 64-question invented world: a 214k-parameter model can fit its warm-start in minutes on
            # a CPU, which the 3,684 corpus training questions would not allow. Real runs use the corpus.
            "dataset": "sample",
            "warm_start_epochs": 20,
            "warm_start_lr": 5e-3,
            "learning_rate": 1e-3,
            "per_device_train_batch_size": 16,
            "num_generations": 8,
            "max_completion_length": 768,
            "max_turn_tokens": 64,
            "max_steps": 30,
            "logging_steps": 1,
            "save_steps": 10,
            "save_total_limit": 2,
            "use_cpu": True,
            "bf16": False,
            "gradient_checkpointing": False,
            "report_to": _default_report_to(),
            "seed": 0,
            "dataloader_num_workers": 0,
        }
    elif name == "gpu":
        settings = {
            "output_dir": "runs/grpo-gpu",
            "use_vllm": True,
            "vllm_mode": "colocate",
            "vllm_gpu_memory_utilization": 0.35,
            "bf16": True,
            "gradient_checkpointing": True,
            "per_device_train_batch_size": 8,
            "gradient_accumulation_steps": 8,
            "max_completion_length": 8192,
            "max_turn_tokens": 2048,
            "num_train_epochs": 1,
            "logging_steps": 1,
            "save_steps": 25,
            "report_to": _default_report_to(),
            "lora_r": 64,
            "lora_alpha": 128,
        }
    else:
        raise ConfigError(f"unknown preset {name!r}; expected 'cpu' or 'gpu'")
    settings.update(overrides)
    return settings


def cpu_preset(output_dir: str = "runs/grpo-cpu", **overrides: Any) -> MMSearchGRPOConfig:
    """The CPU preset (see :func:`preset_settings`) as a config."""
    return MMSearchGRPOConfig(**preset_settings("cpu", output_dir=output_dir, **overrides))


def gpu_preset(model_path: str, output_dir: str = "runs/grpo-gpu", **overrides: Any) -> MMSearchGRPOConfig:
    """The GPU preset (see :func:`preset_settings`) for a local Qwen2.5-VL / Qwen3-VL folder."""
    return MMSearchGRPOConfig(**preset_settings("gpu", model_path=model_path, output_dir=output_dir, **overrides))


def _default_report_to() -> list[str]:
    try:
        import tensorboard  # noqa: F401

        return ["tensorboard"]
    except ImportError:
        return []


# ---------------------------------------------------------------------------------------------------
# The environment adapter (one per rollout)


class _RecordingSearch(SearchBackendBase):
    """Wraps the real backend: records each response during the rollout, serves them again on replay."""

    name = "recording"

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.recorded: list[SearchResponse] = []
        self.replaying = False
        self._cursor = 0

    def start_replay(self) -> None:
        self.replaying, self._cursor = True, 0

    def start_recording(self) -> None:
        self.replaying, self._cursor = False, 0
        self.recorded = []

    def _next(self, tool: str, request: Any) -> SearchResponse:
        from mmsearch_env.search import call_search

        if not self.replaying:
            response = call_search(self.backend, tool, request)
            self.recorded.append(response)
            return response
        if self._cursor < len(self.recorded) and self.recorded[self._cursor].tool == tool:
            response = self.recorded[self._cursor]
            self._cursor += 1
            return response
        # The replayed turns asked for a search the rollout never ran (the trainer's parser and the env's
        # disagreed on a turn): a failed search, as a value, like any other backend failure.
        return SearchResponse(tool=tool, results=[], error="this search was not run during the rollout")

    def image_search(self, request: Any) -> SearchResponse:
        return self._next("image_search", request)

    def text_search(self, request: Any) -> SearchResponse:
        return self._next("text_search", request)

    def close(self) -> None:
        closer = getattr(self.backend, "close", None)
        if callable(closer):
            closer()


class MMSearchToolEnv:
    """One rollout's MMSearch-v0 episode, exposed to TRL's ``environment_factory``.

    ``reset(**row)`` starts the episode of the row's ``example_id``; the public search methods of the
    protocol subclasses are the model's tools (every public method is a tool, so the rest is private);
    :meth:`_score` (called by :class:`EnvReward`) replays the model's turns through the
    env to get its reward. Use :func:`env_factory` to build the right subclass.
    """

    def __init__(self, env_kwargs: Mapping[str, Any]) -> None:
        kwargs = dict(env_kwargs)
        self.env = MMSearchEnv(**kwargs)
        self.recorder = _RecordingSearch(self.env.search)
        self.env.search = self.recorder
        self.example_id: str | None = None
        self.done = False
        self.last_info: dict[str, Any] = {}
        self.breakdown: RewardBreakdown | None = None

    def reset(self, example_id: str, **row: Any) -> None:
        """Start the episode of ``example_id`` (the dataset's other columns are not needed)."""
        self.example_id = example_id
        self.recorder.start_recording()
        self.env.reset(options={"example_id": example_id})
        self.done = False
        self.last_info = {}
        self.breakdown = None

    def _search(self, kind: str, query: str | None) -> list[dict[str, Any]] | str:
        if self.done:
            # TRL has no per-rollout stop: after the env ended the episode (a search past a limit or on the
            # last turn), further calls run nothing. The reward is the env's, fixed when it ended.
            return "No search was run: the episode has ended. Give your final answer."
        turn = self.env.protocol.format_action(kind, query, reason="Searching.")
        observation, _, terminated, truncated, info = self.env.step(turn)
        self.last_info = info
        if terminated or truncated:
            self.done = True
            return f"No search was run ({info['end_reason'].replace('_', ' ')}). Give your final answer."
        return observation["messages"][-1]["content"]

    def _score(self, turns: Sequence[str]) -> tuple[RewardBreakdown, dict[str, Any]]:
        """The env's reward for the model's actual ``turns``: replay them with the recorded searches.

        Returns the breakdown and the terminal ``info`` (``end_reason`` ``"unfinished"`` if the turns
        ran out before the episode ended, e.g. a completion cut by the length limit).
        """
        from mmsearch_env.reward import score_actions

        if self.example_id is None:
            raise ConfigError("scoring before reset(): TRL calls reset(**row) at the start of each rollout")
        self.recorder.start_replay()
        self.env.reset(options={"example_id": self.example_id})
        info: dict[str, Any] = {}
        for turn in turns:
            _, _, terminated, truncated, info = self.env.step(turn)
            if terminated or truncated:
                breakdown = RewardBreakdown(**info["reward_parts"])
                self.breakdown = breakdown
                return breakdown, info
        episode = self.env._require_episode()
        breakdown = score_actions(
            episode.actions,
            episode.example.answer,
            episode.example.candidate_answers,
            search_penalty=self.env.search_penalty,
            format_weight=self.env.format_weight,
        )
        info = {**info, "end_reason": "unfinished", "reward_parts": breakdown.as_dict()}
        self.breakdown = breakdown
        return breakdown, info


class ToolCallsToolEnv(MMSearchToolEnv):
    """Tools for the ``"tool_calls"`` protocol (JSON calls named ``image_search`` / ``text_search``)."""

    def image_search(self) -> list[dict[str, Any]] | str:
        """Reverse image search of the question's image.

        Returns:
            Up to 5 web pages showing a similar image, each with a thumbnail and a title.
        """
        return self._search("image_search", None)

    def text_search(self, query: str) -> list[dict[str, Any]] | str:
        """Web search for a text query.

        Args:
            query: What to search for; short and specific.

        Returns:
            Up to 5 web pages, each with its link and a short summary.
        """
        return self._search("text_search", query)


class TagsToolEnv(MMSearchToolEnv):
    """Tools for the paper's tag protocol: ``<search><img></search>`` is the tool ``search``."""

    def search(self, query: str = "") -> list[dict[str, Any]] | str:
        """Reverse image search of the question's image (the tag protocol's <search><img></search>).

        Args:
            query: Ignored; the image searched is always the question's.

        Returns:
            Up to 5 web pages showing a similar image, each with a thumbnail and a title.
        """
        return self._search("image_search", None)

    def text_search(self, query: str) -> list[dict[str, Any]] | str:
        """Web search for a text query (the tag protocol's <text_search>QUERY</text_search>).

        Args:
            query: What to search for; short and specific.

        Returns:
            Up to 5 web pages, each with its link and a short summary.
        """
        return self._search("text_search", query)


class _EnvFactory:
    """Picklable ``environment_factory``: a new adapter of the protocol's class per call."""

    def __init__(self, env_kwargs: Mapping[str, Any]) -> None:
        self.env_kwargs = dict(env_kwargs)
        self.cls = (
            TagsToolEnv if get_protocol(self.env_kwargs.get("protocol", "tags")).name == "tags" else ToolCallsToolEnv
        )

    def __call__(self) -> MMSearchToolEnv:
        return self.cls(self.env_kwargs)


def env_factory(env_kwargs: Mapping[str, Any]) -> _EnvFactory:
    """The ``environment_factory`` for these ``MMSearch-v0`` keyword arguments."""
    return _EnvFactory(env_kwargs)


# ---------------------------------------------------------------------------------------------------
# The reward


def split_turns(completion_ids: Sequence[int], header_ids: Sequence[int], end_ids: Sequence[int]) -> list[list[int]]:
    """The model's turns inside a multi-turn completion, as token-id lists.

    A completion is ``turn₁ <end> tool-result <header> turn₂ <end> …`` where ``<header>`` is the
    chat template's assistant header (e.g. ``<|im_start|>assistant\\n``) and ``<end>`` an end-of-turn
    token. Tool-result text cannot contain the header: the env escapes chat-template tokens.

    >>> split_turns([5, 6, 2, 9, 9, 1, 7, 8, 5, 2], header_ids=[1, 7], end_ids=[2])
    [[5, 6], [8, 5]]
    """
    turns: list[list[int]] = []
    ends = set(end_ids)
    n, h = len(completion_ids), len(header_ids)
    i = 0
    start: int | None = 0
    while i < n:
        if start is not None:
            if completion_ids[i] in ends:
                turns.append(list(completion_ids[start:i]))
                start = None
            i += 1
        elif h and list(completion_ids[i : i + h]) == list(header_ids):
            start = i + h
            i += h
        else:
            i += 1
    if start is not None:
        turns.append(list(completion_ids[start:]))  # cut by the length limit: an unfinished turn
    return turns


class EnvReward:
    """The env's reward for each rollout (TRL reward function), with its parts logged as metrics.

    Needs ``environments=`` (TRL passes the rollouts' :class:`MMSearchToolEnv`) and
    ``completion_ids=``. Logged per step: ``mmsearch/accuracy``, ``mmsearch/format``,
    ``mmsearch/search_ratio`` (episodes that searched), ``mmsearch/image_search_ratio``,
    ``mmsearch/text_search_ratio``, ``mmsearch/searches``, ``mmsearch/tool_failures``, ``mmsearch/turns``.
    """

    __name__ = "mmsearch_reward"

    def __init__(self, tokenizer: Any) -> None:
        self.header_ids = _assistant_header_ids(tokenizer)
        self.end_ids = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in self.end_ids:
            self.end_ids.append(tokenizer.eos_token_id)
        self.tokenizer = tokenizer
        self.last: list[tuple[RewardBreakdown, dict[str, Any]]] = []

    def turns(self, completion_ids: Sequence[int]) -> list[str]:
        """The model's turns of one completion, as text."""
        pieces = split_turns(completion_ids, self.header_ids, self.end_ids)
        return [self.tokenizer.decode(p, skip_special_tokens=True) for p in pieces]

    def __call__(
        self,
        prompts: Any = None,
        completions: Any = None,
        completion_ids: Sequence[Sequence[int]] | None = None,
        environments: Sequence[MMSearchToolEnv] | None = None,
        log_metric: Any = None,
        **kwargs: Any,
    ) -> list[float]:
        if environments is None or completion_ids is None:
            raise ConfigError("EnvReward needs GRPOTrainer(environment_factory=...): it scores through the env")
        self.last = [env._score(self.turns(ids)) for ids, env in zip(completion_ids, environments, strict=True)]
        if log_metric is not None and self.last:
            n = len(self.last)
            parts = [b for b, _ in self.last]
            infos = [i for _, i in self.last]
            log_metric("mmsearch/accuracy", sum(b.accuracy for b in parts) / n)
            log_metric("mmsearch/format", sum(b.format for b in parts) / n)
            log_metric("mmsearch/search_ratio", sum(b.num_searches > 0 for b in parts) / n)
            log_metric("mmsearch/image_search_ratio", sum(b.image_searches > 0 for b in parts) / n)
            log_metric("mmsearch/text_search_ratio", sum(b.text_searches > 0 for b in parts) / n)
            log_metric("mmsearch/searches", sum(b.num_searches for b in parts) / n)
            log_metric("mmsearch/tool_failures", sum(i.get("search_failures", 0) for i in infos) / n)
            log_metric("mmsearch/turns", sum(i.get("turn", 0) for i in infos) / n)
        return [b.reward for b, _ in self.last]


def _assistant_header_ids(tokenizer: Any) -> list[int]:
    """Token ids the chat template puts before each assistant turn (from the tokenizer, not hard-coded)."""
    probe = [{"role": "user", "content": "x"}]
    with_header = tokenizer.apply_chat_template(probe, add_generation_prompt=True, tokenize=False)
    without = tokenizer.apply_chat_template(probe, add_generation_prompt=False, tokenize=False)
    if not with_header.startswith(without):
        raise ConfigError("the chat template is not prefix-preserving; MMSearch GRPO needs a Qwen-style template")
    return tokenizer.encode(with_header[len(without) :], add_special_tokens=False)


# ---------------------------------------------------------------------------------------------------
# Data, processor, warm-start


def _train_examples(examples: Any, limit: int | None, seed: int) -> Any:
    """The questions training uses: all of them, or ``limit`` drawn evenly at random (seeded)."""
    if limit is None or limit >= len(examples):
        return examples
    import numpy as np

    chosen = np.random.default_rng(seed).choice(len(examples), size=limit, replace=False)
    return [examples[int(i)] for i in sorted(chosen)]


def make_train_dataset(env_kwargs: Mapping[str, Any], *, limit: int | None = None, seed: int = 0) -> Any:
    """A ``datasets.Dataset`` with the env's first observation per question: ``prompt``, ``images``,
    ``example_id``, ``answer`` (and ``candidate_answers``, ``category``, ``search_need``).

    The prompt is exactly what ``env.reset`` shows (instruction wording, limits), with the image as a
    placeholder block filled from ``images`` by TRL. One implementation serves the trainer and users
    exporting their data: :func:`mmsearch_env.data.export.to_grpo_dataset`. ``limit``: train on that
    many questions of the split, drawn with ``seed`` (the warm-start uses the same ones).
    """
    from mmsearch_env.data.export import to_grpo_dataset

    if limit is None:
        return to_grpo_dataset(dict(env_kwargs))
    env = MMSearchEnv(**{**env_kwargs, "search": "disabled"})
    rest = {k: v for k, v in env_kwargs.items() if k not in ("dataset", "split", "search")}
    return to_grpo_dataset(list(_train_examples(env.examples, limit, seed)), env_kwargs=rest)


def prepare_processing_class(processor: Any, protocol: str) -> Any:
    """Set the protocol's chat template and response parser on a Qwen-VL processor (in place).

    ``"tool_calls"``: TRL's ``qwen3_vl`` template (renders tool schemas, tool calls, and images inside
    tool messages — the template side of TRL issue #5663) and TRL's Qwen parser. ``"tags"``: ours.
    """
    from agents.tiny_vlm import chat_template_path

    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.padding_side = "left"
    if get_protocol(protocol).name == "tags":
        template = tags_chat_template()
        response_template: dict[str, Any] = copy.deepcopy(TAGS_RESPONSE_TEMPLATE)
    else:
        from trl.chat_template_utils import qwen3_template

        template = chat_template_path().read_text("utf-8")
        response_template = copy.deepcopy(qwen3_template)
    processor.chat_template = template
    tokenizer.chat_template = template
    tokenizer.response_template = response_template
    return processor


def _assistant_labels(input_ids: Any, header_ids: list[int], end_id: int) -> Any:
    """Labels that train on assistant turns only (header excluded, end-of-turn token included)."""
    labels = input_ids.clone().fill_(-100)
    ids = input_ids.tolist()
    h = len(header_ids)
    i = 0
    while i < len(ids):
        if ids[i : i + h] == header_ids:
            j = i + h
            while j < len(ids) and ids[j] != end_id:
                j += 1
            labels[i + h : j + 1] = input_ids[i + h : j + 1]
            i = j + 1
        else:
            i += 1
    return labels


def warm_start(model: Any, processor: Any, config: MMSearchGRPOConfig, *, progress: bool = True) -> dict[str, float]:
    """Supervised warm-start: teach a random model the protocol on scripted, well-formed episodes.

    Half the episodes follow the oracle's search plan (:class:`agents.scripted.OraclePolicy`), half
    answer at once without searching, so the model learns the *format* of every action but not when
    to search: that is left to GRPO. Loss on assistant tokens only. Returns the first and last loss.
    """
    from agents.scripted import OraclePolicy

    env = MMSearchEnv(**config.env_kwargs())
    episodes: list[list[dict[str, Any]]] = []
    for use_search in (True, False):
        policy = OraclePolicy(env.examples, use_search=use_search, protocol=config.protocol)
        for example in _train_examples(env.examples, config.max_train_questions, config.seed):
            observation, info = env.reset(options={"example_id": example.id})
            while True:
                observation, _, terminated, truncated, info = env.step(policy.act(observation, info))
                if terminated or truncated:
                    break
            episodes.append(observation["messages"])
    return supervised_fit(
        model,
        processor,
        episodes,
        epochs=config.warm_start_epochs,
        lr=config.warm_start_lr,
        batch_size=config.warm_start_batch_size,
        seed=config.seed,
        tools=env.protocol.tool_schemas() or None,
        progress=progress,
    )


def supervised_fit(
    model: Any,
    processor: Any,
    episodes: Sequence[Sequence[Mapping[str, Any]]],
    *,
    epochs: int,
    lr: float,
    batch_size: int = 8,
    seed: int = 0,
    tools: list[dict[str, Any]] | None = None,
    progress: bool = True,
    desc: str = "warm-start",
    group_by_turns: bool = False,
    labeler: Callable[[Any], Any] | None = None,
    on_step: Callable[[int], bool] | None = None,
) -> dict[str, float]:
    """Fit ``model`` to whole episodes (chat message lists) with AdamW, loss on assistant tokens only.

    The episodes are rendered by the processor's chat template exactly as training and inference see
    them (images included). Shuffled each epoch with ``seed``; ``group_by_turns`` batches episodes with the
    same number of messages together (less padding; the batch order stays shuffled). ``labeler`` maps the
    assistant-token labels of one row (a tensor, -100 elsewhere) to the labels to train on, e.g. to
    focus the loss on a few tokens. ``on_step``: called after each optimizer step with the number of
    steps done; returning True stops training there (e.g. once a held-out check passes; the model is
    put back in train mode after the call). Returns the first and last batch loss and the steps done.
    """
    import torch
    from tqdm.auto import tqdm

    tokenizer = getattr(processor, "tokenizer", processor)
    header_ids = _assistant_header_ids(tokenizer)
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    size = batch_size
    total = epochs * math.ceil(len(episodes) / size)
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False)
    stopped = False
    for _ in range(epochs):
        order = torch.randperm(len(episodes), generator=generator).tolist()
        if group_by_turns:
            # Episodes of one batch have the same number of messages (so about the same length): less padding.
            order.sort(key=lambda i: len(episodes[i]))  # stable: shuffled within each length
        batches = [order[start : start + size] for start in range(0, len(order), size)]
        if group_by_turns:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        for chosen in batches:
            batch = processor.apply_chat_template(
                [episodes[i] for i in chosen],
                tools=tools,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
                processor_kwargs={"padding": True},
            )
            labels = [_assistant_labels(row, header_ids, end_id) for row in batch["input_ids"]]
            batch["labels"] = torch.stack([labeler(row) for row in labels] if labeler else labels)
            batch = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in batch.items()}
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            if on_step is not None:
                stopped = on_step(len(losses))
                model.train()
                if stopped:
                    break
        if stopped:
            break
    bar.close()
    model.eval()
    return {
        "first_loss": losses[0] if losses else math.nan,
        "last_loss": losses[-1] if losses else math.nan,
        "steps": len(losses),
    }


# ---------------------------------------------------------------------------------------------------
# Logging


_CSV_KEYS = (
    "step",
    "reward",
    "mmsearch/accuracy",
    "mmsearch/format",
    "mmsearch/search_ratio",
    "mmsearch/image_search_ratio",
    "mmsearch/text_search_ratio",
    "mmsearch/searches",
    "mmsearch/tool_failures",
    "completions/mean_length",
    "tools/call_frequency",
    "tools/failure_frequency",
    "kl",
    "loss",
)


def _make_metrics_logger_class() -> type:
    from transformers import TrainerCallback

    class _MetricsLogger(TrainerCallback):
        """Appends each training log to ``metrics.jsonl`` and ``metrics.csv``; plots them at the end."""

        def __init__(self, output_dir: str | os.PathLike[str], plot: bool = True) -> None:
            self.dir = Path(output_dir)
            self.plot = plot

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any):
            if not logs or "reward" not in logs or not state.is_world_process_zero:
                return
            row = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
            self.dir.mkdir(parents=True, exist_ok=True)
            with (self.dir / "metrics.jsonl").open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            csv_path = self.dir / "metrics.csv"
            new = not csv_path.exists()
            with csv_path.open("a", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=list(_CSV_KEYS), extrasaction="ignore")
                if new:
                    writer.writeheader()
                writer.writerow({k: row.get(k, "") for k in _CSV_KEYS})

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any):
            if self.plot and state.is_world_process_zero and (self.dir / "metrics.jsonl").exists():
                plot_metrics(self.dir / "metrics.jsonl", self.dir / "metrics.png")

    return _MetricsLogger


def MetricsLogger(output_dir: str | os.PathLike[str], plot: bool = True) -> Any:
    """A ``TrainerCallback`` writing ``metrics.jsonl`` / ``metrics.csv`` per step and ``metrics.png`` at the end."""
    return _make_metrics_logger_class()(output_dir, plot)


def plot_metrics(jsonl_path: str | os.PathLike[str], png_path: str | os.PathLike[str], smooth: int = 5) -> Path:
    """Plot reward, accuracy, format, search ratios and completion length per step (moving average)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(jsonl_path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise ConfigError(f"{jsonl_path} has no rows to plot")
    steps = [r["step"] for r in rows]

    def series(key: str) -> list[float]:
        values = [float(r.get(key, math.nan)) for r in rows]
        out = []
        for i in range(len(values)):
            window = [v for v in values[max(0, i - smooth + 1) : i + 1] if not math.isnan(v)]
            out.append(sum(window) / len(window) if window else math.nan)
        return out

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for key, label in (("reward", "reward"), ("mmsearch/accuracy", "accuracy"), ("mmsearch/format", "format")):
        axes[0].plot(steps, series(key), label=label)
    axes[0].set_title("reward and its parts")
    for key, label in (
        ("mmsearch/search_ratio", "any search"),
        ("mmsearch/image_search_ratio", "image search"),
        ("mmsearch/text_search_ratio", "text search"),
    ):
        axes[1].plot(steps, series(key), label=label)
    axes[1].set_title("search ratio (share of episodes)")
    axes[2].plot(steps, series("completions/mean_length"), label="model tokens / completion")
    axes[2].set_title("completion length")
    for ax in axes:
        ax.set_xlabel("GRPO step")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"MMSearch-v0 GRPO ({smooth}-step moving average)")
    fig.tight_layout()
    png = Path(png_path)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


# ---------------------------------------------------------------------------------------------------
# Trainer


def _load_policy_model(config: MMSearchGRPOConfig) -> tuple[Any, Any, str]:
    """Model, processor and the base folder (the one an adapter is later applied to)."""
    from agents.hf_policy import load_pretrained
    from agents.tiny_vlm import build_tiny_vlm

    base = Path(config.model_path) if config.model_path else build_tiny_vlm(seed=config.seed)
    warm_dir = Path(config.output_dir) / "warm_start"
    if config.warm_start_epochs and (warm_dir / "config.json").is_file():
        base = warm_dir  # resumed run: the warm-start already happened
        model, processor, _ = load_pretrained(warm_dir)
        return model, prepare_processing_class(processor, config.protocol), str(warm_dir)
    dtype = "bfloat16" if config.bf16 else "float32"
    model, processor, vlm = load_pretrained(base, dtype=dtype)
    if not vlm:
        raise ConfigError(f"{str(base)!r} is a text-only model; GRPO training here needs a Qwen-VL class VLM")
    prepare_processing_class(processor, config.protocol)
    if config.warm_start_epochs:
        stats = warm_start(model, processor, config)
        logger.info("warm-start loss %.3f -> %.3f", stats["first_loss"], stats["last_loss"])
        model.save_pretrained(warm_dir)
        processor.save_pretrained(warm_dir)
        getattr(processor, "tokenizer", processor).save_pretrained(warm_dir)
        if (Path(base) / "tiny_vlm.json").is_file():
            (warm_dir / "tiny_vlm.json").write_text((Path(base) / "tiny_vlm.json").read_text())
        base = warm_dir
    return model, processor, str(base)


def build_trainer(
    config: MMSearchGRPOConfig,
    *,
    model: Any = None,
    processor: Any = None,
    callbacks: list[Any] | None = None,
) -> Any:
    """A ready ``GRPOTrainer`` for ``config`` (model and processor loaded, warm-started, if not given).

    The trainer gets: the env's first observations as the dataset, :class:`EnvReward`, the env
    adapter as ``environment_factory``, a LoRA ``peft_config`` (unless ``use_lora=False``) and the
    :func:`MetricsLogger` callback.
    """
    _require_trl()
    from peft import LoraConfig
    from trl import GRPOTrainer

    if model is None or processor is None:
        model, processor, base = _load_policy_model(config)
    else:
        prepare_processing_class(processor, config.protocol)
        base = str(getattr(model, "name_or_path", ""))
    peft_config = None
    if config.use_lora:
        peft_config = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.lora_target_modules),
            task_type="CAUSAL_LM",
        )
    env_kwargs = config.env_kwargs()
    tokenizer = getattr(processor, "tokenizer", processor)
    # TRL suppresses the image token only; a sampled video or vision-boundary token also breaks the
    # forward pass (the model looks for a video grid), and a young policy does sample them.
    vision = [
        tokenizer.convert_tokens_to_ids(t)
        for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    ]
    vision = [i for i in vision if isinstance(i, int) and i != tokenizer.unk_token_id]
    generation_kwargs = dict(config.generation_kwargs or {})
    generation_kwargs["suppress_tokens"] = sorted(set(generation_kwargs.get("suppress_tokens", [])) | set(vision))
    config.generation_kwargs = generation_kwargs
    reward = EnvReward(tokenizer)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=config,
        train_dataset=make_train_dataset(env_kwargs, limit=config.max_train_questions, seed=config.seed),
        processing_class=processor,
        peft_config=peft_config,
        environment_factory=env_factory(env_kwargs),
        callbacks=[MetricsLogger(config.output_dir, plot=config.metrics_plot), *(callbacks or [])],
    )
    trainer.mmsearch_base_model = base
    trainer.mmsearch_reward = reward
    return trainer


def train(config: MMSearchGRPOConfig) -> Path:
    """Warm-start (if set), run GRPO, save the adapter (or full model) and return its folder.

    Resumes from ``config.resume_from_checkpoint`` (a checkpoint folder, or ``True`` for the latest
    in ``output_dir``). The output folder also records ``base_model.txt``: the folder the adapter
    applies to (``HFPolicy(base, adapter=output_dir)``).
    """
    trainer = build_trainer(config)
    resume = config.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "latest"):
        resume = True
    trainer.train(resume_from_checkpoint=resume or None)
    out = Path(config.output_dir)
    trainer.save_model(str(out))
    (out / "base_model.txt").write_text(str(trainer.mmsearch_base_model) + "\n", encoding="utf-8")
    return out
