"""Importing the stages prints no noise from Beam's optional extras, and real warnings still show."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_importing_the_beam_jobs_prints_no_missing_extra_notice():
    script = "import logging, serving.retrieval.embedding_job, data_prep.pipeline; logging.warning('a real warning')"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "apitools not found" not in done.stderr
    assert "a real warning" in done.stderr
