"""Pools of MMSearch-v0 environments that share one dataset and one search backend.

Built once by :func:`make_env_pool`; the rollout engine, evaluation and curation run on them, so a corpus
is loaded and indexed once however many environments (and variants: search disabled, other limits) a
run needs, and the shared backend is closed exactly once, by the env that built it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import gymnasium as gym

import mmsearch_env  # noqa: F401  (registers MMSearch-v0)
from mmsearch_env.config import EnvConfig
from mmsearch_env.errors import ConfigError

__all__ = ["EnvPool", "make_env_pool"]


class EnvPool(Sequence[gym.Env]):
    """MMSearch-v0 environments that share one dataset and one search backend (from :func:`make_env_pool`).

    A sequence of ``gym.Env`` (pass it to :func:`rollout` as ``envs=``) and a context manager. The
    dataset is loaded and the backend built once, by the first env; the others are handed both
    objects, so a corpus is indexed once. :meth:`close` closes the first env last: it built a
    backend given by name and closes it, once, after every env sharing it is closed. A backend object
    given in the config belongs to the caller and is never closed here.

    Attributes:
        config: the shared settings: ``dataset`` is the loaded examples and ``search`` the backend object.
    """

    def __init__(self, envs: Sequence[gym.Env], config: EnvConfig) -> None:
        self._envs = list(envs)
        self.config = config

    @property
    def examples(self) -> Sequence[Any]:
        """The questions every env of the pool serves."""
        return self.config.dataset

    @property
    def search(self) -> Any:
        """The search backend every env of the pool calls."""
        return self.config.search

    @property
    def max_searches_per_episode(self) -> int:
        return self.config.max_searches_per_episode

    def __getitem__(self, index: Any) -> Any:
        return self._envs[index]

    def __len__(self) -> int:
        return len(self._envs)

    def __iter__(self) -> Iterator[gym.Env]:
        return iter(self._envs)

    def variant(self, size: int | None = None, **changes: Any) -> EnvPool:
        """A pool with ``changes`` to the settings (limits, protocol, ``search``...) on the same questions.

        It shares this pool's dataset and, unless ``changes`` names another ``search``, its backend, so
        close it before this one. ``size`` defaults to this pool's.
        """
        if "dataset" in changes or "split" in changes:
            raise ConfigError("a variant pool serves the same questions: build another pool to change dataset or split")
        return self._derive(self.config.replace(**changes), size)

    def search_disabled(self, size: int | None = None) -> EnvPool:
        """A pool on the same questions with search switched off (:meth:`EnvConfig.search_disabled`)."""
        return self._derive(self.config.search_disabled(), size)

    def _derive(self, config: EnvConfig, size: int | None) -> EnvPool:
        size = len(self) if size is None else _check_size(size)
        return EnvPool(_make_envs(config, size), config)

    def close(self) -> None:
        for env in reversed(self._envs):  # the first env, owner of a backend it built, closes last
            env.close()

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _make_envs(config: EnvConfig, count: int, built: list[gym.Env] | None = None) -> list[gym.Env]:
    """``built`` plus ``count`` new envs; when one fails to build, the ones built are closed (last first)."""
    envs = list(built or [])
    try:
        for _ in range(count):
            envs.append(gym.make("MMSearch-v0", config=config))
    except BaseException:
        for env in reversed(envs):
            env.close()
        raise
    return envs


def _check_size(size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"concurrency must be an int >= 1, got {size!r}")
    return size


def make_env_pool(config: EnvConfig | Mapping[str, Any] | None = None, size: int = 1) -> EnvPool:
    """``size`` environments with the settings ``config`` (an :class:`EnvConfig` or ``gym.make`` kwargs)
    sharing one dataset and one search backend (see :class:`EnvPool`).

    >>> with make_env_pool({"dataset": "sample", "split": "test"}, size=2) as pool:
    ...     pool[0].unwrapped.search is pool[1].unwrapped.search, len(pool.examples)
    (True, 16)
    """
    size = _check_size(size)
    config = EnvConfig.coerce(config)
    first = gym.make("MMSearch-v0", config=config)
    base = first.unwrapped
    try:
        shared = config.replace(dataset=base.examples, search=base.search, search_options=None)
    except BaseException:
        first.close()
        raise
    return EnvPool(_make_envs(shared, size - 1, [first]), shared)
