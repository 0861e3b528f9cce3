"""Policies that act in MMSearch-v0, and the loops that run them.

Agents depend on the environment package, never the other way round.
"""

import agents.threads  # noqa: F401  (first: OMP_WAIT_POLICY=PASSIVE before anything loads torch)
from agents.baselines import DirectAnswerPolicy, ForcedSearchPolicy, RAGWorkflowPolicy, RandomPolicy
from agents.metrics import EpisodeSummary, Outcome, summarize
from agents.policy import Policy, PolicyBase
from agents.pool import EnvPool, make_env_pool
from agents.rollout import read_trajectories, run_episodes
from agents.scripted import OraclePolicy

__all__ = [
    "DirectAnswerPolicy",
    "EnvPool",
    "EpisodeSummary",
    "ForcedSearchPolicy",
    "OraclePolicy",
    "Outcome",
    "Policy",
    "PolicyBase",
    "RAGWorkflowPolicy",
    "RandomPolicy",
    "make_env_pool",
    "read_trajectories",
    "run_episodes",
    "summarize",
]
