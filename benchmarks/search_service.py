"""Measure the search cache and the search service: lookup latency, hit ratio, throughput on loopback.

    python benchmarks/search_service.py             # writes benchmarks/results/search_service.{json,md}
    python benchmarks/search_service.py --requests 400 --clients 1 4 16

1. Cached lookup latency: every sample question's image search and text query is recorded once, then
   looked up again from SQLite and from Redis (a throwaway ``redis-server`` on a free loopback port);
   the uncached sample engine is timed on the same requests for reference.
2. Hit ratio of a GRPO-shaped workload: ``rollouts`` rollouts per question (the oracle search plan) over
   ``epochs`` epochs through a read-through cache.
3. Service throughput: ``mmsearch serve`` (sample engine, warm SQLite cache) in its own process, and N
   client threads in this one, each sending a mix of image and text searches through
   :class:`~mmsearch_env.search.service.ServiceSearch`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # measure this checkout's code, not another installed copy

from mmsearch_env.data.sample import sample_examples  # noqa: E402
from mmsearch_env.search import ImageSearchRequest, TextSearchRequest, make_search  # noqa: E402
from mmsearch_env.search.cache import CachedSearch  # noqa: E402
from mmsearch_env.search.service import ServiceSearch  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50_ms": 1000 * pick(0.5), "p90_ms": 1000 * pick(0.9), "p99_ms": 1000 * pick(0.99)}


def workload() -> list[tuple[str, object]]:
    calls: list[tuple[str, object]] = []
    for example in sample_examples(None):
        calls.append(("image_search", ImageSearchRequest(image=example.image, example_id=example.id)))
        query = example.metadata.get("text_query")
        if query:
            calls.append(("text_search", TextSearchRequest(query=query, question=example.question)))
    return calls


def time_calls(backend, calls, repeats: int, desc: str) -> dict[str, dict[str, float]]:
    by_tool: dict[str, list[float]] = {"image_search": [], "text_search": []}
    for _ in tqdm(range(repeats), desc=desc, leave=False):
        for tool, request in calls:
            started = time.perf_counter()
            response = getattr(backend, tool)(request)
            by_tool[tool].append(time.perf_counter() - started)
            assert response.ok
    return {tool: percentiles(samples) for tool, samples in by_tool.items()}


def start_redis() -> tuple[subprocess.Popen | None, str | None]:
    binary = shutil.which("redis-server")
    if binary is None:
        return None, None
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            return process, f"redis://127.0.0.1:{port}/0"
        except redis.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not start")


def lookup_latency(repeats: int, tmp: Path) -> list[dict]:
    sample = make_search("sample")
    calls = workload()
    rows = [{"store": "none (sample engine)", **_flatten(time_calls(sample, calls, repeats, "uncached"))}]
    redis_process, redis_url = start_redis()
    try:
        stores = [("SQLite", str(tmp / "bench.sqlite"))] + ([("Redis", redis_url)] if redis_url else [])
        for label, spec in stores:
            cached = CachedSearch(sample, spec)
            time_calls(cached, calls, 1, f"record {label}")
            rows.append({"store": label, **_flatten(time_calls(cached, calls, repeats, f"hit {label}"))})
            assert cached.stats.backend_calls == len(calls), "lookups must all be hits"
            cached.store.close()
    finally:
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait(timeout=10)
    return rows


def _flatten(result: dict[str, dict[str, float]]) -> dict[str, float]:
    return {f"{tool}_{k}": v for tool, values in result.items() for k, v in values.items()}


def hit_ratio(rollouts: int, epochs: int, tmp: Path) -> dict:
    import gymnasium as gym

    import mmsearch_env  # noqa: F401
    from agents.scripted import OraclePolicy

    cached = CachedSearch(make_search("sample"), str(tmp / "ratio.sqlite"), backend_name="sample")
    env = gym.make("MMSearch-v0", split=None, search=cached)
    policy = OraclePolicy(env.unwrapped.examples)
    n = len(env.unwrapped.examples)
    bar = tqdm(total=epochs * n * rollouts, desc="GRPO-shaped workload", leave=False)
    for _epoch in range(epochs):
        for index in range(n):
            for _ in range(rollouts):
                observation, info = env.reset(options={"index": index})
                while True:
                    observation, _, terminated, truncated, info = env.step(policy.act(observation, info))
                    if terminated or truncated:
                        break
                bar.update(1)
    bar.close()
    env.close()
    return {"rollouts_per_question": rollouts, "epochs": epochs, "questions": n, **cached.stats.as_dict()}


def service_throughput(clients: list[int], requests_per_client: int, tmp: Path) -> tuple[list[dict], dict]:
    port = free_port()
    token = "benchmark-token"
    env = {**os.environ, "MMSEARCH_SERVICE_TOKEN": token, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agents.cli",
            "serve",
            "--port",
            str(port),
            "--cache",
            str(tmp / "svc.sqlite"),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        for _ in range(300):
            try:
                if requests.get(f"{url}/health", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        calls = workload()
        warm = ServiceSearch(url, token=token)
        for tool, request in tqdm(calls, desc="warm service cache", leave=False):
            getattr(warm, tool)(request)
        for n_clients in clients:
            latencies: list[float] = []
            lock = threading.Lock()
            errors = []

            def client(seed: int, latencies=latencies, lock=lock, errors=errors, n=requests_per_client) -> None:
                search = ServiceSearch(url, token=token)
                mine = []
                for i in range(n):
                    tool, request = calls[(seed * 7 + i) % len(calls)]
                    started = time.perf_counter()
                    try:
                        getattr(search, tool)(request)
                    except Exception as exc:  # counted, not fatal: throughput under load
                        errors.append(repr(exc))
                    mine.append(time.perf_counter() - started)
                with lock:
                    latencies.extend(mine)

            threads = [threading.Thread(target=client, args=(seed,)) for seed in range(n_clients)]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
            rows.append(
                {
                    "clients": n_clients,
                    "requests": len(latencies),
                    "errors": len(errors),
                    "requests_per_s": len(latencies) / elapsed,
                    **percentiles(latencies),
                }
            )
        metrics = warm.metrics()
    finally:
        server.terminate()
        server.wait(timeout=15)
    return rows, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="lookups of each cached request")
    parser.add_argument("--rollouts", type=int, default=8, help="rollouts per question (GRPO group size)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=200, help="requests per client thread")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        lookups = lookup_latency(args.repeats, tmp)
        ratio = hit_ratio(args.rollouts, args.epochs, tmp)
        throughput, metrics = service_throughput(args.clients, args.requests, tmp)
    result = {
        "command": "python benchmarks/search_service.py " + " ".join(sys.argv[1:]),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "lookup_latency": lookups,
        "hit_ratio": ratio,
        "service_throughput": throughput,
        "service_metrics": metrics,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "search_service.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Search cache and service",
        "",
        f"`{result['command'].strip()}` · Python {result['python']} · {result['machine']} · {result['cpus']} CPUs",
        "",
        "## Cached lookup latency (sample engine requests; hits only)",
        "",
        "| store | image p50 (ms) | image p99 (ms) | text p50 (ms) | text p99 (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in lookups:
        lines.append(
            f"| {row['store']} | {row['image_search_p50_ms']:.3f} | {row['image_search_p99_ms']:.3f} | "
            f"{row['text_search_p50_ms']:.3f} | {row['text_search_p99_ms']:.3f} |"
        )
    lines += [
        "",
        f"## Hit ratio: {ratio['rollouts_per_question']} rollouts × {ratio['questions']} questions × "
        f"{ratio['epochs']} epochs (oracle search plan, read-through SQLite)",
        "",
        f"hits {ratio['hits']} · misses {ratio['misses']} · hit ratio **{ratio['hit_ratio']:.3f}** "
        f"(backend called {ratio['backend_calls']} times)",
        "",
        "## Service throughput (`mmsearch serve`, warm cache, loopback, clients in another process)",
        "",
        "| clients | requests | errors | requests/s | p50 (ms) | p90 (ms) | p99 (ms) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in throughput:
        lines.append(
            f"| {row['clients']} | {row['requests']} | {row['errors']} | {row['requests_per_s']:.0f} | "
            f"{row['p50_ms']:.2f} | {row['p90_ms']:.2f} | {row['p99_ms']:.2f} |"
        )
    (RESULTS / "search_service.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
