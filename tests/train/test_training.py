"""Training: every shipped config steps, checkpoints, summaries, schedule, resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

import configs
import models
from features.logmel import PRESETS, LogMelSpec
from models import artifact
from tests.binaries import run_binary
from tests.conftest import REPO_ROOT
from tests.tfrecords.dataset_writer import write_dataset
from tests.train.run_checkpoints import checkpoint_state
from tfrecords import dataset_info, schema
from train import config as config_lib
from train import strategies
from train.experiment import Experiment
from train.trainer import CHECKPOINT_DIRNAME, Trainer

VOCABULARY = ["rock", "jazz", "pop"]
TOP_LEVEL_CONFIGS = sorted(p.name for p in configs.CONFIG_DIR.glob("*.gin") if p.name not in ("demo.gin", "smoke.gin"))


def _synthetic(directory, n_mels, frames=300, tracks=(8, 4, 2), spec=None):
    spec = spec or LogMelSpec(n_mels=n_mels)
    rng = np.random.default_rng(n_mels)
    data = {}
    for split, count in zip(("train", "valid", "test"), tracks, strict=True):
        data[split] = {}
        for i in range(count):
            tag = VOCABULARY[i % 3]
            # Each tag gets its own spectral tilt, so the tags are learnable.
            log_mel = rng.normal(-40.0, 5.0, size=(frames, n_mels)).astype(np.float32)
            log_mel += 20.0 * np.sin(np.arange(n_mels) / n_mels * np.pi * (1 + VOCABULARY.index(tag)))
            data[split][f"{split}{i}"] = (log_mel, [tag])
    directory.mkdir(parents=True, exist_ok=True)
    write_dataset(directory, data, VOCABULARY, spec=spec, log_mel_dtype="float16")
    return directory


def _with_synthetic_teacher(source, directory, crop_frames=231, hop_frames=32):
    """`source` with made-up teacher targets (3 tags, an 8-d embedding) at every crop position."""
    info = dataset_info.load(str(source))
    rng = np.random.default_rng(7)
    directory.mkdir()
    for split in info.splits:
        for path in dataset_info.shard_paths(str(source), info, split):
            with tf.io.TFRecordWriter(str(directory / os.path.basename(path))) as writer:
                for record in tf.data.TFRecordDataset(path):
                    frames = schema.decode_example(record.numpy(), info.log_mel_dtype)[schema.LOG_MEL].shape[0]
                    starts = np.arange(0, frames - crop_frames + 1, hop_frames)
                    features = schema.teacher_features(
                        starts, rng.uniform(size=(len(starts), 3)), rng.normal(size=(len(starts), 8))
                    )
                    writer.write(schema.add_features(record.numpy(), features))
    info.teacher = dataset_info.TeacherInfo(
        model="made-up",
        model_name="musicnn",
        vocabulary=["a", "b", "c"],
        embedding_dim=8,
        crop_frames=crop_frames,
        hop_frames=hop_frames,
        teacher_dataset_dir=str(source),
    )
    (directory / "dataset_info.json").write_text(info.to_json())
    return directory


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_data")
    mel128 = _synthetic(root / "mel128", 128)
    musicnn = _synthetic(root / "musicnn", 96, spec=PRESETS["musicnn"])
    return {
        128: str(mel128),
        96: str(_synthetic(root / "mel96", 96)),
        "musicnn": str(musicnn),
        "distill": str(_with_synthetic_teacher(mel128, root / "distill")),
    }


def _dataset_for(config_name: str, datasets) -> str:
    """The dataset with the front end (or the teacher targets) a config's model needs."""
    if config_name.startswith("distill"):
        return datasets["distill"]
    if "musicnn" in config_name:
        return datasets["musicnn"]
    return datasets[96 if "crnn" in config_name else 128]


def _trainer(config_names, bindings, model_dir, **kwargs):
    config_text = config_lib.parse(config_names, bindings)
    config_lib.check_or_save(str(model_dir), config_text)
    return Trainer(Experiment(), str(model_dir), tf.distribute.get_strategy(), **kwargs)


