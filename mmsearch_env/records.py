"""``EpisodeRecord``: the one trajectory type. The environment fills it, rollout writes it, and
evaluation, curation, the viewer and training read it.

One record is one finished (or abandoned) episode: the question, every assistant turn and its parsed
action, every search with its results, how the episode ended and the reward's parts. The environment
produces the episode part (:meth:`MMSearchEnv.episode_record`); the rollout engine adds who played it
(``policy``, ``index``, ``split``), what it cost (``usage``, ``latency_s``) and where its pictures were
saved (``image``, each result's ``thumbnail``: file names in an ``images/`` folder).

On disk a record is one JSON line (:meth:`EpisodeRecord.to_json`), versioned by ``version``. Lines
written before versioning (no ``version`` key: the reward's parts under ``reward`` and the number
under ``reward_total``) are read too.

>>> record = EpisodeRecord(example_id="q1", question="Which country?", ground_truth="France",
...                        reward=1.0, reward_parts={"accuracy": 1.0, "format": 1.0})
>>> EpisodeRecord.from_json(record.to_json()) == record
True
>>> record.correct, record.num_searches
(True, 0)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import types
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Union, get_args, get_origin, get_type_hints

from mmsearch_env.errors import DatasetError
from mmsearch_env.text import valid_unicode

__all__ = [
    "RECORD_VERSION",
    "ActionRecord",
    "EpisodeRecord",
    "ResultRecord",
    "SearchRecord",
    "jsonable",
    "layout_problem",
    "upgrade_layout",
]

#: Version of the JSON layout written by :meth:`EpisodeRecord.to_dict`.
RECORD_VERSION = 2


@dataclass
class ActionRecord:
    """One assistant turn as the protocol read it (``kind``: answer, image_search, text_search, invalid)."""

    kind: str
    content: str | None = None
    well_formed: bool = True
    error: str | None = None


@dataclass
class ResultRecord:
    """One search result; ``thumbnail`` is the saved image's file name (``None``: none, or not saved)."""

    title: str
    url: str
    summary: str | None = None
    thumbnail: str | None = None


@dataclass
class SearchRecord:
    """One search the episode ran, successful (``ok``) or not (``error`` says why)."""

    tool: str
    ok: bool
    error: str | None = None
    latency_s: float = 0.0
    cost_usd: float = 0.0
    cached: bool = False
    results: list[ResultRecord] = field(default_factory=list)


@dataclass
class EpisodeRecord:
    """A finished episode (see the module docstring for who fills which part).

    Attributes:
        reward: the episode's reward (the terminal step's).
        reward_parts: :meth:`mmsearch_env.reward.RewardBreakdown.as_dict` (accuracy, format, penalty, ...).
        info: the terminal step's ``info``, JSON values only.
        end_reason: why the episode ended (``info["end_reason"]``; ``"unfinished"`` when scored early).
        usage: ``{"prompt_tokens", "completion_tokens"}`` summed over the policy's turns, or ``None``.
        finish_reasons: per assistant turn, why the model stopped writing it, as the policy reported
            (``"stop"``, ``"length"``: cut at the token cap, ...; ``None``: not reported).
    """

    example_id: str
    question: str
    ground_truth: str
    candidate_answers: list[str] = field(default_factory=list)
    category: str | None = None
    search_need: str | None = None
    turns: list[str] = field(default_factory=list)
    actions: list[ActionRecord] = field(default_factory=list)
    searches: list[SearchRecord] = field(default_factory=list)
    end_reason: str | None = None
    reward: float = 0.0
    reward_parts: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    # filled by the rollout engine
    policy: str | None = None
    index: int | None = None
    split: str | None = None
    image: str | None = None
    usage: dict[str, Any] | None = None
    latency_s: float | None = None
    finish_reasons: list[str | None] = field(default_factory=list)
    version: int = RECORD_VERSION

    # -- what metrics read ---------------------------------------------------------------------------
    @property
    def correct(self) -> bool:
        return bool(self.reward_parts.get("accuracy", self.info.get("correct", False)))

    @property
    def format_ok(self) -> bool:
        return bool(self.reward_parts.get("format", self.info.get("format_ok", False)))

    @property
    def image_searches(self) -> int:
        return sum(s.tool == "image_search" for s in self.searches)

    @property
    def text_searches(self) -> int:
        return sum(s.tool == "text_search" for s in self.searches)

    @property
    def num_searches(self) -> int:
        return len(self.searches)

    @property
    def search_failures(self) -> int:
        return sum(not s.ok for s in self.searches)

    @property
    def truncated_replies(self) -> int:
        """Turns the model's token cap cut off (``finish_reason == "length"``)."""
        return sum(reason == "length" for reason in self.finish_reasons)

    @property
    def answer(self) -> str | None:
        return self.reward_parts.get("answer")

    # -- JSON ----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form (non-finite numbers become ``None``; every key of the layout is present)."""
        return jsonable(asdict(self))

    def to_json(self) -> str:
        """One JSON line (no newline), UTF-8 safe: lone surrogates are replaced, never raised on."""
        return json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EpisodeRecord:
        """Read a record written by :meth:`to_dict`, or a line from before versioning.

        Every field's type is checked; a record that does not fit raises :class:`DatasetError` naming
        the field (``searches[0].results[2].url``) and what it holds.
        """
        if not isinstance(data, Mapping):
            raise DatasetError(f"an episode record must be a JSON object, got {type(data).__name__}")
        data = upgrade_layout(data)
        problem = layout_problem(data)
        if problem is not None:
            raise DatasetError(
                f"{problem}; an episode record has the layout of mmsearch_env.records.EpisodeRecord "
                "(fix or remove this record)"
            )
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["actions"] = [ActionRecord(**_known(ActionRecord, a)) for a in data.get("actions") or []]
        kwargs["searches"] = [
            SearchRecord(
                **{
                    **_known(SearchRecord, s),
                    "results": [ResultRecord(**_known(ResultRecord, r)) for r in s.get("results") or []],
                }
            )
            for s in data.get("searches") or []
        ]
        kwargs["reward"] = float(kwargs.get("reward") or 0.0)
        kwargs["reward_parts"] = dict(kwargs.get("reward_parts") or {})
        kwargs["info"] = dict(kwargs.get("info") or {})
        kwargs["candidate_answers"] = list(kwargs.get("candidate_answers") or [])
        kwargs["turns"] = list(kwargs.get("turns") or [])
        kwargs["finish_reasons"] = list(kwargs.get("finish_reasons") or [])
        return cls(**kwargs)

    @classmethod
    def from_json(cls, line: str) -> EpisodeRecord:
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise DatasetError(f"not a JSON episode record ({exc})") from exc
        return cls.from_dict(data)


