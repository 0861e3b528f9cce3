"""Thread counts sized for the cores a process may use, and OpenMP waiting without spinning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents.threads import available_cores, cgroup_cpu_limit

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "200000 100000\n"}, 2.0),  # v2: two cores' worth
        ({"cpu.max": "50000 100000\n"}, 0.5),  # v2: half a core
        ({"cpu.max": "max 100000\n"}, None),  # v2: no quota
        ({"cpu/cpu.cfs_quota_us": "150000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1.5),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # v1: no quota
        ({}, None),  # no cgroup files at all
        ({"cpu.max": "garbage\n"}, None),  # unreadable: no limit rather than a crash
    ],
)
def test_cgroup_quota_in_cores(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpu_limit(tmp_path) == expected


def test_available_cores_follow_the_affinity_mask():
    assert 1 <= available_cores() <= len(os.sched_getaffinity(0))


def _run(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip()


def test_importing_agents_makes_openmp_wait_passively_unless_the_user_chose():
    code = "import os, agents; print(os.environ['OMP_WAIT_POLICY'])"
    assert _run(code) == "PASSIVE"
    assert _run(code, OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"


def test_configure_threads_sizes_torch_once_and_respects_omp_num_threads():
    pytest.importorskip("torch")
    code = (
        "import torch, agents.threads as t; n = t.configure_threads(); "
        "print(n, torch.get_num_threads(), t.configure_threads(5), torch.get_num_threads())"
    )
    n = available_cores()
    assert _run(code).split() == [str(n), str(n), str(n), str(n)]  # the first call decides
    assert _run(code, OMP_NUM_THREADS="1").split() == ["1", "1", "1", "1"]
    # the user's count also beats a caller's own default (the experiments ask for 2)
    explicit = "import torch, agents.threads as t; print(t.configure_threads(2), torch.get_num_threads())"
    assert _run(explicit, OMP_NUM_THREADS="1").split() == ["1", "1"]
