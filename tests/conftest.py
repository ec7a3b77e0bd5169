"""Shared fixtures: the bundled demo catalog and small crafted audio files."""

from __future__ import annotations

from tf_startup import silence_cuda_probe

import itertools
import logging
import os
import pathlib
import pickle
import random
import shutil
import sys
import tempfile

import filelock
import gin
import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from absl import logging as absl_logging
from absl.testing import flagsaver

silence_cuda_probe()

# Two logical CPU devices, so that tf.distribute strategies with two replicas
# can be tested on one CPU. Must run before TensorFlow initialises devices.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

# Fixture modules: the demo models and indexes the serving tests and the benchmarks' tests share.
pytest_plugins = ("tests.serving.index_fixtures",)

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEMO_DIR = REPO_ROOT / "demo"
DEMO_CATALOG = DEMO_DIR / "catalog.csv"

# Every MirroredStrategy numbers its collectives from the same group key, and
# TensorFlow caches a collective's shape per key for the life of the process:
# a second strategy in one process (an xdist worker runs many tests) reuses
# the first one's keys and fails with "Shape mismatch in the collective
# instance". TensorFlow's own tests give each strategy a key base of its own.
_collective_key_bases = itertools.count(start=100_000, step=100_000)


@pytest.fixture
def two_cpu_mirrored_strategy(monkeypatch):
    """A MirroredStrategy over the two logical CPU devices, with collective keys no other strategy used."""
    monkeypatch.setattr(tf.distribute.MirroredStrategy, "_collective_key_base", next(_collective_key_bases))
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


# Every test leaves the process as it found it: one autouse fixture per kind of global state. A test that
# changes one (binds gin, parses flags, sets a Keras policy or seed, enters a strategy) cannot change the
# outcome of the tests that run after it in the same xdist worker, whatever the order (`make test` runs them
# in a random one: pytest-randomly, the seed in the header).


@pytest.fixture(autouse=True)
def gin_config_cleared():
    """No gin bindings before or after a test: those a session fixture's training run left included."""
    gin.clear_config()
    yield
    gin.clear_config()


@pytest.fixture(autouse=True)
def absl_flags_restored():
    """absl flags: values and the parsed state as they were; flags the test's imports defined stay, at their defaults."""
    saved = flagsaver.save_flag_values()
    was_parsed = flags.FLAGS.is_parsed()
    yield
    for name in list(flags.FLAGS):
        flag = flags.FLAGS[name]
        if name not in saved:
            flag.unparse()
        elif flag.__dict__ != saved[name]:
            if flag.value != saved[name]["_value"]:
                flag.value = saved[name]["_value"]
            flag.__dict__ = saved[name]
    if flags.FLAGS.is_parsed() and not was_parsed:
        flags.FLAGS.__dict__["__flags_parsed"] = False  # What unparse_flags() sets, without resetting values.
    elif was_parsed:
        flags.FLAGS.mark_as_parsed()


@pytest.fixture(autouse=True)
def environment_restored():
    """Environment variables and the working directory as they were."""
    environment, working_dir = dict(os.environ), os.getcwd()
    yield
    os.chdir(working_dir)
    if dict(os.environ) != environment:
        os.environ.clear()
        os.environ.update(environment)


@pytest.fixture(autouse=True)
def keras_state_restored():
    """Keras' dtype policy and float type, and every random seed `keras.utils.set_random_seed` sets."""
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils
    from tensorflow.python.eager import context

    policy, floatx = keras.config.dtype_policy(), keras.config.floatx()
    python_rng, numpy_rng = random.getstate(), np.random.get_state()
    tf_seed = context.global_seed()
    keras_seed = global_state.get_global_attribute(rng_utils.GLOBAL_RANDOM_SEED)
    keras_generator = global_state.get_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR)
    torch_rng = sys.modules["torch"].get_rng_state() if "torch" in sys.modules else None
    yield
    keras.config.set_dtype_policy(policy)
    keras.config.set_floatx(floatx)
    random.setstate(python_rng)
    np.random.set_state(numpy_rng)
    if context.global_seed() != tf_seed:
        tf.random.set_seed(tf_seed)
    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, keras_seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, keras_generator)
    if torch_rng is not None:
        sys.modules["torch"].set_rng_state(torch_rng)


@pytest.fixture(autouse=True)
def no_distribution_strategy_left_in_scope():
    """A test that enters a tf.distribute strategy's scope leaves it: every later model would be built under it."""
    yield
    if tf.distribute.has_strategy():
        strategy = tf.distribute.get_strategy()
        pytest.fail(f"the test left {type(strategy).__name__}'s scope entered")


@pytest.fixture(autouse=True)
def logging_restored():
    """The root logger's level, handlers and filters, every named logger's level (a binary run in the test's
    process quiets Beam's), absl's verbosity, and `logging.disable`'s level."""
    root = logging.getLogger()
    level, handlers, filters = root.level, _own_handlers(root), list(root.filters)
    verbosity, disabled = absl_logging.get_verbosity(), logging.root.manager.disable
    named_levels = _named_logger_levels()
    yield
    for name, named_level in _named_logger_levels().items():
        if named_level != named_levels.get(name, logging.NOTSET):
            logging.getLogger(name).setLevel(named_levels.get(name, logging.NOTSET))
    root.setLevel(level)
    for handler in _own_handlers(root):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)  # No-op for those still there.
    root.filters[:] = filters
    absl_logging.set_verbosity(verbosity)
    logging.disable(disabled)


def _named_logger_levels() -> dict[str, int]:
    return {
        name: logger.level
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger) and name != "absl"  # absl's level is its verbosity, restored above.
    }


