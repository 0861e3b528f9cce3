"""Trainer assembly: load (and warm-start) the policy, build TRL's ``GRPOTrainer``, train and save."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from agents.grpo.callbacks import MetricsLogger, readable_progress
from agents.grpo.config import MMSearchGRPOConfig, fit_preset, require_train_extra
from agents.grpo.data import make_train_dataset
from agents.grpo.processing import add_turn_tokens, prepare_processing_class
from agents.grpo.reward import EnvReward
from agents.grpo.tool_env import env_factory
from agents.grpo.warm_start import warm_start
from agents.hf_policy import load_pretrained, load_processing_class
from agents.model_check import ModelFolder, check_model_folder
from agents.tiny_vlm import build_tiny_vlm
from mmsearch_env.errors import ConfigError

__all__ = ["build_trainer", "describe_run", "load_policy_model", "score_completions_only_on_cpu", "train"]

logger = logging.getLogger(__name__)

# Tokens a young policy samples that break its own forward pass: TRL suppresses the image token only,
# but a sampled video or vision-boundary token also makes the model look for a missing video grid.
_VISION_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")


def score_completions_only_on_cpu() -> bool:
    """Make TRL's chunked log-prob head score only the completion's positions on the CPU too.

    TRL (1.16) scores just the labelled positions on Triton devices but every position elsewhere, to
    keep tile shapes fixed for compilers; on the CPU, with nothing compiled, that computes and
    differentiates the vocabulary's log-softmax over every prompt token as well (a third of a GRPO
    step on the tiny VLM). The values at the completion's positions are the same either way (tested);
    ``benchmarks/grpo_cpu_scoring.py`` measures the step time. TRL decides this through
    ``trl.trainer.utils._use_triton``; where a TRL version has no such name nothing changes. Returns
    whether the CPU now scores compactly. Idempotent.
    """
    try:
        import trl.trainer.utils as trl_utils
    except ImportError:  # pragma: no cover - the train extra is checked before
        return False
    decide = getattr(trl_utils, "_use_triton", None)
    if decide is None:
        return False
    if getattr(decide, "mmsearch_compact_on_cpu", False):
        return True

    def compact(device: Any) -> bool:
        return getattr(device, "type", None) == "cpu" or decide(device)

    compact.mmsearch_compact_on_cpu = True  # type: ignore[attr-defined]
    trl_utils._use_triton = compact
    return True


def describe_run(config: MMSearchGRPOConfig) -> ModelFolder | None:
    """Check ``config.model_path`` from its small files (before loading), refit a tiny-model preset to it,
    and log what the run trains with: its first lines. Returns the folder's description (``None``: tiny VLM)."""
    if config.model_path is None:
        logger.info("model: the built-in tiny VLM; settings as given (preset: %s)", config.preset_for or "none")
        return None
    info = check_model_folder(config.model_path, vlm=not config.text_only, chat_template=False)
    if config.text_only and info.is_vlm:
        raise ConfigError(
            f"{config.model_path!r} is a vision-language model; train it with images (text_only=False), "
            "or give a text-only LLM for text_only=True"
        )
    size = f"{info.num_parameters:,} parameters" if info.num_parameters else "size unknown"
    mode = "text-only (the prompt says the image is not shown)" if config.text_only else "vision-language"
    logger.info("model: %s (%s, %s), %s mode", config.model_path, info.model_type, size, mode)
    changes = fit_preset(config, info.num_parameters)
    for name, (old, new) in changes.items():
        logger.info("preset refitted to this model's size: %s %r -> %r (tiny-model value)", name, old, new)
    logger.info(
        "training: learning_rate %g, warm-start %d epoch(s) at lr %g, dataset %r, lora %s",
        config.learning_rate,
        config.warm_start_epochs,
        config.warm_start_lr,
        config.dataset,
        f"r={config.lora_r}" if config.use_lora else "off",
    )
    return info


def _load_text_only(path: str | Path, dtype: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    return model, load_processing_class(path)


def load_policy_model(config: MMSearchGRPOConfig) -> tuple[Any, Any, str]:
    """The model and prepared processor to train, and the base folder an adapter later applies to.

    ``config.model_path`` (or the tiny VLM when None) in ``bf16`` or float32; warm-started when
    ``warm_start_epochs`` > 0 and saved to ``output_dir/warm_start``, which a resumed run loads
    instead of warm-starting again. ``text_only``: a causal LM and its tokenizer, given our chat
    format's turn tokens (:func:`agents.grpo.processing.add_turn_tokens`). Raises :class:`ConfigError`
    before loading for a model the mode cannot train (:func:`describe_run`).
    """
    describe_run(config)
    base = Path(config.model_path) if config.model_path else build_tiny_vlm(seed=config.seed)
    warm_dir = Path(config.output_dir) / "warm_start"
    dtype = "bfloat16" if config.bf16 else "float32"
    if config.warm_start_epochs and (warm_dir / "config.json").is_file():
        # resumed run: the warm-start already happened
        if config.text_only:
            model, processor = _load_text_only(warm_dir, dtype)
        else:
            model, processor, _ = load_pretrained(warm_dir)
        return model, prepare_processing_class(processor, config.protocol), str(warm_dir)
    added: list[str] = []
    if config.text_only:
        model, processor = _load_text_only(base, dtype)
        added = add_turn_tokens(model, processor)
        if added:
            logger.info("added the chat format's turn tokens %s to the vocabulary", added)
    else:
        model, processor, vlm = load_pretrained(base, dtype=dtype)
        if not vlm:
            raise ConfigError(f"{str(base)!r} is a text-only model; train it with text_only=True")
    prepare_processing_class(processor, config.protocol)
    if config.warm_start_epochs:
        warm_start(model, processor, config)
        model.save_pretrained(warm_dir)
        processor.save_pretrained(warm_dir)
        getattr(processor, "tokenizer", processor).save_pretrained(warm_dir)
        if (Path(base) / "tiny_vlm.json").is_file():
            (warm_dir / "tiny_vlm.json").write_text((Path(base) / "tiny_vlm.json").read_text())
        base = warm_dir
    elif config.text_only and added:
        # The adapter's base folder must hold the new vocabulary too.
        model.save_pretrained(warm_dir)
        processor.save_pretrained(warm_dir)
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
    score_completions_only_on_cpu()
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
