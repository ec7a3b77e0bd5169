"""Training objectives: what a step optimises, what it reads, and how a run is validated.

`Experiment.objective` (gin) selects one:

* `Tagging`: binary cross-entropy against the dataset's tags (supervised;
  the Won et al. recipe).
* `Contrastive`: NT-Xent (SimCLR's InfoNCE; Chen et al. 2020) on a
  projection head over the model's embedding: two random views of a track
  are a positive pair, the views of the other tracks of the global batch
  (gathered from every replica) its negatives. Needs audio only: an untagged
  catalog (`python -m data_prep --norequire_tags`) is enough. The projection
  head exists only in training and checkpoints; the exported model is the
  tagger, whose embedding was trained.
* `Distillation`: the student learns a teacher's tag probabilities and
  embedding at the same positions of a track (`python -m
  train.compute_teacher_targets` precomputes them, so the teacher runs once),
  optionally plus the contrastive term; the student's tags are the teacher's.

Losses are plain functions of tensors (`nt_xent`, `distillation_losses`), so
that they are tested on their own; the objectives wire them to the model,
the input pipeline and validation.
"""

from __future__ import annotations

import abc
import dataclasses
import math

import gin
import keras
import tensorflow as tf

import models
from tfrecords import readers, schema
from train import augmentation
from train import metrics as metrics_lib
from train.evaluate_lib import TrackPredictions, predict_tracks

TAGGING, CONTRASTIVE, DISTILLATION = "tagging", "contrastive", "distillation"
LOG_MEL = schema.LOG_MEL
TEACHER_TAGS = schema.TEACHER_TAGS
TEACHER_EMBEDDING = schema.TEACHER_EMBEDDING
_MASK = -1e9

gin.external_configurable(augmentation.ViewAugment, module="augmentation")


class ObjectiveError(ValueError):
    """A dataset or setting this objective cannot train with; the message says why."""


# Losses ----------------------------------------------------------------------