def _one_step(trainer) -> float:
    """Starts a run and takes one training step (no validation, no export: `test_smoke_training_*` and the
    objectives' own tests run whole runs); checks that it changed the trained weights and returns its loss."""
    trainer.restore_or_start()
    variables = trainer.objective.trainable_variables(trainer.model, trainer.heads)
    before = [v.numpy().copy() for v in variables]
    loss, _ = trainer._train_step(iter(trainer._dataset()))
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, variables, strict=True))
    return float(loss)


@pytest.mark.parametrize("config_name", TOP_LEVEL_CONFIGS)
def test_every_shipped_config_builds_and_steps(config_name, datasets, tmp_path):
    bindings = [
        f"Experiment.dataset_dir = '{_dataset_for(config_name, datasets)}'",
        "Experiment.batch_size = 2",
        "Experiment.eval_num_chunks = 1",
    ]
    assert np.isfinite(_one_step(_trainer([config_name], bindings, tmp_path)))


def test_demo_config_composes_with_a_model_config(datasets, tmp_path):
    trainer = _trainer(
        ["short_chunk_res.gin", "demo.gin"],
        [f"Experiment.dataset_dir = '{datasets[128]}'", "Experiment.epochs = 1", "Experiment.steps_per_epoch = 1"],
        tmp_path,
    )
    assert trainer.experiment.batch_size == 8 and trainer.experiment.phases[0].learning_rate == 1e-3
    assert np.isfinite(_one_step(trainer))


def _tags(directory):
    accumulator = event_accumulator.EventAccumulator(str(directory), size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    return set(accumulator.Tags()["tensors"])


def test_smoke_training_writes_checkpoints_config_and_summaries(datasets, tmp_path):
    trainer = _trainer(
        ["short_chunk_res.gin", "smoke.gin"],
        [f"Experiment.dataset_dir = '{datasets[128]}'"],
        tmp_path,
        profile_steps=(1, 3),
    )
    trainer.writers.config(
        (tmp_path / config_lib.CONFIG_FILENAME).read_text(), config_lib.save_operative(str(tmp_path))
    )
    result = trainer.train()
    assert result.global_step == 4 and result.epochs_completed == 2
    operative = (tmp_path / config_lib.OPERATIVE_CONFIG_FILENAME).read_text()
    assert "Experiment.model_name = 'short_chunk_res'" in operative and "smoke/Phase.learning_rate = 0.001" in operative
    assert "Experiment.dataset_dir" in (tmp_path / config_lib.CONFIG_FILENAME).read_text()
    train_tags = _tags(tmp_path / "train")
    assert {"loss", "learning_rate", "steps_per_second", "examples_per_second", "input_log_mel"} <= train_tags
    assert {"gin/config", "gin/operative_config"} <= train_tags
    valid_tags = _tags(tmp_path / "valid")
    assert {"loss", "roc_auc_macro", "pr_auc_macro", "roc_auc_per_tag/rock", "pr_curve/rock/pr_curves"} <= valid_tags
    assert (tmp_path / "projector" / "projector_config.pbtxt").exists()
    assert len((tmp_path / "projector" / "metadata.tsv").read_text().splitlines()) == 1 + 4
    assert (tmp_path / "best" / "best.index").exists()
    assert list((tmp_path / "profile").rglob("*.xplane.pb")), "the profiler window wrote no trace"
    exported, info = artifact.load(str(tmp_path))
    assert list(info.vocabulary) == VOCABULARY == models.tag_vocabulary(exported)
    assert info.model_name == "short_chunk_res" and info.crop_frames == 231 and info.embedding_dim == 512
    assert info.training.dataset_dir == datasets[128] and info.training.best_metric == trainer.experiment.best_metric
    assert info.training.init_from is None and info.provenance is None
    trainer.restore_best()
    probe = np.random.default_rng(0).normal(-40, 5, (1, 231, 128)).astype(np.float32)
    np.testing.assert_allclose(
        exported(probe, training=False)["tags"].numpy(), trainer.model(probe, training=False)["tags"].numpy(), atol=1e-6
    )


def test_schedule_switches_optimizer_and_reloads_best(datasets, tmp_path):
    bindings = [
        f"Experiment.dataset_dir = '{datasets[128]}'",
        "Experiment.epochs = 3",
        "Experiment.best_metric = 'val_loss'",
        "Experiment.phases = [@first/Phase(), @second/Phase()]",
        "first/Phase.optimizer = 'adam'",
        "first/Phase.learning_rate = 1e-3",
        "second/Phase.start_epoch = 2",
        "second/Phase.optimizer = 'sgd'",
        "second/Phase.learning_rate = 0.01",
        "second/Phase.momentum = 0.9",
        "second/Phase.nesterov = True",
        "second/Phase.reload_best = True",
    ]
    trainer = _trainer(["short_chunk_res.gin", "smoke.gin"], bindings, tmp_path)
    reloaded = []
    original = trainer.restore_best
    trainer.restore_best = lambda: (reloaded.append(int(trainer.state.epoch.numpy())), original())[-1]
    trainer.train()
    assert isinstance(trainer._optimizer, keras.optimizers.SGD)
    assert trainer._optimizer.nesterov and float(trainer._optimizer.learning_rate.numpy()) == pytest.approx(0.01)
    assert int(trainer.state.phase.numpy()) == 1
    assert reloaded == [2]
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path / CHECKPOINT_DIRNAME)))
    assert reader.get_tensor("state/phase/.ATTRIBUTES/VARIABLE_VALUE") == 1


