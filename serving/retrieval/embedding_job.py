"""The catalog embedding job (Apache Beam): each track's embedding and tag probabilities, or its rejection.

Every catalog track goes through the exported models once: the ranking
model(s) (e.g. musicnn; several make an ensemble whose embeddings are
combined, `serving.embedding.ensemble`) give its embedding, the tag model
(e.g. the CRNN) its tag probabilities. The input is either

- a catalog CSV (`data_prep`'s format): audio is decoded and checked exactly
  as the preprocessing pipeline does, then fed to the models' waveform
  signatures, so the index sees what a query will see; or
- preprocessed TFRecord datasets: their stored log-mels go to the models'
  `log_mel` signatures. Each model takes the dataset whose log-mel
  fingerprint matches its own (e.g. 128 mel bands for the ResNet, 96 for the
  CRNN), and tracks are joined by id.

The job runs on any Beam runner (the DirectRunner on all cores by default);
each worker loads each SavedModel once and sends tracks of one length through
it together (`tracks_per_batch` at a time: an element is a chunk of that many
catalog rows, or one TFRecord shard; a catalog of 30 s previews mostly has
one length). Workers stage each track's features, or its rejection, as a
file of its own, and `embed` returns them to the driver. Counts reconcile:
input tracks = embedded + rejected, or the job fails. What is done with
them (an index built, updated, summarised) is `serving.retrieval.index_builder`'s.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import uuid

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import GoogleCloudOptions
from apache_beam.utils import shared

from data_prep import beam_jobs
from data_prep.splits import stable_hash
from intake import audio
from intake.audio_checks import AudioChecks, load_checked_waveform
from intake.catalog import Catalog, CatalogEntry
from intake.rejections import Rejection, register_reasons
from serving.embedding.index_models import IndexModels
from serving.export.exported_model import LoadedModel, ModelRef
from serving.retrieval import index_layout
from serving.retrieval.catalog_index import TrackRecord
from tfrecords import dataset_info, schema

METRICS_NAMESPACE = "build_index"
DEFAULT_TRACKS_PER_BATCH = index_layout.TRACKS_PER_BATCH
# Pending waveforms (or log-mel values) a worker holds while it waits for a batch of one length to fill: 256 MB.
MAX_PENDING_VALUES = 64 * 1024 * 1024
_FEATURES_DIRNAME = "features"
_FEATURES_SUFFIX = ".features"
_REJECTIONS_DIRNAME = "rejections"

# This job's own rejection reasons, besides the catalog's and the audio's.
register_reasons(
    {
        "model_error": "the exported model refused the track's input or gave unusable outputs",
        "incomplete_features": "the track is missing from one of the datasets the models need",
    }
)


@dataclasses.dataclass(frozen=True)
class TrackFeatures:
    """A catalog track with its embedding and tag probabilities."""

    track: TrackRecord
    embedding: np.ndarray
    tag_probabilities: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class EmbeddingRun:
    """What the embedding job produced.

    Attributes:
        features: The embedded tracks, sorted by track id.
        rejections: The tracks that could not be embedded, with reasons.
        num_input: Tracks (or catalog rows) that went in.
        counters: The job's Beam counters.
    """

    features: list[TrackFeatures]
    rejections: list[Rejection]
    num_input: int
    counters: dict[str, int]


def encode_features(features: TrackFeatures) -> bytes:
    """A `tf.train.Example` holding one track's features (the staging format)."""
    track = dataclasses.asdict(features.track)
    feature = {
        "track": tf.train.Feature(bytes_list=tf.train.BytesList(value=[json.dumps(track).encode("utf-8")])),
        "embedding": tf.train.Feature(float_list=tf.train.FloatList(value=features.embedding)),
    }
    if features.tag_probabilities is not None:
        feature["tag_probabilities"] = tf.train.Feature(float_list=tf.train.FloatList(value=features.tag_probabilities))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


def stage_features(staging_dir: str, features: TrackFeatures):
    """Writes one track's features as a file of its own, named by its id (a retried bundle rewrites it)."""
    name = f"{stable_hash(features.track.track_id):016x}{_FEATURES_SUFFIX}"
    beam_jobs.write_atomically(tf.io.gfile.join(staging_dir, _FEATURES_DIRNAME, name), encode_features(features))


