"""The training loop: distributed, resumable, logged to TensorBoard.

A custom loop rather than `model.fit`, because the Won et al. recipe swaps
optimizers mid-run and reloads the best weights at each swap, and because a
killed run must resume with its optimizer state, epoch and step counters,
schedule phase and best-so-far: all of these live in one `tf.train.Checkpoint`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

import models
from models import artifact
from tfrecords import dataset_info
from train import config as config_lib
from train import summaries
from train.experiment import BEST_METRICS, Experiment, Phase
from train.initialization import InitializationError, initialize_from

CHECKPOINT_DIRNAME = "checkpoints"
BEST_DIRNAME = artifact.BEST_DIRNAME


@dataclasses.dataclass
class RunState:
    """Counters that a checkpoint carries besides weights and optimizer."""

    epoch: tf.Variable
    step_in_epoch: tf.Variable
    global_step: tf.Variable
    phase: tf.Variable
    best_value: tf.Variable
    best_epoch: tf.Variable
    epochs_without_improvement: tf.Variable

    @classmethod
    def create(cls, best_mode: str) -> RunState:
        def counter(name):
            return tf.Variable(0, dtype=tf.int64, trainable=False, name=name)

        initial_best = math.inf if best_mode == "min" else -math.inf
        return cls(
            epoch=counter("epoch"),
            step_in_epoch=counter("step_in_epoch"),
            global_step=counter("global_step"),
            phase=counter("phase"),
            best_value=tf.Variable(initial_best, dtype=tf.float64, trainable=False, name="best_value"),
            best_epoch=tf.Variable(-1, dtype=tf.int64, trainable=False, name="best_epoch"),
            epochs_without_improvement=counter("epochs_without_improvement"),
        )

    def as_dict(self) -> dict[str, tf.Variable]:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


def make_optimizer(phase: Phase, mixed_precision: str | None) -> keras.optimizers.Optimizer:
    """The optimizer of a phase (weight decay is applied to the gradients)."""
    if phase.optimizer == "adam":
        optimizer = keras.optimizers.Adam(phase.learning_rate, epsilon=1e-8)  # PyTorch's epsilon.
    else:
        optimizer = keras.optimizers.SGD(phase.learning_rate, momentum=phase.momentum, nesterov=phase.nesterov)
    if mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def _phase_from_checkpoint(path: str) -> int:
    reader = tf.train.load_checkpoint(path)
    return int(reader.get_tensor("state/phase/.ATTRIBUTES/VARIABLE_VALUE"))


def _init_vocabulary(init_from: str | None) -> list[str] | None:
    """The tags of the artifact a run starts from (None from scratch)."""
    if not init_from:
        return None
    try:
        return list(artifact.read_info(init_from).vocabulary)
    except artifact.ArtifactError as error:
        raise InitializationError(f"Experiment.init_from: {error}") from error


def _input_seed(experiment, input_context) -> int | None:
    """The seed of one input pipeline's training input: each pipeline (worker) draws its own crops."""
    if experiment.input_seed is None:
        return None
    return experiment.input_seed + input_context.input_pipeline_id


@dataclasses.dataclass
class TrainResult:
    """What a finished (or early-stopped) run reached."""

    epochs_completed: int
    global_step: int
    best_value: float
    best_epoch: int
    stopped_early: bool


