"""Real model folders and a real `mmsearch serve-model` process for tests (127.0.0.1 only)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests
from search_servers import free_port

ROOT = Path(__file__).resolve().parents[1]


def tiny_llm(out: Path, tokenizer_from: Path) -> Path:
    """A tiny random text-only Qwen2 LLM with the tiny VLM's tokenizer (and chat template)."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_from)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
            pad_token_id=tok.pad_token_id,
        )
    )
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@contextlib.contextmanager
def serve_model(path: Path, *, name: str = "local", startup_s: float = 600) -> Iterator[str]:
    """Run `mmsearch serve-model PATH` in a child process; yields the base URL (``.../v1``)."""
    port = free_port()
    command = [sys.executable, "-m", "agents.cli", "serve-model", str(path), "--port", str(port), "--name", name]
    with server_process(command, port, startup_s=startup_s) as url:
        yield url


@contextlib.contextmanager
def transformers_serve(path: Path, *, startup_s: float = 600) -> Iterator[str]:
    """Run `transformers serve PATH` (offline) in a child process; the model's name is ``str(path)``."""
    port = free_port()
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(path), "--port", str(port)]
    with server_process(command, port, startup_s=startup_s, env={"HF_HUB_OFFLINE": "1"}) as url:
        yield url


@contextlib.contextmanager
def server_process(
    command: list[str], port: int, *, startup_s: float = 600, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Run an OpenAI-compatible server ``command`` listening on ``port``; yields its base URL once healthy."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    # a file, not a pipe: a chatty server would block once an unread pipe filled up
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + startup_s
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"{command[2:4]} exited with {process.returncode}: {log.read()[-2000:]}")
                with contextlib.suppress(requests.RequestException):
                    if requests.get(f"{url}/health", timeout=2).ok:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{command[2:4]} did not start")
                time.sleep(0.2)
            yield f"{url}/v1"
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