def decode_features(serialized: bytes) -> TrackFeatures:
    """Inverse of `encode_features`."""
    feature = tf.train.Example.FromString(serialized).features.feature
    probabilities = None
    if "tag_probabilities" in feature:
        probabilities = np.array(feature["tag_probabilities"].float_list.value, np.float32)
    return TrackFeatures(
        track=TrackRecord(**json.loads(feature["track"].bytes_list.value[0])),
        embedding=np.array(feature["embedding"].float_list.value, np.float32),
        tag_probabilities=probabilities,
    )


def _count_and_stage(staging_dir: str, rejection: Rejection):
    """Counts a rejection by reason and stages it for the driver (`beam_jobs.stage_rejection`)."""
    Metrics.counter(METRICS_NAMESPACE, f"rejected_{rejection.reason}").inc()
    beam_jobs.stage_rejection(tf.io.gfile.join(staging_dir, _REJECTIONS_DIRNAME), rejection)


class _Models:
    """The models one worker loads once and shares between its threads (`beam.utils.shared`), by position."""

    def __init__(self, refs: dict[int, ModelRef]):
        self.by_position = {position: LoadedModel(ref) for position, ref in refs.items()}


class BatchesByShape:
    """Gathers a worker's inputs into batches of one shape (what one pass of a signature takes).

    `add` returns a batch when `batch_size` inputs of one shape are pending,
    or, past `max_pending_values` pending values, the largest pending batch
    (a catalog where every length differs still runs in bounded memory);
    `flush` returns what is left, at the end of an element's tracks.
    """

    def __init__(self, batch_size: int, max_pending_values: int = MAX_PENDING_VALUES):
        if batch_size < 1:
            raise ValueError(f"tracks per batch must be at least 1, got {batch_size}")
        self._batch_size = batch_size
        self._max_pending_values = max_pending_values
        self._pending: dict[tuple[int, ...], list] = {}
        self._pending_values = 0

    def add(self, array: np.ndarray, item) -> list[list]:
        """Adds `item`, whose model input is `array`; returns the batches now complete."""
        batch = self._pending.setdefault(array.shape, [])
        batch.append(item)
        self._pending_values += array.size
        ready = []
        if len(batch) == self._batch_size:
            ready.append(self._take(array.shape))
        while self._pending_values > self._max_pending_values:
            ready.append(self._take(max(self._pending, key=lambda shape: np.prod(shape) * len(self._pending[shape]))))
        return ready

    def flush(self) -> list[list]:
        return [self._take(shape) for shape in list(self._pending)]

    def _take(self, shape) -> list:
        batch = self._pending.pop(shape)
        self._pending_values -= int(np.prod(shape)) * len(batch)
        return batch


@dataclasses.dataclass(frozen=True)
class _Input:
    """One track on its way to the models: its model input and what the job needs to index or reject it."""

    values: np.ndarray
    track: TrackRecord
    row: int = 0
    path: str = ""


