"""One writer at a time per index: the second waits, a killed writer's lock is free."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from serving.retrieval import index_lock
from tests.conftest import REPO_ROOT

_HOLD = """
import sys, time
from serving.retrieval import index_lock
with index_lock.writer_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    open(sys.argv[1] + ".done", "w").close()  # The last thing it does before it lets go.
"""


def _holder(index_dir, seconds: float) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(index_dir), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_writer_waits_for_the_first_and_says_for_whom(tmp_path):
    holder = _holder(tmp_path / "index", 2.0)
    said = []
    with index_lock.writer_lock(str(tmp_path / "index"), announce=said.append):
        assert (tmp_path / "index.done").exists()  # Only once the first writer is done.
    assert holder.wait() == 0
    assert len(said) == 1 and f"pid {holder.pid}" in said[0] and "waiting for the other writer" in said[0]


def test_a_killed_writer_leaves_no_lock_behind(tmp_path):
    holder = _holder(tmp_path / "index", 600)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert os.path.exists(index_lock.lock_path(str(tmp_path / "index")))
    said = []
    with index_lock.writer_lock(str(tmp_path / "index"), announce=said.append):
        pass
    assert said == []  # Taken at once: a writer that has to wait says so first.
