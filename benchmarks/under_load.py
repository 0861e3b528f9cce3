"""Measure the CPU training preset quiet and under a reproducible background CPU load.

    python benchmarks/under_load.py            # the CPU training preset: python examples/train_grpo.py --preset cpu
    python benchmarks/under_load.py --quick    # the same job cut short (10 GRPO steps, 5 warm-start epochs)

Each case runs the job as a fresh process and records its wall time and CPU time (user + system, from
``wait4``). "quiet": nothing else started by the benchmark. "2-process load": two Python busy loops,
started just before the job and stopped just after it (each also stops by itself after ``--max-load-s``
so an interrupted benchmark leaves nothing running): a reproducible stand-in for a machine shared with
other work. Before the job, the benchmark also times a 2-thread torch loop (small matmuls, the tiny
VLM's kind of work) under the same load with OpenMP's default wait policy (spinning) and with
``OMP_WAIT_POLICY=PASSIVE``, which ``import agents`` sets: the mechanism behind the job's numbers.

Writes ``benchmarks/results/under_load.{json,md}`` with the machine's core count and load average
before each case: on a machine shared with jobs the benchmark did not start, "quiet" is not quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
QUICK = ["--max_steps", "10", "--warm_start_epochs", "5", "--eval_episodes", "8"]
BUSY_LOOP = "import time, sys\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"
TORCH_LOOP = (
    "import torch\ntorch.manual_seed(0)\na = torch.randn(64, 256)\nw = torch.randn(256, 256, requires_grad=True)\n"
    "for _ in range(2000):\n    (a @ w).relu().sum().backward()\n"
)


def run_timed(argv: list[str], env: dict[str, str], log: Path) -> dict[str, float]:
    """Run ``argv`` to completion; its wall time and CPU time (its own and its children's)."""
    started = time.perf_counter()
    with log.open("w") as out:
        child = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({child.returncode}); see {log}")
    return {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2)}


class Load:
    """``n`` busy-loop processes for the duration of a ``with`` block (each exits by itself after ``max_s``)."""

    def __init__(self, n: int, max_s: float) -> None:
        self.n, self.max_s = n, max_s
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Load:
        self.procs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(self.max_s)]) for _ in range(self.n)]
        return self

    def __exit__(self, *exc: Any) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=30)


def case(name: str, argv: list[str], env: dict[str, str], load: int, max_load_s: float, logs: Path) -> dict[str, Any]:
    before = os.getloadavg()[0]
    log = logs / f"{name}.log"
    print(f"[{time.strftime('%H:%M:%S')}] {name}: load average {before:.1f}; progress with ETA in {log}", flush=True)
    if load:
        with Load(load, max_load_s):
            timing = run_timed(argv, env, log)
    else:
        timing = run_timed(argv, env, log)
    print(f"    {timing['wall_s']:.1f} s wall, {timing['cpu_s']:.1f} s CPU", flush=True)
    return {"case": name, "background_processes": load, "load_average_before": round(before, 2), **timing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="the CPU preset cut short: " + " ".join(QUICK))
    parser.add_argument("--max-load-s", type=float, default=1800, help="each load process stops by itself after this")
    args = parser.parse_args()

    logs = Path(tempfile.mkdtemp(prefix="under_load-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    job = [sys.executable, "examples/train_grpo.py", "--preset", "cpu", "--report_to", "none"]
    job += QUICK if args.quick else []
    rows: list[dict[str, Any]] = []
    # ---- the mechanism: a 2-thread torch loop under load, spinning vs passive OpenMP workers ---------------
    torch_loop = [sys.executable, "-c", TORCH_LOOP]
    bare = {k: v for k, v in env.items() if k != "OMP_WAIT_POLICY"}
    for name, extra in (
        ("torch loop, default wait policy", {}),
        ("torch loop, OMP_WAIT_POLICY=PASSIVE", {"OMP_WAIT_POLICY": "PASSIVE"}),
    ):
        rows.append(case(name, torch_loop, {**bare, **extra, "OMP_NUM_THREADS": "2"}, 2, args.max_load_s, logs))
    # ---- the CPU preset, quiet and under load (each in a fresh output folder) ------------------------------------
    for name, load in (("CPU preset, quiet", 0), ("CPU preset, 2-process load", 2)):
        out = logs / name.replace(" ", "_").replace(",", "")
        rows.append(case(name, [*job, "--output_dir", str(out)], env, load, args.max_load_s, logs))

    quiet, loaded = rows[-2], rows[-1]
    ratios = {"wall": round(loaded["wall_s"] / quiet["wall_s"], 2), "cpu": round(loaded["cpu_s"] / quiet["cpu_s"], 2)}
    meta = {
        "command": "python examples/train_grpo.py --preset cpu" + (" " + " ".join(QUICK) if args.quick else ""),
        "quick": args.quick,
        "cores": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
        "load_ratio": ratios,
        "logs": str(logs),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "under_load.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    lines = [
        "# The CPU training preset under a 2-process background load",
        "",
        f"`python benchmarks/under_load.py{' --quick' if args.quick else ''}` on {meta['cores']} cores "
        f"({meta['machine']}, Python {meta['python']}), {meta['date']}. Job: `{meta['command']}`. Load: two Python "
        "busy loops for the duration of the case. The load average is the machine's before each case: "
        "anything above 0 was other work the benchmark did not start.",
        "",
        "| case | background processes | load average before | wall s | CPU s |",
        "|---|---|---|---|---|",
        *(
            f"| {r['case']} | {r['background_processes']} | {r['load_average_before']} | {r['wall_s']} | {r['cpu_s']} |"
            for r in rows
        ),
        "",
        f"CPU preset under load / quiet: **{ratios['wall']}× wall time, {ratios['cpu']}× CPU time**.",
    ]
    (RESULTS / "under_load.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
