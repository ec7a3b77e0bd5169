"""Progress of a long job: done of total, rate and time left, a live bar on a terminal, plain log lines otherwise.

The count comes from a function the reporter calls (`count_done`), not from
Beam metrics (the Dask runner reports none): the Beam jobs count the files
their workers staged (`data_prep.beam_jobs.StagedJob.count_done`), which
the launcher reads wherever the workers run; an in-process loop counts
itself (`Progress.advance`).

Nothing is shown for a job that ends before its first report
(`interval_s`, 10 s by default): a job of a few tracks prints its summary
alone. After a report, the last line says the job's end (`N of N`).
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

REPORT_INTERVAL_S = 10.0


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


@dataclasses.dataclass
class Progress:
    """Reports `done of total` every `interval_s` while a `with` block runs.

    Attributes:
        what: The job's name, at the start of every line (`build_index`).
        total: How many units the job has.
        count_done: How many are done now (called from the reporting thread); None: counted with `advance`.
        unit: What is counted (`tracks`, `shards`).
        interval_s: Seconds between reports; the first comes after one interval.
        stream: Where the lines go (standard error by default).
    """

    what: str
    total: int
    count_done: Callable[[], int] | None = None
    unit: str = "tracks"
    interval_s: float | None = None  # None: `REPORT_INTERVAL_S`, read when the job starts.
    stream: TextIO | None = None

    def __post_init__(self):
        if self.interval_s is None:
            self.interval_s = REPORT_INTERVAL_S
        self._advanced = 0
        self._last_done = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = 0.0
        self.lines: list[str] = []  # Every line reported, for the job's own summary and for tests.

    def advance(self, count: int = 1):
        """Counts `count` more units done (for a job that counts itself)."""
        with self._lock:
            self._advanced += count

    def done(self) -> int:
        """Units done now (at most `total`)."""
        if self.count_done is None:
            with self._lock:
                return min(self._advanced, self.total)
        try:
            self._last_done = min(self.count_done(), self.total)
        except OSError:  # A staging folder being written or cleared: the last count stands until the next.
            pass
        return self._last_done

    def line(self, done: int, elapsed_s: float) -> str:
        """`what: done of total unit (share), rate, time left`."""
        share = done / self.total if self.total else 1.0
        rate = done / elapsed_s if elapsed_s > 0 else 0.0
        text = f"{self.what}: {done:,} of {self.total:,} {self.unit} ({share:.0%})"
        if done and rate > 0:
            text += f", {rate:.2f} {self.unit}/s"
            if done < self.total:
                text += f", about {_duration((self.total - done) / rate)} left"
        elif done < self.total:
            text += ", starting"
        return text + (f", {_duration(elapsed_s)} in all" if done >= self.total else "")

    def __enter__(self) -> Progress:
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._report_until_stopped, name=f"{self.what}-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, error_type, error, traceback):
        self._stopped.set()
        self._thread.join()
        if self.lines and error_type is None:  # Reported before: say the end too.
            self._show(self.line(self.done(), time.monotonic() - self._start), last=True)
        elif self.lines and self._on_terminal():
            self._write("\n")

    def _report_until_stopped(self):
        while not self._stopped.wait(self.interval_s):
            self._show(self.line(self.done(), time.monotonic() - self._start), last=False)

    def _output(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stderr

    def _on_terminal(self) -> bool:
        isatty = getattr(self._output(), "isatty", None)
        return bool(isatty and isatty())

    def _show(self, text: str, last: bool):
        self.lines.append(text)
        if self._on_terminal():  # One live line, rewritten in place.
            self._write(f"\r\033[K{text}" + ("\n" if last else ""))
        else:
            self._write(text + "\n")

    def _write(self, text: str):
        stream = self._output()
        stream.write(text)
        stream.flush()