def test_model_dir_of_another_config_is_refused(datasets, tmp_path):
    _trainer(["short_chunk_res.gin", "smoke.gin"], [f"Experiment.dataset_dir = '{datasets[128]}'"], tmp_path)
    with pytest.raises(config_lib.ConfigMismatchError, match="different configuration") as raised:
        _trainer(["short_chunk_cnn.gin", "smoke.gin"], [f"Experiment.dataset_dir = '{datasets[128]}'"], tmp_path)
    assert "short_chunk_cnn" in str(raised.value)
    # The command line says so without a traceback: the mistake is the user's.
    done = run_binary(
        "train", "--config=short_chunk_cnn.gin", f"--dataset_dir={datasets[128]}", f"--model_dir={tmp_path}"
    )
    assert done.returncode != 0 and "error: " in done.stderr and "different configuration" in done.stderr


def test_crnn_needs_a_96_band_dataset(datasets, tmp_path):
    with pytest.raises(config_lib.ConfigError, match="96-band"):
        _trainer(["crnn.gin", "smoke.gin"], [f"Experiment.dataset_dir = '{datasets[128]}'"], tmp_path)
    done = run_binary("train", "--config=crnn.gin", f"--dataset_dir={datasets[128]}", f"--model_dir={tmp_path / 'b'}")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"error: {datasets[128]} has 128 mel bands; the crnn needs a 96-band dataset" in done.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--gin_param=Experiment.epochs = "], "error: --gin_param='Experiment.epochs = ': "),
        (["--gin_param=Experiment.no_such_setting = 3"], "error: --gin_param='Experiment.no_such_setting = 3': "),
        (["--gin_param=NoSuchThing.epochs = 3"], "error: --gin_param='NoSuchThing.epochs = 3': No configurable"),
        ([], "error: the configuration sets no Experiment.model_name: give a model's config first"),
    ],
)
def test_configuration_mistakes_are_error_lines_naming_them(arguments, message, datasets, tmp_path):
    """A malformed or unknown binding, or a config without a model: the mistake named, no traceback, nothing written."""
    configs = ["--config=smoke.gin"] if not arguments else ["--config=short_chunk_res.gin", "--config=smoke.gin"]
    done = run_binary("train", *configs, *arguments, f"--dataset_dir={datasets[128]}", f"--model_dir={tmp_path / 'm'}")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert message in done.stderr
    assert not (tmp_path / "m").exists()


def test_a_run_without_a_dataset_is_told_how_to_give_one(tmp_path):
    done = run_binary("train", "--config=short_chunk_res.gin", f"--model_dir={tmp_path / 'm'}")
    assert done.returncode == 1 and "error: the configuration sets no Experiment.dataset_dir: give --dataset_dir" in (
        done.stderr
    )


# Killed at step KILL_AT or later (mid-epoch or at a boundary, whichever the timing gives), resumed to the end.
KILL_EPOCHS, KILL_STEPS_PER_EPOCH, KILL_AT = 2, 5, 4
KILL_TOTAL = KILL_EPOCHS * KILL_STEPS_PER_EPOCH


