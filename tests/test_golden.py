"""The default environment behaves exactly as recorded: every observation, reward, info and record of
the golden episodes (tests/golden.py) is compared byte for byte with the stored file."""

from __future__ import annotations

from golden import GOLDEN, golden_lines, stored_text


def _episode_of(lines: list[str], index: int) -> str:
    return next((line for line in reversed(lines[: index + 1]) if line.startswith('{"episode"')), "?")


def test_default_env_replays_the_golden_episodes_byte_for_byte():
    stored = stored_text().splitlines()
    played = list(golden_lines())
    assert len(stored) > 500
    for index, (got, want) in enumerate(zip(played, stored, strict=False)):
        assert got == want, f"{GOLDEN.name} line {index + 1} differs, in {_episode_of(stored, index)}"
    assert len(played) == len(stored)
