"""A tiny random Qwen2.5-VL-class model, built offline, for CPU tests, examples and benchmarks.

No package ships VLM weights, so the CPU path builds one: a Qwen2.5-VL architecture (text hidden 64,
2 layers; vision tower hidden 32, 1 layer), random weights, a byte-level BPE tokenizer trained locally
with ``tokenizers`` on the environment's own prompt texts, and the Qwen chat template shipped by TRL
(``qwen3_vl.jinja``, which renders tool calls and images inside tool messages). It runs forward,
``generate`` and TRL training on CPU in milliseconds per step. It is random: it writes valid actions
only after the supervised warm-start in :mod:`agents.grpo`.

Pitfalls this module handles (REFERENCE.md §2):

* Qwen-VL processors refuse to build without a video processor, whose default needs torchvision:
  :class:`TinyVLProcessor` drops the video processor.
* ``AutoProcessor.from_pretrained`` on such a folder returns a bare tokenizer: load with
  :func:`load_tiny_vlm` (or ``TinyVLProcessor.from_pretrained``).
* ``Qwen2VLImageProcessorPil`` (no torchvision) with ``return_tensors="pt"`` as the default, or TRL's
  tool loop crashes on numpy arrays.

Builds are cached under ``~/.cache/mmsearch-env/tiny-vlm/<hash>`` (``MMSEARCH_CACHE`` moves the root),
keyed by the build settings, so a test session builds once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agents.added_tokens import repair_added_token_decoding
from agents.frozen_vision import FrozenFeatureImageProcessor
from mmsearch_env.corpus import load_corpus
from mmsearch_env.data import load_dataset
from mmsearch_env.errors import ConfigError
from mmsearch_env.protocol import TAG_TOKENS, get_protocol

__all__ = [
    "PROTOCOL_TOKENS",
    "SPECIAL_TOKENS",
    "VISIONS",
    "TinyVLMConfig",
    "build_tiny_vlm",
    "chat_template_path",
    "load_processor",
    "load_tiny_vlm",
    "make_processor",
    "processor_class",
    "tiny_vlm_path",
]

logger = logging.getLogger(__name__)

#: Chat-template and vision special tokens (Qwen names, so TRL and the processor find them by name).
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
#: Protocol strings that should be one token each (added as normal, not special, tokens so that
#: ``skip_special_tokens`` keeps them in decoded text).
PROTOCOL_TOKENS = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", *TAG_TOKENS)
#: Vision towers :class:`TinyVLMConfig` can build.
VISIONS = ("random", "efficientnet-lite0")
_BUILD_VERSION = 1  # bump when the build recipe changes, so old caches are not reused


@dataclass(frozen=True)
class TinyVLMConfig:
    """What :func:`build_tiny_vlm` builds; every field is part of the cache key."""

    seed: int = 0
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 128
    vision_hidden_size: int = 32
    vision_layers: int = 1
    vocab_size: int = 1024
    #: Largest image after resizing, in pixels: 56x56 gives 4 image tokens (one per 28x28 patch group).
    max_pixels: int = 56 * 56
    min_pixels: int = 28 * 28
    #: What the tokenizer learns from: ``"sample"`` (the env's prompts and the sample questions) or
    #: ``"corpus"`` (also the embedded corpus's questions, queries and pages, so that its names and
    #: facts split into common pieces: a model can then copy any of them from search results).
    tokenizer_texts: str = "sample"
    #: The vision tower: ``"random"`` (a random Qwen2.5-VL tower of ``vision_layers`` blocks over pixel
    #: patches) or ``"efficientnet-lite0"`` (the corpus's pretrained, frozen EfficientNet-Lite0 features,
    #: projected into one image token LLaVA-style: :mod:`agents.frozen_vision`).
    vision: str = "random"

    def __post_init__(self) -> None:
        if self.vision not in VISIONS:
            raise ConfigError(f"vision must be one of {list(VISIONS)}, got {self.vision!r}")

    def key(self) -> str:
        fields = asdict(self)
        for name, default in (("tokenizer_texts", "sample"), ("vision", "random")):
            if fields[name] == default:  # added later: keep the keys of earlier builds
                del fields[name]
        blob = json.dumps({**fields, "version": _BUILD_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def chat_template_path() -> Path:
    """TRL's Qwen3-VL chat template (tools, images in tool messages, prefix-preserving)."""
    import trl

    path = Path(trl.__file__).parent / "chat_templates" / "qwen3_vl.jinja"
    if not path.is_file():
        raise ConfigError(f"TRL's chat template {path} is missing; reinstall: pip install 'trl>=1.16'")
    return path


