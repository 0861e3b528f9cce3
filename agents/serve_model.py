"""A small OpenAI-compatible chat server for a local Hugging Face model: ``mmsearch serve-model PATH``.

For machines without vLLM (a CPU, a test run): ``POST /v1/chat/completions`` in the OpenAI wire format
(``model``, ``messages`` with string or text-part content, ``max_tokens`` / ``max_completion_tokens``,
``temperature``, ``top_p``, ``stop``, ``seed``), answered by ``transformers`` ``generate`` with the
model's own chat template, one request at a time. The reply carries ``finish_reason`` (``"length"``: cut
at ``max_tokens``; ``"stop"``: an end-of-turn token or a stop string) and ``usage``. ``GET /v1/models``
lists the model; ``GET /health`` also counts the requests served and cancelled.

A request whose client disconnects (it timed out and closed the connection) is cancelled: dropped if
still queued, stopped at the next token if generating, so an abandoned request does not hold the
model. Text-only models answer image parts with HTTP 400 (run the evaluation in text-only mode:
``--image-position none``). Needs the ``serve`` and ``train`` extras (fastapi, uvicorn, torch, transformers).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.added_tokens import repair_added_token_decoding
from agents.model_check import check_model_folder
from mmsearch_env.errors import ConfigError

__all__ = ["ChatJob", "ModelServer", "add_serve_model_arguments", "build_app", "serve_model_main"]

logger = logging.getLogger(__name__)


class RequestError(ValueError):
    """A request the server refuses (HTTP 400), with the OpenAI error message."""


@dataclass
class ChatJob:
    """One chat-completions request: the rendered conversation and its sampling settings."""

    messages: list[dict[str, str]]
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)


def _text_of(content: Any, *, reads_images: bool) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RequestError("message content must be a string or a list of content parts")
    texts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(str(part.get("text", "")))
        elif kind == "image_url" and not reads_images:
            raise RequestError(
                "this model is text-only and cannot read image parts; send text only "
                "(mmsearch eval --image-position none)"
            )
        else:
            raise RequestError(f"unsupported content part type {kind!r}")
    return "".join(texts)


def parse_request(body: Any, *, reads_images: bool = False) -> ChatJob:
    """A :class:`ChatJob` from a chat-completions JSON body; raises :class:`RequestError` for a bad one."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
        raise RequestError("the body must be a JSON object with a non-empty 'messages' list")
    messages = []
    for message in body["messages"]:
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant", "tool"):
            raise RequestError("each message needs a role: system, user, assistant or tool")
        role = "user" if message["role"] == "tool" else message["role"]
        messages.append({"role": role, "content": _text_of(message.get("content", ""), reads_images=reads_images)})
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    max_tokens = 256 if max_tokens is None else max_tokens
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else list(stop)
    if body.get("n", 1) != 1:
        raise RequestError("only n=1 is supported")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise RequestError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
    temperature = body.get("temperature")
    return ChatJob(
        messages=messages,
        max_tokens=max_tokens,
        temperature=1.0 if temperature is None else float(temperature),
        top_p=None if body.get("top_p") is None else float(body["top_p"]),
        stop=[s for s in stop if isinstance(s, str) and s],
        seed=body.get("seed"),
    )


