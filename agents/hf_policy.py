"""Any local Hugging Face model as a policy: a VLM sees the images, a text-only LLM reads titles.

Text-only models are an explicit mode: run the environment with ``image_position="none"``
(``mmsearch eval --image-position none``), whose prompt says the image is not shown; image search
still searches the question's image and its results reach the model as titles. A text-only model
given an observation that shows an image warns once. The folder is checked before any weight is
loaded (:func:`agents.model_check.check_model_folder`: chat template, known architecture).

After each batch ``last_usage`` holds per turn ``{"prompt_tokens", "completion_tokens",
"finish_reason"}``: ``"length"`` when the turn hit ``max_new_tokens`` without an end-of-turn token,
``"stop"`` otherwise.

:class:`HFPolicy` batches episodes through ``processor.apply_chat_template`` and ``generate``. It is
the policy the evaluation harness uses for trained checkpoints: pass ``adapter=`` a LoRA folder
saved by :mod:`agents.grpo` and it is applied with peft.

Sampling (``temperature`` > 0) with a ``seed`` is reproducible whatever the batching: each turn is
drawn with the Gumbel-max trick from noise of its own generator, seeded by the policy's seed, the
conversation so far and how many times this policy has drawn that conversation before. Concurrent
rollouts batch episodes as they arrive, so without it which sample an episode gets depends on timing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agents.added_tokens import repair_added_token_decoding
from agents.model_check import check_model_folder
from agents.policy import PolicyBase
from agents.tiny_vlm import load_processor, make_processor
from mmsearch_env.errors import ConfigError
from mmsearch_env.protocol import ActionProtocol, get_protocol

__all__ = ["HFPolicy", "is_vlm_folder", "load_pretrained", "text_only_messages"]

logger = logging.getLogger(__name__)

_TRAIN_EXTRA = "pip install torch==2.13.0 && pip install 'mmsearch-env[train]'"


def _require_torch() -> Any:
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(f"HFPolicy needs torch and transformers: {_TRAIN_EXTRA}") from exc
    return torch


def is_vlm_folder(path: str | os.PathLike[str]) -> bool:
    """Whether the model folder holds a vision-language model (its config has a vision part)."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"{str(path)!r} is not a model folder (no config.json); give a local Hugging Face model path")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    return "vision_config" in config


def load_processing_class(path: str | os.PathLike[str]) -> Any:
    """The processor (VLM) or tokenizer (LLM) of a local model folder, padding on the left.

    Qwen-VL folders load as :class:`agents.tiny_vlm.TinyVLProcessor` when ``AutoProcessor`` would
    need torchvision or silently return a bare tokenizer (REFERENCE.md §2). Added tokens that a
    byte-level decoder would turn into invalid bytes are repaired (:mod:`agents.added_tokens`).
    """
    from transformers import AutoProcessor, AutoTokenizer, ProcessorMixin

    path = Path(path)
    if not is_vlm_folder(path):
        tokenizer = AutoTokenizer.from_pretrained(path)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        repair_added_token_decoding(tokenizer)
        return tokenizer
    if (path / "tiny_vlm.json").is_file():
        processor = load_processor(path)  # repairs its added tokens itself
    else:
        try:
            processor = AutoProcessor.from_pretrained(path)
        except (ImportError, ValueError, OSError) as exc:
            logger.info("AutoProcessor failed on %s (%s); building the processor without a video part", path, exc)
            processor = None
        if not isinstance(processor, ProcessorMixin):
            from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

            tokenizer = AutoTokenizer.from_pretrained(path)
            processor = make_processor(
                tokenizer, Qwen2VLImageProcessorPil.from_pretrained(path), chat_template=tokenizer.chat_template
            )
        repair_added_token_decoding(processor.tokenizer)
    processor.tokenizer.padding_side = "left"
    return processor


def load_pretrained(
    path: str | os.PathLike[str], *, dtype: str = "float32", device: str | None = None
) -> tuple[Any, Any, bool]:
    """``(model, processing_class, is_vlm)`` for a local model folder."""
    _require_torch()
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    vlm = is_vlm_folder(path)
    model_cls = AutoModelForImageTextToText if vlm else AutoModelForCausalLM
    model = model_cls.from_pretrained(path, dtype=dtype)
    if device is not None:
        model.to(device)
    return model.eval(), load_processing_class(path), vlm