def cross_replica_concat(tensor: tf.Tensor) -> tf.Tensor:
    """Concatenates a per-replica tensor along axis 0 over all replicas, in replica order.

    Through an all-reduce of a one-hot placement (SimCLR's
    `tpu_cross_replica_concat`): the all-reduce's gradient is an all-reduce,
    so each replica's embeddings receive the gradient of every replica's
    loss terms they appear in as negatives. Identity with one replica.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return tensor
    num_replicas = context.num_replicas_in_sync
    placed = tf.scatter_nd(
        [[context.replica_id_in_sync_group]], tensor[tf.newaxis], tf.concat([[num_replicas], tf.shape(tensor)], 0)
    )
    gathered = context.all_reduce(tf.distribute.ReduceOp.SUM, placed)
    return tf.reshape(gathered, tf.concat([[-1], tf.shape(tensor)[1:]], 0))


def _replica_offset(local_batch: tf.Tensor) -> tf.Tensor:
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return tf.constant(0, tf.int32)
    return tf.cast(context.replica_id_in_sync_group, tf.int32) * local_batch


def nt_xent(
    projections: tf.Tensor, temperature: float, false_negative_prior: float = 0.0
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """NT-Xent over two views per track, negatives from the global batch.

    Args:
        projections: `[local batch, 2, dim]` this replica's two views per
            track (normalised here).
        temperature: Softmax temperature.
        false_negative_prior: The chance that another track of the batch is
            in fact similar (same album, same artist): 0 is SimCLR's loss;
            above 0 the debiased loss of Chuang et al. 2020, whose negative
            term subtracts that share of positives (estimated from the
            positive pair) and is bounded below by its value for opposite
            views, `(2B - 2) exp(-1 / temperature)`.

    Returns:
        Per-view losses `[2 * local batch]` in track order (track 0's two
        views, then track 1's, ...; average with the global batch of views,
        `2 * global batch`), and per-replica statistics of the
        normalised projections: `alignment` (mean squared distance of
        positive pairs, Wang & Isola 2020), `uniformity` (log mean
        `exp(-2 d²)` over the global batch's distinct first views),
        `positive_similarity` and `negative_similarity` (mean cosines).
    """
    z = tf.math.l2_normalize(tf.cast(projections, tf.float32), axis=-1)
    local = tf.shape(z)[0]
    everyone = cross_replica_concat(z)
    total = tf.shape(everyone)[0]
    anchors = _flatten_views(z)  # [2b, d]: track-major (track 0's two views, then track 1's, ...).
    candidates = _flatten_views(everyone)  # [2B, d], the same order over the global batch.
    similarity = tf.matmul(anchors, candidates, transpose_b=True)  # [2b, 2B]
    first_views = 2 * (tf.range(local) + _replica_offset(local))  # Each track's first view among the candidates.
    self_column = _flatten_views(tf.stack([first_views, first_views + 1], axis=1))
    positive_column = _flatten_views(tf.stack([first_views + 1, first_views], axis=1))
    is_self = tf.one_hot(self_column, 2 * total) > 0
    logits = tf.where(is_self, _MASK, similarity / temperature)
    is_positive = tf.one_hot(positive_column, 2 * total) > 0
    is_negative = ~(is_self | is_positive)
    if false_negative_prior:
        losses = _debiased_losses(logits, is_positive, is_negative, temperature, false_negative_prior)
    else:
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=positive_column, logits=logits)
    firsts = everyone[:, 0]
    squared_distances = tf.maximum(2.0 - 2.0 * tf.matmul(firsts, firsts, transpose_b=True), 0.0)
    distinct = ~tf.eye(total, dtype=tf.bool)
    statistics = {
        "alignment": tf.reduce_mean(tf.reduce_sum(tf.square(z[:, 0] - z[:, 1]), axis=-1)),
        "uniformity": tf.math.log(tf.reduce_mean(tf.exp(-2.0 * tf.boolean_mask(squared_distances, distinct))) + 1e-12),
        "positive_similarity": tf.reduce_mean(tf.reduce_sum(z[:, 0] * z[:, 1], axis=-1)),
        "negative_similarity": tf.reduce_mean(tf.boolean_mask(similarity, is_negative)),
    }
    return losses, statistics


def _debiased_losses(logits, is_positive, is_negative, temperature: float, prior: float) -> tf.Tensor:
    """Chuang et al.'s debiased contrastive loss per anchor, in log space (rows of `logits` are anchors)."""
    top = tf.stop_gradient(tf.reduce_max(logits, axis=1, keepdims=True))
    shifted = tf.exp(logits - top)
    positive = tf.reduce_sum(tf.where(is_positive, shifted, 0.0), axis=1)
    negatives = tf.reduce_sum(tf.where(is_negative, shifted, 0.0), axis=1)
    count = tf.reduce_sum(tf.cast(is_negative, tf.float32), axis=1)
    floor = count * tf.exp(-1.0 / temperature - top[:, 0])
    negative_term = tf.maximum((negatives - prior * count * positive) / (1.0 - prior), floor)
    return tf.math.log(positive + negative_term) - tf.math.log(positive)


def distillation_losses(
    student_tags: tf.Tensor, student_embedding: tf.Tensor, teacher_tags: tf.Tensor, teacher_embedding: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-example tag and embedding losses of a student against its teacher.

    Args:
        student_tags: `[n, tags]` the student's probabilities.
        student_embedding: `[n, dim]` the student's embedding mapped to the
            teacher's size.
        teacher_tags: `[n, tags]` the teacher's probabilities (soft targets).
        teacher_embedding: `[n, dim]` the teacher's embedding.

    Returns:
        `(tag_loss [n], embedding_loss [n])`: binary cross-entropy against the
        soft targets (averaged over tags) and `1 - cosine` of the embeddings.
    """
    tag_loss = keras.losses.binary_crossentropy(tf.cast(teacher_tags, tf.float32), tf.cast(student_tags, tf.float32))
    cosine = tf.reduce_sum(
        tf.math.l2_normalize(tf.cast(student_embedding, tf.float32), -1)
        * tf.math.l2_normalize(tf.cast(teacher_embedding, tf.float32), -1),
        axis=-1,
    )
    return tag_loss, 1.0 - cosine


# Heads (training only) --------------------------------------------------------


def projection_head(hidden: int, output: int, name: str) -> keras.Sequential:
    """SimCLR's projection head: Dense-ReLU-Dense (a linear map when `hidden` is 0)."""
    stack = [keras.layers.Dense(hidden, activation="relu", name="hidden")] if hidden else []
    return keras.Sequential([*stack, keras.layers.Dense(output, name="output", dtype="float32")], name=name)


def _flatten_views(values: tf.Tensor) -> tf.Tensor:
    """`[b, views, ...]` → `[b * views, ...]` (track-major)."""
    return tf.reshape(values, tf.concat([[-1], tf.shape(values)[2:]], 0))


def _unflatten_views(values: tf.Tensor, views: int) -> tf.Tensor:
    return tf.reshape(values, tf.concat([[-1, views], tf.shape(values)[1:]], 0))


def _tag_head_variable_paths(model: keras.Model) -> set[str]:
    return {v.path for v in model.get_layer(models.TAGS).trainable_variables}


# Objectives -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Validation:
    """One validation pass.

    Attributes:
        results: Loss and metrics under `val_` names (`val_loss` always).
        tag_metrics: Per-tag AUCs, for an objective scored against the
            dataset's tag labels (None otherwise).
        predictions: The track predictions they were computed from (for the
            embedding projector; None when not scored against tags).
    """

    results: dict[str, float]
    tag_metrics: metrics_lib.TagMetrics | None = None
    predictions: TrackPredictions | None = None


class Objective(abc.ABC):
    """What every objective provides; the trainer calls only these (TF Model Garden's `base_task.Task`).

    Attributes:
        name: How `TrainingRecord.objective` names it.
        scores_tags: Validated against the dataset's tag labels (tag AUCs;
            `train.evaluate` can score the run).
    """

    name: str
    scores_tags = False

    @abc.abstractmethod
    def model_vocabulary(self, info, init_vocabulary) -> list[str]:
        """The tags the trained model outputs (`init_vocabulary`: the starting artifact's, None from scratch)."""

    def heads(self, model, info) -> dict:
        """Layers trained with the model but not exported (a projection head), by name."""
        del model, info
        return {}

    def trainable_variables(self, model, heads) -> list:
        """What a step updates."""
        return list(model.trainable_variables) + [v for head in heads.values() for v in head.trainable_variables]

    @abc.abstractmethod
    def train_dataset(self, experiment, info, input_context=None, seed=None, repeat=True) -> tf.data.Dataset:
        """One input pipeline's per-replica batches."""

    @abc.abstractmethod
    def steps_per_epoch(self, experiment, info) -> int:
        """Steps of one epoch when `Experiment.steps_per_epoch` does not set them."""

    @abc.abstractmethod
    def examples_per_batch(self, experiment) -> int:
        """How many per-example losses a global batch has: what `loss`'s values are averaged over."""

    @abc.abstractmethod
    def loss(self, model, heads, batch, training: bool) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """Per-example losses of one replica's batch and the statistics logged with them."""

    @abc.abstractmethod
    def validate(self, model, heads, experiment, info, split: str = "valid") -> Validation:
        """Scores the model on `split`."""

    @abc.abstractmethod
    def sample_inputs(self, experiment, info, count: int) -> tf.Tensor:
        """Log-mel inputs `[n, frames, mels]` of the first `count` training examples (every view of each)."""

    def check_best_metric(self, best_metric: str):
        """Refuses a tag metric for an objective without tag labels."""
        if not self.scores_tags and best_metric != "val_loss":
            raise ObjectiveError(
                f"Experiment.best_metric is {best_metric!r}; the {self.name} objective has no tag labels to score, "
                "choose val_loss"
            )

    def describe(self, info) -> dict:
        """The objective as `TrainingRecord.objective` records it."""
        del info
        settings = {field.name: repr(getattr(self, field.name)) for field in dataclasses.fields(self)}
        return {"name": self.name, **settings}


@gin.configurable(module="train")
@dataclasses.dataclass(frozen=True)
class Tagging(Objective):
    """Binary cross-entropy against the dataset's tags (supervised): random crops, `crops_per_track` per track."""

    name = TAGGING
    scores_tags = True

    def model_vocabulary(self, info, init_vocabulary):
        del init_vocabulary
        if not info.vocabulary:
            raise ObjectiveError(
                "the dataset has no tags (an untagged catalog, preprocessed with --norequire_tags): train it with "
                "the contrastive or distillation objective (configs/contrastive_*.gin, configs/distill_*.gin)"
            )
        return list(info.vocabulary)

    def train_dataset(self, experiment, info, input_context=None, seed=None, repeat=True):
        return readers.train_dataset(
            experiment.dataset_dir,
            crop_frames=experiment.crop_frames,
            crops_per_track=experiment.crops_per_track,
            global_batch_size=experiment.batch_size,
            shuffle_buffer=experiment.shuffle_buffer,
            seed=seed,
            spec_augment=experiment.spec_augment,
            input_context=input_context,
            repeat=repeat,
            cache=experiment.cache_dataset,
            info=info,
        )

    def steps_per_epoch(self, experiment, info) -> int:
        """Every training crop once."""
        return max(1, info.splits["train"].examples * experiment.crops_per_track // experiment.batch_size)

    def examples_per_batch(self, experiment) -> int:
        return experiment.batch_size  # Crops.

    def loss(self, model, heads, batch, training: bool):
        del heads
        log_mel, labels = batch
        probabilities = model(log_mel, training=training)[models.TAGS]
        return keras.losses.binary_crossentropy(labels, probabilities), {}

    def validate(self, model, heads, experiment, info, split: str = "valid") -> Validation:
        """Track-level macro AUCs over evenly spaced chunks (Won et al.'s evaluation) and the chunks' loss."""
        del heads
        predictions = predict_tracks(
            model, experiment.dataset_dir, split, experiment.crop_frames, experiment.eval_num_chunks, info=info
        )
        tag_metrics = metrics_lib.tag_metrics(predictions.labels, predictions.scores, list(info.vocabulary))
        results = {
            "val_loss": predictions.chunk_loss,
            "val_roc_auc": tag_metrics.macro_roc_auc,
            "val_pr_auc": tag_metrics.macro_pr_auc,
        }
        return Validation(results, tag_metrics, predictions)

    def sample_inputs(self, experiment, info, count: int) -> tf.Tensor:
        """Random crops (a fixed seed)."""
        dataset = readers.train_dataset(
            experiment.dataset_dir,
            crop_frames=experiment.crop_frames,
            global_batch_size=count,
            seed=0,
            shuffle_buffer=16,
            info=info,
        )
        log_mel, _ = next(iter(dataset))
        return log_mel

    def check_best_metric(self, best_metric: str):
        del best_metric  # Every metric is defined.


class _TwoViews(Objective):
    """An objective that reads batches of distinct tracks, two views each (`view_fn`), validated by its loss."""

    reads_teacher_targets = False  # The records carry a teacher's outputs (`train.compute_teacher_targets`).
    min_validation_tracks = 1  # A validation batch with fewer tracks has no loss (a contrastive term needs two).

    @abc.abstractmethod
    def view_fn(self, crop_frames: int, info):
        """`(parsed example, seed) -> features` of one random view for training."""

    @abc.abstractmethod
    def validation_views(self, parsed, crop_frames: int, info) -> dict:
        """Two deterministic views of one parsed example (no augmentation), stacked on axis 0."""

    def train_dataset(self, experiment, info, input_context=None, seed=None, repeat=True):
        return readers.views_dataset(
            experiment.dataset_dir,
            view_fn=self.view_fn(experiment.crop_frames, info),
            views_per_track=2,
            global_batch_size=experiment.batch_size,
            shuffle_buffer=experiment.shuffle_buffer,
            seed=seed,
            input_context=input_context,
            repeat=repeat,
            cache=experiment.cache_dataset,
            info=info,
            teacher=self.reads_teacher_targets,
        )

    def steps_per_epoch(self, experiment, info) -> int:
        """Every training track once; refuses a split smaller than a batch (a batch holds distinct tracks)."""
        tracks = info.splits["train"].examples
        if tracks < experiment.batch_size:
            raise ObjectiveError(
                f"Experiment.batch_size is {experiment.batch_size} tracks but the training split has {tracks}: a "
                "batch holds distinct tracks (each other's negatives); lower the batch size"
            )
        return max(1, tracks // experiment.batch_size)

    def examples_per_batch(self, experiment) -> int:
        return 2 * experiment.batch_size  # Views.

    def validate(self, model, heads, experiment, info, split: str = "valid") -> Validation:
        """The mean loss and statistics over two deterministic views of every `split` track."""
        totals, count = {}, 0
        step = tf.function(lambda batch: self.loss(model, heads, batch, training=False))
        for batch in self._validation_dataset(experiment, info, split):
            tracks = int(batch[LOG_MEL].shape[0])
            if tracks < self.min_validation_tracks:
                continue
            losses, statistics = step(batch)
            values = {"loss": float(tf.reduce_mean(losses)), **{k: float(v) for k, v in statistics.items()}}
            for name, value in values.items():
                totals[name] = totals.get(name, 0.0) + value * tracks
            count += tracks
        if not count:
            return Validation({"val_loss": math.nan})
        return Validation({f"val_{name}": value / count for name, value in totals.items()})

    def _validation_dataset(self, experiment, info, split: str) -> tf.data.Dataset:
        """`validation_views` of every `split` track, in batches of the training batch size (the last may be smaller)."""
        files = readers.shard_files(experiment.dataset_dir, info, split)
        records = tf.data.TFRecordDataset(files, compression_type=info.compression)
        parsed = records.map(readers.example_parser(info, teacher=self.reads_teacher_targets))
        return parsed.map(lambda example: self.validation_views(example, experiment.crop_frames, info)).batch(
            experiment.batch_size
        )

    def sample_inputs(self, experiment, info, count: int) -> tf.Tensor:
        """Both views of the first `count` tracks of the seeded training input."""
        views = next(iter(self.train_dataset(experiment, info, seed=0, repeat=False)))[LOG_MEL]
        return _flatten_views(views)[: 2 * count]


@gin.configurable(module="train")
@dataclasses.dataclass(frozen=True)
class Contrastive(_TwoViews):
    """NT-Xent on two random views of each track (see the module docstring).

    Attributes:
        temperature: Softmax temperature (SimCLR: 0.1 to 0.5; lower weights
            hard negatives more).
        projection_dim: Output size of the projection head.
        projection_hidden: Hidden size of the projection head (0: linear).
        augment: How a view differs from a plain random crop (None: plain
            crops).
        false_negative_prior: Share of the batch's other tracks expected to
            be similar to a track (0: every other track is a negative, as in
            SimCLR; e.g. 0.1 for a catalog of ten albums: the debiased loss).

    The tag head is not part of this loss and is not trained: from a
    pretrained start (`Experiment.init_from`) the model keeps its tags and
    tag head (which reads the fine-tuned embedding); from scratch the model
    has no tags.
    """

    temperature: float = 0.1
    projection_dim: int = 128
    projection_hidden: int = 512
    augment: augmentation.ViewAugment | None = augmentation.ViewAugment()
    false_negative_prior: float = 0.0

    name = CONTRASTIVE
    min_validation_tracks = 2  # One track has no negative.

    def __post_init__(self):
        if (
            self.temperature <= 0
            or self.projection_dim < 1
            or self.projection_hidden < 0
            or not 0 <= self.false_negative_prior < 1
        ):
            raise ObjectiveError(
                f"invalid {self}: temperature > 0, projection_dim >= 1, projection_hidden >= 0, "
                "0 <= false_negative_prior < 1"
            )

    def model_vocabulary(self, info, init_vocabulary):
        """A pretrained start keeps its tags (and tag head); from scratch: no tags."""
        del info
        return list(init_vocabulary) if init_vocabulary is not None else []

    def heads(self, model, info) -> dict:
        del info
        head = projection_head(self.projection_hidden, self.projection_dim, "projection")
        head.build((None, model.output[models.EMBEDDING].shape[-1]))
        return {"projection": head}

    def trainable_variables(self, model, heads) -> list:
        frozen = _tag_head_variable_paths(model)
        return [v for v in model.trainable_variables if v.path not in frozen] + list(
            heads["projection"].trainable_variables
        )

    def view_fn(self, crop_frames: int, info):
        spec = info.log_mel

        def view(parsed, seed):
            if self.augment is None:
                crop = augmentation.random_crop(parsed[LOG_MEL], crop_frames, seed)
                return {LOG_MEL: tf.ensure_shape(tf.cast(crop, tf.float32), [crop_frames, spec.n_mels])}
            return {LOG_MEL: self.augment.view(parsed[LOG_MEL], crop_frames, spec, seed)}

        return view

    def validation_views(self, parsed, crop_frames: int, info) -> dict:
        """The first and the middle of 16 evenly spaced chunks."""
        chunks = readers.evenly_spaced_chunks(parsed[LOG_MEL], crop_frames, 16)
        pair = tf.stack([chunks[0], chunks[tf.shape(chunks)[0] // 2]])
        return {LOG_MEL: tf.ensure_shape(pair, [2, crop_frames, info.log_mel.n_mels])}

    def loss(self, model, heads, batch, training: bool):
        """Per-view losses `[b * 2]` (track-major) and statistics of one replica's batch."""
        outputs = model(_flatten_views(batch[LOG_MEL]), training=training)
        return self.pair_losses(heads["projection"](outputs[models.EMBEDDING], training=training))

    def pair_losses(self, projections: tf.Tensor):
        """This objective's NT-Xent on track-major projections `[b * 2, dim]`: per-view losses, track-major."""
        return nt_xent(_unflatten_views(projections, 2), self.temperature, self.false_negative_prior)


@gin.configurable(module="train")
@dataclasses.dataclass(frozen=True)
class Distillation(_TwoViews):
    """The student learns its teacher's outputs at the same positions (see the module docstring).

    Attributes:
        tag_weight: Weight of the tag loss (BCE against the teacher's
            probabilities).
        embedding_weight: Weight of the embedding loss (`1 - cosine` between
            a linear map of the student's embedding and the teacher's).
        contrastive_weight: Weight of the optional NT-Xent term between the
            two views of each track (0: none).
        contrastive: Its settings (temperature, projection head).
        augment: Changes applied to the student's crop (the teacher heard
            the plain audio: a consistency target); None: plain crops.
    """

    tag_weight: float = 1.0
    embedding_weight: float = 1.0
    contrastive_weight: float = 0.0
    contrastive: Contrastive = Contrastive(augment=None)
    augment: augmentation.ViewAugment | None = None

    name = DISTILLATION
    reads_teacher_targets = True

    def __post_init__(self):
        weights = (self.tag_weight, self.embedding_weight, self.contrastive_weight)
        if min(weights) < 0 or not any(weights):
            raise ObjectiveError(f"invalid {self}: weights must be >= 0, at least one > 0")
        if self.augment is not None and self.augment.max_stretch:
            raise ObjectiveError(
                "Distillation.augment: max_stretch must be 0 (the teacher's targets are for the crop as it was)"
            )

    @property
    def min_validation_tracks(self) -> int:
        return self.contrastive.min_validation_tracks if self.contrastive_weight else 1

    def model_vocabulary(self, info, init_vocabulary):
        del init_vocabulary
        if info.teacher is None:
            raise ObjectiveError(
                f"the dataset has no teacher targets: write them with `python -m train.compute_teacher_targets "
                f"--dataset_dir={info.catalog.get('path', 'DATASET')} ...` and train on its output"
            )
        return list(info.teacher.vocabulary)

    def heads(self, model, info) -> dict:
        embedding_dim = model.output[models.EMBEDDING].shape[-1]
        heads = {}
        if self.embedding_weight:
            heads["embedding_map"] = projection_head(0, info.teacher.embedding_dim, "embedding_map")
            heads["embedding_map"].build((None, embedding_dim))
        if self.contrastive_weight:
            heads.update(self.contrastive.heads(model, info))
        return heads

    def view_fn(self, crop_frames: int, info):
        spec, teacher = info.log_mel, info.teacher
        if crop_frames != teacher.crop_frames:
            raise ObjectiveError(
                f"Experiment.crop_frames is {crop_frames}, the teacher targets were computed for crops of "
                f"{teacher.crop_frames} frames: use the same crop length"
            )

        def view(parsed, seed):
            position_seed, augment_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
            count = tf.shape(parsed[schema.TEACHER_STARTS])[0]
            position = tf.random.stateless_uniform([], position_seed, 0, count, dtype=tf.int32)
            log_mel = readers.repeat_to_frames(parsed[LOG_MEL], crop_frames)
            start = parsed[schema.TEACHER_STARTS][position]
            crop = tf.cast(log_mel[start : start + crop_frames], tf.float32)
            if self.augment is not None:
                crop = self.augment.transform(crop, spec, augment_seed)
            return {
                LOG_MEL: tf.ensure_shape(crop, [crop_frames, spec.n_mels]),
                TEACHER_TAGS: parsed[TEACHER_TAGS][position],
                TEACHER_EMBEDDING: parsed[TEACHER_EMBEDDING][position],
            }

        return view

    def validation_views(self, parsed, crop_frames: int, info) -> dict:
        """The first and the middle teacher position, with the teacher's outputs there."""
        starts = parsed[schema.TEACHER_STARTS]
        chosen = tf.stack([0, tf.shape(starts)[0] // 2])
        log_mel = readers.repeat_to_frames(parsed[LOG_MEL], crop_frames)
        crops = tf.stack([log_mel[starts[i] : starts[i] + crop_frames] for i in (chosen[0], chosen[1])])
        return {
            LOG_MEL: tf.ensure_shape(crops, [2, crop_frames, info.log_mel.n_mels]),
            TEACHER_TAGS: tf.gather(parsed[TEACHER_TAGS], chosen),
            TEACHER_EMBEDDING: tf.gather(parsed[TEACHER_EMBEDDING], chosen),
        }

    def loss(self, model, heads, batch, training: bool):
        """Per-view losses `[b * views]` (track-major) and statistics of one replica's batch."""
        outputs = model(_flatten_views(batch[LOG_MEL]), training=training)
        teacher_tags = _flatten_views(batch[TEACHER_TAGS])
        teacher_embedding = _flatten_views(batch[TEACHER_EMBEDDING])
        embedding = outputs[models.EMBEDDING]
        mapped = heads["embedding_map"](embedding, training=training) if self.embedding_weight else teacher_embedding
        tag_loss, embedding_loss = distillation_losses(outputs[models.TAGS], mapped, teacher_tags, teacher_embedding)
        losses = self.tag_weight * tag_loss + self.embedding_weight * embedding_loss
        statistics = {"tag_loss": tf.reduce_mean(tag_loss), "embedding_cosine": 1.0 - tf.reduce_mean(embedding_loss)}
        if self.contrastive_weight:
            contrastive, contrastive_statistics = self.contrastive.pair_losses(
                heads["projection"](embedding, training=training)
            )
            losses += self.contrastive_weight * contrastive
            statistics.update({f"contrastive_{k}": v for k, v in contrastive_statistics.items()})
            statistics["contrastive_loss"] = tf.reduce_mean(contrastive)
        return losses, statistics

    def describe(self, info) -> dict:
        """With the teacher that made the targets."""
        return {**super().describe(info), "teacher": {"model": info.teacher.model, **info.teacher.provenance}}