class ModelServer:
    """The model and its tokenizer, generating one :class:`ChatJob` at a time (thread-safe)."""

    def __init__(self, model_path: str | os.PathLike[str], *, name: str | None = None, device: str = "cpu"):
        info = check_model_folder(model_path)  # before loading: a base model without template fails here
        if info.is_vlm:
            raise ConfigError(
                f"{str(model_path)!r} is a vision-language model; serve it with vLLM (`vllm serve`), this "
                "server runs text-only models"
            )
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.name = name or Path(model_path).name
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        repair_added_token_decoding(self.tokenizer)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype="float32").to(device).eval()
        self.device = device
        ids = self.model.generation_config.eos_token_id
        self.stop_ids = {int(i) for i in ([ids] if isinstance(ids, int) else list(ids or []))}
        if self.tokenizer.eos_token_id is not None:
            self.stop_ids.add(int(self.tokenizer.eos_token_id))
        self.served = 0
        self.cancelled = 0
        self.lock = threading.Lock()

    def generate(self, job: ChatJob) -> dict[str, Any]:
        """The ``choices[0]`` and ``usage`` of a reply; ``{"cancelled": True}`` when the job was cancelled."""
        from transformers import StoppingCriteria, StoppingCriteriaList

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                return job.cancelled.is_set()

        with self.lock:
            if job.cancelled.is_set():
                self.cancelled += 1
                return {"cancelled": True}
            inputs = self.tokenizer.apply_chat_template(
                job.messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
            )
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            sample = job.temperature > 0
            if sample and job.seed is not None:
                self.torch.manual_seed(int(job.seed))
            with self.torch.no_grad():
                output = self.model.generate(
                    **inputs,
                    max_new_tokens=job.max_tokens,
                    do_sample=sample,
                    temperature=job.temperature if sample else None,
                    top_p=job.top_p if sample else None,
                    top_k=None,
                    stopping_criteria=StoppingCriteriaList([_Cancelled()]),
                    stop_strings=job.stop or None,
                    tokenizer=self.tokenizer if job.stop else None,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            if job.cancelled.is_set():
                self.cancelled += 1
                return {"cancelled": True}
            self.served += 1
        new = output[0, inputs["input_ids"].shape[1] :].tolist()
        ended = next((k for k, token in enumerate(new) if token in self.stop_ids), None)
        kept = new if ended is None else new[:ended]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        reason = "stop" if ended is not None else ("length" if len(new) >= job.max_tokens else "stop")
        for stop in job.stop:  # the OpenAI API leaves the stop string out
            if stop in text:
                text, reason = text[: text.index(stop)], "stop"
        prompt_tokens = int(inputs["input_ids"].shape[1])
        completion_tokens = len(new) if ended is None else ended + 1
        return {
            "choice": {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason},
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


def _error(status: int, message: str, kind: str = "invalid_request_error") -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}}, status)


def build_app(server: ModelServer) -> Any:
    """The FastAPI app serving ``server`` (one generation thread)."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI(title=f"mmsearch serve-model: {server.name}")
    worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="serve-model")

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"model": server.name, "served": server.served, "cancelled": server.cancelled}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": server.name, "object": "model", "owned_by": "local"}]}

    # A plain Starlette route: the handler takes the raw request (whose disconnect it watches).
    async def chat(request: Any) -> Any:
        try:
            job = parse_request(await request.json())
        except (RequestError, ValueError) as exc:
            return _error(400, str(exc))
        future = asyncio.get_running_loop().run_in_executor(worker, server.generate, job)
        while not future.done():
            done, _ = await asyncio.wait({future}, timeout=0.1)
            if not done and await request.is_disconnected():
                job.cancelled.set()  # the client gave up: stop generating for nobody
                logger.info("client disconnected: request cancelled")
                break
        result = await future
        if result.get("cancelled"):
            return _error(499, "the client closed the connection; request cancelled", "cancelled")
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": server.name,
                "choices": [result["choice"]],
                "usage": result["usage"],
            }
        )

    app.add_route("/v1/chat/completions", chat, methods=["POST"])
    return app


def add_serve_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_path", help="local Hugging Face model folder (a text-only chat model)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--name", default=None, help="model name clients send (default: the folder's name)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def serve_model_main(args: argparse.Namespace) -> int:
    """Load the model and serve it until interrupted."""
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("serve-model needs uvicorn and fastapi: pip install 'mmsearch-env[serve]'") from None
    server = ModelServer(args.model_path, name=args.name, device=args.device)
    logger.info("serving %s at http://%s:%d/v1", server.name, args.host, args.port)
    uvicorn.run(build_app(server), host=args.host, port=args.port, log_level="warning")
    return 0
