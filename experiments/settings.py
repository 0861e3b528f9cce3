"""What every experiment's settings dataclass shares: building from a dict, validated copies, JSON."""

from __future__ import annotations

import json
import numbers
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, fields, replace
from typing import Any, TypeVar

from mmsearch_env.errors import ConfigError, did_you_mean

__all__ = ["ExperimentSettings", "StageClock"]

Self = TypeVar("Self", bound="ExperimentSettings")


class ExperimentSettings:
    """Mixin for an experiment's settings dataclass (it must be a dataclass with an ``env`` field)."""

    @classmethod
    def from_dict(cls: type[Self], values: Mapping[str, Any]) -> Self:
        """Build from field values; an unknown name is a :class:`ConfigError` with a suggestion."""
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        for key in values:
            if key not in names:
                raise ConfigError(f"unknown {cls.__name__} setting {key!r}.{did_you_mean(str(key), names)}")
        return cls(**dict(values))

    def replace(self: Self, **changes: Any) -> Self:
        """A validated copy with ``changes``."""
        return replace(self, **changes)  # type: ignore[type-var]

    def differences(self, stamp: Mapping[str, Any]) -> list[str]:
        """The settings whose values differ from ``stamp`` (a stored :meth:`to_dict`), sorted. A setting
        the stamp lacks was added since it was made, when it could only have had its default: it counts
        as that default, so an older run folder stays usable until a new setting is moved off it."""
        ours = self.to_dict()
        missing = [k for k in ours if k not in stamp]
        defaults = type(self)().to_dict() if missing else {}
        theirs = {**{k: defaults[k] for k in missing}, **stamp}
        return sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))

    def to_dict(self) -> dict[str, Any]:
        """Every setting as JSON-able values (``env`` as its ``gym.make`` arguments)."""
        return json.loads(json.dumps(asdict(self)))  # type: ignore[call-overload]

    def check_positive_ints(self, names: Iterable[str]) -> None:
        """Raise :class:`ConfigError` unless each named setting is an int >= 1 (bools refused)."""
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {value!r}")


class StageClock:
    """Wall-clock seconds per stage of a run: :meth:`lap` charges the time since the last lap to a stage
    (a stage lapped twice adds up)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now