class _EmbedDoFn(beam.DoFn):
    """Runs every model of a worker on batches of tracks of one length.

    An element is a group of tracks (a chunk of catalog rows, a TFRecord
    shard): `_embed` batches them by shape and yields every output before
    `process` returns (runners such as Dask drop what `finish_bundle` emits).
    Subclasses turn a track into an `_Input` (`_prepare`) and say what to do
    with each track's outputs (`_emit`) and with its rejection (`_rejected`).
    Outputs are checked track by track (`IndexModels.unusable`).
    """

    def __init__(
        self,
        models: IndexModels,
        positions: list[int],
        shared_handle: shared.Shared,
        staging_dir: str,
        tracks_per_batch: int,
    ):
        self._index_models = models
        self._refs = {position: models.distinct[position] for position in positions}
        self._shared = shared_handle
        self._staging_dir = staging_dir
        self._tracks_per_batch = tracks_per_batch
        self._embedded = Metrics.counter(METRICS_NAMESPACE, "embedded")

    def setup(self):
        tag = json.dumps([ref.key for _, ref in sorted(self._refs.items())])
        self._models = self._shared.acquire(lambda: _Models(self._refs), tag=tag)

    def _embed(self, tracks):
        batches = BatchesByShape(self._tracks_per_batch)
        for track in tracks:
            prepared = self._prepare(track)
            if prepared is not None:
                for batch in batches.add(prepared.values, prepared):
                    yield from self._run(batch)
        for batch in batches.flush():
            yield from self._run(batch)

    def _run(self, batch: list[_Input]):
        try:
            outputs = self._outputs(np.stack([item.values for item in batch]))
        except (ValueError, tf.errors.InvalidArgumentError) as error:
            # The tracks of a batch share their input's shape, and the model refused that shape.
            for item in batch:
                yield from self._rejected(item, "model_error", str(error).splitlines()[0])
            return
        for item, track_outputs in zip(batch, outputs, strict=True):
            problem = self._index_models.unusable(track_outputs)
            if problem:
                yield from self._rejected(item, "model_error", problem)
            else:
                yield from self._emit(item, track_outputs)

    def _outputs(self, values: np.ndarray) -> list[dict[int, dict[str, np.ndarray]]]:
        """Each track's outputs of every model this DoFn runs (each once), by the model's position."""
        by_model = {
            position: self._model_outputs(model, values) for position, model in self._models.by_position.items()
        }
        return [{position: outputs[index] for position, outputs in by_model.items()} for index in range(len(values))]

    def _reject(self, rejection: Rejection):
        _count_and_stage(self._staging_dir, rejection)


class EmbedAudio(_EmbedDoFn):
    """Decodes a chunk of catalog rows and runs every model on their waveforms; stages features and rejections."""

    def __init__(self, models: IndexModels, shared_handle: shared.Shared, staging_dir: str, tracks_per_batch: int):
        super().__init__(models, list(range(len(models.distinct))), shared_handle, staging_dir, tracks_per_batch)

    def process(self, entries: tuple[CatalogEntry, ...]):
        yield from self._embed(entries)

    def _prepare(self, entry: CatalogEntry) -> _Input | None:
        sample_rate = self._index_models.sample_rate
        try:
            source = audio.open_source(entry.uri)
            waveform, _ = load_checked_waveform(entry, sample_rate, AudioChecks(), source)
            content_sha256 = audio.content_sha256(source)
        except audio.AudioError as error:
            self._reject(Rejection(entry.row, entry.track_id, entry.path, error.reason, error.detail))
            return None
        track = TrackRecord(
            track_id=entry.track_id,
            artist=entry.artist,
            title=entry.title,
            album=entry.album,
            path=entry.path,
            duration_s=round(waveform.size / sample_rate, 3),
            content_sha256=content_sha256,
        )
        return _Input(waveform, track, entry.row, entry.path)

    @staticmethod
    def _model_outputs(model: LoadedModel, waveforms: np.ndarray):
        return model.from_waveforms(waveforms)

    def _emit(self, item: _Input, outputs):
        self._embedded.inc()
        stage_features(self._staging_dir, TrackFeatures(item.track, *self._index_models.combine(outputs)))
        return ()

    def _rejected(self, item: _Input, reason: str, detail: str):
        self._reject(Rejection(item.row, item.track.track_id, item.path, reason, detail))
        return ()