def _train_command(dataset_dir, model_dir, *extra, configs=("short_chunk_res.gin",)):
    return [
        sys.executable,
        "-m",
        "train",
        *(f"--config={config}" for config in configs),
        "--config=smoke.gin",
        f"--dataset_dir={dataset_dir}",
        f"--model_dir={model_dir}",
        f"--gin_param=Experiment.epochs = {KILL_EPOCHS}",
        f"--gin_param=Experiment.steps_per_epoch = {KILL_STEPS_PER_EPOCH}",
        *extra,
    ]


# Small models (musicnn: 0.8M parameters) keep the checkpoint written at every step small: what is tested
# is the resumption, the same for every architecture and objective (the trainer never asks which one runs).
# Tagging resumes a model alone; contrastive fine-tuning a model with a frozen tag head (left out of the
# optimizer) and a training-only projection head. Distillation's heads are checkpointed the same way
# (`test_distillation_lowers_the_loss_on_real_audio` checks its checkpoint holds them).
KILL_RUNS = {
    # objective: (configs, dataset fixture key, extra flags, training-only heads the checkpoint must hold)
    "tagging": (("musicnn.gin",), "musicnn", (), []),
    "contrastive": (
        ("contrastive_msd_musicnn.gin",),
        "untagged_musicnn",
        (f"--gin_param=Experiment.init_from = '{REPO_ROOT / 'pretrained' / 'msd_musicnn'}'",),
        ["projection"],
    ),
}


@pytest.mark.parametrize("objective", sorted(KILL_RUNS))
def test_kill_9_then_the_same_command_resumes(objective, datasets, untagged_demo, tmp_path):
    configs, dataset, extra, heads = KILL_RUNS[objective]
    dataset_dir = untagged_demo["musicnn"] if dataset == "untagged_musicnn" else datasets[dataset]
    model_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = _train_command(dataset_dir, model_dir, *extra, configs=configs)
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        latest = tf.train.latest_checkpoint(str(model_dir / CHECKPOINT_DIRNAME))
        if latest and int(latest.rsplit("-", 1)[1]) >= KILL_AT:
            break
        time.sleep(0.05)
    assert process.poll() is None, "training finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = checkpoint_state(str(model_dir))
    assert KILL_AT <= killed["global_step"] < KILL_TOTAL
    assert killed["optimizer_iterations"] == killed["global_step"]
    assert killed["heads"] == heads  # The projection head (and embedding map) are checkpointed, not exported.

    resumed = run_binary("train", *command[3:])  # The same command; its `main` in this process.
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    match = re.search(r"Resumed from .*ckpt-(\d+): epoch (\d+), step (\d+) in epoch, global step (\d+)", resumed.stderr)
    assert match, resumed.stderr[-3000:]
    assert int(match.group(4)) == killed["global_step"] and int(match.group(2)) == killed["epoch"]
    final = checkpoint_state(str(model_dir))
    assert final["global_step"] == KILL_TOTAL and final["epoch"] == KILL_EPOCHS
    # The optimizer state was restored, not restarted: its step count continued.
    assert final["optimizer_iterations"] == KILL_TOTAL


def test_strategy_names():
    assert strategies.is_chief(strategies.make_strategy("default"))
    with pytest.raises(ValueError, match="unknown strategy"):
        strategies.make_strategy("horovod")


def test_mirrored_strategy_on_two_cpu_devices(datasets, tmp_path, two_cpu_mirrored_strategy):
    strategy = two_cpu_mirrored_strategy
    config_lib.parse(
        ["musicnn.gin", "smoke.gin"],
        [f"Experiment.dataset_dir = '{datasets['musicnn']}'", "Experiment.batch_size = 4"],
    )
    trainer = Trainer(Experiment(), str(tmp_path), strategy)
    result = trainer.train()
    assert result.global_step == 4
    assert np.isfinite(result.best_value)


