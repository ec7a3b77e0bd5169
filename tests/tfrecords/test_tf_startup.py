"""Binaries start TensorFlow without the CUDA probe's error where no NVIDIA GPU exists, and hide nothing else."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO_ROOT
from tfrecords import tf_startup


def test_nvidia_devices_are_recognised(tmp_path):
    assert not tf_startup.has_nvidia_device(str(tmp_path))
    (tmp_path / "nvidia0").touch()
    assert tf_startup.has_nvidia_device(str(tmp_path))
    assert tf_startup.has_nvidia_device(str(tmp_path / "missing"))  # Unknown: hide nothing.


def test_quiet_start_drops_only_the_probe_and_restores_standard_error():
    script = (
        "import sys\n"
        "from tfrecords import tf_startup\n"
        "tf_startup.quiet_start()\n"
        "import tensorflow as tf\n"
        "tf.constant(1.0) + 1.0\n"
        "print('standard error still works', file=sys.stderr)\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "standard error still works" in done.stderr
    if not tf_startup.has_nvidia_device():
        assert "cuInit" not in done.stderr