def upgrade_layout(data: Mapping[str, Any]) -> dict[str, Any]:
    """A record dict in the current layout (lines from before versioning are converted; nothing is checked).

    Lines written before ``finish_reasons`` existed get one ``None`` (not reported) per turn.

    >>> upgrade_layout({"reward": {"reward": 0.91, "accuracy": 1.0}, "reward_total": 0.91})
    {'reward': 0.91, 'reward_parts': {'reward': 0.91, 'accuracy': 1.0}, 'version': 2}
    >>> upgrade_layout({"turns": ["<answer>x</answer>"], "version": 2})["finish_reasons"]
    [None]
    """
    data = dict(data)
    if data.get("finish_reasons") is None and isinstance(data.get("turns"), list):
        data["finish_reasons"] = [None] * len(data["turns"])
    version = data.get("version", 1)
    if version == 1:
        parts = data.get("reward")
        if isinstance(parts, Mapping):
            data["reward_parts"] = dict(parts)
            data["reward"] = parts.get("reward")
        if "reward_total" in data:
            data["reward"] = data.pop("reward_total")
        data["version"] = RECORD_VERSION
    elif version != RECORD_VERSION:
        raise DatasetError(
            f"episode record version {version!r} is not supported (this mmsearch-env reads 1 and "
            f"{RECORD_VERSION}); upgrade mmsearch-env to read it"
        )
    return data


def layout_problem(value: Any, hint: Any = None, path: str = "") -> str | None:
    """What makes JSON ``value`` not fit type ``hint`` (default: :class:`EpisodeRecord`), or ``None``.

    ``None`` (or a missing key) is accepted for every field that has a default: the constructor fills it
    in. Only fields without a default are required.

    >>> layout_problem({"example_id": "q", "question": "?", "ground_truth": "x", "turns": [3]})
    "field 'turns[0]' must be a string, got 3"
    """
    hint = EpisodeRecord if hint is None else hint
    origin = get_origin(hint)
    if hint is Any:
        return None
    if origin in (Union, types.UnionType):
        inner = [arg for arg in get_args(hint) if arg is not type(None)]
        return None if value is None else layout_problem(value, inner[0], path)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            return f"field {path or 'record'!r} must be a JSON object ({hint.__name__}), got {_short(value)}"
        hints = _hints(hint)
        for f in dataclasses.fields(hint):
            name = f"{path}.{f.name}" if path else f.name
            item = value.get(f.name)
            if item is None:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    return f"required field {name!r} is missing"
                continue
            problem = layout_problem(item, hints[f.name], name)
            if problem is not None:
                return problem
        return None
    if origin is list:
        if not isinstance(value, (list, tuple)):
            return f"field {path!r} must be a list, got {_short(value)}"
        (item_hint,) = get_args(hint)
        for i, item in enumerate(value):
            problem = layout_problem(item, item_hint, f"{path}[{i}]")
            if problem is not None:
                return problem
        return None
    if origin is dict:
        return None if isinstance(value, Mapping) else f"field {path!r} must be a JSON object, got {_short(value)}"
    ok = {
        str: isinstance(value, str),
        bool: isinstance(value, bool),
        int: isinstance(value, numbers.Integral) and not isinstance(value, bool),
        float: isinstance(value, numbers.Real) and not isinstance(value, bool),
    }[hint]
    return None if ok else f"field {path!r} must be {_EXPECTED[hint]}, got {_short(value)}"


_EXPECTED = {str: "a string", bool: "true or false", int: "an integer", float: "a number"}


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _known(cls: type, data: Any) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise DatasetError(f"expected a JSON object for a {cls.__name__}, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def jsonable(value: Any) -> Any:
    """``value`` with non-JSON parts dropped (dict entries) or ``None`` (list items), and text made UTF-8 safe.

    Non-finite floats become ``None``; lone surrogates in strings become U+FFFD.

    >>> jsonable({"a": float("nan"), "b": [1, object()], "c": "x\\ud83d", 3: "dropped"})
    {'a': None, 'b': [1, None], 'c': 'x\ufffd'}
    """
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, str):
        return valid_unicode(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {jsonable(k): jsonable(v) for k, v in value.items() if isinstance(k, str) and _is_json_kind(v)}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) if _is_json_kind(item) else None for item in value]
    return None


def _is_json_kind(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, Mapping, list, tuple))
