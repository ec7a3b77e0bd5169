"""Shared fixtures: the bundled demo catalog and small crafted audio files."""

from __future__ import annotations

from tfrecords.tf_startup import silence_cuda_probe

import pathlib

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
