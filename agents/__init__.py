"""Policies that act in MMSearch-v0, and the loops that run them.

Agents depend on the environment package, never the other way round.
"""

from agents.baselines import DirectAnswerPolicy, ForcedSearchPolicy, RAGWorkflowPolicy, RandomPolicy
from agents.policy import Policy, PolicyBase
from agents.rollout import EpisodeSummary, read_trajectories, run_episodes, summarize
from agents.scripted import OraclePolicy

__all__ = [
    "DirectAnswerPolicy",
    "EpisodeSummary",
    "ForcedSearchPolicy",
    "OraclePolicy",
    "Policy",
    "PolicyBase",
    "RAGWorkflowPolicy",
    "RandomPolicy",
    "read_trajectories",
    "run_episodes",
    "summarize",
]