def _cache_root() -> Path:
    return Path(os.environ.get("MMSEARCH_CACHE", Path.home() / ".cache" / "mmsearch-env")) / "tiny-vlm"


def tiny_vlm_path(config: TinyVLMConfig | None = None) -> Path:
    """Where the cached build of ``config`` lives (it may not exist yet)."""
    return _cache_root() / (config or TinyVLMConfig()).key()


def _training_corpus(which: str = "sample") -> list[str]:
    """Texts the tokenizer learns from: the env's prompts and the sample questions, in both protocols
    (``which="corpus"``: also the embedded corpus's questions, answers, queries and page texts)."""
    from importlib import resources

    texts: list[str] = []
    for name in ("tags", "tool_calls"):
        raw = json.loads(resources.files("mmsearch_env").joinpath(f"templates/{name}.json").read_text("utf-8"))
        texts.extend(v for v in raw.values() if isinstance(v, str))
        protocol = get_protocol(name)
        texts.append(json.dumps(protocol.tool_schemas()))
    tags, calls = get_protocol("tags"), get_protocol("tool_calls")
    for split in ("train", "validation", "test"):
        try:
            examples = load_dataset("sample", split)
        except Exception:  # a split the sample does not have
            continue
        for ex in examples:
            texts += [ex.question, ex.answer, *ex.candidate_answers, str(ex.metadata.get("text_query") or "")]
            for p in (tags, calls):
                texts.append(p.format_action("answer", ex.answer, reason="The image shows it."))
                texts.append(p.format_action("text_search", ex.question, reason="I need to search."))
                texts.append(p.format_action("image_search", reason="I do not know this image."))
    if which == "corpus":
        for split in ("train", "validation", "test"):
            for ex in load_dataset("corpus", split):
                texts += [ex.question, ex.answer, *ex.candidate_answers, str(ex.metadata.get("text_query") or "")]
        texts += [f"{page.title}. {page.text}" for page in load_corpus().pages]
    elif which != "sample":
        raise ConfigError(f"tokenizer_texts must be 'sample' or 'corpus', got {which!r}")
    texts.append(chat_template_path().read_text("utf-8"))
    texts.append("0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\"()[]{}<>/\\-_=+*&%$#@")
    return texts


def _build_tokenizer(config: TinyVLMConfig):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token=None))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_training_corpus(config.tokenizer_texts), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
        padding_side="left",
        model_max_length=32768,
    )
    tokenizer.add_tokens(list(PROTOCOL_TOKENS))
    tokenizer.chat_template = chat_template_path().read_text("utf-8")
    return tokenizer


@functools.cache
def processor_class() -> type:
    """The :class:`TinyVLProcessor` class (built on first use: importing it needs transformers)."""
    from transformers import Qwen2_5_VLProcessor

    class TinyVLProcessor(Qwen2_5_VLProcessor):
        """Qwen2.5-VL processor without the video processor (whose default needs torchvision)."""

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            kwargs.pop("video_processor", None)
            self.video_processor = None
            super(Qwen2_5_VLProcessor, self).__init__(image_processor, tokenizer, chat_template=chat_template)
            self.image_token = tokenizer.image_token
            self.video_token = tokenizer.video_token
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)

        @classmethod
        def get_attributes(cls) -> list[str]:
            return ["image_processor", "tokenizer"]

    TinyVLProcessor.__module__ = __name__
    return TinyVLProcessor


def _image_processor(config: TinyVLMConfig):
    if config.vision == "efficientnet-lite0":
        return FrozenFeatureImageProcessor()
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    class TinyImageProcessor(Qwen2VLImageProcessorPil):
        """Returns torch tensors unless asked otherwise (TRL's tool loop expects them)."""

        def __call__(self, images=None, *args: Any, **kwargs: Any):
            kwargs.setdefault("return_tensors", "pt")
            return super().__call__(images, *args, **kwargs)

    return TinyImageProcessor(
        size={"shortest_edge": config.min_pixels, "longest_edge": config.max_pixels},
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
    )


