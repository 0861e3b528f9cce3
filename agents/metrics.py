"""Episode metrics, computed in one place: accuracy, format rate, mean reward, both search ratios, search
counts and failures, accuracy by group, and search utility.

Every consumer reads its numbers from here: the rollout progress bar (:class:`RunningMetrics`), the demo
and :meth:`agents.rollout.RolloutResult.summary` (:func:`summarize`), the evaluation report
(:func:`policy_metrics`, :func:`search_utility`) and the GRPO reward's logging (:func:`training_metrics`
over :meth:`Outcome.from_reward`).

The metrics read an :class:`Outcome`, the few facts of a finished episode they need. One is made from an
:class:`~mmsearch_env.records.EpisodeRecord` (what rollout writes), from the env's terminal ``info``, or
from a :class:`~mmsearch_env.reward.RewardBreakdown` plus that ``info`` (what a trainer has); every
function below accepts any of those (:func:`outcome`).

The two search ratios are the paper's two definitions, always reported by name:

* ``search_ratio_episodes``: the share of episodes that made at least one search;
* ``search_ratio_calls``: searches made over the most the limits allow (episodes x
  :attr:`~mmsearch_env.config.EnvConfig.max_searches_per_episode`).

>>> episodes = [Outcome(correct=True, format_ok=True, reward=0.91, image_searches=1),
...             Outcome(correct=False, format_ok=True, reward=0.1)]
>>> s = summarize(episodes, max_searches_per_episode=2)
>>> s.accuracy, s.search_ratio_episodes, s.search_ratio_calls
(0.5, 0.5, 0.25)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from mmsearch_env.env import TRUNCATION_REASONS
from mmsearch_env.errors import ConfigError
from mmsearch_env.records import EpisodeRecord
from mmsearch_env.reward import RewardBreakdown

__all__ = [
    "GROUP_KEYS",
    "Episode",
    "EpisodeSummary",
    "Outcome",
    "RunningMetrics",
    "accuracy_by",
    "failure_counts",
    "outcome",
    "policy_metrics",
    "region_search_counts",
    "search_utility",
    "summarize",
    "training_metrics",
]

#: The :class:`Outcome` fields :func:`accuracy_by` groups by.
GROUP_KEYS = ("category", "search_need")


@dataclass(frozen=True)
class Outcome:
    """What the metrics read from one finished episode.

    Attributes:
        correct: the answer matched (the reward's accuracy part).
        format_ok: every turn well formed and on an allowed path (the reward's format part).
        reward: the episode's reward.
        image_searches, text_searches: searches the episode ran, by tool.
        search_failures: searches that returned an error.
        end_reason: why the episode ended (``info["end_reason"]``), if known.
        turns: assistant turns taken.
        category, search_need: the question's labels, if known (for :func:`accuracy_by`).
    """

    correct: bool
    format_ok: bool
    reward: float
    image_searches: int = 0
    text_searches: int = 0
    search_failures: int = 0
    end_reason: str | None = None
    turns: int = 0
    category: str | None = None
    search_need: str | None = None

    @property
    def num_searches(self) -> int:
        return self.image_searches + self.text_searches

    @property
    def searched(self) -> bool:
        """True when the episode made at least one search (search ratio, definition 1)."""
        return self.num_searches > 0

    @classmethod
    def from_record(cls, record: EpisodeRecord) -> Outcome:
        """The outcome of a trajectory record (what :func:`agents.rollout.rollout` writes)."""
        return cls(
            correct=record.correct,
            format_ok=record.format_ok,
            reward=float(record.reward),
            image_searches=record.image_searches,
            text_searches=record.text_searches,
            search_failures=record.search_failures,
            end_reason=record.end_reason,
            turns=len(record.turns),
            category=record.category,
            search_need=record.search_need,
        )

    @classmethod
    def from_reward(cls, breakdown: RewardBreakdown, info: Mapping[str, Any]) -> Outcome:
        """The outcome of a scored rollout: its reward's parts and its terminal ``info``.

        This is the GRPO reward's entry point: it has a :class:`~mmsearch_env.reward.RewardBreakdown`
        and the env's last ``info`` per completion (``search_failures``, ``turn``, ``end_reason``).
        """
        return cls(
            correct=bool(breakdown.accuracy),
            format_ok=bool(breakdown.format),
            reward=float(breakdown.reward),
            image_searches=int(breakdown.image_searches),
            text_searches=int(breakdown.text_searches),
            search_failures=int(info.get("search_failures") or 0),
            end_reason=info.get("end_reason"),
            turns=int(info.get("turn") or 0),
        )

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> Outcome:
        """The outcome of an episode from the env's terminal ``info`` (what :func:`agents.rollout.run_episodes` returns).

        >>> Outcome.from_info({"correct": True, "format_ok": True, "image_searches": 1, "text_searches": 0,
        ...                    "reward_parts": {"reward": 0.91}}).reward
        0.91
        """
        parts = info.get("reward_parts") or {}
        return cls(
            correct=bool(info.get("correct")),
            format_ok=bool(info.get("format_ok")),
            reward=float(parts.get("reward") or 0.0),
            image_searches=int(info.get("image_searches") or 0),
            text_searches=int(info.get("text_searches") or 0),
            search_failures=int(info.get("search_failures") or 0),
            end_reason=info.get("end_reason"),
            turns=int(info.get("turn") or 0),
        )


#: What the metric functions accept for one episode.
Episode = EpisodeRecord | Outcome | Mapping[str, Any]


def outcome(episode: Episode) -> Outcome:
    """``episode`` as an :class:`Outcome`: a record, an outcome, or the env's terminal ``info`` dict."""
    if isinstance(episode, Outcome):
        return episode
    if isinstance(episode, EpisodeRecord):
        return Outcome.from_record(episode)
    if isinstance(episode, Mapping):
        return Outcome.from_info(episode)
    raise ConfigError(
        f"a metric needs an EpisodeRecord, an Outcome or a terminal info dict per episode, got {type(episode).__name__}"
    )


def _rate(count: float, n: int) -> float:
    return count / n if n else 0.0


# -- aggregates ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EpisodeSummary:
    """Aggregates over finished episodes (see the module docstring for the two search ratios).

    Attributes:
        search_ratio_episodes: share of episodes that made at least one search (paper, def. 1).
        search_ratio_calls: searches made over the most an episode may make, summed (paper, def. 2).
    """

    episodes: int
    accuracy: float
    mean_reward: float
    format_rate: float
    search_ratio_episodes: float
    search_ratio_calls: float
    image_searches: int
    text_searches: int
    search_failures: int

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


class RunningMetrics:
    """Aggregates updated one episode at a time in O(1) (progress bars, live logs).

    >>> live = RunningMetrics(max_searches_per_episode=2)
    >>> live.update(Outcome(correct=True, format_ok=True, reward=1.0))
    >>> live.update(Outcome(correct=False, format_ok=False, reward=0.0, text_searches=2))
    >>> live.postfix()
    {'acc': '0.50', 'search': '0.50'}
    >>> live.summary().search_ratio_calls
    0.5
    """

    def __init__(self, max_searches_per_episode: int = 0) -> None:
        self.max_searches_per_episode = int(max_searches_per_episode)
        self.episodes = 0
        self._correct = self._format_ok = self._searched = 0
        self._reward = 0.0
        self._image = self._text = self._failures = 0

    def update(self, episode: Episode) -> None:
        """Count one finished episode."""
        o = outcome(episode)
        self.episodes += 1
        self._correct += o.correct
        self._format_ok += o.format_ok
        self._searched += o.searched
        self._reward += o.reward
        self._image += o.image_searches
        self._text += o.text_searches
        self._failures += o.search_failures

    @property
    def accuracy(self) -> float:
        return _rate(self._correct, self.episodes)

    @property
    def search_ratio_episodes(self) -> float:
        return _rate(self._searched, self.episodes)

    def summary(self) -> EpisodeSummary:
        n = self.episodes
        return EpisodeSummary(
            episodes=n,
            accuracy=self.accuracy,
            mean_reward=_rate(self._reward, n),
            format_rate=_rate(self._format_ok, n),
            search_ratio_episodes=self.search_ratio_episodes,
            search_ratio_calls=_rate(self._image + self._text, n * self.max_searches_per_episode),
            image_searches=self._image,
            text_searches=self._text,
            search_failures=self._failures,
        )

    def postfix(self) -> dict[str, str]:
        """The progress bar's live numbers: ``acc`` and ``search`` (share of episodes that searched)."""
        return {"acc": f"{self.accuracy:.2f}", "search": f"{self.search_ratio_episodes:.2f}"}


def summarize(episodes: Iterable[Episode], max_searches_per_episode: int) -> EpisodeSummary:
    """Accuracy, mean reward, format rate, both search ratios, search counts and failures.

    ``max_searches_per_episode``: the env's (:attr:`~mmsearch_env.config.EnvConfig.max_searches_per_episode`),
    for ``search_ratio_calls``; 0 makes that ratio 0.
    """
    running = RunningMetrics(max_searches_per_episode)
    for episode in episodes:
        running.update(episode)
    return running.summary()


def accuracy_by(episodes: Iterable[Episode], key: str) -> dict[str, dict[str, Any]]:
    """Accuracy per ``category`` or ``search_need`` label: ``{label: {"accuracy", "n"}}``, sorted by label.

    Episodes without the label count under ``"-"``.

    >>> accuracy_by([Outcome(True, True, 1.0, search_need="none"), Outcome(False, True, 0.1)], "search_need")
    {'-': {'accuracy': 0.0, 'n': 1}, 'none': {'accuracy': 1.0, 'n': 1}}
    """
    if key not in GROUP_KEYS:
        raise ConfigError(f"accuracy_by groups by one of {list(GROUP_KEYS)}, got {key!r}")
    groups: dict[str, list[bool]] = defaultdict(list)
    for episode in episodes:
        o = outcome(episode)
        groups[str(getattr(o, key) or "-")].append(o.correct)
    return {k: {"accuracy": _rate(sum(v), len(v)), "n": len(v)} for k, v in sorted(groups.items())}


def failure_counts(episodes: Iterable[Episode]) -> dict[str, int]:
    """``search_errors`` (failed searches), ``malformed`` and ``truncated`` (a limit ran out) episodes."""
    counts = {"search_errors": 0, "malformed": 0, "truncated": 0}
    for episode in episodes:
        o = outcome(episode)
        counts["search_errors"] += o.search_failures
        counts["malformed"] += o.end_reason == "malformed"
        counts["truncated"] += o.end_reason in TRUNCATION_REASONS
    return counts


def training_metrics(episodes: Iterable[Episode]) -> dict[str, float]:
    """Per-batch means for a trainer's log (each under ``mmsearch/<name>`` in the GRPO logs).

    ``accuracy``, ``format``, ``search_ratio`` (episodes that searched), ``image_search_ratio`` /
    ``text_search_ratio`` (episodes that ran that search), ``searches``, ``tool_failures`` and
    ``turns`` per episode (the trainer logs the reward itself). Empty input gives ``{}``.

    >>> breakdown = RewardBreakdown(0.91, 1.0, 1.0, 0.9, "Paris", 1, 0, "IA")
    >>> training_metrics([Outcome.from_reward(breakdown, {"turn": 2, "search_failures": 0})])["search_ratio"]
    1.0
    """
    outcomes = [outcome(e) for e in episodes]
    n = len(outcomes)
    if not n:
        return {}
    summary = summarize(outcomes, 0)
    return {
        "accuracy": summary.accuracy,
        "format": summary.format_rate,
        "search_ratio": summary.search_ratio_episodes,
        "image_search_ratio": sum(o.image_searches > 0 for o in outcomes) / n,
        "text_search_ratio": sum(o.text_searches > 0 for o in outcomes) / n,
        "searches": (summary.image_searches + summary.text_searches) / n,
        "tool_failures": summary.search_failures / n,
        "turns": sum(o.turns for o in outcomes) / n,
    }


def region_search_counts(records: Iterable[EpisodeRecord]) -> dict[str, int] | None:
    """How image searches used regions, from the terminal ``info["image_regions"]`` of each record.

    ``image_searches`` (all), ``region_searches`` (those that named a box), ``episodes_with_region``;
    ``None`` when no record comes from an env with ``image_crops`` (no ``image_regions`` in its info).

    >>> record = EpisodeRecord("q", "?", "a", info={"image_regions": [[0, 0, 8, 8], None]})
    >>> region_search_counts([record])
    {'image_searches': 2, 'region_searches': 1, 'episodes_with_region': 1}
    """
    regions = [r.info["image_regions"] for r in records if isinstance(r.info.get("image_regions"), list)]
    if not regions:
        return None
    return {
        "image_searches": sum(len(rs) for rs in regions),
        "region_searches": sum(r is not None for rs in regions for r in rs),
        "episodes_with_region": sum(any(r is not None for r in rs) for rs in regions),
    }


# -- the evaluation report's metrics (records only: they carry usage, latency, cost and the index) -------
def policy_metrics(
    records: Sequence[EpisodeRecord],
    max_searches_per_episode: int,
    judged: Sequence[bool | None] | None = None,
) -> dict[str, Any]:
    """One row of the evaluation report from a policy's trajectory records.

    Keys: everything of :class:`EpisodeSummary` but ``search_failures`` (it is ``failures["search_errors"]``),
    ``failures`` (:func:`failure_counts`), ``accuracy_by_category`` / ``accuracy_by_search_need``
    (:func:`accuracy_by`), ``judge_accuracy`` / ``judge_unparsed`` (from ``judged``, one verdict per
    record, ``None`` = the judge's reply was unreadable; both ``None`` without a judge),
    ``prompt_tokens`` / ``completion_tokens`` (``None`` when no record reports usage), ``replies`` (assistant
    turns written) and ``truncated_replies`` (turns cut at the token cap, ``finish_reason == "length"``),
    ``mean_latency_s``, ``p95_latency_s``, ``search_cost_usd`` and ``region_searches``
    (:func:`region_search_counts`: crop use, ``None`` without ``image_crops``).
    """
    outcomes = [outcome(r) for r in records]
    n = len(outcomes)
    summary = summarize(outcomes, max_searches_per_episode).as_row()
    del summary["search_failures"]
    known = [r.usage for r in records if r.usage]
    latencies = sorted(float(r.latency_s or 0.0) for r in records)
    row: dict[str, Any] = {
        **summary,
        "judge_accuracy": None,
        "judge_unparsed": None,
        "failures": failure_counts(outcomes),
        "accuracy_by_category": accuracy_by(outcomes, "category"),
        "accuracy_by_search_need": accuracy_by(outcomes, "search_need"),
        "prompt_tokens": sum(int(u.get("prompt_tokens") or 0) for u in known) if known else None,
        "completion_tokens": sum(int(u.get("completion_tokens") or 0) for u in known) if known else None,
        "replies": sum(len(r.turns) for r in records),
        "truncated_replies": sum(r.truncated_replies for r in records),
        "mean_latency_s": _rate(sum(latencies), n),
        "p95_latency_s": latencies[min(n - 1, int(0.95 * n))] if n else 0.0,
        "search_cost_usd": sum(float(s.cost_usd or 0.0) for r in records for s in r.searches),
        "region_searches": region_search_counts(records),
    }
    if judged is not None:
        if len(judged) != n:
            raise ConfigError(f"judged must hold one verdict per record ({n}), got {len(judged)}")
        row["judge_accuracy"] = _rate(sum(bool(v) for v in judged), n)
        row["judge_unparsed"] = sum(v is None for v in judged)
    return row


def search_utility(
    main: Sequence[EpisodeRecord],
    no_search: Sequence[EpisodeRecord],
    forced: Sequence[EpisodeRecord] | None = None,
) -> dict[str, Any]:
    """Needed / wasted / missed searches, matching the three runs of one policy by dataset ``index``.

    Per question, with *searched* meaning the ``main`` run made a search: ``needed`` = searched, right,
    and wrong in the ``no_search`` run; ``wasted`` = searched, and right in the ``no_search`` run anyway;
    ``missed`` = did not search, was wrong, and is right in the ``forced`` (search plan forced) run —
    ``None`` without a forced run. Also ``accuracy_no_search``, ``accuracy_forced_search`` and
    ``searched_episodes``.
    """
    free = {r.index: r.correct for r in no_search}
    forced_ok = {r.index: r.correct for r in forced} if forced is not None else None
    needed = wasted = missed = 0
    for record in main:
        if record.index not in free:
            continue
        if record.num_searches:
            needed += record.correct and not free[record.index]
            wasted += free[record.index]
        elif forced_ok is not None and not record.correct and forced_ok.get(record.index, False):
            missed += 1
    return {
        "accuracy_no_search": _rate(sum(free.values()), len(free)),
        "accuracy_forced_search": _rate(sum(forced_ok.values()), len(forced_ok)) if forced_ok is not None else None,
        "needed": needed,
        "wasted": wasted,
        "missed": missed if forced_ok is not None else None,
        "searched_episodes": sum(r.num_searches > 0 for r in main),
    }
