"""The Beam pipeline: catalog rows to sharded log-mel TFRecords.

Work is split between the launcher (this process) and the Beam workers:

1. The launcher parses the catalog, chooses the tag vocabulary and the
   splits. These need a global view of the metadata but no audio, so they run
   once, before the pipeline, and are deterministic.
2. Beam workers read, decode, downmix, resample and check every file, compute
   its log-mel with `features.logmel` and serialize it with
   `tfrecords.schema`. Failures become rejections with a reason. Examples are
   grouped into shards by a stable hash of the track id and each shard is
   written sorted by track id, so a re-run writes byte-identical files.
3. The launcher reconciles the counts (catalog rows = written + rejected),
   then publishes atomically: shards go from a staging directory to their
   final names, `rejected.csv` is written, and `dataset_info.json`, which
   readers require, comes last.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import threading
import uuid

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.metrics import Metrics

from data_prep import beam_jobs
from data_prep.splits import assign_splits, stable_hash
from features.logmel import LogMelSpec, log_mel_spectrogram, minimum_num_samples
from intake import audio, folder_catalog
from intake.audio_checks import AudioChecks, load_checked_waveform
from intake.catalog import (
    SPLITS,
    Catalog,
    CatalogEntry,
    CatalogError,
    TagVocabulary,
    build_vocabulary,
    reject_untagged,
)
from intake.rejections import REASONS, REJECTED_FILENAME, Rejection, rejections_to_csv
from tfrecords import dataset_info, schema

METRICS_NAMESPACE = "data_prep"
_STATS_SUFFIX = ".stats.json"
_EXAMPLES_DIRNAME = "examples"
_EXAMPLE_SUFFIX = ".example"
_REJECTIONS_DIRNAME = "rejections"
_COMPRESSION_SUFFIX = {"GZIP": ".gz", "ZLIB": ".zz", "": ""}


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """Experiment-level settings of a preprocessing run.

    Attributes:
        output_dir: Where the dataset is written (local path or URI).
        log_mel: The log-mel parameters.
        log_mel_dtype: Storage dtype of the log-mel (`float16` or `float32`).
        compression: TFRecord compression, `GZIP`, `ZLIB` or '' for none.
        split_by: `artist`, `track` or `given` (see `data_prep.splits`).
        split_fractions: Target fractions of train, valid and test.
        seed: Seed of the split assignment's tie-breaking hash.
        min_duration_s: Shorter audio is rejected as `too_short`.
        silence_threshold_dbfs: Audio whose peak is below this level is
            rejected as `silent`.
        require_tags: Reject rows without any vocabulary tag.
        min_tag_count: Tags on fewer tracks are left out of the vocabulary.
        max_tags: Keep at most this many of the most frequent tags.
        vocabulary: A fixed tag vocabulary, overriding the two above.
        examples_per_shard: Target number of tracks per shard.
    """

    output_dir: str
    log_mel: LogMelSpec = LogMelSpec()
    log_mel_dtype: str = "float16"
    compression: str = ""
    split_by: str = "artist"
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    min_duration_s: float = 1.0
    silence_threshold_dbfs: float = -80.0
    require_tags: bool = True
    min_tag_count: int = 1
    max_tags: int | None = None
    vocabulary: tuple[str, ...] | None = None
    examples_per_shard: int = 64

    def __post_init__(self):
        if self.log_mel_dtype not in schema.LOG_MEL_DTYPES:
            raise ValueError(f"log_mel_dtype must be one of {sorted(schema.LOG_MEL_DTYPES)}")
        if self.compression not in _COMPRESSION_SUFFIX:
            raise ValueError(f"compression must be one of {sorted(_COMPRESSION_SUFFIX)}")
        if self.examples_per_shard < 1:
            raise ValueError("examples_per_shard must be at least 1")
        if self.min_duration_s * self.log_mel.sample_rate < minimum_num_samples(self.log_mel):
            raise ValueError(
                f"min_duration_s must cover at least {minimum_num_samples(self.log_mel)} samples (half an FFT window)"
            )

    @property
    def audio_checks(self) -> AudioChecks:
        """The thresholds every track is checked against (`intake.audio_checks`)."""
        return AudioChecks(min_duration_s=self.min_duration_s, silence_threshold_dbfs=self.silence_threshold_dbfs)


@dataclasses.dataclass(frozen=True)
class TrackTask:
    """A catalog entry on its way through the pipeline."""

    entry: CatalogEntry
    split: str
    shard: int
    num_shards: int
    tags: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Summary:
    """What a run did."""

    info: dataset_info.DatasetInfo
    rejections: list[Rejection]
    counters: dict[str, int] | None

    def render(self) -> str:
        info = self.info
        lines = [
            f"catalog rows:  {info.catalog['rows']}  ({info.catalog['source']})",
            f"written:       {info.num_written}",
            f"rejected:      {info.rejected['count']}  (see {REJECTED_FILENAME})",
        ]
        for reason, count in sorted(info.rejected["by_reason"].items()):
            lines.append(f"  {reason:<20} {count}")
        for name, split in info.splits.items():
            lines.append(
                f"{name:<6} {split.examples:>6} tracks {split.seconds / 3600:8.2f} h  {len(split.shards)} shard(s)"
            )
        lines.append(
            f"tags:          {len(info.vocabulary)}  {list(info.vocabulary)[:10]}{' ...' if len(info.vocabulary) > 10 else ''}"
        )
        if info.out_of_vocabulary:
            lines.append(f"tag occurrences left out of the vocabulary: {sum(info.out_of_vocabulary.values())}")
        if info.dropped_tags:
            lines.append(f"tags dropped (every row carrying them was rejected): {sorted(info.dropped_tags)}")
        lines.append(f"log-mel:       {info.log_mel.to_dict()}  fingerprint {info.log_mel.fingerprint()}")
        if self.counters is None:
            lines.append("beam counters: none reported by this runner (the counts above come from the written files)")
        elif self.counters:
            counters = ", ".join(f"{name}={value}" for name, value in sorted(self.counters.items()))
            lines.append(f"beam counters: {counters}")
        return "\n".join(lines)


def shard_name(split: str, shard: int, num_shards: int, compression: str) -> str:
    return f"{split}-{shard:05d}-of-{num_shards:05d}.tfrecord{_COMPRESSION_SUFFIX[compression]}"


def plan_tasks(catalog: Catalog, config: PreprocessConfig) -> tuple[list[TrackTask], list[Rejection], TagVocabulary]:
    """Chooses vocabulary, splits and shards for every valid catalog entry.

    Returns:
        The tasks for the Beam workers, the rows rejected before any audio is
        read, and the vocabulary.
    """
    vocabulary = build_vocabulary(
        catalog.entries,
        min_count=config.min_tag_count,
        max_tags=config.max_tags,
        given=list(config.vocabulary) if config.vocabulary is not None else None,
    )
    rejections = list(catalog.rejections)
    entries = list(catalog.entries)
    if config.require_tags:
        entries, untagged = reject_untagged(entries, vocabulary)
        rejections.extend(untagged)
    if config.split_by == "given":
        no_split = [e for e in entries if e.split is None]
        rejections.extend(
            Rejection(e.row, e.track_id, e.path, "invalid_row", "split_by=given but the row has no split")
            for e in no_split
        )
        entries = [e for e in entries if e.split is not None]
    split_of = assign_splits(entries, vocabulary.tags, config.split_by, config.split_fractions, config.seed)
    per_split = collections.Counter(split_of.values())
    num_shards = {s: max(1, math.ceil(per_split[s] / config.examples_per_shard)) for s in SPLITS}
    index = vocabulary.index()
    tasks = []
    for entry in entries:
        split = split_of[entry.track_id]
        tags = tuple(t for t in entry.tags if t in index)
        tasks.append(
            TrackTask(
                entry=entry,
                split=split,
                shard=stable_hash(entry.track_id, config.seed) % num_shards[split],
                num_shards=num_shards[split],
                tags=tags,
            )
        )
    return tasks, rejections, vocabulary


_LOG_MEL_FUNCTIONS: dict[LogMelSpec, tf.types.experimental.PolymorphicFunction] = {}
_LOG_MEL_FUNCTIONS_LOCK = threading.Lock()


def waveform_log_mel_function(spec: LogMelSpec) -> tf.types.experimental.PolymorphicFunction:
    """`log_mel_spectrogram` for one waveform `[samples]`, traced once per process and spec.

    The worker threads of a process share it (tracing costs more than a
    track's log-mel); AutoGraph is off: the computation has no Python control
    flow to convert, and converting it triples the tracing time.
    """
    with _LOG_MEL_FUNCTIONS_LOCK:
        if spec not in _LOG_MEL_FUNCTIONS:
            function = tf.function(
                lambda waveform: log_mel_spectrogram(waveform, spec),
                input_signature=[tf.TensorSpec([None], tf.float32)],
                autograph=False,
            )
            function.get_concrete_function()
            _LOG_MEL_FUNCTIONS[spec] = function
        return _LOG_MEL_FUNCTIONS[spec]


class ProcessTrack(beam.DoFn):
    """Reads one track's audio; emits its example's metadata (the example is staged) or stages its rejection."""

    def __init__(self, config: PreprocessConfig, staging_dir: str):
        self._config = config
        self._examples_dir = tf.io.gfile.join(staging_dir, _EXAMPLES_DIRNAME)
        self._rejections_dir = tf.io.gfile.join(staging_dir, _REJECTIONS_DIRNAME)
        self._decoded = Metrics.counter(METRICS_NAMESPACE, "decoded")
        self._rejected = Metrics.counter(METRICS_NAMESPACE, "rejected")
        self._audio_ms = Metrics.counter(METRICS_NAMESPACE, "audio_milliseconds")
        self._fallback = Metrics.counter(METRICS_NAMESPACE, "decoded_with_ffmpeg")

    def setup(self):
        self._log_mel = waveform_log_mel_function(self._config.log_mel)

    def process(self, task: TrackTask):
        try:
            example, seconds = self._process(task)
        except audio.AudioError as error:
            self._reject(task, error.reason, error.detail)
            return
        # The example goes to a staging file and only its metadata through the
        # shuffle: a shuffle of whole spectrograms costs more than the work.
        example_path = tf.io.gfile.join(self._examples_dir, f"{stable_hash(task.entry.track_id):016x}{_EXAMPLE_SUFFIX}")
        beam_jobs.write_atomically(example_path, example)
        self._decoded.inc()
        self._audio_ms.inc(int(round(seconds * 1000)))
        yield ((task.split, task.shard, task.num_shards), (task.entry.track_id, example_path, seconds, task.tags))

    def _reject(self, task: TrackTask, reason: str, detail: str):
        self._rejected.inc()
        Metrics.counter(METRICS_NAMESPACE, f"rejected_{reason}").inc()
        entry = task.entry
        beam_jobs.stage_rejection(
            self._rejections_dir, Rejection(entry.row, entry.track_id, entry.path, reason, detail)
        )

    def _process(self, task: TrackTask) -> tuple[bytes, float]:
        config, entry = self._config, task.entry
        spec = config.log_mel
        source = audio.open_source(entry.uri)
        waveform, decoded = load_checked_waveform(entry, spec.sample_rate, config.audio_checks, source)
        if decoded.decoder != "soundfile":
            self._fallback.inc()
        seconds = waveform.size / spec.sample_rate
        log_mel = self._log_mel(tf.constant(waveform)).numpy()
        if not np.all(np.isfinite(log_mel)):
            raise audio.AudioError("non_finite", entry.uri, "the log-mel contains NaN or infinity")
        example = schema.encode_example(
            track_id=entry.track_id,
            log_mel=log_mel,
            tags=list(task.tags),
            num_samples=int(waveform.size),
            sample_rate=spec.sample_rate,
            artist=entry.artist,
            album=entry.album,
            title=entry.title,
            log_mel_dtype=config.log_mel_dtype,
            audio_sha256=audio.content_sha256(source),
        )
        return example, seconds


class WriteShard(beam.DoFn):
    """Writes one shard, sorted by track id, and its statistics as JSON next to it.

    The examples are read from the staging files `ProcessTrack` wrote; they
    stay until the whole staging folder is removed on publishing, so that a
    runner may retry this step.
    """

    def __init__(self, staging_dir: str, compression: str):
        self._staging_dir = staging_dir
        self._compression = compression

    def process(self, keyed_examples):
        (split, shard, num_shards), examples = keyed_examples
        examples = sorted(examples, key=lambda item: item[0])
        name = shard_name(split, shard, num_shards, self._compression)
        options = tf.io.TFRecordOptions(compression_type=self._compression, compression_level=1)
        path = tf.io.gfile.join(self._staging_dir, name)
        temporary = f"{path}.{uuid.uuid4().hex}.tmp"  # Renamed into place: see `beam_jobs.write_atomically`.
        with tf.io.TFRecordWriter(temporary, options) as writer:
            for _, example_path, _, _ in examples:
                with tf.io.gfile.GFile(example_path, "rb") as handle:
                    writer.write(handle.read())
        tf.io.gfile.rename(temporary, path, overwrite=True)
        tag_counts = collections.Counter(tag for _, _, _, tags in examples for tag in tags)
        stats = {
            "split": split,
            "shard": name,
            "examples": len(examples),
            "seconds": sum(seconds for _, _, seconds, _ in examples),
            "tag_counts": dict(tag_counts),
            "track_ids": [track_id for track_id, _, _, _ in examples],
        }
        beam_jobs.write_atomically(
            tf.io.gfile.join(self._staging_dir, name + _STATS_SUFFIX), json.dumps(stats, sort_keys=True)
        )


def build_pipeline(pipeline: beam.Pipeline, tasks: list[TrackTask], config: PreprocessConfig, staging_dir: str):
    """Adds the preprocessing transforms to `pipeline`.

    Four steps and no sink: the workers write the staged examples, shards,
    shard statistics and rejections themselves, under names that a retried
    bundle rewrites identically, and the launcher reads them back.
    """
    _ = (
        pipeline
        | "CreateTasks" >> beam.Create(tasks)
        | "ProcessTracks" >> beam.ParDo(ProcessTrack(config, staging_dir))
        | "GroupIntoShards" >> beam.GroupByKey()
        | "WriteShards" >> beam.ParDo(WriteShard(staging_dir, config.compression))
    )


def _read_shard_stats(staging_dir: str) -> list[dict]:
    stats = []
    for path in sorted(tf.io.gfile.glob(tf.io.gfile.join(staging_dir, f"*{_STATS_SUFFIX}"))):
        with tf.io.gfile.GFile(path, "r") as handle:
            stats.append(json.loads(handle.read()))
    return stats


def _remove_previous_dataset(output_dir: str):
    """Removes the files of an earlier run; `dataset_info.json` goes first."""
    info = dataset_info.info_path(output_dir)
    if tf.io.gfile.exists(info):
        tf.io.gfile.remove(info)
    # Not catalog.csv: the catalog a folder gave may be this run's input (`--catalog=OUTPUT_DIR/catalog.csv`).
    patterns = [f"{split}-*-of-*.tfrecord*" for split in SPLITS] + [REJECTED_FILENAME]
    for pattern in patterns:
        for path in tf.io.gfile.glob(tf.io.gfile.join(output_dir, pattern)):
            tf.io.gfile.remove(path)


def run(
    catalog: Catalog,
    config: PreprocessConfig,
    pipeline_args: list[str] | None = None,
) -> Summary:
    """Preprocesses a catalog into a TFRecord dataset.

    Args:
        catalog: The parsed catalog.
        config: The preprocessing settings.
        pipeline_args: Beam pipeline flags (`--runner`, `--project`, ...).

    Returns:
        The summary of the run; the dataset is complete when this returns.

    Raises:
        beam_jobs.CountsDoNotReconcileError: A bug, never data.
    """
    tasks, early_rejections, vocabulary = plan_tasks(catalog, config)
    logging.info("Preprocessing %d tracks (%d rejected up front)", len(tasks), len(early_rejections))
    job = PreprocessJob(catalog, config, tasks, early_rejections, vocabulary)
    outcome = beam_jobs.run_staged_job(job, pipeline_args)
    info, rejections = outcome.published
    return Summary(info=info, rejections=rejections, counters=outcome.counters)


@dataclasses.dataclass
class PreprocessJob(beam_jobs.StagedJob):
    """Catalog rows to a TFRecord dataset, as a `beam_jobs.StagedJob`.

    Staged in `OUTPUT_DIR/_staging`: shards with their stats, one file per
    rejection. Published: the shards under their final names, `rejected.csv`,
    then `dataset_info.json`.
    """

    catalog: Catalog
    config: PreprocessConfig
    tasks: list[TrackTask]
    early_rejections: list[Rejection]
    vocabulary: TagVocabulary

    job_name = "data_prep"
    metrics_namespace = METRICS_NAMESPACE
    staging_folders = (_EXAMPLES_DIRNAME, _REJECTIONS_DIRNAME)

    def staging_dir(self, options) -> str:
        return tf.io.gfile.join(self.config.output_dir, beam_jobs.STAGING_DIRNAME)

    def progress_total(self) -> int:
        return self.catalog.num_rows

    def count_done(self, staging_dir: str) -> int:
        """Rows rejected before the run, plus each track's staged example or rejection."""
        examples = beam_jobs.count_staged(tf.io.gfile.join(staging_dir, _EXAMPLES_DIRNAME), _EXAMPLE_SUFFIX)
        rejected = beam_jobs.count_staged(
            tf.io.gfile.join(staging_dir, _REJECTIONS_DIRNAME), beam_jobs.REJECTION_SUFFIX
        )
        return self.catalog.num_rows - len(self.tasks) + examples + rejected

    def build(self, pipeline: beam.Pipeline, staging_dir: str) -> int:
        build_pipeline(pipeline, self.tasks, self.config, staging_dir)
        return len(self.tasks)

    def reconcile(self, staging_dir: str) -> tuple[list[dict], list[Rejection]]:
        shard_stats = _read_shard_stats(staging_dir)
        late_rejections = beam_jobs.read_rejections(tf.io.gfile.join(staging_dir, _REJECTIONS_DIRNAME))
        rejections = sorted(self.early_rejections + late_rejections, key=lambda r: r.row)
        written_ids = [track_id for stats in shard_stats for track_id in stats["track_ids"]]
        beam_jobs.check_counts(self.catalog.num_rows, len(written_ids), len(rejections), unit="catalog rows")
        accounted = collections.Counter(written_ids + [r.track_id for r in late_rejections])
        if accounted != collections.Counter(task.entry.track_id for task in self.tasks):
            raise beam_jobs.CountsDoNotReconcileError(
                "the tracks written and rejected by the workers are not the tracks sent to them"
            )
        return shard_stats, rejections

    def publish(self, reconciled, staging_dir: str) -> tuple[dataset_info.DatasetInfo, list[Rejection]]:
        shard_stats, rejections = reconciled
        vocabulary, dropped = _drop_tags_without_examples(
            self.vocabulary, shard_stats, rejections, self.catalog.entries, self.config, staging_dir
        )
        info = _make_info(self.catalog, self.config, vocabulary, shard_stats, rejections)
        info.dropped_tags = dropped
        _publish(self.config.output_dir, staging_dir, shard_stats, rejections, info, self.catalog)
        return info, rejections


def _drop_tags_without_examples(vocabulary, shard_stats, rejections, catalog_entries, config, staging_dir):
    """Leaves out of the vocabulary the tags that only rejected rows carried.

    (A tag of a given vocabulary that no catalog row carries at all stays: the
    user chose a fixed label set.)

    Such a tag has no example in any split: a label no model can learn, and
    an undefined AUC. Readers derive labels from the vocabulary in
    `dataset_info.json`, so dropping it changes that file alone. A
    vocabulary the user gave (`--vocabulary`) is not changed: the run fails,
    naming the tags and the rejected rows that carried them.

    Returns:
        The vocabulary and `{tag: why it was dropped}`.
    """
    counts = collections.Counter()
    for stats in shard_stats:
        counts.update(stats["tag_counts"])
    tags_of = {entry.track_id: entry.tags for entry in catalog_entries}
    carried = {tag for rejection in rejections for tag in tags_of.get(rejection.track_id, ())}
    # A given vocabulary may name tags no row carries (a fixed label set): only rejections empty a tag here.
    empty = [tag for tag in vocabulary.tags if not counts[tag] and tag in carried]
    if not empty:
        return vocabulary, {}
    reasons = collections.Counter(r.reason for r in rejections)
    if config.vocabulary is not None:
        raise CatalogError(
            f"tags of the given vocabulary have no usable track: {empty} (every row carrying them was rejected; "
            f"rejections by reason: {dict(reasons)}); fix those rows or leave the tags out of --vocabulary. "
            f"Staging data left in {staging_dir}"
        )
    keep = [index for index, tag in enumerate(vocabulary.tags) if counts[tag]]
    why = "every catalog row carrying it was rejected (see rejected.csv)"
    kept = dataclasses.replace(vocabulary, tags=tuple(vocabulary.tags[index] for index in keep))
    return kept, {tag: why for tag in empty}


def _make_info(catalog, config, vocabulary, shard_stats, rejections) -> dataset_info.DatasetInfo:
    splits = {}
    for split in SPLITS:
        stats = sorted((s for s in shard_stats if s["split"] == split), key=lambda s: s["shard"])
        tag_counts = collections.Counter()
        for s in stats:
            tag_counts.update(s["tag_counts"])
        splits[split] = dataset_info.SplitInfo(
            shards=[s["shard"] for s in stats],
            examples=sum(s["examples"] for s in stats),
            seconds=round(sum(s["seconds"] for s in stats), 3),
            tag_counts={tag: tag_counts.get(tag, 0) for tag in vocabulary.tags},
        )
    by_reason = collections.Counter(r.reason for r in rejections)
    options = {
        "split_by": config.split_by,
        "split_fractions": list(config.split_fractions),
        "seed": config.seed,
        "min_duration_s": config.min_duration_s,
        "silence_threshold_dbfs": config.silence_threshold_dbfs,
        "require_tags": config.require_tags,
        "min_tag_count": config.min_tag_count,
        "max_tags": config.max_tags,
        "examples_per_shard": config.examples_per_shard,
    }
    return dataset_info.DatasetInfo(
        log_mel=config.log_mel,
        log_mel_dtype=config.log_mel_dtype,
        compression=config.compression,
        vocabulary=list(vocabulary.tags),
        splits=splits,
        catalog={
            "source": catalog.source,
            "format": catalog.format,
            "audio_root": catalog.audio_root,
            "sha256": catalog.sha256,
            "rows": catalog.num_rows,
        },
        rejected={
            "count": len(rejections),
            "by_reason": {reason: by_reason[reason] for reason in REASONS if by_reason[reason]},
            "file": REJECTED_FILENAME,
        },
        options=options,
        out_of_vocabulary=vocabulary.out_of_vocabulary,
    )


def _publish(output_dir, staging_dir, shard_stats, rejections, info, catalog: Catalog):
    _remove_previous_dataset(output_dir)
    if catalog.format == folder_catalog.FORMAT:  # The catalog the folder gave, to repeat or edit the run.
        folder_catalog.write_catalog_csv(catalog, output_dir)
    for stats in shard_stats:
        tf.io.gfile.rename(
            tf.io.gfile.join(staging_dir, stats["shard"]), tf.io.gfile.join(output_dir, stats["shard"]), overwrite=True
        )
    with tf.io.gfile.GFile(tf.io.gfile.join(output_dir, REJECTED_FILENAME), "w") as handle:
        handle.write(rejections_to_csv(rejections))
    temporary = dataset_info.info_path(output_dir) + ".tmp"
    with tf.io.gfile.GFile(temporary, "w") as handle:
        handle.write(info.to_json())
    tf.io.gfile.rename(temporary, dataset_info.info_path(output_dir), overwrite=True)
