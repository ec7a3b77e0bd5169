"""Importing the stages prints no noise from Beam's optional extras, and real warnings still show."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.parametrize("module", ["data_prep.pipeline", "serving.indexing"])
def test_importing_a_beam_job_prints_no_missing_extra_notice(module):
    script = f"import logging, {module}; logging.warning('a real warning')"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "apitools not found" not in done.stderr
    assert "a real warning" in done.stderr
