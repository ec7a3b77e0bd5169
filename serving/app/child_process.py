"""The web app as a child process: started as `python -m serving.app` starts it, waited for until it serves.

What the tests and benchmarks that need a real server (a real socket, a
process to kill or to measure) start it with, and how a supervisor or a
container's health check would see it become ready: the `serving URL` line
in its log, then a 200 from `/healthz`.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

import httpx

_READY_LINE = re.compile(r"^serving (http://\S+/)")


@contextlib.contextmanager
def app_process(
    index_dir: str, audio_root: str | None, log_path: str, extra_flags: Sequence[str] = (), timeout_s: float = 300.0
) -> Iterator[str]:
    """Runs `python -m serving.app` on its default address, 127.0.0.1 (a free port), in a child process, yielding
    its base URL.

    Waits for the `serving URL` line and a 200 from `/healthz`; stops the
    process (SIGTERM, then SIGKILL) when the block ends.

    Raises:
        RuntimeError: It exited or did not get ready within `timeout_s`; the
            message ends with its log.
    """
    # No --host: the service's default, 127.0.0.1.
    command = [sys.executable, "-m", "serving.app", f"--index_dir={index_dir}", "--port=0"]
    command += [f"--audio_root={audio_root}"] if audio_root else []
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen([*command, *extra_flags], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        yield _wait_until_ready(process, log_path, timeout_s)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _log_tail(log_path: str) -> str:
    return pathlib.Path(log_path).read_text(encoding="utf-8", errors="replace")[-4000:]


def _wait_until_ready(process: subprocess.Popen, log_path: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    url = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serving.app exited with {process.returncode}:\n{_log_tail(log_path)}")
        if url is None:
            lines = pathlib.Path(log_path).read_text(encoding="utf-8", errors="replace").splitlines()
            url = next((m.group(1) for m in map(_READY_LINE.match, lines) if m), None)
        if url is not None:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "healthz", timeout=5).status_code == 200:
                    return url.rstrip("/")
        time.sleep(0.2)
    raise RuntimeError(f"serving.app not ready after {timeout_s:.0f} s:\n{_log_tail(log_path)}")
