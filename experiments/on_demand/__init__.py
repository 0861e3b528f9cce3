"""On-demand search in miniature: does GRPO in MMSearch-v0 teach a model *when* to search?

See ``experiments/on_demand/README.md`` for the question, the setup, the results and the commands that
regenerate them. Entry point: ``python -m experiments.on_demand.run [--quick] [--seed N] [--out DIR]``.
"""

from __future__ import annotations

from experiments.on_demand.config import ARMS, Arm, OnDemandConfig

__all__ = ["ARMS", "Arm", "OnDemandConfig"]