def text_only_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The conversation for a text-only model: image blocks dropped, text kept (titles, summaries)."""
    out = []
    for message in messages:
        text = "".join(b["text"] for b in message["content"] if b.get("type") == "text")
        out.append({"role": message["role"], "content": text})
    return out


class HFPolicy(PolicyBase):
    """A local Hugging Face VLM or LLM that writes MMSearch-v0 turns, in batches.

    Args:
        model_path: a local model folder (``save_pretrained`` layout), e.g. the tiny VLM from
            :func:`agents.tiny_vlm.build_tiny_vlm` or a downloaded Qwen2.5-VL.
        protocol: the environment's protocol; ``"tool_calls"`` passes the tool schemas to the chat
            template.
        adapter: a peft (LoRA) adapter folder to apply on top of the model.
        max_new_tokens: cap per turn.
        batch_size: episodes per ``generate`` call.
        temperature: 0 for greedy decoding (the paper's evaluation), > 0 to sample.
        seed: with ``temperature`` > 0, makes the samples reproducible and independent of which
            episodes share a batch (see the module docstring); ``None`` samples from torch's global
            generator.
        device: ``"cpu"``, ``"cuda"``, ...; default: CUDA if available.

    A VLM gets every image of the observation (the question's and the result thumbnails); a text-only
    model gets the text only (image-search results appear as their titles).
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        protocol: str | ActionProtocol = "tags",
        adapter: str | os.PathLike[str] | None = None,
        max_new_tokens: int = 256,
        batch_size: int = 8,
        temperature: float = 0.0,
        seed: int | None = None,
        device: str | None = None,
    ) -> None:
        torch = _require_torch()
        if max_new_tokens < 1 or batch_size < 1:
            raise ConfigError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens} and {batch_size}")
        if temperature < 0:
            raise ConfigError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ConfigError(f"seed must be a non-negative int or None, got {seed!r}")
        self.protocol = get_protocol(protocol)
        check_model_folder(model_path)  # before the weights: a base model or an unknown family fails now
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model, self.processing_class, self.is_vlm = load_pretrained(model_path, device=self.device)
        if adapter is not None:
            try:
                from peft import PeftModel
            except ImportError as exc:  # pragma: no cover
                raise ConfigError(f"adapters need peft: {_TRAIN_EXTRA}") from exc
            if not (Path(adapter) / "adapter_config.json").is_file():
                raise ConfigError(f"{str(adapter)!r} is not a peft adapter folder (no adapter_config.json)")
            self.model = PeftModel.from_pretrained(self.model, str(adapter)).to(self.device).eval()
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size = int(batch_size)
        self.temperature = float(temperature)
        self.seed = seed
        self._draws: dict[bytes, int] = {}  # conversation key -> times drawn (seeded sampling)
        self._warned_image = False
        self.last_usage: list[dict[str, Any] | None] | None = None
        self.name = f"hf:{Path(model_path).name}" + (f"+{Path(adapter).name}" if adapter else "")

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processing_class, "tokenizer", self.processing_class)

    def act_batch(self, observations: Sequence[Mapping[str, Any]], infos: Sequence[Mapping[str, Any]]) -> list[str]:
        outputs: list[str] = []
        usage: list[dict[str, Any] | None] = []
        for start in range(0, len(observations), self.batch_size):
            texts, used = self._generate([o["messages"] for o in observations[start : start + self.batch_size]])
            outputs.extend(texts)
            usage.extend(used)
        self.last_usage = usage
        return outputs

    def _warn_hidden_image(self, conversation: Sequence[Mapping[str, Any]]) -> None:
        first = next((m for m in conversation if m.get("role") == "user"), None)
        content = first.get("content") if first else None
        if self._warned_image or isinstance(content, str) or not content:
            return
        if any(block.get("type") == "image" for block in content):
            self._warned_image = True
            warnings.warn(
                f"{self.name} is a text-only model but the prompt shows the question's image, which it cannot "
                "see; use the text-only mode: image_position='none' (mmsearch eval --image-position none)",
                stacklevel=4,
            )

    def _generate(self, conversations: list[list[dict[str, Any]]]) -> tuple[list[str], list[dict[str, Any] | None]]:
        import torch

        if not self.is_vlm:
            self._warn_hidden_image(conversations[0])
            conversations = [text_only_messages(c) for c in conversations]
        # Processors take tokenizer options in processor_kwargs; plain tokenizers take them directly.
        padding = {"processor_kwargs": {"padding": True}} if self.is_vlm else {"padding": True}
        inputs = self.processing_class.apply_chat_template(
            conversations,
            tools=self.protocol.tool_schemas() or None,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            **padding,
        )
        inputs = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in inputs.items()}
        sample = self.temperature > 0
        seeded = sample and self.seed is not None
        extra: dict[str, Any] = {}
        if seeded:  # a seeded Gumbel-max draw per row, then greedy: an exact sample at this temperature
            extra["logits_processor"] = [_SeededGumbel([self._generator(c) for c in conversations], self.temperature)]
        with torch.no_grad():
            generated = self.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=sample and not seeded,
                temperature=self.temperature if sample and not seeded else None,
                top_p=None,
                top_k=None,
                pad_token_id=self.tokenizer.pad_token_id,
                **extra,
            )
        new_tokens = generated[:, inputs["input_ids"].shape[1] :]
        texts = [text.strip() for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        return texts, [
            {"prompt_tokens": int(p), **self._ending(row)}
            for p, row in zip(prompt_tokens, new_tokens.tolist(), strict=True)
        ]

    def _ending(self, row: list[int]) -> dict[str, Any]:
        """``completion_tokens`` and ``finish_reason`` of one generated row (padding after its end ignored)."""
        stops = self._stop_ids()
        for position, token in enumerate(row):
            if token in stops:
                return {"completion_tokens": position + 1, "finish_reason": "stop"}
        pad = self.tokenizer.pad_token_id
        written = len(_strip_right(row, pad))
        reason = "length" if written >= self.max_new_tokens else "stop"
        return {"completion_tokens": written, "finish_reason": reason}

    def _stop_ids(self) -> set[int]:
        ids = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        return {int(i) for i in ids}

    def _generator(self, conversation: Sequence[Mapping[str, Any]]) -> Any:
        """The generator of this draw of ``conversation``: seeded by the policy's seed, the conversation
        and the number of earlier draws of it (so K rollouts of one question differ)."""
        import torch

        key = _conversation_key(conversation)
        count = self._draws.get(key, 0)
        self._draws[key] = count + 1
        digest = hashlib.sha256(b"%d\0%s\0%d" % (self.seed, key, count)).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:8], "big"))


