"""Console output of long runs: progress (a tqdm bar on a terminal, a logged line with an ETA
elsewhere) and :func:`quiet_dependencies` for what our dependencies print on their own account.

A tqdm bar redraws itself with carriage returns, which turn a log file into one unreadable line; a run
whose stderr goes to a file (CI, ``nohup``, a job scheduler) gets instead a line on stderr every
``interval`` seconds and one at the end, each with the count, the rate and the time left. Like a bar,
these lines are a display, not log records: they appear whether or not logging is configured. A
notebook (ipykernel loaded) keeps tqdm's widget.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from typing import Any

from tqdm.auto import tqdm

__all__ = ["LineProgress", "format_duration", "progress_bar", "quiet_dependencies"]


def format_duration(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour.

    >>> format_duration(54), format_duration(3725)
    ('0:54', '1:02:05')
    """
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else f"{minutes}:{seconds:02d}"


class LineProgress:
    """The part of tqdm's interface the project uses (``update``, ``set_postfix``, ``close``, ``n``),
    written as log lines: ``desc: 40/160 episodes · acc=0.50 · 2.1/s · ETA 0:57``.

    >>> bar = LineProgress(total=4, desc="demo", interval=3600)
    >>> bar.update(2); bar.n
    2
    >>> bar.line().startswith("demo: 2/4")
    True
    """

    def __init__(
        self, total: int | None, desc: str = "", *, initial: int = 0, unit: str = "it", interval: float = 30.0
    ) -> None:
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.n = self.start_n = initial
        self.started = self.last = time.monotonic()
        self.postfix = ""
        self.closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._emit()

    def _emit(self) -> None:
        sys.stderr.write(self.line() + "\n")
        sys.stderr.flush()

    def refresh(self) -> None:
        """Nothing to redraw: lines are written as the count moves (tqdm's interface)."""

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        values = {**dict(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def line(self) -> str:
        """The current state as one line."""
        elapsed = time.monotonic() - self.started
        done = self.n - self.start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: {self.n}/{self.total if self.total is not None else '?'} {self.unit}"]
        if self.postfix:
            parts.append(self.postfix)
        parts.append(f"{rate:.2f}/s" if rate < 10 else f"{rate:.0f}/s")
        if self.total is not None and rate > 0 and self.n < self.total:
            parts.append(f"ETA {format_duration((self.total - self.n) / rate)}")
        else:
            parts.append(f"{format_duration(elapsed)} elapsed")
        return " · ".join(parts)

    def close(self) -> None:
        if not self.closed and self.n > self.start_n:
            self._emit()
        self.closed = True


def progress_bar(
    total: int | None, desc: str, *, enabled: bool = True, initial: int = 0, unit: str = "it", leave: bool = False
) -> Any:
    """A tqdm bar on a terminal or in a notebook, else a :class:`LineProgress`; a disabled bar when not ``enabled``."""
    if not enabled:
        return tqdm(total=total, disable=True)
    if sys.stderr.isatty() or "ipykernel" in sys.modules:
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave)
    return LineProgress(total, desc, initial=initial, unit=unit)


def quiet_dependencies() -> None:
    """Quiet what our dependencies print on their own account (an entry point's job, not a library's).

    * peft and TRL call ``model.is_gradient_checkpointing`` (every adapter load and checkpoint save) and
      ``gradient_checkpointing_enable`` / ``_disable`` (GPU preset), which transformers 5 deprecates with
      a ``FutureWarning``; no setting of ours causes or avoids it (ours use ``activation_checkpointing``).
    * Hugging Face's own bars ("Loading weights", "Writing model shards") only on a terminal: in a log
      file their carriage returns make one unreadable line.
    """
    warnings.filterwarnings(
        "ignore", message=r"`(is_)?gradient_checkpointing(_enable|_disable)?` is deprecated", category=FutureWarning
    )
    if not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        transformers = sys.modules.get("transformers")
        if transformers is not None:
            transformers.utils.logging.disable_progress_bar()