def make_processor(tokenizer: Any, image_processor: Any, chat_template: str | None = None) -> Any:
    """A :class:`TinyVLProcessor` over the given parts (also used to wrap real Qwen-VL parts without torchvision)."""
    cls = processor_class()
    return cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template)


def build_tiny_vlm(
    out_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    config: TinyVLMConfig | None = None,
    force: bool = False,
) -> Path:
    """Build (or reuse) the tiny VLM and return its folder.

    Args:
        out_dir: where to save it; ``None`` uses the cache folder :func:`tiny_vlm_path`. An existing
            complete build in ``out_dir`` is reused unless ``force``.
        seed: weight initialisation seed (ignored if ``config`` is given; set it there).
        config: model sizes; defaults to :class:`TinyVLMConfig` with ``seed``.
        force: rebuild even if a build exists.

    Returns:
        The folder, loadable with :func:`load_tiny_vlm` (or ``Qwen2_5_VLForConditionalGeneration`` +
        :func:`load_processor`) and by :class:`agents.hf_policy.HFPolicy`. ``AutoProcessor.from_pretrained``
        returns only its tokenizer: the processor class is ours (Qwen2.5-VL's needs torchvision), and
        transformers' auto classes know only their own; use :func:`load_processor`.
    """
    try:
        import torch
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(
            "the tiny VLM needs the training extra: pip install torch==2.13.0 && pip install 'mmsearch-env[train]'"
        ) from exc

    config = config or TinyVLMConfig(seed=seed)
    out = Path(out_dir) if out_dir is not None else tiny_vlm_path(config)
    marker = out / "tiny_vlm.json"
    if marker.is_file() and not force:
        try:
            if json.loads(marker.read_text()).get("key") == config.key():
                return out
        except ValueError:
            pass
    logger.info("building the tiny VLM in %s", out)
    tokenizer = _build_tokenizer(config)
    processor = make_processor(tokenizer, _image_processor(config), chat_template=tokenizer.chat_template)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = config.hidden_size // config.num_heads
    third = head_dim // 2 // 4  # mrope sections (t, h, w) must sum to head_dim / 2
    model_config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": config.hidden_size,
            "intermediate_size": config.intermediate_size,
            "num_hidden_layers": config.num_layers,
            "num_attention_heads": config.num_heads,
            "num_key_value_heads": config.num_kv_heads,
            "max_position_embeddings": 32768,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [head_dim // 2 - 2 * third, third, third],
            },
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            # the frozen encoder's features need no blocks: patch embedding + merger are the projector
            "depth": 0 if config.vision == "efficientnet-lite0" else config.vision_layers,
            "hidden_size": config.vision_hidden_size,
            "intermediate_size": config.vision_hidden_size * 2,
            "num_heads": 2,
            "out_hidden_size": config.hidden_size,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [0],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(config.seed)
    model = Qwen2_5_VLForConditionalGeneration(model_config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.bos_token_id = ids["<|endoftext|>"]
    out.parent.mkdir(parents=True, exist_ok=True)
    # Build in a temporary folder and rename, so concurrent test workers never see half a model.
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-vlm-", dir=out.parent))
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "tiny_vlm.json").write_text(json.dumps({"key": config.key(), "config": asdict(config)}, indent=2))
    if out.exists():
        shutil.rmtree(out, ignore_errors=True)
    try:
        tmp.rename(out)
    except OSError:  # another process won the race: use its build
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def load_processor(path: str | os.PathLike[str]) -> Any:
    """The tiny VLM's processor (a :class:`TinyVLProcessor`) from its folder."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    repair_added_token_decoding(tokenizer)
    config_path = Path(path) / "tiny_vlm.json"
    config = TinyVLMConfig(**json.loads(config_path.read_text())["config"]) if config_path.is_file() else None
    processor = make_processor(tokenizer, _image_processor(config or TinyVLMConfig()), tokenizer.chat_template)
    return processor


def load_tiny_vlm(path: str | os.PathLike[str] | None = None) -> tuple[Any, Any]:
    """``(model, processor)`` of a tiny VLM folder (default: build or reuse the cached one)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    path = Path(path) if path is not None else build_tiny_vlm()
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype="float32").eval()
    return model, load_processor(path)
