"""The experiment settings of a training run, configured with gin.

Runtime settings (where to write, which devices) are absl flags of
`python -m train`; everything that defines the experiment is here and comes
from the gin files in `configs/`.
"""

from __future__ import annotations

import dataclasses

import gin

import models
from tfrecords import readers
from train import objectives

# Configurables defined elsewhere are registered here, from outside, so that
# the model and data code stays free of gin: this project's own choice (ddsp,
# by contrast, decorates its library code with gin directly).
gin.external_configurable(readers.SpecAugment, module="readers")

OPTIMIZERS = ("adam", "sgd")


@gin.configurable(module="train")
@dataclasses.dataclass(frozen=True)
class Phase:
    """One phase of the optimisation schedule.

    Attributes:
        start_epoch: First epoch (0-based) of the phase.
        optimizer: `adam` or `sgd`.
        learning_rate: Learning rate.
        momentum: SGD momentum.
        nesterov: SGD with Nesterov momentum.
        weight_decay: L2 penalty added to the gradients, as PyTorch's
            `weight_decay` does for Adam and SGD (not decoupled).
        reload_best: Restore the best weights so far when the phase starts.
    """

    start_epoch: int = 0
    optimizer: str = "adam"
    learning_rate: float = 1e-4
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    reload_best: bool = False

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.learning_rate <= 0 or self.weight_decay < 0 or self.start_epoch < 0:
            raise ValueError(f"invalid phase {self}")


BEST_METRICS = {"val_loss": "min", "val_roc_auc": "max", "val_pr_auc": "max"}


@gin.configurable(module="train")
@dataclasses.dataclass(frozen=True)
class Experiment:
    """Everything that defines a training run.

    Attributes:
        dataset_dir: A dataset written by `python -m data_prep`.
        model_name: `crnn`, `short_chunk_cnn` or `short_chunk_res`.
        model_kwargs: Extra arguments of `models.get_model` (e.g. dropout).
        crop_frames: Frames per training crop and per evaluation chunk.
        crops_per_track: Random crops per track read.
        batch_size: Global batch size (summed over replicas).
        epochs: Number of epochs.
        steps_per_epoch: Steps per epoch; default: every training crop once.
        phases: The optimisation schedule, ordered by start epoch.
        best_metric: `val_loss`, `val_roc_auc` or `val_pr_auc`.
        early_stopping_patience: Stop after this many validations in a row
            without a new best; None never stops early.
        eval_num_chunks: Evenly spaced chunks per validation track.
        eval_every_epochs: Validate every this many epochs (and at the end).
        checkpoint_every_steps: Save a checkpoint every this many steps
            (and at every epoch end).
        shuffle_buffer: Crops in the training shuffle buffer.
        cache_dataset: Keep the parsed training tracks in memory.
        spec_augment: Optional SpecAugment masking of training crops.
        seed: Seed of the weight initialisation.
        input_seed: Seeds the training input (track order, crops, views,
            augmentations): two runs of the same config then take the same
            steps. None (the default) reads in parallel without a fixed
            order, which is faster.
        log_every_steps: Scalars to TensorBoard every this many steps.
        num_spectrogram_images: Training crops shown in TensorBoard.
        init_from: A model artifact (a converted checkpoint such as
            `pretrained/mtat_crnn`, or another run's model directory) whose
            weights start the run: fine-tuning. Its tag head is replaced when
            the dataset's vocabulary differs (`train.initialization`).
        objective: What the run optimises (`train.objectives`): `Tagging()`
            (supervised, the default), `Contrastive()` (self-supervised, audio
            only) or `Distillation()` (a teacher's precomputed outputs).
            `crops_per_track` applies to tagging; the other two read a batch of
            `batch_size` distinct tracks, two views each.
    """

    dataset_dir: str = gin.REQUIRED
    model_name: str = gin.REQUIRED
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    crop_frames: int = 231
    crops_per_track: int = 1
    batch_size: int = 16
    epochs: int = 200
    steps_per_epoch: int | None = None
    phases: tuple[Phase, ...] = (Phase(),)
    best_metric: str = "val_loss"
    early_stopping_patience: int | None = None
    eval_num_chunks: int = 16
    eval_every_epochs: int = 1
    checkpoint_every_steps: int = 500
    shuffle_buffer: int = 1024
    cache_dataset: bool = False
    spec_augment: readers.SpecAugment | None = None
    seed: int = 0
    input_seed: int | None = None
    log_every_steps: int = 10
    num_spectrogram_images: int = 3
    init_from: str | None = None
    objective: objectives.Objective = objectives.Tagging()

    def __post_init__(self):
        if self.model_name not in models.MODEL_BUILDERS:
            raise ValueError(f"unknown model {self.model_name!r}; choose one of {sorted(models.MODEL_BUILDERS)}")
        if self.best_metric not in BEST_METRICS:
            raise ValueError(f"best_metric must be one of {sorted(BEST_METRICS)}, got {self.best_metric!r}")
        self.objective.check_best_metric(self.best_metric)
        phases = tuple(self.phases)
        if not phases or phases[0].start_epoch != 0:
            raise ValueError("the first phase must start at epoch 0")
        if any(b.start_epoch <= a.start_epoch for a, b in zip(phases, phases[1:], strict=False)):
            raise ValueError("phases must have increasing start epochs")
        object.__setattr__(self, "phases", phases)
        positive = (
            "batch_size",
            "epochs",
            "crop_frames",
            "crops_per_track",
            "eval_num_chunks",
            "eval_every_epochs",
            "checkpoint_every_steps",
            "log_every_steps",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"Experiment.{name} must be at least 1, got {getattr(self, name)}")

    def build_model(self, info, vocabulary=None):
        """The experiment's model for a dataset's mel bands, with the dataset's tags or `vocabulary`."""
        vocabulary = list(info.vocabulary if vocabulary is None else vocabulary)
        return models.get_model(
            self.model_name,
            len(vocabulary),
            n_mels=info.log_mel.n_mels,
            num_frames=self.crop_frames,
            vocabulary=vocabulary,
            **self.model_kwargs,
        )

    def phase_index(self, epoch: int) -> int:
        """The index of the phase that epoch `epoch` belongs to."""
        return max(i for i, phase in enumerate(self.phases) if phase.start_epoch <= epoch)
