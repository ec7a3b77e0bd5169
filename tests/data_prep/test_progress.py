"""Progress lines of long jobs (`data_prep.progress`): when they appear, what they say, on a terminal or a log."""

from __future__ import annotations

import io
import threading
import time

from data_prep import progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _count_up_to(total: int, step_s: float):
    """A count that grows by one every `step_s` seconds, up to `total`."""
    start = time.monotonic()
    return lambda: min(total, int((time.monotonic() - start) / step_s))


def test_lines_come_every_interval_and_the_last_says_the_end():
    stream = io.StringIO()
    count = _count_up_to(20, 0.02)
    with progress.Progress("job", 20, count, interval_s=0.1, stream=stream) as reporter:
        while count() < 20:
            time.sleep(0.01)
        time.sleep(0.15)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 2 and lines == reporter.lines
    done = [int(line.split(": ")[1].split(" of ")[0]) for line in lines]
    assert done == sorted(done) and done[-1] == 20
    assert all(line.startswith("job: ") and " of 20 tracks (" in line for line in lines)
    assert lines[-1].startswith("job: 20 of 20 tracks (100%), ") and lines[-1].endswith(" in all")
    assert any(
        "tracks/s, about " in line and " left" in line for line in lines[:-1] if "of 20 tracks (100%)" not in line
    )


def test_a_job_that_ends_before_the_first_report_prints_nothing():
    stream = io.StringIO()
    with progress.Progress("job", 3, lambda: 3, interval_s=5.0, stream=stream) as reporter:
        pass
    assert stream.getvalue() == "" and reporter.lines == []


def test_on_a_terminal_one_line_is_rewritten_in_place():
    stream = _Terminal()
    reporter = progress.Progress("build_index", 4, unit="tracks", interval_s=0.05, stream=stream)
    with reporter:
        for _ in range(4):
            reporter.advance()
            time.sleep(0.06)
    text = stream.getvalue()
    assert text.startswith("\r\033[K") and text.endswith("\n") and text.count("\n") == 1
    assert text.rsplit("\r\033[K", 1)[1].startswith("build_index: 4 of 4 tracks (100%)")


def test_a_count_that_fails_for_a_moment_keeps_the_last_one():
    calls = iter([2, OSError("listing"), 3])

    def count():
        value = next(calls)
        if isinstance(value, Exception):
            raise value
        return value

    reporter = progress.Progress("job", 5, count)
    assert [reporter.done(), reporter.done(), reporter.done()] == [2, 2, 3]


def test_times_and_rates_read_as_a_person_reads_them():
    reporter = progress.Progress("job", 1000, lambda: 0)
    assert reporter.line(0, 3.0) == "job: 0 of 1,000 tracks (0%), starting"
    assert reporter.line(100, 50.0) == "job: 100 of 1,000 tracks (10%), 2.00 tracks/s, about 7 min 30 s left"
    assert reporter.line(10, 50.0).endswith("about 1 h 22 min left")
    assert reporter.line(1000, 500.0) == "job: 1,000 of 1,000 tracks (100%), 2.00 tracks/s, 8 min 20 s in all"
    assert threading.active_count() >= 1
