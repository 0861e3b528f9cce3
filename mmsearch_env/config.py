"""``EnvConfig``: every keyword argument of ``gym.make("MMSearch-v0", ...)``, defined once.

The environment, the GRPO trainer's config, evaluation, curation and the experiments all take their
environment settings from this one dataclass, so a default is written in exactly one place and every
setting can be given from every entry point. Field ``metadata["help"]`` is the text command lines show.

>>> config = EnvConfig(split="test", max_turns=4)
>>> config.max_text_searches, config.search_penalty
(2, 0.1)
>>> EnvConfig.from_dict(config.to_dict()) == config
True
>>> EnvConfig(max_turn=4)  # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
TypeError: ...
>>> EnvConfig.from_dict({"max_turn": 4})
Traceback (most recent call last):
mmsearch_env.errors.ConfigError: unknown MMSearch-v0 argument 'max_turn'. Did you mean 'max_turns'?
"""

from __future__ import annotations

import argparse
import json
import numbers
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

from mmsearch_env.errors import ConfigError, did_you_mean
from mmsearch_env.prompts import PromptTemplates
from mmsearch_env.protocol import ActionProtocol, get_protocol
from mmsearch_env.reward import FORMAT_WEIGHT, PENALTY_MODES, SEARCH_PENALTY, check_reward_weights
from mmsearch_env.search.base import SearchBackend

__all__ = [
    "IMAGE_POSITIONS",
    "QUESTION_SCENES",
    "RENDER_MODES",
    "EnvConfig",
    "add_env_arguments",
    "env_config_from_args",
]

#: Where the question's image goes in the first user message (see :attr:`EnvConfig.image_position`).
IMAGE_POSITIONS = ("first", "last", "none")
#: How question images are shown (see :attr:`EnvConfig.question_scenes`).
QUESTION_SCENES = ("plain", "screenshot")
#: Render modes of the environment.
RENDER_MODES = ("ansi",)