def _own_handlers(logger: logging.Logger) -> list[logging.Handler]:
    """The logger's handlers but pytest's, which pytest adds and removes around each phase of a test itself."""
    return [handler for handler in logger.handlers if not type(handler).__module__.startswith("_pytest")]


@pytest.fixture(scope="session", autouse=True)
def temporary_files_inside_the_test_run(tmp_path_factory):
    """Temporary files of the libraries (Beam, AutoGraph) and of the binaries the tests start go under the run's folder.

    They would otherwise pile up in the system's temporary folder, run after
    run; under the run's folder they are removed with it.
    """
    folder = tmp_path_factory.getbasetemp() / "tmp"
    folder.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(folder))  # Binaries the tests start.
        patch.setattr(tempfile, "tempdir", str(folder))  # This process.
        yield folder


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


@pytest.fixture(scope="session")
def untagged_demo(built_once):
    """The demo catalog without its tags column, preprocessed twice (8 train, 4 valid, 4 test tracks).

    `{"catalog": CSV, "128": the reference front end, "musicnn": musicnn's}`:
    the input of self-supervised training and of the teacher-targets job.
    """
    from data_prep import pipeline
    from features.logmel import PRESETS, LogMelSpec
    from intake import catalog as catalog_lib

    def build(root):
        import csv

        source = catalog_lib.read_catalog(str(DEMO_CATALOG))
        path = root / "catalog.csv"
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["track_id", "path", "artist", "album", "title"])
            for entry in source.entries:
                writer.writerow([entry.track_id, entry.uri, entry.artist, entry.album, entry.title])
        built = {"catalog": str(path)}
        for name, spec in (("128", LogMelSpec()), ("musicnn", PRESETS["musicnn"])):
            config = pipeline.PreprocessConfig(
                output_dir=str(root / name),
                split_by="track",
                split_fractions=(0.5, 0.25, 0.25),
                require_tags=False,
                log_mel=spec,
            )
            pipeline.run(catalog_lib.read_catalog(str(path)), config, [])
            built[name] = str(root / name)
        return built

    return built_once("untagged_demo", build)


@pytest.fixture(scope="session")
def distillation_demo(built_once, untagged_demo):
    """`untagged_demo`'s 128-band dataset with `pretrained/msd_musicnn`'s targets (`train.compute_teacher_targets_lib`)."""
    from train import compute_teacher_targets_lib

    def build(root):
        job = compute_teacher_targets_lib.TeacherJob(
            dataset_dir=untagged_demo["128"],
            teacher_dataset_dir=untagged_demo["musicnn"],
            teacher=str(REPO_ROOT / "pretrained" / "msd_musicnn"),
            output_dir=str(root / "distill"),
        )
        compute_teacher_targets_lib.compute(job)
        return str(root / "distill")

    return built_once("distillation_demo", build)


def train_briefly(root, configs: list[str], bindings: list[str]) -> dict:
    """A short training run in `root/run`: its directory and the objective's loss on the training tracks'
    deterministic views before the first step and after the last (`train.objectives.validate_views`)."""
    from train import config as config_lib
    from train.experiment import Experiment
    from train.trainer import Trainer

    model_dir = str(root / "run")
    config_lib.check_or_save(model_dir, config_lib.parse(configs, bindings))
    trainer = Trainer(Experiment(), model_dir, tf.distribute.get_strategy())
    trainer.restore_or_start()
    before = trainer.validate("train")["val_loss"]
    result = trainer.train()
    after = trainer.validate("train")["val_loss"]
    return {"model_dir": model_dir, "before": before, "after": after, "global_step": result.global_step}


SHORT_RUN = [
    # Seeded input: the same crops and order in every test run, so the losses' checks do not depend on luck
    # (unseeded, the contrastive run ended at 0.48x of its loss before in one process, at 1.03x in another).
    "Experiment.input_seed = 0",
    "Experiment.epochs = 3",
    "Experiment.batch_size = 4",
    "Experiment.cache_dataset = True",
    "Experiment.checkpoint_every_steps = 2",
    "Experiment.log_every_steps = 1",
    "Experiment.num_spectrogram_images = 1",
]


@pytest.fixture(scope="session")
def contrastive_run(built_once, untagged_demo):
    """`contrastive_msd_musicnn.gin` from the published weights on the untagged demo tracks, 6 steps."""

    def build(root):
        return train_briefly(
            root,
            ["contrastive_msd_musicnn.gin"],
            [
                f"Experiment.dataset_dir = '{untagged_demo['musicnn']}'",
                f"Experiment.init_from = '{REPO_ROOT / 'pretrained' / 'msd_musicnn'}'",
                # Plain crops and a sharp softmax: 6 steps must move the loss on the deterministic views
                # clearly, whatever crops the unseeded input draws (augmented views at 0.5 did not always).
                "Contrastive.augment = None",
                "Contrastive.temperature = 0.1",
                "contrastive/Phase.learning_rate = 3e-4",
                *SHORT_RUN,
            ],
        )

    return built_once("contrastive_run", build)


@pytest.fixture(scope="session")
def distilled_run(built_once, distillation_demo):
    """`distill_short_chunk_res.gin` (plus the contrastive term) on the demo's msd_musicnn targets, 6 steps."""

    def build(root):
        return train_briefly(
            root,
            ["distill_short_chunk_res.gin"],
            [f"Experiment.dataset_dir = '{distillation_demo}'", "Distillation.contrastive_weight = 0.5", *SHORT_RUN],
        )

    return built_once("distilled_run", build)