class EmbedLogMel(_EmbedDoFn):
    """Runs the models that share one dataset's log-mel on the examples of a shard, in batches of one length.

    Emits `(track_id, (dataset_dir, model position -> outputs, TrackRecord, Rejection or None))` for the join.
    """

    def __init__(
        self,
        models: IndexModels,
        positions: list[int],
        shared_handle: shared.Shared,
        staging_dir: str,
        tracks_per_batch: int,
        dataset_dir: str,
    ):
        super().__init__(models, positions, shared_handle, staging_dir, tracks_per_batch)
        info = dataset_info.load(dataset_dir)
        self._log_mel_dtype = info.log_mel_dtype
        self._compression = info.compression
        self._dataset_dir = dataset_dir

    def process(self, shard_path: str):
        yield from self._embed(_read_shard(shard_path, self._compression))

    def _prepare(self, serialized: bytes) -> _Input:
        example = schema.decode_example(serialized, self._log_mel_dtype)
        log_mel = np.asarray(example[schema.LOG_MEL], np.float32)
        track = TrackRecord(
            track_id=example[schema.TRACK_ID],
            artist=example[schema.ARTIST],
            title=example[schema.TITLE],
            album=example[schema.ALBUM],
            duration_s=round(float(example[schema.DURATION_S]), 3),
            content_sha256=example[schema.AUDIO_SHA256],  # The audio file's, as from a catalog ('' if unrecorded).
        )
        return _Input(log_mel, track)

    @staticmethod
    def _model_outputs(model: LoadedModel, log_mels: np.ndarray):
        return model.from_log_mels(log_mels)

    def _emit(self, item: _Input, outputs):
        yield item.track.track_id, (self._dataset_dir, outputs, item.track, None)

    def _rejected(self, item: _Input, reason: str, detail: str):
        rejection = Rejection(0, item.track.track_id, "", reason, f"{self._dataset_dir}: {detail}")
        yield item.track.track_id, (self._dataset_dir, {}, None, rejection)


class JoinModels(beam.DoFn):
    """Merges one track's outputs from several datasets (each model reads its own) and stages its features; an
    error or a missing model is a rejection."""

    def __init__(self, models: IndexModels, dataset_of_model: dict[int, str], staging_dir: str):
        self._index_models = models
        self._dataset_of_model = dataset_of_model
        self._staging_dir = staging_dir
        self._embedded = Metrics.counter(METRICS_NAMESPACE, "embedded")

    def _reject(self, rejection: Rejection):
        _count_and_stage(self._staging_dir, rejection)

    def process(self, keyed):
        track_id, parts = keyed
        outputs, track, errors, copies = {}, None, [], collections.Counter()
        # The record comes from the first dataset by name, whatever order the runner delivers the parts in.
        for _, part_outputs, part_track, error in sorted(parts, key=lambda part: part[0]):
            outputs.update(part_outputs)
            copies.update(part_outputs.keys())
            errors += [error] if error else []
            track = track or part_track
        if errors:
            self._reject(errors[0])
            return
        repeated = [position for position, count in sorted(copies.items()) if count > 1]
        if repeated:
            detail = "; ".join(f"{copies[p]} examples in {self._dataset_of_model[p]}" for p in repeated)
            self._reject(Rejection(0, track_id, "", "duplicate_track_id", detail))
            return
        missing = [position for position in sorted(self._dataset_of_model) if position not in outputs]
        if missing:
            detail = "; ".join(
                f"not in {self._dataset_of_model[p]} ({self._index_models.describe(p)}'s dataset)" for p in missing
            )
            self._reject(Rejection(0, track_id, "", "incomplete_features", detail))
            return
        self._embedded.inc()
        stage_features(self._staging_dir, TrackFeatures(track, *self._index_models.combine(outputs)))


def _catalog_pipeline(pipeline, catalog: Catalog, models: IndexModels, staging_dir: str, tracks_per_batch: int) -> int:
    """Adds the catalog path's transforms; returns its number of input elements (chunks of rows)."""
    entries = list(catalog.entries)
    chunks = [tuple(entries[start : start + tracks_per_batch]) for start in range(0, len(entries), tracks_per_batch)]
    _ = (
        pipeline
        | "Chunks" >> beam.Create(chunks)
        | "Embed" >> beam.ParDo(EmbedAudio(models, shared.Shared(), staging_dir, tracks_per_batch))
    )
    return len(chunks)


