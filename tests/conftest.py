"""Shared fixtures: the bundled demo catalog and small crafted audio files."""

from __future__ import annotations

from tfrecords.tf_startup import silence_cuda_probe

import pathlib
import pickle
import shutil

import filelock
import numpy as np
import pytest
import tensorflow as tf

silence_cuda_probe()

# Two logical CPU devices, so that tf.distribute strategies with two replicas
# can be tested on one CPU. Must run before TensorFlow initialises devices.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEMO_DIR = REPO_ROOT / "demo"
DEMO_CATALOG = DEMO_DIR / "catalog.csv"


@pytest.fixture(scope="session")
def built_once(tmp_path_factory, worker_id):
    """`built_once(name, build)`: what `build(folder)` returns, built once per test run.

    Under pytest-xdist the first worker that asks builds it in a folder all
    workers share (under a file lock) and stores what `build` returned; the
    others wait and reuse it, instead of each training, exporting or indexing
    the same models again. Without xdist it is an ordinary session fixture.
    """
    if worker_id == "master":
        return lambda name, build: build(tmp_path_factory.mktemp(name))
    shared = tmp_path_factory.getbasetemp().parent / "built_once"
    shared.mkdir(exist_ok=True)

    def get(name, build):
        folder, result = shared / name, shared / f"{name}.pickle"
        with filelock.FileLock(str(shared / f"{name}.lock")):
            if not result.exists():
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir()
                result.write_bytes(pickle.dumps(build(folder)))
        return pickle.loads(result.read_bytes())

    return get


@pytest.fixture(scope="session")
def demo_catalog() -> pathlib.Path:
    return DEMO_CATALOG


@pytest.fixture(scope="session")
def demo_audio_files() -> list[pathlib.Path]:
    return sorted((DEMO_DIR / "audio").glob("*.mp3"))


def tone(seconds: float, sample_rate: int, channels: int = 1, frequency: float = 440.0, level: float = 0.3):
    """A sine tone with a little noise, `[frames, channels]` float32."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    rng = np.random.default_rng(int(frequency))
    mono = level * np.sin(2 * np.pi * frequency * t) + 0.01 * rng.standard_normal(t.size)
    return np.repeat(mono[:, np.newaxis], channels, axis=1).astype(np.float32)
