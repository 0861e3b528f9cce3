"""``OnDemandConfig``: every setting of the on-demand search experiment, in one dataclass.

:meth:`OnDemandConfig.full` is the configuration the committed results were made with;
:meth:`OnDemandConfig.quick` shrinks the work (questions, steps, epochs), not the pipeline.
The fixed parts of the design (the questions' phrasing, the reasons, the prompts, the three GRPO arms)
are the constants below.

>>> config = OnDemandConfig.quick(seed=1)
>>> config.is_quick, config.seed, config.grpo_steps, config.env.image_position
(True, 1, 2, 'none')
>>> OnDemandConfig.full().to_dict()["env"]["max_turns"]
2
>>> OnDemandConfig(grpo_steps=150, eval_every=20)
Traceback (most recent call last):
mmsearch_env.errors.ConfigError: eval_every (20) must divide grpo_steps (150): the last checkpoint is the final policy
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from experiments.settings import ExperimentSettings
from mmsearch_env.config import EnvConfig
from mmsearch_env.errors import ConfigError

__all__ = [
    "ARMS",
    "CATEGORIES",
    "PHRASING",
    "PROMPTS",
    "REASON_DIRECT",
    "REASON_READ",
    "REASON_SEARCH",
    "Arm",
    "OnDemandConfig",
    "experiment_env",
]

#: The corpus question categories the experiment uses (each names its country and needs one fact lookup).
CATEGORIES = ("country-capital", "country-calling_code", "country-tld")
#: One phrasing per kind of question, the country's name last: copying it into the query is then a copy
#: from a fixed distance, which a small model learns fastest.
PHRASING = {
    "country-capital": "What is the capital of {name}?",
    "country-calling_code": "What is the international calling code of {name}?",
    "country-tld": "What is the internet country code top-level domain of {name}?",
}
#: The first turn's reason names the country first, then decides: the choice to search is then made right
#: after the country's name, where the model's own representation of the name sits (what it knows of the
#: country is linearly readable there: 74% on held-out countries, against chance (55%) at the position
#: where a reason starting with the decision is chosen; see README.md).
REASON_DIRECT = "{name}: I know it."
REASON_SEARCH = "{name}: let me search."
REASON_READ = "The results say it."

#: Compact prompts (the tiny model reads every token on a CPU): same actions and limits as the default.
PROMPTS = {
    "instruction": "Question: {question}\nAnswer at once if you know it; otherwise search the web first (a search costs).",
    "text_results_header": 'Results for "{query}":',
    "text_result_item": "{summary}",
    "followup": "{next_step}",
    "next_step_answer": "Now give your answer.",
    "next_step_search": "Now give your answer, or use {search_options}.",
}


@dataclass(frozen=True)
class Arm:
    """One GRPO arm: which curated set it trains on and the search penalty of its reward."""

    data: str
    search_penalty: float


#: The three arms, same budget and seeds: the paper's recipe and each of its two ingredients removed.
ARMS = {
    "on-demand": Arm(data="balanced", search_penalty=0.1),
    "no-penalty": Arm(data="balanced", search_penalty=0.0),
    "unbalanced": Arm(data="required_only", search_penalty=0.1),
}


def experiment_env() -> EnvConfig:
    """The environment every stage uses: one text search at most, then an answer (shapes A and T>A).

    ``dataset`` and ``split`` are set per stage (the experiment writes its own question files), and
    ``prompts`` to the file :data:`PROMPTS` is written to.
    """
    return EnvConfig(
        protocol="tags",
        # A text-only policy (the questions name their country; no image search is allowed). The image
        # shown first only delays when copying appears, by 50-100 steps, through its extra tokens, not its
        # vision path (benchmarks/results/image_first_copy.md); experiments/multimodal shows the flag.
        image_position="none",
        max_turns=2,
        max_image_searches=0,
        max_text_searches=1,
        search="corpus",
        search_options={"max_results": 1, "summary_sentences": 2},
    )


@dataclass
class OnDemandConfig(ExperimentSettings):
    """Every setting of the on-demand search experiment (defaults: the full run, :meth:`full`)."""

    # Parameters that control the questions
    seed: int = field(
        default=0,
        metadata={"help": "Seeds everything: which countries are known, the model, fine-tuning, curation, GRPO."},
    )
    known_fraction: float = field(default=0.5, metadata={"help": "Share of the countries the model is taught."})
    max_train_questions: int | None = field(
        default=None, metadata={"help": "Keep this many training questions, half known (None: all)."}
    )
    max_test_questions: int | None = field(
        default=None, metadata={"help": "Keep this many test questions, half known (None: all)."}
    )

    # Parameters that control the environment
    env: EnvConfig = field(
        default_factory=experiment_env, metadata={"help": "MMSearch-v0 settings of every stage (see experiment_env)."}
    )

    # Parameters that control the model (the tiny Qwen2.5-VL-class model of agents.tiny_vlm, scaled up)
    hidden_size: int = field(default=128, metadata={"help": "Hidden size of the language model."})
    num_layers: int = field(default=4, metadata={"help": "Decoder layers."})
    num_heads: int = field(default=4, metadata={"help": "Attention heads."})
    num_kv_heads: int = field(default=2, metadata={"help": "Key/value heads."})
    intermediate_size: int = field(default=384, metadata={"help": "MLP width."})
    vocab_size: int = field(default=4096, metadata={"help": "Trained tokenizer's vocabulary (before names)."})
    tokenizer_texts: str = field(default="corpus", metadata={"help": "What the tokenizer learns from."})
    max_turn_tokens: int = field(default=32, metadata={"help": "Tokens one assistant turn may take."})

    # Parameters that control the reading pass (drills, loss on the copied tokens only)
    reading_steps: int = field(default=1200, metadata={"help": "Most optimizer steps of the reading pass."})
    reading_check_every: int = field(default=100, metadata={"help": "Steps between held-out copy checks."})
    reading_check_drills: int = field(default=64, metadata={"help": "Held-out drills of each copy check."})
    reading_target: float = field(
        default=0.9, metadata={"help": "Copy accuracy of both slots that ends the reading pass."}
    )
    reading_lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate of the reading pass."})
    reading_batch_size: int = field(default=32, metadata={"help": "Drills per reading step."})

    # Parameters that control the fine-tuning on whole episodes
    sft_epochs: int = field(default=45, metadata={"help": "Epochs of direct answers and drills."})
    sft_lr: float = field(default=2e-3, metadata={"help": "AdamW learning rate of the fine-tuning."})
    sft_batch_size: int = field(default=16, metadata={"help": "Episodes per fine-tuning step."})
    sft_group_by_turns: bool = field(
        default=False,
        metadata={
            # batches of one episode length (all direct answers or all drills) at this learning rate let
            # the last few batches decide the model's choice to search (P = 0.02 measured, against 0.31
            # of the episodes searching)
            "help": "Batch episodes of one length together (False: mixed batches, as the results were made)."
        },
    )

    # Parameters that control the curation
    curate_rollouts: int = field(default=4, metadata={"help": "K: rollouts per question per pass."})
    # Half search-required: with the paper's 0.68, a policy that cannot tell known from unknown questions
    # is pushed toward searching everything by the data's majority alone.
    curate_ratio: float = field(default=0.5, metadata={"help": "Search-required share of the balanced set."})

    # Parameters that control GRPO (the same in every arm)
    grpo_steps: int = field(default=150, metadata={"help": "GRPO steps per arm."})
    grpo_batch: int = field(default=32, metadata={"help": "Rollouts per GRPO step."})
    grpo_generations: int = field(default=8, metadata={"help": "Rollouts per question (the group)."})
    grpo_lr: float = field(default=2e-3, metadata={"help": "Learning rate of the LoRA adapter."})
    grpo_max_completion_length: int = field(default=320, metadata={"help": "Tokens of a whole multi-turn completion."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        metadata={"help": "Module name suffixes LoRA wraps (every projection)."},
    )

    # Parameters that control the evaluation
    eval_every: int = field(default=10, metadata={"help": "GRPO steps between evaluated checkpoints."})

    def __post_init__(self) -> None:
        if isinstance(self.env, Mapping):
            self.env = EnvConfig.from_dict(self.env)
        if not isinstance(self.env, EnvConfig):
            raise ConfigError(f"env must be an EnvConfig or a dict of MMSearch-v0 arguments, got {self.env!r}")
        positive = (
            "hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size", "vocab_size",
            "max_turn_tokens", "reading_steps", "reading_check_every", "reading_check_drills",
            "reading_batch_size", "sft_epochs", "sft_batch_size", "curate_rollouts", "grpo_steps", "grpo_batch",
            "grpo_generations", "grpo_max_completion_length", "eval_every",
        )  # fmt: skip
        self.check_positive_ints(positive)
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative int, got {self.seed!r}")
        for name in ("max_train_questions", "max_test_questions"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 2):
                raise ConfigError(f"{name} must be None or an int >= 2 (half known, half unknown), got {value!r}")
        for name in ("known_fraction", "reading_target", "curate_ratio"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ConfigError(f"{name} must be in (0, 1], got {value!r}")
        if self.grpo_steps % self.eval_every:
            raise ConfigError(
                f"eval_every ({self.eval_every}) must divide grpo_steps ({self.grpo_steps}): "
                "the last checkpoint is the final policy"
            )
        if self.grpo_batch % self.grpo_generations:
            raise ConfigError(
                f"grpo_batch ({self.grpo_batch}) must be a multiple of grpo_generations ({self.grpo_generations})"
            )
        # The scripted episodes are "answer" or "text search, then answer".
        if self.env.max_turns < 2 or self.env.max_text_searches < 1:
            raise ConfigError(
                f"the experiment's episodes need max_turns >= 2 and max_text_searches >= 1, got "
                f"{self.env.max_turns} and {self.env.max_text_searches}"
            )

    # -- presets -------------------------------------------------------------------------------------
    @classmethod
    def full(cls, **overrides: Any) -> OnDemandConfig:
        """The configuration of the committed results (35 min on 2 CPU cores), with ``overrides``."""
        return cls.from_dict(overrides)

    @classmethod
    def quick(cls, **overrides: Any) -> OnDemandConfig:
        """Minutes: every stage on 24 training and 12 test questions, 2 GRPO steps per arm."""
        settings = {
            "reading_steps": 4,
            "reading_check_every": 2,
            "reading_batch_size": 8,
            "sft_epochs": 4,
            "curate_rollouts": 2,
            "grpo_steps": 2,
            "grpo_batch": 16,
            "eval_every": 1,
            "max_train_questions": 24,
            "max_test_questions": 12,
        }
        return cls.from_dict({**settings, **overrides})

    # -- views -----------------------------------------------------------------------------------------
    @property
    def is_quick(self) -> bool:
        """Whether the question sets are cut down (the quick preset): curation then keeps every question
        instead of shrinking the balanced set, since a barely trained model answers too few."""
        return self.max_train_questions is not None

    def tiny_vlm_kwargs(self) -> dict[str, Any]:
        """The ``agents.tiny_vlm.TinyVLMConfig`` fields of the model."""
        names = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size", "vocab_size")
        return {"seed": self.seed, "tokenizer_texts": self.tokenizer_texts, **{n: getattr(self, n) for n in names}}
