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


def test_run_drops_only_the_probe_and_restores_standard_error():
    """A binary as the project writes one: tf_startup imported first, main run by `run`."""
    script = (
        "import sys\n"
        "from tfrecords.tf_startup import run\n"
        "import tensorflow as tf\n"
        "def main(argv):\n"
        "    tf.constant(1.0) + 1.0\n"
        "    print('standard error still works', file=sys.stderr)\n"
        "run(main)\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "standard error still works" in done.stderr
    assert "cpu_feature_guard" not in done.stderr  # An INFO line: the log level was set before the import.
    if not tf_startup.has_nvidia_device():
        assert "cuInit" not in done.stderr


def test_every_binary_imports_tf_startup_first():
    """The one way TensorFlow's log level is set: `tfrecords.tf_startup`, before anything else of ours."""
    binaries = [
        path
        for package in ("data_prep", "tfrecords", "models", "train", "serving", "benchmarks")
        for path in (REPO_ROOT / package).rglob("*.py")
        if 'if __name__ == "__main__":' in path.read_text()
    ]
    assert len(binaries) >= 15, binaries
    for path in binaries:
        text = path.read_text()
        assert "from tfrecords.tf_startup import run" in text, f"{path} does not start through tfrecords.tf_startup"
        body = text.split("from tfrecords.tf_startup import run", 1)[0]
        assert "\nimport " not in body.split('"""')[-1] and "\nfrom " not in body.split('"""')[-1].replace(
            "from __future__ import annotations", ""
        ), f"{path}: tfrecords.tf_startup must be the first import"
        assert "run(main" in text, f"{path}: main must be run by tf_startup.run"
