"""What a local model folder holds, read from its small files before any weight is loaded.

Every door that takes a model folder (``hf:PATH``, :class:`agents.hf_policy.HFPolicy`, GRPO's
``model_path``, the model server) calls :func:`check_model_folder` first, so an unsupported model fails
in a second with a message naming the fix instead of after loading gigabytes: no chat template (a
base model), an architecture this transformers does not know, a text-only model given to a path that
needs a vision-language model (or the reverse). :func:`inspect_model_folder` also counts the
parameters from the safetensors headers, which the training presets size themselves by.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmsearch_env.errors import ConfigError, did_you_mean

__all__ = ["ModelFolder", "check_model_folder", "inspect_model_folder"]

_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


@dataclass(frozen=True)
class ModelFolder:
    """What :func:`inspect_model_folder` read.

    Attributes:
        model_type: ``config.json``'s ``model_type`` (e.g. ``"qwen2_5_vl"``, ``"gemma3_text"``).
        architectures: ``config.json``'s ``architectures`` (may be empty).
        is_vlm: the config has a vision part (``vision_config``).
        has_chat_template: the tokenizer or processor files carry a chat template.
        num_parameters: from the safetensors headers; ``None`` when the weights are not safetensors.
    """

    path: Path
    model_type: str | None
    architectures: tuple[str, ...]
    is_vlm: bool
    has_chat_template: bool
    num_parameters: int | None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{str(path)!r} is not readable JSON ({exc}); the model folder is damaged") from None
    return data if isinstance(data, dict) else {}


def _safetensors_parameters(folder: Path) -> int | None:
    """Parameter count from the safetensors headers (8-byte length, then JSON of shapes); no tensor is read."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with file.open("rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(size))
        for name, entry in header.items():
            if name == "__metadata__" or not isinstance(entry, dict):
                continue
            count = 1
            for dim in entry.get("shape", []):
                count *= int(dim)
            total += count
    return total


def inspect_model_folder(path: str | os.PathLike[str]) -> ModelFolder:
    """Read ``config.json``, the tokenizer / processor configs and the safetensors headers of ``path``."""
    folder = Path(path)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ConfigError(
            f"{str(path)!r} is not a model folder (no config.json); give a local Hugging Face model folder "
            "(save_pretrained layout)"
        )
    config = _read_json(config_file)
    template = any((folder / name).is_file() for name in _TEMPLATE_FILES)
    for name in ("tokenizer_config.json", "processor_config.json"):
        if not template and (folder / name).is_file():
            template = bool(_read_json(folder / name).get("chat_template"))
    return ModelFolder(
        path=folder,
        model_type=config.get("model_type"),
        architectures=tuple(config.get("architectures") or ()),
        is_vlm="vision_config" in config,
        has_chat_template=template,
        num_parameters=_safetensors_parameters(folder),
    )


def check_model_folder(
    path: str | os.PathLike[str], *, vlm: bool | None = None, chat_template: bool = True
) -> ModelFolder:
    """:func:`inspect_model_folder`, raising :class:`ConfigError` for what the caller cannot use.

    Args:
        vlm: ``True``: the caller needs a vision-language model; ``False``: a causal LM; ``None``: either.
        chat_template: the caller renders conversations with the model's own chat template.
    """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    )

    info = inspect_model_folder(path)
    where = repr(str(path))
    kind = info.model_type
    if kind not in CONFIG_MAPPING_NAMES:
        import transformers

        raise ConfigError(
            f"{where} has an architecture this transformers ({transformers.__version__}) does not know: "
            f"model_type={kind!r}, architectures={list(info.architectures)}; upgrade transformers "
            "(pip install -U transformers) or use a model of a supported family (Qwen2.5-VL, Qwen3-VL, Gemma 3, "
            "Llama, Qwen2/3...)" + (did_you_mean(kind, list(CONFIG_MAPPING_NAMES)) if isinstance(kind, str) else "")
        )
    if vlm is True and not info.is_vlm:
        raise ConfigError(
            f"{where} is a text-only model (model_type={kind!r}, no vision_config in config.json); this path "
            "needs a vision-language model. Train it in text-only mode instead: text_only=True (--text_only true); "
            "the environment still searches the question's image and the prompt says the image is not shown"
        )
    table = MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES if info.is_vlm else MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if kind not in table:
        what = "image-text-to-text (vision-language)" if info.is_vlm else "causal language"
        raise ConfigError(
            f"{where} (model_type={kind!r}) is not a {what} model transformers can generate with; give a chat "
            "model (a causal LM such as Gemma 3 or Qwen3, or a VLM such as Qwen2.5-VL)"
        )
    if chat_template and not info.has_chat_template:
        raise ConfigError(
            f"{where} has no chat template (none in tokenizer_config.json, no chat_template.jinja): it is "
            "probably a base model. Give it one before using it, e.g. its instruction-tuned sibling's: "
            "tok = AutoTokenizer.from_pretrained(PATH); tok.chat_template = open('chat_template.jinja').read(); "
            "tok.save_pretrained(PATH) (agents.gguf.GEMMA_CHAT_TEMPLATE is Gemma's)"
        )
    return info
