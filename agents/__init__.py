"""Policies that act in MMSearch-v0, and the loops that run them.

Agents depend on the environment package, never the other way round.
"""

from agents.policy import Policy, PolicyBase
from agents.rollout import EpisodeSummary, run_episodes, summarize
from agents.scripted import OraclePolicy

__all__ = ["EpisodeSummary", "OraclePolicy", "Policy", "PolicyBase", "run_episodes", "summarize"]
