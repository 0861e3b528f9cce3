"""mmsearch-env: a Gymnasium environment that teaches multimodal models when and how to search.

Importing the package registers ``MMSearch-v0``::

    import gymnasium as gym
    import mmsearch_env  # noqa: F401

    env = gym.make("MMSearch-v0")
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from mmsearch_env.config import EnvConfig
from mmsearch_env.data import Example, load_dataset
from mmsearch_env.env import MMSearchEnv
from mmsearch_env.errors import (
    ConfigError,
    DatasetError,
    InvalidActionError,
    MMSearchError,
    ResetNeededError,
    SearchBackendError,
)
from mmsearch_env.protocol import Action, get_protocol
from mmsearch_env.records import EpisodeRecord
from mmsearch_env.reward import RewardBreakdown, normalize_answer, score_trajectory
from mmsearch_env.wrappers import StructuredActions

__version__ = "0.1.0"

__all__ = [
    "Action",
    "ConfigError",
    "DatasetError",
    "EnvConfig",
    "EpisodeRecord",
    "Example",
    "InvalidActionError",
    "MMSearchEnv",
    "MMSearchError",
    "ResetNeededError",
    "RewardBreakdown",
    "SearchBackendError",
    "StructuredActions",
    "__version__",
    "get_protocol",
    "load_dataset",
    "normalize_answer",
    "score_trajectory",
]

if "MMSearch-v0" not in registry:
    register(id="MMSearch-v0", entry_point="mmsearch_env.env:MMSearchEnv")
