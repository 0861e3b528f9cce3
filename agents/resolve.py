"""Policies by name: the strings ``evaluate``, ``rollout``, ``curate`` and ``mmsearch eval --policy`` accept."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from agents import baselines
from agents.hf_policy import HFPolicy  # needs torch only when one is built
from agents.model_check import check_model_folder
from agents.openai_policy import OpenAIPolicy, parse_endpoint_spec
from agents.scripted import OraclePolicy
from mmsearch_env.errors import ConfigError, did_you_mean
from mmsearch_env.search.openai_chat import split_settings_query

__all__ = ["BASELINE_NAMES", "resolve_policy"]

#: Policy names ``resolve_policy`` knows, besides ``openai:MODEL@URL`` and ``hf:PATH``.
BASELINE_NAMES = ("direct", "rag", "random", "oracle")


def resolve_policy(
    spec: Any,
    *,
    examples: Sequence[Any] = (),
    protocol: Any = "tags",
    temperature: float | None = None,
    seed: int | None = None,
    generation: Mapping[str, Any] | None = None,
    concurrency: int | None = None,
    text_only: bool | None = None,
) -> Any:
    """A policy from a spec: a Policy object (returned as is) or one of these strings:

    ``direct``, ``rag``, ``random`` (``random:SEED``), ``oracle`` (needs ``examples``: the scripted
    plan of each question; ``oracle:box`` searches each question's true region, with ``image_crops``),
    ``openai:MODEL@BASE_URL[?SETTINGS]`` (key from ``$OPENAI_API_KEY``; settings
    as in :func:`agents.openai_policy.parse_endpoint_spec`), ``hf:PATH`` or ``hf:PATH@ADAPTER`` (a local
    transformers model, optional LoRA adapter; needs the ``train`` extra).

    ``temperature`` (``None``: the policy's default, greedy) applies to the model policies (``openai:``,
    ``hf:``); ``seed`` seeds an ``hf:`` policy's sampling. ``generation``: fields of
    :class:`~agents.openai_policy.GenerationSettings` (``None`` values: unchanged) that win over the
    spec's query; ``hf:`` takes ``max_tokens`` (as ``max_new_tokens``) and ``temperature``.
    ``concurrency``: requests in flight of an ``openai:`` policy when neither the spec nor ``generation``
    sets it. ``text_only``: the environment does not show the question's image (``image_position="none"``);
    an ``openai:`` policy then sends no images, and an ``hf:`` text-only model is refused unless it is
    set (checked before loading; ``None``: no check).
    """
    if not isinstance(spec, str):
        if not (hasattr(spec, "act_batch") and hasattr(spec, "name")):
            raise ConfigError(f"a policy must have 'name' and 'act_batch' (agents.policy.Policy), got {spec!r}")
        return spec
    if temperature is not None and (isinstance(temperature, bool) or temperature < 0):
        raise ConfigError(f"temperature must be >= 0, got {temperature!r}")
    sampling = {} if temperature is None else {"temperature": float(temperature)}
    kind, _, arg = spec.partition(":")
    if kind == "direct" and not arg:
        return baselines.DirectAnswerPolicy(protocol=protocol)
    if kind == "rag" and not arg:
        return baselines.RAGWorkflowPolicy(protocol=protocol)
    if kind == "random":
        if arg and not arg.isdigit():
            raise ConfigError(f"policy {spec!r}: the seed after 'random:' must be an integer, e.g. 'random:3'")
        return baselines.RandomPolicy(int(arg or 0), protocol=protocol)
    if kind == "oracle" and arg in ("", "box"):
        return OraclePolicy(examples, protocol=protocol, use_true_box=arg == "box")
    settings = {k: v for k, v in (generation or {}).items() if v is not None}
    if kind == "openai":
        model, base_url = parse_endpoint_spec(arg)
        if concurrency is not None and "concurrency" not in {**split_settings_query(base_url)[1], **settings}:
            settings["concurrency"] = concurrency  # as many requests in flight as episodes
        return OpenAIPolicy(model, base_url, **{**sampling, **settings}, text_only=bool(text_only))
    if kind == "hf" and arg:
        path, adapter = arg, None
        if "@" in arg and not os.path.exists(arg):
            path, _, adapter = arg.rpartition("@")
        if seed is not None:
            sampling["seed"] = seed
        if "temperature" in settings:
            sampling["temperature"] = float(settings["temperature"])
        if "max_tokens" in settings:
            sampling["max_new_tokens"] = int(settings["max_tokens"])
        if text_only is False and not check_model_folder(path).is_vlm:
            raise ConfigError(
                f"policy {spec!r} is a text-only model, but the environment shows the question's image; "
                "evaluate it in text-only mode: --image-position none (EnvConfig(image_position='none')), "
                "whose prompt says the image is not shown"
            )
        return HFPolicy(path, protocol=protocol, adapter=adapter, **sampling)
    names = [*BASELINE_NAMES, "openai:MODEL@BASE_URL", "hf:PATH"]
    raise ConfigError(f"unknown policy {spec!r}; expected one of {names}." + did_you_mean(kind, BASELINE_NAMES))