def match_datasets(dataset_dirs: list[str], models: IndexModels) -> dict[int, str]:
    """The dataset each model reads (by its position in `models.distinct`): the one whose log-mel fingerprint is
    the model's.

    Raises:
        ValueError: A model with no matching dataset or with several (which
            one would be indexed is ambiguous), or a dataset no model reads
            (its tracks would be left out): the message names the datasets
            and fingerprints.
    """
    fingerprints = {d: dataset_info.load(d).log_mel.fingerprint() for d in dataset_dirs}
    found = ", ".join(f"{d}: {f}" for d, f in fingerprints.items())
    chosen = {}
    for position, ref in enumerate(models.distinct):
        matching = [d for d, f in fingerprints.items() if f == ref.log_mel_fingerprint]
        if len(matching) != 1:
            problem = "no dataset has" if not matching else f"{len(matching)} datasets ({', '.join(matching)}) have"
            raise ValueError(
                f"{problem} the log-mel parameters of {models.describe(position)} ({ref.key}, fingerprint "
                f"{ref.log_mel_fingerprint}); datasets: {found}. Give one dataset per model (preprocess with "
                "the model's parameters), or index from the catalog CSV"
            )
        chosen[position] = matching[0]
    unused = sorted(set(dataset_dirs) - set(chosen.values()))
    if unused:
        raise ValueError(f"no model reads {', '.join(unused)} (its log-mel parameters match none); datasets: {found}")
    return chosen


def _read_shard(path: str, compression: str):
    """The serialized examples of one shard (TensorFlow's reader: every TFRecord compression, any filesystem)."""
    for record in tf.data.TFRecordDataset(path, compression_type=compression or None):
        yield record.numpy()


def _tfrecord_pipeline(
    pipeline, dataset_of_model: dict[int, str], models: IndexModels, staging_dir: str, tracks_per_batch: int
) -> int:
    """Adds the TFRecord path's transforms; returns its largest number of input elements (one dataset's shards)."""
    parts, most_shards = [], 0
    for number, dataset_dir in enumerate(sorted(set(dataset_of_model.values()))):
        info = dataset_info.load(dataset_dir)
        positions = sorted(p for p, d in dataset_of_model.items() if d == dataset_dir)
        paths = [p for split in info.splits for p in dataset_info.shard_paths(dataset_dir, info, split)]
        most_shards = max(most_shards, len(paths))
        embed_dataset = EmbedLogMel(models, positions, shared.Shared(), staging_dir, tracks_per_batch, dataset_dir)
        parts.append(pipeline | f"Shards{number}" >> beam.Create(paths) | f"Embed{number}" >> beam.ParDo(embed_dataset))
    _ = (
        parts
        | "FlattenParts" >> beam.Flatten()
        | "ByTrack" >> beam.GroupByKey()
        | "Join" >> beam.ParDo(JoinModels(models, dataset_of_model, staging_dir))
    )
    return most_shards


def _read_staging(staging_dir: str) -> tuple[list[TrackFeatures], list[Rejection]]:
    features = []
    for path in tf.io.gfile.glob(tf.io.gfile.join(staging_dir, _FEATURES_DIRNAME, f"*{_FEATURES_SUFFIX}")):
        with tf.io.gfile.GFile(path, "rb") as handle:
            features.append(decode_features(handle.read()))
    rejections = beam_jobs.read_rejections(tf.io.gfile.join(staging_dir, _REJECTIONS_DIRNAME))
    return sorted(features, key=lambda f: f.track.track_id), rejections


def _tfrecord_track_ids(dataset_dirs: list[str]) -> set[str]:
    """Every track id in the datasets (the job's input, for the reconciliation)."""
    ids = set()
    spec = {schema.TRACK_ID: tf.io.FixedLenFeature([], tf.string)}
    for dataset_dir in dataset_dirs:
        info = dataset_info.load(dataset_dir)
        paths = [p for split in info.splits for p in dataset_info.shard_paths(dataset_dir, info, split)]
        dataset = tf.data.TFRecordDataset(paths, compression_type=info.compression or None)
        for track_id in dataset.map(lambda r: tf.io.parse_single_example(r, spec)[schema.TRACK_ID]):
            ids.add(track_id.numpy().decode("utf-8"))
    return ids


