"""GPU readiness check: a few GRPO steps through the GPU preset's code path, on whatever device is here.

    python benchmarks/gpu_preset.py                  # writes benchmarks/results/gpu_preset_<device>.{json,md}
    python benchmarks/gpu_preset.py --steps 2 --batch 4 --num_generations 2 --max_turn_tokens 16   # quick

What runs: :func:`agents.grpo.preset_settings` ``("gpu")`` (LoRA r=64, activation checkpointing,
the paper's hyper-parameters) through :func:`agents.grpo.build_trainer`, on the built-in sample
questions and their search engine, with no warm-start. Trimmed for a readiness check, and reported
in the results: ``max_steps``, the batch (one gradient-accumulation step), the turn and completion
budgets.

* **CUDA**: a randomly initialised model with Qwen2.5-VL-3B's shapes (36 layers, hidden 2048, GQA
  16/2 heads, a 32-block ViT; no weights are downloaded), built in bf16 on the GPU. Tokenizer and
  processor are the tiny VLM's, built locally (the model's vocabulary is sized to them). Rollouts use
  vLLM (colocated) when ``import vllm`` works, else transformers generation; the results say which.
* **CPU**: the tiny VLM in float32, transformers generation.

Reported: rollout tokens/s (model tokens generated / time inside ``generate``), step time (median
wall seconds per optimizer step, the first step dropped when there are more), peak memory
(``torch.cuda.max_memory_allocated`` on CUDA, peak RSS of this process on CPU).

The GPU machine has torch, transformers, peft and accelerate but no TRL and no network. Carry a TRL
wheel with the working tree::

    pip download trl==1.16.0 --no-deps -d wheels/        # here, with network
    pip install --no-deps wheels/trl-*.whl               # there, before running this script
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch
from transformers import TrainerCallback

from agents.grpo import build_trainer, preset_settings
from agents.grpo.config import MMSearchGRPOConfig
from agents.hf_policy import load_processing_class
from agents.tiny_vlm import build_tiny_vlm

RESULTS = Path(__file__).parent / "results"
METRICS = ("rollout_tokens_per_s", "step_time_s", "peak_memory_gib")

# Qwen2.5-VL-3B-Instruct's shapes (its config.json); the vocabulary and special-token ids come from the
# local tokenizer instead, since no weights or tokenizer files are downloaded.
QWEN25_VL_3B_TEXT = {
    "hidden_size": 2048,
    "intermediate_size": 11008,
    "num_hidden_layers": 36,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128000,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
}
QWEN25_VL_3B_VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "out_hidden_size": 2048,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
}


class StepTimer(TrainerCallback):
    """Wall seconds of each optimizer step, end to end (TRL generates a step's rollouts inside it)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._last = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._last = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        now = time.perf_counter()
        self.times.append(now - self._last)
        self._last = now


class GenerateMeter:
    """Wraps a ``generate`` method (transformers or vLLM): seconds spent in it and tokens it produced."""

    def __init__(self, pad_id: int | None) -> None:
        self.seconds = 0.0
        self.tokens = 0
        self.pad_id = pad_id

    def wrap(self, owner: Any) -> None:
        original = owner.generate

        def generate(*args: Any, **kwargs: Any) -> Any:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = original(*args, **kwargs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.seconds += time.perf_counter() - start
            self.tokens += self.count(out, kwargs)
            return out

        owner.generate = generate

    def count(self, out: Any, kwargs: dict[str, Any]) -> int:
        if isinstance(out, torch.Tensor):  # transformers: prompt + new tokens, padded after EOS
            new = out[:, kwargs["input_ids"].shape[1] :]
            return int((new != self.pad_id).sum()) if self.pad_id is not None else new.numel()
        return sum(len(c.token_ids) for request in out for c in request.outputs)  # vLLM RequestOutputs


def qwen25_vl_3b_shaped(tiny_path: Path, device: str = "cuda") -> Any:
    """A random Qwen2.5-VL-3B-shaped model in bf16 on ``device``, its vocabulary the tiny VLM's.

    ``device="meta"`` builds the shapes only (no memory): a check of the config on any machine.
    """
    from transformers import AutoConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tiny = AutoConfig.from_pretrained(tiny_path)
    text = tiny.text_config
    config = Qwen2_5_VLConfig(
        text_config={
            **QWEN25_VL_3B_TEXT,
            "vocab_size": text.vocab_size,
            "bos_token_id": text.bos_token_id,
            "eos_token_id": text.eos_token_id,
            "pad_token_id": text.pad_token_id,
        },
        vision_config=QWEN25_VL_3B_VISION,
        image_token_id=tiny.image_token_id,
        video_token_id=tiny.video_token_id,
        vision_start_token_id=tiny.vision_start_token_id,
        vision_end_token_id=tiny.vision_end_token_id,
        tie_word_embeddings=True,
    )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # initialise in bf16 on the device: no 15 GB float32 copy on the host
    try:
        with torch.device(device):
            model = Qwen2_5_VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.eos_token_id = text.eos_token_id
    model.generation_config.pad_token_id = text.pad_token_id
    return model


def peak_memory_gib(cuda: bool) -> float:
    if cuda:
        return torch.cuda.max_memory_allocated() / 2**30
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**30


def run(args: argparse.Namespace) -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    tiny_path = build_tiny_vlm()
    processor = load_processing_class(tiny_path)
    try:
        import vllm  # noqa: F401

        use_vllm = cuda
    except ImportError:
        use_vllm = False
    work = Path(tempfile.mkdtemp(prefix="gpu-preset-"))
    if cuda:
        model = qwen25_vl_3b_shaped(tiny_path)
        model_name = "random Qwen2.5-VL-3B-shaped (bf16)"
    else:
        from agents.hf_policy import load_pretrained

        model, _, _ = load_pretrained(tiny_path)
        model_name = "tiny VLM (float32)"
    model_path = None
    if use_vllm:  # vLLM loads weights from a folder
        model_path = str(work / "model")
        model.save_pretrained(model_path)
        processor.save_pretrained(model_path)
    overrides = {
        "output_dir": str(work / "run"),
        "model_path": model_path,
        "use_vllm": use_vllm,
        "bf16": cuda,
        "use_cpu": not cuda,
        "dataset": "sample",
        "search": "sample",
        "warm_start_epochs": 0,
        "max_steps": args.steps,
        "per_device_train_batch_size": args.batch,
        "num_generations": args.num_generations,
        "gradient_accumulation_steps": 1,
        "max_turn_tokens": args.max_turn_tokens,
        "max_completion_length": args.max_completion_length,
        "save_strategy": "no",
        "report_to": [],
        "metrics_plot": False,
        "seed": 0,
    }
    config = MMSearchGRPOConfig(**preset_settings("gpu", **overrides))
    timer = StepTimer()
    trainer = build_trainer(config, model=model, processor=processor, callbacks=[timer])
    meter = GenerateMeter(model.generation_config.pad_token_id)
    meter.wrap(getattr(trainer, "llm", None) if use_vllm else model)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    steps = timer.times[1:] if len(timer.times) > 1 else timer.times
    preset = preset_settings("gpu")
    return {
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({platform.machine()})",
        "device_kind": device,
        "model": model_name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "generation": "vLLM (colocate)" if use_vllm else "transformers generate (vLLM not importable)",
        "steps": len(timer.times),
        "batch": args.batch,
        "num_generations": args.num_generations,
        "max_turn_tokens": args.max_turn_tokens,
        "max_completion_length": args.max_completion_length,
        "preset_trimmed": {
            k: preset[k] for k in ("per_device_train_batch_size", "gradient_accumulation_steps", "max_turn_tokens")
        },
        "generated_tokens": meter.tokens,
        "generate_seconds": round(meter.seconds, 3),
        "rollout_tokens_per_s": meter.tokens / meter.seconds if meter.seconds else math.nan,
        "step_time_s": statistics.median(steps) if steps else math.nan,
        "step_times_s": [round(t, 3) for t in timer.times],
        "peak_memory_gib": peak_memory_gib(cuda),
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if cuda else "peak RSS",
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def write(result: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"gpu_preset_{result['device_kind']}"
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    lines = [
        f"# GPU preset readiness check ({result['device_kind']})",
        "",
        f"Device: {result['device']}. Model: {result['model']}, {result['parameters']:,} parameters. "
        f"Generation: {result['generation']}.",
        f"{result['steps']} GRPO steps of {result['batch']} rollouts ({result['num_generations']} per question), "
        f"turns ≤ {result['max_turn_tokens']} tokens, completions ≤ {result['max_completion_length']} tokens.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| rollout tokens/s | {result['rollout_tokens_per_s']:.1f} |",
        f"| step time (s, median) | {result['step_time_s']:.2f} |",
        f"| peak memory (GiB, {result['peak_memory_kind']}) | {result['peak_memory_gib']:.2f} |",
        "",
        "Command: `python benchmarks/gpu_preset.py` (see its docstring for the GPU machine's TRL wheel).",
    ]
    (out_dir / f"{name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out_dir / f"{name}.json"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cuda = torch.cuda.is_available()
    parser.add_argument("--steps", type=int, default=3 if cuda else 2, help="GRPO steps (optimizer steps).")
    parser.add_argument("--batch", type=int, default=8, help="Rollouts per step (the preset's batch).")
    parser.add_argument("--num_generations", type=int, default=8, help="Rollouts per question.")
    parser.add_argument("--max_turn_tokens", type=int, default=256 if cuda else 32, help="Tokens per turn.")
    parser.add_argument("--max_completion_length", type=int, default=1024 if cuda else 512)
    parser.add_argument("--out", type=Path, default=RESULTS, help="Folder for gpu_preset_<device>.{json,md}.")
    args = parser.parse_args(argv)
    result = run(args)
    write(result, args.out)
    print(json.dumps({k: result[k] for k in ("device", "generation", *METRICS)}, indent=2))
    return result


if __name__ == "__main__":
    main()
