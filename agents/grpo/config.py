"""The training config (:class:`MMSearchGRPOConfig`) and its two presets (``"cpu"``, ``"gpu"``)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from mmsearch_env.config import EnvConfig
from mmsearch_env.errors import ConfigError

__all__ = [
    "TINY_ONLY",
    "MMSearchGRPOConfig",
    "cpu_preset",
    "fit_preset",
    "gpu_preset",
    "preset_settings",
    "require_train_extra",
    "size_settings",
]

TRAIN_EXTRA = "pip install torch==2.13.0 && pip install 'mmsearch-env[train]'"


def require_train_extra() -> None:
    """Raise :class:`ConfigError` naming the install command when torch, trl or peft is missing."""
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
        import trl  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(f"GRPO training needs the training extra: {TRAIN_EXTRA}") from exc


try:
    from trl import GRPOConfig as _GRPOConfigBase
except ImportError:  # pragma: no cover - keeps `import agents.grpo` working without the extra

    @dataclass
    class _GRPOConfigBase:  # type: ignore[no-redef]
        def __post_init__(self) -> None:
            require_train_extra()


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
    # TRL defaults the deprecated `gradient_checkpointing` alias to True, which makes transformers warn on
    # every config; the current name with the same default keeps TRL's behaviour without the warning.
    activation_checkpointing: bool | None = field(
        default=True, metadata={"help": "Recompute activations in the backward pass (less memory, ~20% slower)."}
    )

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
        metadata={
            "help": "Local Hugging Face model folder: a VLM (Qwen2.5-VL / Qwen3-VL class), or a text-only LLM with "
            "text_only=True; None builds the tiny VLM."
        },
    )
    text_only: bool = field(
        default=False,
        metadata={
            "help": "Train a text-only LLM (model_path): the prompt says the image is not shown (image_position "
            "'none'), image search still searches it and its results reach the model as titles, the dataset has "
            "no images, and the model gets the chat format's turn tokens if it lacks them."
        },
    )
    preset_for: str | None = field(
        default=None,
        metadata={
            "help": "The model a preset's values were tuned for ('tiny': the cpu preset). With another model_path, "
            "those values (learning rates, warm-start epochs, dataset) are refitted to the model's size and the "
            "run's first log lines say so; None: use every value as given."
        },
    )
    preset_keep: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Fields a preset refit leaves as they are, though they hold the preset's value (the example "
            "script lists the flags given on its command line: an explicit --dataset sample stays)."
        },
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
        if self.text_only:
            if self.model_path is None:
                raise ConfigError(
                    "text_only=True needs model_path: a local text-only LLM folder (the built-in tiny model is a VLM)"
                )
            self.image_position = "none"  # the text-only mode: the prompt says the image is not shown
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
            "activation_checkpointing": False,
            "report_to": _default_report_to(),
            "seed": 0,
            "dataloader_num_workers": 0,
            "preset_for": "tiny",
        }
    elif name == "gpu":
        settings = {
            "output_dir": "runs/grpo-gpu",
            "use_vllm": True,
            "vllm_mode": "colocate",
            "vllm_gpu_memory_utilization": 0.35,
            "bf16": True,
            "activation_checkpointing": True,
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


#: The cpu preset's values that only suit the tiny model, refitted for a real one (:func:`fit_preset`).
TINY_ONLY = ("dataset", "learning_rate", "warm_start_epochs", "warm_start_lr")


def size_settings(num_parameters: int | None) -> dict[str, Any]:
    """Settings for a real model of ``num_parameters`` in place of the tiny model's :data:`TINY_ONLY` values.

    Smaller models take larger steps (LoRA on the attention projections); the warm-start is short (it
    teaches the tags, not the answers) and uses the embedded corpus questions. Unknown size: as for 1-10B.

    >>> size_settings(270_000_000)["learning_rate"], size_settings(7_000_000_000)["learning_rate"]
    (2e-05, 5e-06)
    """
    n = num_parameters or 3_000_000_000
    learning_rate = 2e-5 if n < 1e9 else 5e-6 if n < 1e10 else 2e-6
    return {
        "dataset": "corpus",  # the embedded question set (EnvConfig's default), not the tiny world
        "learning_rate": learning_rate,
        "warm_start_epochs": 2,
        "warm_start_lr": 5 * learning_rate,
    }


def fit_preset(config: MMSearchGRPOConfig, num_parameters: int | None) -> dict[str, tuple[Any, Any]]:
    """Refit a tiny-model preset's values to ``config.model_path`` (in place); returns ``{field: (old, new)}``.

    Only when ``preset_for == "tiny"`` and a ``model_path`` is set, and only the :data:`TINY_ONLY` fields
    still holding the cpu preset's value and not in ``preset_keep`` (a value the user changed or named is
    kept). ``preset_for`` becomes
    ``None`` afterwards, so refitting twice changes nothing.
    """
    if config.preset_for != "tiny" or config.model_path is None:
        return {}
    tiny = preset_settings("cpu")
    changes = {}
    for name, value in size_settings(num_parameters).items():
        kept = name in config.preset_keep
        if name in TINY_ONLY and not kept and getattr(config, name) == tiny[name] and value != tiny[name]:
            changes[name] = (getattr(config, name), value)
            setattr(config, name, value)
    config.preset_for = None
    return changes


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
