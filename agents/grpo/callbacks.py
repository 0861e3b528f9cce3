"""Run logs: ``metrics.jsonl`` / ``metrics.csv`` per logged step, ``metrics.png`` at the end, and one
readable console line per logging step (:func:`readable_progress`) instead of the raw metrics dict."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from agents.progress import format_duration
from mmsearch_env.errors import ConfigError

__all__ = ["MetricsLogger", "format_log_line", "plot_metrics", "readable_progress"]

logger = logging.getLogger(__name__)


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


#: (log key, how the console line names it), in the line's order; keys a log lacks are left out.
_LINE_KEYS = (
    ("reward", "reward"),
    ("mmsearch/accuracy", "accuracy"),
    ("mmsearch/format", "format"),
    ("mmsearch/search_ratio", "searched"),
    ("loss", "loss"),
    ("mean_token_accuracy", "token accuracy"),
    ("kl", "kl"),
)


def format_log_line(label: str, step: int, max_steps: int, logs: dict[str, Any], seconds_per_step: float | None) -> str:
    """One console line for a trainer log: the step, the metrics that say how training goes, the pace.

    >>> format_log_line("GRPO", 3, 30, {"reward": 0.1743, "loss": 0.0123, "mmsearch/format": 1.0}, 2.0)
    'GRPO step 3/30 · reward 0.174 · format 1.000 · loss 0.0123 · 2.0 s/step · ETA 0:54'
    """
    parts = [f"{label} step {step}/{max_steps}"]
    for key, name in _LINE_KEYS:
        try:  # numbers, or the strings some transformers versions format them into
            value = float(logs[key])
        except (KeyError, TypeError, ValueError):
            continue
        parts.append(f"{name} {value:.4f}" if key in ("loss", "kl") else f"{name} {value:.3f}")
    if seconds_per_step is not None:
        parts.append(
            f"{seconds_per_step:.1f} s/step · ETA {format_duration(seconds_per_step * max(0, max_steps - step))}"
        )
    return " · ".join(parts)


def _make_progress_class() -> type:
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class _ReadableProgress(TrainerCallback):
        """Console output of a run: a line per ``every``-th log, a bar only when stderr is a terminal."""

        def __init__(self, label: str, every: int = 1) -> None:
            self.label, self.every = label, max(1, every)
            self.bar: Any = None
            self.start, self.first_step = 0.0, 0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any):
            self.start, self.first_step = time.monotonic(), state.global_step
            if state.is_world_process_zero and sys.stderr.isatty() and not args.disable_tqdm:
                self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=self.label, dynamic_ncols=True)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any):
            if not logs or not state.is_world_process_zero:
                return
            step = state.global_step
            done = step - self.first_step
            if "train_runtime" in logs:
                line = f"{self.label}: {step} steps in {format_duration(float(logs['train_runtime']))}"
            elif step % self.every == 0 or step in (1, state.max_steps):
                pace = (time.monotonic() - self.start) / done if done > 0 else None
                line = format_log_line(self.label, step, state.max_steps, logs, pace)
            else:
                return
            if self.bar is not None:
                self.bar.write(line)
            elif logger.isEnabledFor(logging.INFO):
                logger.info(line)
            else:  # logging not set up (a notebook, a script): the lines still show, as a bar would
                sys.stderr.write(line + "\n")

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return _ReadableProgress


def readable_progress(trainer: Any, label: str, every: int = 1) -> Any:
    """Replace ``trainer``'s console output (a tqdm bar that prints each raw metrics dict, or the dict
    alone) with one readable line per ``every``-th logging step (:func:`format_log_line`: above the
    bar, else to the ``agents.grpo.callbacks`` logger when it logs INFO, else to stderr) and a bar only
    when stderr is a terminal, so log files get no carriage returns. Returns ``trainer``."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(_make_progress_class()(label, every))
    return trainer


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
