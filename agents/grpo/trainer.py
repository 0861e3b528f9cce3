"""Trainer assembly: load (and warm-start) the policy, build TRL's ``GRPOTrainer``, train and save."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from agents.grpo.callbacks import MetricsLogger, readable_progress
from agents.grpo.config import MMSearchGRPOConfig, require_train_extra
from agents.grpo.data import make_train_dataset
from agents.grpo.processing import prepare_processing_class
from agents.grpo.reward import EnvReward
from agents.grpo.tool_env import env_factory
from agents.grpo.warm_start import warm_start
from agents.hf_policy import load_pretrained
from agents.tiny_vlm import build_tiny_vlm
from mmsearch_env.errors import ConfigError

__all__ = ["build_trainer", "load_policy_model", "train"]

logger = logging.getLogger(__name__)

# Tokens a young policy samples that break its own forward pass: TRL suppresses the image token only,
# but a sampled video or vision-boundary token also makes the model look for a missing video grid.
_VISION_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")


def load_policy_model(config: MMSearchGRPOConfig) -> tuple[Any, Any, str]:
    """The model and prepared processor to train, and the base folder an adapter later applies to.

    ``config.model_path`` (or the tiny VLM when None) in ``bf16`` or float32; warm-started when
    ``warm_start_epochs`` > 0 and saved to ``output_dir/warm_start``, which a resumed run loads
    instead of warm-starting again. Raises :class:`ConfigError` for a text-only model.
    """
    base = Path(config.model_path) if config.model_path else build_tiny_vlm(seed=config.seed)
    warm_dir = Path(config.output_dir) / "warm_start"
    if config.warm_start_epochs and (warm_dir / "config.json").is_file():
        model, processor, _ = load_pretrained(warm_dir)  # resumed run: the warm-start already happened
        return model, prepare_processing_class(processor, config.protocol), str(warm_dir)
    dtype = "bfloat16" if config.bf16 else "float32"
    model, processor, vlm = load_pretrained(base, dtype=dtype)
    if not vlm:
        raise ConfigError(f"{str(base)!r} is a text-only model; GRPO training here needs a Qwen-VL class VLM")
    prepare_processing_class(processor, config.protocol)
    if config.warm_start_epochs:
        warm_start(model, processor, config)
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
    :func:`MetricsLogger` callback. It also carries ``mmsearch_base_model`` (the folder the adapter
    applies to) and ``mmsearch_reward`` (the reward object, whose ``last`` holds the latest scores).
    """
    require_train_extra()
    from peft import LoraConfig
    from trl import GRPOTrainer

    if model is None or processor is None:
        model, processor, base = load_policy_model(config)
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
    vision = [tokenizer.convert_tokens_to_ids(t) for t in _VISION_TOKENS]
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
    readable_progress(trainer, "GRPO")
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
