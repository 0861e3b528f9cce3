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
chat template and response parser; ``"tags"`` uses our template (:func:`tags_chat_template`:
no tool-schema block, tool results as plain user turns, as in the paper) and a response parser
that reads ``<search><img></search>`` as the tool ``search`` and ``<text_search>Q</text_search>``
as ``text_search(query=Q)``.

The package, by concern: :mod:`~agents.grpo.config` (config and presets), :mod:`~agents.grpo.tool_env`
(the env adapter and the recording search backend), :mod:`~agents.grpo.reward` (turn splitting, the
reward), :mod:`~agents.grpo.data` (training questions), :mod:`~agents.grpo.processing` (chat templates,
response parsers, assistant-token labels), :mod:`~agents.grpo.warm_start` (supervised warm-start on
TRL's ``SFTTrainer``), :mod:`~agents.grpo.callbacks` (metrics files and plot) and
:mod:`~agents.grpo.trainer` (assembly, :func:`train`).
"""

from __future__ import annotations

from agents.grpo.callbacks import MetricsLogger, plot_metrics
from agents.grpo.config import MMSearchGRPOConfig, cpu_preset, gpu_preset, preset_settings, require_train_extra
from agents.grpo.data import make_train_dataset, sample_train_examples
from agents.grpo.processing import (
    TAGS_RESPONSE_TEMPLATE,
    assistant_header_ids,
    assistant_token_labels,
    end_of_turn_id,
    prepare_processing_class,
    tags_chat_template,
)
from agents.grpo.reward import EnvReward, split_turns
from agents.grpo.tool_env import (
    MMSearchToolEnv,
    RecordingSearch,
    RolloutEpisode,
    TagsCropToolEnv,
    TagsToolEnv,
    ToolCallsCropToolEnv,
    ToolCallsToolEnv,
    env_factory,
)
from agents.grpo.trainer import build_trainer, load_policy_model, train
from agents.grpo.warm_start import EpisodeCollator, fit_episodes, warm_start, warm_start_episodes

__all__ = [
    "TAGS_RESPONSE_TEMPLATE",
    "EnvReward",
    "EpisodeCollator",
    "MMSearchGRPOConfig",
    "MMSearchToolEnv",
    "MetricsLogger",
    "RecordingSearch",
    "RolloutEpisode",
    "TagsCropToolEnv",
    "TagsToolEnv",
    "ToolCallsCropToolEnv",
    "ToolCallsToolEnv",
    "assistant_header_ids",
    "assistant_token_labels",
    "build_trainer",
    "cpu_preset",
    "end_of_turn_id",
    "env_factory",
    "fit_episodes",
    "gpu_preset",
    "load_policy_model",
    "make_train_dataset",
    "plot_metrics",
    "prepare_processing_class",
    "preset_settings",
    "require_train_extra",
    "sample_train_examples",
    "split_turns",
    "tags_chat_template",
    "train",
    "warm_start",
    "warm_start_episodes",
]
