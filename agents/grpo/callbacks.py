"""Run logs: ``metrics.jsonl`` / ``metrics.csv`` per logged step and ``metrics.png`` at the end."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

from mmsearch_env.errors import ConfigError

__all__ = ["MetricsLogger", "plot_metrics"]


_CSV_KEYS = (
    "step",
    "reward",
    "mmsearch/accuracy",
    "mmsearch/format",
    "mmsearch/search_ratio",
    "mmsearch/image_search_ratio",
    "mmsearch/text_search_ratio",
    "mmsearch/searches",
    "mmsearch/tool_failures",
    "completions/mean_length",
    "tools/call_frequency",
    "tools/failure_frequency",
    "kl",
    "loss",
)


def _make_metrics_logger_class() -> type:
    from transformers import TrainerCallback

    class _MetricsLogger(TrainerCallback):
        """Appends each training log to ``metrics.jsonl`` and ``metrics.csv``; plots them at the end."""

        def __init__(self, output_dir: str | os.PathLike[str], plot: bool = True) -> None:
            self.dir = Path(output_dir)
            self.plot = plot

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any):
            if not logs or "reward" not in logs or not state.is_world_process_zero:
                return
            row = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
            self.dir.mkdir(parents=True, exist_ok=True)
            with (self.dir / "metrics.jsonl").open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            csv_path = self.dir / "metrics.csv"
            new = not csv_path.exists()
            with csv_path.open("a", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=list(_CSV_KEYS), extrasaction="ignore")
                if new:
                    writer.writeheader()
                writer.writerow({k: row.get(k, "") for k in _CSV_KEYS})

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any):
            if self.plot and state.is_world_process_zero and (self.dir / "metrics.jsonl").exists():
                plot_metrics(self.dir / "metrics.jsonl", self.dir / "metrics.png")

    return _MetricsLogger


def MetricsLogger(output_dir: str | os.PathLike[str], plot: bool = True) -> Any:
    """A ``TrainerCallback`` writing ``metrics.jsonl`` / ``metrics.csv`` per step and ``metrics.png`` at the end."""
    return _make_metrics_logger_class()(output_dir, plot)


def plot_metrics(jsonl_path: str | os.PathLike[str], png_path: str | os.PathLike[str], smooth: int = 5) -> Path:
    """Plot reward, accuracy, format, search ratios and completion length per step (moving average)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(jsonl_path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise ConfigError(f"{jsonl_path} has no rows to plot")
    steps = [r["step"] for r in rows]

    def series(key: str) -> list[float]:
        values = [float(r.get(key, math.nan)) for r in rows]
        out = []
        for i in range(len(values)):
            window = [v for v in values[max(0, i - smooth + 1) : i + 1] if not math.isnan(v)]
            out.append(sum(window) / len(window) if window else math.nan)
        return out

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for key, label in (("reward", "reward"), ("mmsearch/accuracy", "accuracy"), ("mmsearch/format", "format")):
        axes[0].plot(steps, series(key), label=label)
    axes[0].set_title("reward and its parts")
    for key, label in (
        ("mmsearch/search_ratio", "any search"),
        ("mmsearch/image_search_ratio", "image search"),
        ("mmsearch/text_search_ratio", "text search"),
    ):
        axes[1].plot(steps, series(key), label=label)
    axes[1].set_title("search ratio (share of episodes)")
    axes[2].plot(steps, series("completions/mean_length"), label="model tokens / completion")
    axes[2].set_title("completion length")
    for ax in axes:
        ax.set_xlabel("GRPO step")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"MMSearch-v0 GRPO ({smooth}-step moving average)")
    fig.tight_layout()
    png = Path(png_path)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
