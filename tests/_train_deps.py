"""Shared guard for tests that need the training extra (torch, transformers, trl, peft)."""

from __future__ import annotations

import importlib.util
import os

import pytest

MISSING = [m for m in ("torch", "transformers", "trl", "peft") if importlib.util.find_spec(m) is None]


def require_train_extra() -> None:
    """Skip with the install command when the extra is missing; fail instead under MMSEARCH_REQUIRE_TRAIN=1."""
    if not MISSING:
        return
    message = f"needs {', '.join(MISSING)}: pip install torch==2.13.0 && pip install -e '.[train]'"
    if os.environ.get("MMSEARCH_REQUIRE_TRAIN") == "1":
        pytest.fail(message)
    pytest.skip(message, allow_module_level=True)