def embed(
    models: IndexModels,
    work_dir: str,
    catalog: Catalog | None = None,
    dataset_dirs: list[str] | None = None,
    pipeline_args: list[str] | None = None,
    tracks_per_batch: int = DEFAULT_TRACKS_PER_BATCH,
) -> EmbeddingRun:
    """Runs the embedding job over a catalog CSV or TFRecord datasets.

    Args:
        models: The ranking model(s) and the tag model, if any.
        work_dir: Where the job stages its outputs (removed afterwards).
        catalog: A parsed catalog CSV; or
        dataset_dirs: TFRecord dataset directories.
        pipeline_args: Beam pipeline flags.
        tracks_per_batch: The most tracks of one length a worker sends through a model in one pass.

    Raises:
        beam_jobs.CountsDoNotReconcileError: A bug, never data.
    """
    if (catalog is None) == (dataset_dirs is None):
        raise ValueError("give either a catalog or TFRecord datasets")
    if tracks_per_batch < 1:
        raise ValueError(f"tracks per batch must be at least 1, got {tracks_per_batch}")
    dataset_of_model = match_datasets(dataset_dirs, models) if dataset_dirs is not None else None
    job = EmbeddingJob(models, work_dir, catalog, dataset_of_model, tracks_per_batch)
    outcome = beam_jobs.run_staged_job(job, pipeline_args)
    features, rejections = outcome.published
    return EmbeddingRun(features, rejections, job.num_input, outcome.counters)


@dataclasses.dataclass
class EmbeddingJob(beam_jobs.StagedJob):
    """Tracks to their features, as a `beam_jobs.StagedJob` (one of `catalog` and `dataset_of_model` given).

    Staged in a folder of the run's own (under `--temp_location` if given,
    else in `work_dir`): one file per track's features or rejection. Published
    to the caller: the features and rejections, which `index_builder` turns
    into an index.
    """

    models: IndexModels
    work_dir: str
    catalog: Catalog | None
    dataset_of_model: dict[int, str] | None
    tracks_per_batch: int
    num_input: int = dataclasses.field(init=False)  # Tracks (or catalog rows) that go in.

    job_name = "build_index"
    metrics_namespace = METRICS_NAMESPACE
    staging_folders = (_FEATURES_DIRNAME, _REJECTIONS_DIRNAME)
    staging_is_per_run = True

    def __post_init__(self):
        if self.catalog is not None:
            self.num_input = self.catalog.num_rows
        else:
            self.num_input = len(_tfrecord_track_ids(sorted(set(self.dataset_of_model.values()))))

    def staging_dir(self, options) -> str:
        """Under `--temp_location` if given, else in `work_dir`.

        Workers on other machines than the launcher need a folder they all
        reach (an object store, a shared file system): `--temp_location`.
        """
        temp_location = options.view_as(GoogleCloudOptions).temp_location
        if temp_location:
            return tf.io.gfile.join(temp_location, f"build_index-{uuid.uuid4().hex}")
        return os.path.join(self.work_dir, beam_jobs.STAGING_DIRNAME)

    def build(self, pipeline: beam.Pipeline, staging_dir: str) -> int:
        if self.catalog is not None:
            return _catalog_pipeline(pipeline, self.catalog, self.models, staging_dir, self.tracks_per_batch)
        return _tfrecord_pipeline(pipeline, self.dataset_of_model, self.models, staging_dir, self.tracks_per_batch)

    def progress_total(self) -> int:
        return self.num_input

    def count_done(self, staging_dir: str) -> int:
        """Rows rejected before the run, plus each track's staged features or rejection."""
        early = len(self.catalog.rejections) if self.catalog is not None else 0
        features = beam_jobs.count_staged(tf.io.gfile.join(staging_dir, _FEATURES_DIRNAME), _FEATURES_SUFFIX)
        rejected = beam_jobs.count_staged(
            tf.io.gfile.join(staging_dir, _REJECTIONS_DIRNAME), beam_jobs.REJECTION_SUFFIX
        )
        return early + features + rejected

    def reconcile(self, staging_dir: str) -> tuple[list[TrackFeatures], list[Rejection]]:
        features, rejections = _read_staging(staging_dir)
        if self.catalog is not None:
            rejections = list(self.catalog.rejections) + rejections
        beam_jobs.check_counts(self.num_input, len(features), len(rejections))
        return features, rejections

    def publish(self, reconciled, staging_dir: str) -> tuple[list[TrackFeatures], list[Rejection]]:
        return reconciled
