"""Optional dependencies of the search package, each imported in one place with an error naming its extra.

``require("redis", extra="redis", purpose="the Redis cache")`` returns the module, or raises
:class:`~mmsearch_env.errors.ConfigError` saying ``pip install 'mmsearch-env[redis]'``. Importing these
only when a feature is used keeps ``import mmsearch_env`` free of servers' and parsers' packages.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from mmsearch_env.errors import ConfigError

__all__ = ["require"]


def require(module: str, *, extra: str, purpose: str, alternative: str = "") -> ModuleType:
    """Import ``module`` or raise a :class:`ConfigError` with the ``pip install`` command of ``extra``.

    >>> require("json", extra="core", purpose="a test").__name__
    'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"{purpose} needs {module.partition('.')[0]}: pip install 'mmsearch-env[{extra}]'{alternative} "
            f"(import failed with: {exc})"
        ) from exc