class Trainer:
    """Trains one experiment in one model directory.

    Args:
        experiment: The experiment settings.
        model_dir: Where checkpoints, configs and TensorBoard logs go.
        strategy: The distribution strategy.
        is_chief: Whether this process writes checkpoints and summaries.
        mixed_precision: None, `mixed_float16` or `mixed_bfloat16`.
        jit_compile: Compile the training step with XLA.
        profile_steps: Optional (first, last) global steps to profile.
    """

    def __init__(
        self,
        experiment: Experiment,
        model_dir: str,
        strategy: tf.distribute.Strategy,
        is_chief: bool = True,
        mixed_precision: str | None = None,
        jit_compile: bool = False,
        profile_steps: tuple[int, int] | None = None,
    ):
        self.experiment = experiment
        self.model_dir = model_dir
        self.strategy = strategy
        self.is_chief = is_chief
        self.mixed_precision = mixed_precision
        self.jit_compile = jit_compile
        self.profile_steps = profile_steps
        self.info = dataset_info.load(experiment.dataset_dir)
        self.best_mode = BEST_METRICS[experiment.best_metric]
        n_mels, required = self.info.log_mel.n_mels, models.required_n_mels(experiment.model_name)
        if required is not None and n_mels != required:
            raise config_lib.ConfigError(
                f"{experiment.dataset_dir} has {n_mels} mel bands; the {experiment.model_name} needs a {required}-band "
                "dataset (`python -m data_prep --help`: --n_mels, --log_mel_preset)"
            )
        self.objective = experiment.objective
        self.vocabulary = self.objective.model_vocabulary(self.info, _init_vocabulary(experiment.init_from))
        keras.mixed_precision.set_global_policy(mixed_precision or "float32")
        keras.utils.set_random_seed(experiment.seed)
        with strategy.scope():
            self.model = experiment.build_model(self.info, self.vocabulary)
            self.heads = self.objective.heads(self.model, self.info)
            self.state = RunState.create(self.best_mode)
        self.steps_per_epoch = experiment.steps_per_epoch or self.objective.steps_per_epoch(experiment, self.info)
        self._optimizer = None
        self._checkpoint = None
        self._manager = None
        self._train_step = None
        self.last_predictions = None
        self._profiling = False
        self.writers = summaries.Writers(model_dir, enabled=is_chief)

    # Checkpoints ---------------------------------------------------------

    def _checkpoint_dir(self, name: str) -> str:
        directory = os.path.join(self.model_dir, name)
        if self.is_chief:
            return directory
        # Non-chief workers must write too (collective ops), but elsewhere.
        task_id = getattr(self.strategy.cluster_resolver, "task_id", 0)
        return os.path.join(self.model_dir, "workers", f"worker_{task_id}", name)

    def _set_phase(self, index: int):
        """Builds the optimizer of phase `index` and a checkpoint around it."""
        phase = self.experiment.phases[index]
        with self.strategy.scope():
            self._optimizer = make_optimizer(phase, self.mixed_precision)
            self._optimizer.build(self._trainable_variables())
        self.state.phase.assign(index)
        heads = {"heads": tf.train.Checkpoint(**self.heads)} if self.heads else {}
        self._checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self._optimizer, state=tf.train.Checkpoint(**self.state.as_dict()), **heads
        )
        self._manager = tf.train.CheckpointManager(
            self._checkpoint, self._checkpoint_dir(CHECKPOINT_DIRNAME), max_to_keep=3
        )
        self._train_step = self._make_train_step(phase)

    def _trainable_variables(self) -> list:
        """What the objective trains: the model's variables (the tag head's, unless it is frozen) and its heads'."""
        return self.objective.trainable_variables(self.model, self.heads)

    def _save(self):
        self._manager.save(checkpoint_number=int(self.state.global_step.numpy()))

    def _best_checkpoint(self, model: keras.Model) -> tf.train.Checkpoint:
        """The best weights together with the metric value and epoch they reached."""
        return tf.train.Checkpoint(model=model, best_value=self.state.best_value, best_epoch=self.state.best_epoch)

    def _save_best(self):
        self._best_checkpoint(self.model).write(os.path.join(self._checkpoint_dir(BEST_DIRNAME), "best"))

    def export_best_model(self) -> str | None:
        """Saves the best weights as the model artifact `best/` (`models.artifact`).

        The artifact is self-describing (architecture, tag vocabulary, input
        length, log-mel parameters, how the weights were chosen), so serving
        needs neither gin nor this package.
        When no validation ever improved (e.g. a metric undefined on a tiny
        split), the last weights are saved and `best_epoch` is -1.
        """
        if not self.is_chief:
            return None
        policy = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy("float32")
        try:
            model = self.experiment.build_model(self.info, self.vocabulary)
        finally:
            keras.mixed_precision.set_global_policy(policy)
        best = os.path.join(self.model_dir, BEST_DIRNAME, "best")
        if tf.io.gfile.exists(best + ".index"):
            tf.train.Checkpoint(model=model).read(best).expect_partial()
            reader = tf.train.load_checkpoint(best)  # The values saved with these weights.
            best_value = float(reader.get_tensor("best_value/.ATTRIBUTES/VARIABLE_VALUE"))
            best_epoch = int(reader.get_tensor("best_epoch/.ATTRIBUTES/VARIABLE_VALUE"))
        else:
            model.set_weights(self.model.get_weights())
            best_value, best_epoch = float("nan"), -1
        info = artifact.ModelInfo(
            model_name=self.experiment.model_name,
            crop_frames=self.experiment.crop_frames,
            vocabulary=self.vocabulary,
            log_mel=self.info.log_mel,
            embedding_dim=artifact.embedding_dim(model),
            training=artifact.TrainingRecord(
                dataset_dir=self.experiment.dataset_dir,
                best_metric=self.experiment.best_metric,
                best_value=best_value,
                best_epoch=best_epoch,
                global_step=int(self.state.global_step.numpy()),
                init_from=self.experiment.init_from,
                objective=self.objective.describe(self.info),
            ),
        )
        directory = artifact.save(model, info, os.path.join(self.model_dir, BEST_DIRNAME))
        return os.path.join(directory, artifact.MODEL_FILENAME)

    def restore_best(self):
        """Loads the best weights so far into the model (each worker its own copy)."""
        path = os.path.join(self._checkpoint_dir(BEST_DIRNAME), "best")
        tf.train.Checkpoint(model=self.model).read(path).expect_partial()

    def restore_or_start(self) -> bool:
        """Resumes from the latest checkpoint, or starts (from `init_from`'s weights when set).

        `train` calls it first; calling it before (e.g. to validate the
        starting weights) is harmless. Returns whether it resumed.
        """
        latest = tf.train.latest_checkpoint(os.path.join(self.model_dir, CHECKPOINT_DIRNAME))
        if latest is None:
            if self.experiment.init_from:
                initialization = initialize_from(
                    self.model,
                    self.experiment.init_from,
                    self.experiment.model_name,
                    self.info.log_mel.fingerprint(),
                    self.vocabulary,
                )
                logging.info("Fine-tuning: %s", initialization.describe())
            self._set_phase(0)
            return False
        self._set_phase(_phase_from_checkpoint(latest))
        self._checkpoint.read(latest).assert_existing_objects_matched()
        logging.info(
            "Resumed from %s: epoch %d, step %d in epoch, global step %d, phase %d, best %s at epoch %d",
            latest,
            self.state.epoch.numpy(),
            self.state.step_in_epoch.numpy(),
            self.state.global_step.numpy(),
            self.state.phase.numpy(),
            self.state.best_value.numpy(),
            self.state.best_epoch.numpy(),
        )
        return True

    # Steps ---------------------------------------------------------------

    def _dataset(self):
        experiment, objective = self.experiment, self.objective
        return self.strategy.distribute_datasets_from_function(
            lambda input_context: objective.train_dataset(
                experiment, self.info, input_context, _input_seed(experiment, input_context)
            )
        )

    def _make_train_step(self, phase: Phase):
        model, optimizer, objective, heads = self.model, self._optimizer, self.objective, self.heads
        # Per-example losses are averaged over the global batch's examples
        # (crops for tagging, two views per track for the other objectives).
        global_batch = objective.examples_per_batch(self.experiment)
        weight_decay = phase.weight_decay
        variables = self._trainable_variables()

        def replica_step(batch):
            with tf.GradientTape() as tape:
                per_example, statistics = objective.loss(model, heads, batch, training=True)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
                total = loss
                if weight_decay:
                    # PyTorch's weight_decay adds wd * w to the gradient: the
                    # gradient of 0.5 * wd * |w|^2. As a loss term it is
                    # divided by the replica count before the gradients are
                    # summed, and loss scaling applies to it like the rest.
                    l2 = tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in variables])
                    total += tf.nn.scale_regularization_loss(0.5 * weight_decay * l2)
                scaled = optimizer.scale_loss(total)
            gradients = tape.gradient(scaled, variables)
            optimizer.apply_gradients(zip(gradients, variables, strict=True))
            return loss, statistics

        if self.jit_compile:  # XLA compiles the per-replica computation.
            replica_step = tf.function(replica_step, jit_compile=True)

        @tf.function
        def step(iterator):
            losses, statistics = self.strategy.run(replica_step, args=(next(iterator),))
            loss = self.strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)
            means = {k: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in statistics.items()}
            return loss, means

        return step

    # Validation ----------------------------------------------------------

    def validate(self, split: str = "valid") -> dict[str, float]:
        """Scores the model as its objective validates (loss, and tag AUCs for tagging); logs the results."""
        validation = self.objective.validate(self.model, self.heads, self.experiment, self.info, split)
        self.writers.validation(int(self.state.global_step.numpy()), validation, list(self.info.vocabulary))
        if validation.predictions is not None:
            self.last_predictions = validation.predictions
        return validation.results

    def _update_best(self, results: dict[str, float], epoch: int) -> bool:
        value = results[self.experiment.best_metric]
        best = float(self.state.best_value.numpy())
        improved = not math.isnan(value) and (value < best if self.best_mode == "min" else value > best)
        if improved:
            self.state.best_value.assign(value)
            self.state.best_epoch.assign(epoch)
            self.state.epochs_without_improvement.assign(0)
            self._save_best()
        else:
            self.state.epochs_without_improvement.assign_add(1)
        return improved

    # The loop --------------------------------------------------------------

    def train(self) -> TrainResult:
        """Trains until the last epoch or early stopping; resumes if possible."""
        experiment = self.experiment
        if not self.restore_or_start() and self.writers.enabled and experiment.num_spectrogram_images > 0:
            inputs = self.objective.sample_inputs(experiment, self.info, experiment.num_spectrogram_images)
            self.writers.spectrograms(inputs, self.info)
        iterator = iter(self._dataset())
        stopped_early = False
        while int(self.state.epoch.numpy()) < experiment.epochs:
            if self._patience_exhausted():  # Also stops a resumed run that had stopped early.
                stopped_early = True
                break
            epoch = int(self.state.epoch.numpy())
            phase_index = experiment.phase_index(epoch)
            if phase_index != int(self.state.phase.numpy()):
                self._enter_phase(phase_index)
            self._run_epoch(iterator, epoch)
            validate = (epoch + 1) % experiment.eval_every_epochs == 0 or epoch + 1 == experiment.epochs
            if validate:
                results = self.validate()
                improved = self._update_best(results, epoch)
                logging.info(
                    "epoch %d: %s%s", epoch, {k: round(v, 4) for k, v in results.items()}, " (best)" if improved else ""
                )
            self.state.epoch.assign_add(1)
            self.state.step_in_epoch.assign(0)
            self._save()
        self._stop_profiler()
        self.writers.projector(self.last_predictions, list(self.info.vocabulary))
        self.writers.flush()
        self.export_best_model()
        return TrainResult(
            epochs_completed=int(self.state.epoch.numpy()),
            global_step=int(self.state.global_step.numpy()),
            best_value=float(self.state.best_value.numpy()),
            best_epoch=int(self.state.best_epoch.numpy()),
            stopped_early=stopped_early,
        )

    def _patience_exhausted(self) -> bool:
        patience = self.experiment.early_stopping_patience
        if patience is None or int(self.state.epochs_without_improvement.numpy()) < patience:
            return False
        logging.info("Early stopping: no better %s in %d validations", self.experiment.best_metric, patience)
        return True

    def _enter_phase(self, index: int):
        phase = self.experiment.phases[index]
        previous = self.experiment.phases[int(self.state.phase.numpy())]
        if phase.reload_best and int(self.state.best_epoch.numpy()) >= 0:
            self.restore_best()
            logging.info("Phase %d: reloaded the best weights (epoch %d)", index, self.state.best_epoch.numpy())
        same_optimizer = (phase.optimizer, phase.momentum, phase.nesterov) == (
            previous.optimizer,
            previous.momentum,
            previous.nesterov,
        )
        if same_optimizer:
            # A learning-rate drop keeps the optimizer and its momentum, as the
            # reference lowers the rate of its one SGD optimizer in place.
            self._unwrapped_optimizer().learning_rate.assign(phase.learning_rate)
            self.state.phase.assign(index)
            self._train_step = self._make_train_step(phase)
        else:
            self._set_phase(index)
        logging.info("Phase %d from epoch %d: %s", index, phase.start_epoch, phase)
        self._save()

    def _unwrapped_optimizer(self):
        return getattr(self._optimizer, "inner_optimizer", self._optimizer)

    def _run_epoch(self, iterator, epoch: int):
        experiment = self.experiment
        progress = keras.utils.Progbar(self.steps_per_epoch, verbose=1 if self.is_chief else 0, unit_name="step")
        start_step = int(self.state.step_in_epoch.numpy())
        window_start, window_steps = time.perf_counter(), 0
        for step in range(start_step, self.steps_per_epoch):
            global_step = int(self.state.global_step.numpy())
            self._maybe_profile(global_step)
            loss, statistics = self._train_step(iterator)
            loss = float(loss.numpy())
            if not np.isfinite(loss):
                raise FloatingPointError(f"loss became {loss} at epoch {epoch}, step {step}")
            self.state.global_step.assign_add(1)
            self.state.step_in_epoch.assign(step + 1)
            window_steps += 1
            progress.update(step + 1, [("loss", loss)])
            global_step += 1
            if global_step % experiment.log_every_steps == 0:
                elapsed = time.perf_counter() - window_start
                self.writers.training(
                    global_step, loss, self._learning_rate(), window_steps / elapsed, experiment.batch_size
                )
                self.writers.scalars("train", global_step, {k: float(v) for k, v in statistics.items()})
                window_start, window_steps = time.perf_counter(), 0
            if global_step % experiment.checkpoint_every_steps == 0 and step + 1 < self.steps_per_epoch:
                self._save()

    def _learning_rate(self) -> float:
        return float(keras.ops.convert_to_numpy(self._unwrapped_optimizer().learning_rate))

    def _maybe_profile(self, global_step: int):
        if not self.profile_steps or not self.is_chief:
            return
        first, last = self.profile_steps
        if first <= global_step < last and not self._profiling:
            tf.profiler.experimental.start(os.path.join(self.model_dir, "profile"))
            self._profiling = True
        elif global_step >= last:
            self._stop_profiler()

    def _stop_profiler(self):
        if self._profiling:
            tf.profiler.experimental.stop()
            self._profiling = False