def _free_ports(count):
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multi_worker_training_on_two_local_processes(datasets, tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    model_dir = tmp_path / "multi_worker"
    command = [
        sys.executable,
        "-m",
        "train",
        "--config=musicnn.gin",
        "--config=smoke.gin",
        f"--dataset_dir={datasets['musicnn']}",
        f"--model_dir={model_dir}",
        "--strategy=multi_worker",
        "--gin_param=Experiment.batch_size = 4",
    ]
    processes = []
    for index in range(2):
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        }
        processes.append(
            subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    outputs = [p.communicate(timeout=400)[0] for p in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
        assert "trained musicnn for 2 epochs (4 steps)" in output
    final = checkpoint_state(str(model_dir))
    assert final["global_step"] == 4 and final["optimizer_iterations"] == 4
    assert (model_dir / "workers" / "worker_1" / CHECKPOINT_DIRNAME).is_dir()
    assert not (model_dir / "workers" / "worker_0").exists()
    assert list((model_dir / "train").iterdir())  # Summaries come from the chief only.


def test_early_stopping_when_the_metric_stops_improving(tmp_path):
    # Every validation track has every tag: ROC-AUC is undefined (NaN), so no
    # epoch improves on the first and patience runs out.
    rng = np.random.default_rng(0)
    data = {
        "train": {f"t{i}": (rng.normal(-40, 5, (120, 128)).astype(np.float32), [VOCABULARY[i % 3]]) for i in range(4)},
        "valid": {f"v{i}": (rng.normal(-40, 5, (120, 128)).astype(np.float32), VOCABULARY) for i in range(2)},
    }
    dataset = tmp_path / "data"
    dataset.mkdir()
    write_dataset(dataset, data, VOCABULARY, shards_per_split=1)
    bindings = [
        f"Experiment.dataset_dir = '{dataset}'",
        "Experiment.epochs = 10",
        "Experiment.steps_per_epoch = 1",
        "Experiment.best_metric = 'val_roc_auc'",
        "Experiment.early_stopping_patience = 2",
    ]
    result = _trainer(["short_chunk_res.gin", "smoke.gin"], bindings, tmp_path / "run").train()
    assert result.stopped_early and result.epochs_completed == 2 and result.best_epoch == -1


def test_mixed_precision_and_xla_training(datasets, tmp_path):
    try:
        trainer = _trainer(
            ["musicnn.gin", "smoke.gin"],
            [f"Experiment.dataset_dir = '{datasets['musicnn']}'", "Experiment.epochs = 1"],
            tmp_path,
            mixed_precision="mixed_bfloat16",
            jit_compile=True,
        )
        assert trainer.model.get_layer("timbral_74").compute_dtype == "bfloat16"
        result = trainer.train()
        assert result.global_step == 2 and np.isfinite(result.best_value)
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("objective", ["Tagging", "Contrastive"])
def test_an_input_seed_repeats_a_run_step_for_step(objective, datasets, tmp_path):
    def trained_weights(run, input_seed):
        bindings = [
            f"Experiment.dataset_dir = '{datasets[96]}'",
            "Experiment.crop_frames = 128",
            "Experiment.epochs = 1",
            "Experiment.steps_per_epoch = 2",
            f"Experiment.objective = @{objective}()",
            "Experiment.best_metric = 'val_loss'",
            f"Experiment.input_seed = {input_seed}",
        ]
        trainer = _trainer(["crnn.gin", "smoke.gin"], bindings, tmp_path / run)
        assert trainer.train().global_step == 2
        return trainer.model.get_weights()

    first, again, other = (trained_weights(*run) for run in (("a", 7), ("b", 7), ("c", 8)))
    # Adam's first steps move a weight by up to the learning rate (1e-3) whatever its gradient's size:
    # float noise in a tiny gradient moves it by a little of that.
    for a, b in zip(first, again, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)
    # Another seed draws other crops in another order: from the same start (Experiment.seed) it ends elsewhere.
    assert max(float(np.abs(a - c).max()) for a, c in zip(first, other, strict=True)) > 0.1


def test_validating_every_epoch_traces_the_predictor_once(datasets):
    """Evaluation reuses one trace per model (TensorFlow warned of retracing at every validation).

    Counted on the predictor itself: TensorFlow's retracing warning counts every call in the process, so
    whether it fires depended on which tests ran before in the same worker.
    """
    from train import evaluate_lib

    model = models.get_model("short_chunk_res", 3, vocabulary=VOCABULARY)
    first = evaluate_lib.predict_tracks(model, datasets[128], "valid", 231, num_chunks=2)
    traces = evaluate_lib._predict_chunks.experimental_get_tracing_count()
    again = [evaluate_lib.predict_tracks(model, datasets[128], "valid", 231, num_chunks=2) for _ in range(5)]
    assert evaluate_lib._predict_chunks.experimental_get_tracing_count() == traces
    np.testing.assert_allclose(first.scores, again[-1].scores)
