"""One writer at a time per index: a lock file next to the index folder.

Every command that changes an index (`serving.build_index`: a build, an
`--update`, a `--delete`) holds `INDEX_DIR.lock` from before it reads the
index until its new version is in place. A second writer waits for the
first, saying whom it waits for, and then starts from the index the first
one wrote: two updates run one after the other, and neither loses the
other's tracks. Readers (the recommender, the web app) never wait: `save`
swaps a complete folder in.

The lock is the kernel's (`fcntl.flock`), held by the open file: when its
holder ends, killed or not, the kernel releases it, so a killed run never
leaves a stale lock behind. The file itself stays (removing it would race
with a writer that just opened it) and records the last holder for the
message. The index folder must be on a local file system (ScaNN writes local
files), where flock works.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import sys

LOCK_SUFFIX = ".lock"


def lock_path(index_dir: str) -> str:
    return f"{os.path.normpath(index_dir)}{LOCK_SUFFIX}"


@contextlib.contextmanager
def writer_lock(index_dir: str, announce=None):
    """Holds the index's writer lock, waiting for another writer first if there is one.

    Args:
        index_dir: The index folder (the lock is `INDEX_DIR.lock` next to it).
        announce: Called with one line when it has to wait (default: printed
            to standard error).
    """
    path = lock_path(index_dir)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")  # Held (and the lock with it) for the whole block.
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            (announce or _to_stderr)(
                f"waiting for the other writer of {index_dir} ({holder}) to finish; this run then starts from the "
                "index it wrote"
            )
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        handle.write(f"pid {os.getpid()}, started {started}")
        handle.flush()
        yield
    finally:
        handle.close()  # Releases the lock.


def _to_stderr(line: str):
    print(line, file=sys.stderr, flush=True)
