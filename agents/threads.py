"""CPU thread counts, sized once for the cores this process may actually use.

torch (OpenMP), BLAS (OpenBLAS / MKL) and onnxruntime each size their thread pools to the whole
machine, and OpenMP workers spin while they wait for work. On a machine shared with other jobs that
oversubscribes the cores: a waiting thread burns CPU while the one it waits for is descheduled (a run
on a loaded 2-core machine used 4.8× the CPU time of the same run on an idle one). So:

* ``import agents`` sets ``OMP_WAIT_POLICY=PASSIVE`` (unless already set) through
  :func:`passive_waiting`: OpenMP reads it once, when torch loads, and waiting threads then sleep.
  It trades a little wake-up latency per parallel region on an idle machine for not burning the
  CPU of a busy one. The package import does it because an entry point that imports torch first
  would be too late.
* :func:`configure_threads`, called by the entry points (``mmsearch``, the examples, the
  experiment), sizes every pool to :func:`available_cores` — the CPU affinity mask and the cgroup
  CPU quota, not the machine's core count — and uses one inter-op thread. Libraries not loaded yet
  get it through ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` / ``MKL_NUM_THREADS``; loaded ones
  through torch's setters and ``threadpoolctl``. A count the user set in ``OMP_NUM_THREADS`` wins.

The image network's onnxruntime sessions run one thread without spinning
(:class:`mmsearch_env.corpus.features.ImageEncoder`), and corpus search pins BLAS to one thread per
call: many envs run side by side, and each search is small.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from pathlib import Path

from threadpoolctl import threadpool_limits

__all__ = ["available_cores", "cgroup_cpu_limit", "configure_threads", "passive_waiting"]

logger = logging.getLogger(__name__)

_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_configured: int | None = None


def passive_waiting() -> None:
    """Let OpenMP threads sleep instead of spin while waiting (``OMP_WAIT_POLICY=PASSIVE``, unless set).

    Only takes effect for an OpenMP runtime loaded after the call (torch loads it on import).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def cgroup_cpu_limit(root: str | os.PathLike[str] = "/sys/fs/cgroup") -> float | None:
    """The CPU quota of this process's cgroup in cores (e.g. 1.5), or ``None`` when there is none.

    Reads cgroup v2 ``cpu.max`` (``"QUOTA PERIOD"`` or ``"max PERIOD"``), else cgroup v1
    ``cpu/cpu.cfs_quota_us`` and ``cpu.cfs_period_us`` (quota -1: none).

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "cpu.max").write_text("150000 100000\\n")
    >>> cgroup_cpu_limit(folder)
    1.5
    >>> _ = (folder / "cpu.max").write_text("max 100000\\n")
    >>> cgroup_cpu_limit(folder) is None
    True
    """
    root = Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity mask, capped by the cgroup quota (rounded
    up), at least 1. ``os.cpu_count()`` counts the machine's cores, which a container or ``taskset``
    may not grant."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, math.ceil(limit))
    return max(1, cores)


def _user_threads() -> int | None:
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def configure_threads(threads: int | None = None) -> int:
    """Size torch's, BLAS's and OpenMP's thread pools once for this process; returns the count.

    Args:
        threads: threads per pool when the user did not set ``OMP_NUM_THREADS`` (a count set there
            always wins, so a caller's default never overrides the user); ``None``:
            :func:`available_cores`.

    The first call decides; later calls return the same count and change nothing (a library
    function that calls it cannot undo the entry point's choice). Also sets
    :func:`passive_waiting`. torch is configured only if it is already imported; if not, the
    ``*_NUM_THREADS`` variables size it when it loads.
    """
    global _configured
    if _configured is not None:
        return _configured
    passive_waiting()
    count = _user_threads() or threads or available_cores()
    for name in _THREAD_ENV:
        os.environ.setdefault(name, str(count))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(count)
        # only allowed before the first inter-op task; after it the pool exists and stays
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(1)
    threadpool_limits(limits=count)
    _configured = count
    logger.info(
        "threads: %d per pool (%d cores available to this process, machine has %s); OMP_WAIT_POLICY=%s",
        count,
        available_cores(),
        os.cpu_count(),
        os.environ.get("OMP_WAIT_POLICY"),
    )
    return count


# OpenMP reads its wait policy once, when torch loads it: the package import is the last safe moment.
passive_waiting()
