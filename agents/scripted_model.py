"""A real tiny VLM whose *generations* are scripted: exact numbers in trainer tests and benchmarks.

:func:`scripted_vlm` loads the tiny VLM as a subclass whose ``generate`` writes the turns a script
returns instead of sampling, while ``forward`` (log-probabilities, loss, gradients, images) stays the
real model's. TRL's ``GRPOTrainer`` calls ``model.generate`` for every turn, so a script fixes what
the policy says in each rollout without touching the trainer. Not for training real policies.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

from agents.hf_policy import load_processing_class

__all__ = ["TurnScript", "plan_script", "scripted_vlm"]

#: ``script(prompt_text, turn_index, rng) -> assistant turn text`` (``turn_index`` counts from 0), or
#: ``None`` to let the real model generate that turn (for the whole batch).
TurnScript = Callable[[str, int, random.Random], "str | None"]


def scripted_vlm(path: str | os.PathLike[str], script: TurnScript, *, seed: int = 0) -> Any:
    """Load the VLM at ``path`` with ``generate`` replaced by ``script`` (see :data:`TurnScript`).

    Each generated row is the script's text for that row's decoded prompt, tokenized, then the
    end-of-turn token. ``rng`` is one seeded ``random.Random`` shared by all calls, so scripts may
    vary their choices (GRPO needs reward differences within a group to learn anything).
    """
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    class ScriptedQwen2_5_VL(Qwen2_5_VLForConditionalGeneration):
        def generate(self, input_ids: Any = None, attention_mask: Any = None, **kwargs: Any) -> Any:
            tok = self._script_tokenizer
            header = "<|im_start|>assistant"
            texts = []
            for row, mask in zip(input_ids, attention_mask, strict=True):
                prompt = tok.decode(row[mask.bool()], skip_special_tokens=False)
                turn = max(prompt.count(header) - 1, 0)
                texts.append(self._script(prompt, turn, self._script_rng))
            if all(text is None for text in texts):  # the script hands this turn to the real model
                return super().generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            if any(text is None for text in texts):
                raise ValueError("a scripted turn is None for some rows of a batch only; script whole turns")
            rows = [[*tok.encode(text, add_special_tokens=False), self._script_eos] for text in texts]
            width = max(len(r) for r in rows)
            pad = tok.pad_token_id
            new = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=input_ids.device)
            return torch.cat([input_ids, new], dim=1)

    # Load with the stock class (its checkpoint key mapping is registered by class name), then
    # specialise the instance: only `generate` differs.
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype="float32")
    model.__class__ = ScriptedQwen2_5_VL
    processing_class = load_processing_class(path)
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    model._script = script
    model._script_rng = random.Random(seed)
    model._script_tokenizer = tokenizer
    model._script_eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    return model


def plan_script(plans: dict[str, Any]) -> TurnScript:
    """A script from ``{question text: turns}`` or ``{question text: [turns, turns, ...]}``.

    The question is found in the prompt by substring. With several plans, one is drawn per rollout at
    its first turn; later turns follow the plan whose first turn the prompt shows (so plans should
    differ in their first turn). Turns past a plan's end repeat its last turn; a ``None`` turn is generated
    by the real model.
    """
    header = "<|im_start|>assistant\n"

    def script(prompt: str, turn: int, rng: random.Random) -> str | None:
        for question, plan in plans.items():
            if question not in prompt:
                continue
            options: list[list[str]] = plan if plan and isinstance(plan[0], list) else [plan]  # type: ignore[assignment]
            if turn == 0:
                turns = rng.choice(options)
            else:
                said = prompt.split(header, 1)[1]
                turns = next((o for o in options if said.startswith(o[0])), options[0])
            return turns[min(turn, len(turns) - 1)]
        raise KeyError("no scripted plan matches this prompt; add its question to the plans")

    return script
