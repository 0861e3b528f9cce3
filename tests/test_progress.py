"""Progress off a terminal: lines with a count and an ETA, never carriage returns."""

from __future__ import annotations

from agents.progress import LineProgress, format_duration, progress_bar


def test_off_a_terminal_progress_is_lines_with_an_eta(capsys):
    bar = progress_bar(10, "rag", unit="episodes")  # pytest captures stderr: not a terminal
    assert isinstance(bar, LineProgress)
    bar.interval = 0.0  # a line per update
    bar.set_postfix({"acc": "0.50"})
    bar.update(4)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("rag: 4/10 episodes · acc=0.50 · ") and "ETA" in lines[0]
    assert len(lines) == 2 and not any("\r" in line for line in lines)


def test_a_disabled_bar_says_nothing(capsys):
    bar = progress_bar(3, "x", enabled=False)
    bar.update(3)
    bar.close()
    assert capsys.readouterr().err == ""


def test_durations_read_as_clock_times():
    assert [format_duration(s) for s in (0, 59.6, 61, 3600 + 125)] == ["0:00", "1:00", "1:01", "1:02:05"]