def _strip_right(row: list[int], pad: int | None) -> list[int]:
    """``row`` without trailing ``pad`` tokens (rows that ended early are padded to the batch's length)."""
    end = len(row)
    while pad is not None and end and row[end - 1] == pad:
        end -= 1
    return row[:end]


def _conversation_key(conversation: Sequence[Mapping[str, Any]]) -> bytes:
    """A digest of a conversation's roles, texts and images (pixels, or the path / URL given)."""
    digest = hashlib.sha256()
    for message in conversation:
        digest.update(f"\0{message.get('role')}\0".encode())
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for block in blocks:
            image = block.get("image") if block.get("type") == "image" else None
            if hasattr(image, "tobytes"):
                digest.update(f"\0image {image.mode} {image.size}\0".encode())
                digest.update(image.tobytes())
            else:
                digest.update(f"\0{block.get('type')}\0{block.get('text', image)}".encode())
    return digest.digest()


class _SeededGumbel:
    """Logits processor: ``scores / temperature`` plus Gumbel noise drawn from each row's own generator;
    the argmax of the result is a sample from ``softmax(scores / temperature)``."""

    def __init__(self, generators: Sequence[Any], temperature: float) -> None:
        self.generators = list(generators)
        self.temperature = temperature

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        noise = torch.stack(
            [
                torch.empty(scores.shape[-1]).exponential_(generator=g).clamp_min(1e-20).log().neg()
                for g in self.generators
            ]
        )
        return scores / self.temperature + noise.to(scores.device, scores.dtype)