@dataclass
class EnvConfig:
    """The settings of one ``MMSearch-v0`` environment (the paper's rules by default).

    Object-valued settings (a list of rows for ``dataset``, a backend object for ``search``, a
    :class:`~mmsearch_env.prompts.PromptTemplates`) are accepted; :meth:`to_dict` is JSON-able when every
    setting is given by name, which is what ``env.spec.to_json()`` and saved run configs need.
    """

    # Parameters that control the questions
    dataset: list | str | None = field(
        default="corpus",
        metadata={
            "help": "Questions: 'corpus' (embedded question set), 'sample' (64-question invented world), a "
            ".jsonl/.parquet path or folder, 'hf:NAME', a JSON spec, or a list of row dicts."
        },
    )
    split: str | None = field(
        default="train", metadata={"help": "Split of a built-in dataset: train, validation, test or None (all)."}
    )
    question_scenes: str = field(
        default="plain",
        metadata={
            "help": "'plain' (the dataset's images) or 'screenshot': each question image is drawn small inside a "
            "busy page among other questions' pictures, its true region kept in example metadata['true_box']."
        },
    )
    scene_seed: int = field(default=0, metadata={"help": "Seed of the screenshot scenes (same seed, same scenes)."})
    # Parameters that control the search tools
    search: SearchBackend | str | None = field(
        default=None,
        metadata={
            "help": "Search backend name (corpus, sample, local, disabled, cached, resilient, faults, fvqa, "
            "service, serpapi, searxng) or object; None: the engine matching a built-in dataset."
        },
    )
    search_options: dict | str | None = field(
        default=None, metadata={"help": "Keyword arguments of a named search backend (a JSON object)."}
    )
    search_timeout: float | None = field(
        default=None, metadata={"help": "Seconds a search may take before it becomes a tool error (None: no limit)."}
    )
    thumbnail_size: int = field(default=256, metadata={"help": "Long side, in pixels, of result thumbnails."})
    image_crops: bool = field(
        default=False,
        metadata={
            "help": "Let an image search name a region of the question's image, x1,y1,x2,y2 (fractions when all "
            "are in [0, 1], else pixels); the env searches that crop. Off: the paper's whole-image search."
        },
    )
    # Parameters that control what the policy reads and writes
    protocol: ActionProtocol | str | None = field(
        default="tags", metadata={"help": "Action protocol: 'tags' (the paper's) or 'tool_calls' (JSON calls)."}
    )
    prompts: PromptTemplates | str | None = field(
        default=None, metadata={"help": "A JSON/TOML file of prompt templates overriding the protocol's defaults."}
    )
    image_position: str = field(
        default="first",
        metadata={
            "help": "Where the question's image goes in the first message: 'first' (before the instruction, as "
            "in the paper), 'last' (after it) or 'none' (not shown: text-only policies; image search still "
            "searches it)."
        },
    )
    # Parameters that control the episode's limits (the paper's rollout rules)
    max_turns: int = field(default=3, metadata={"help": "Assistant turns per episode; the last must answer."})
    max_image_searches: int = field(default=1, metadata={"help": "Image searches per episode."})
    max_text_searches: int = field(default=2, metadata={"help": "Text searches per episode."})
    format_image_searches: int = field(
        default=1,
        metadata={
            "help": "Image searches a trajectory may make and still earn the format score (the paper's format: 1)."
        },
    )
    format_text_searches: int = field(
        default=1,
        metadata={
            "help": "Text searches a trajectory may make and still earn the format score (the paper's format: 1, "
            "although 2 may run); raise it with max_text_searches for multi-turn query refinement."
        },
    )
    # The paper caps a turn at 2,048 tokens, a few thousand characters; 32k leaves room for any real
    # turn while bounding what one hostile turn costs to clean, parse and keep.
    max_action_chars: int = field(
        default=32_768,
        metadata={
            "help": "Characters of one assistant turn that the env reads; a longer turn is cut to this many "
            "before parsing and info['action_truncated'] is True on that step."
        },
    )
    # Parameters that control the reward
    search_penalty: float = field(
        default=SEARCH_PENALTY, metadata={"help": "Share of a correct answer's reward lost when it searched."}
    )
    penalty_mode: str = field(
        default="once",
        metadata={
            "help": "'once': a correct answer that searched keeps 1 - search_penalty (the paper's); 'per_call': "
            "it keeps max(0, 1 - search_penalty * searches)."
        },
    )
    format_weight: float = field(default=FORMAT_WEIGHT, metadata={"help": "Weight of the format score."})
    render_mode: str | None = field(default=None, metadata={"help": "None or 'ansi' (the transcript as text)."})

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field (called on construction)."""
        for name, low in (
            ("max_turns", 1),
            ("max_image_searches", 0),
            ("max_text_searches", 0),
            ("format_image_searches", 0),
            ("format_text_searches", 0),
            ("scene_seed", 0),
            ("max_action_chars", 1),
            ("thumbnail_size", 16),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")
        check_reward_weights(self.search_penalty, self.format_weight)
        timeout = self.search_timeout
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or timeout <= 0):
            raise ConfigError(f"search_timeout must be a positive number of seconds or None, got {timeout!r}")
        if not isinstance(self.image_crops, bool):
            raise ConfigError(f"image_crops must be True or False, got {self.image_crops!r}")
        for name, allowed in (("penalty_mode", PENALTY_MODES), ("question_scenes", QUESTION_SCENES)):
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(
                    f"{name} must be one of {list(allowed)}, got {value!r}" + did_you_mean(str(value), allowed)
                )
        if self.render_mode is not None and self.render_mode not in RENDER_MODES:
            raise ConfigError(f"render_mode must be None or one of {list(RENDER_MODES)}, got {self.render_mode!r}")
        if self.image_position not in IMAGE_POSITIONS:
            raise ConfigError(
                f"image_position must be one of {list(IMAGE_POSITIONS)}, got {self.image_position!r}"
                + did_you_mean(str(self.image_position), IMAGE_POSITIONS)
            )
        if isinstance(self.search_options, str):
            self.search_options = _json_object("search_options", self.search_options)
        if self.search_options is not None and not isinstance(self.search_options, Mapping):
            raise ConfigError(f"search_options must be a dict (JSON object) or None, got {self.search_options!r}")
        if isinstance(self.split, str) and self.split.lower() in ("none", "all", ""):
            self.split = None
        get_protocol(self.protocol)  # a typo fails here, with a suggestion

    # -- conversions ---------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EnvConfig:
        """Build from ``gym.make``-style keyword arguments; an unknown key is a :class:`ConfigError`."""
        names = [f.name for f in fields(cls)]
        for key in values:
            if key not in names:
                raise ConfigError(f"unknown MMSearch-v0 argument {key!r}.{did_you_mean(str(key), names)}")
        return cls(**dict(values))

    @classmethod
    def coerce(cls, config: EnvConfig | Mapping[str, Any] | None = None, **overrides: Any) -> EnvConfig:
        """An ``EnvConfig`` from a config, a kwargs mapping or nothing, with ``overrides`` applied."""
        if config is None:
            config = {}
        if isinstance(config, EnvConfig):
            return config.replace(**overrides) if overrides else config
        if not isinstance(config, Mapping):
            raise ConfigError(f"expected an EnvConfig or a dict of MMSearch-v0 arguments, got {type(config).__name__}")
        return cls.from_dict({**config, **overrides})

    def replace(self, **changes: Any) -> EnvConfig:
        """A copy with ``changes`` (validated; unknown names raise :class:`ConfigError`)."""
        names = {f.name for f in fields(self)}
        for key in changes:
            if key not in names:
                raise ConfigError(f"unknown MMSearch-v0 argument {key!r}.{did_you_mean(str(key), names)}")
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The settings as ``gym.make`` keyword arguments (objects are passed through as they are)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_json(self) -> str:
        """The settings as JSON; raises :class:`ConfigError` when a setting is an object, not a name."""
        try:
            return json.dumps(asdict(self), sort_keys=True)
        except TypeError as exc:
            raise ConfigError(
                f"this EnvConfig holds an object and cannot be saved as JSON ({exc}); give dataset, search and "
                "prompts by name or path to save it"
            ) from exc

    def search_disabled(self) -> EnvConfig:
        """The same questions and rules with search switched off (a knowledge measure, curation's pass)."""
        return self.replace(search="disabled", search_options=None, max_image_searches=0, max_text_searches=0)

    @property
    def max_searches_per_episode(self) -> int:
        """The most searches one episode can run (no search in the last turn)."""
        return min(self.max_image_searches + self.max_text_searches, self.max_turns - 1)


def _json_object(name: str, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a JSON object, got {text!r}: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a JSON object, got {text!r}")
    return value


# -- command lines ------------------------------------------------------------------------------------
def _flag_bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


_CLI_TYPES: dict[str, Any] = {
    "image_crops": _flag_bool,
    "format_image_searches": int,
    "format_text_searches": int,
    "scene_seed": int,
    "max_turns": int,
    "max_image_searches": int,
    "max_text_searches": int,
    "max_action_chars": int,
    "thumbnail_size": int,
    "search_penalty": float,
    "format_weight": float,
    "search_timeout": float,
}
#: Settings a command line cannot express (objects) or that commands set themselves.
_NOT_ON_CLI = ("render_mode",)


def add_env_arguments(parser: argparse.ArgumentParser, *, skip: tuple[str, ...] = ()) -> None:
    """Add one ``--flag`` per :class:`EnvConfig` field (``--max-turns``, ``--search-options JSON``, ...).

    Flags default to ``None`` (meaning "the EnvConfig default"), so :func:`env_config_from_args` can tell
    a setting the user gave from one they left alone.
    """
    group = parser.add_argument_group("environment (MMSearch-v0 arguments)")
    for f in fields(EnvConfig):
        if f.name in _NOT_ON_CLI or f.name in skip:
            continue
        default = f.default if f.default is not MISSING else None
        group.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f"env_{f.name}",
            type=_CLI_TYPES.get(f.name, str),
            default=None,
            help=f"{f.metadata.get('help', '')} (default: {default})",
        )


def env_config_from_args(args: argparse.Namespace, **defaults: Any) -> EnvConfig:
    """The :class:`EnvConfig` of a command line built with :func:`add_env_arguments`.

    ``defaults`` are the command's own defaults (e.g. ``split="test"`` for evaluation); flags win.
    """
    given = {f.name: getattr(args, f"env_{f.name}") for f in fields(EnvConfig) if hasattr(args, f"env_{f.name}")}
    return EnvConfig.from_dict({**defaults, **{k: v for k, v in given.items() if v is not None}})
