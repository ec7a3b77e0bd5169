"""Teacher targets for distillation: a teacher model's outputs at every crop position of every track, once.

`compute` (a Beam job: DirectRunner on all cores, Dask, Dataflow, ... as
`data_prep.beam_jobs` runs them) reads the student's dataset (the log-mel
the student trains on) and the teacher's (the same catalog preprocessed
with the teacher's front end, e.g. `--log_mel_preset=musicnn`; the same
dataset when the front ends agree), shard by shard in lockstep, and writes a
**distillation dataset**: the student's examples with the teacher features
of `tfrecords.schema` added, same shards, same splits, and a `teacher` block
in `dataset_info.json` (`tfrecords.dataset_info.TeacherInfo`).

Positions: a student crop of `crop_frames` frames starts every `hop_frames`
frames (the last start keeps the crop inside the track; a track shorter than
a crop has one position, repeated as the readers repeat it). The teacher
reads its own input length centred on the same audio (clipped to the
track), so a crop and its target cover the same music: both front ends must
share the sample rate and hop, which is checked. The embedding is stored
L2-normalised (as the serving graph returns it).

Both datasets must come from the same catalog with the same split settings:
every student track must be found, in the same shard and order, in the
teacher's dataset. A mismatch fails the job naming the shard and track; the
student dataset and any earlier output stay untouched: the new shards are
staged (`data_prep.beam_jobs.StagedJob`) and move into place only once every
track is accounted for, `dataset_info.json` last.
"""

from __future__ import annotations

import dataclasses
import os
import uuid

import apache_beam as beam
import numpy as np
import tensorflow as tf
from absl import logging

import models
from data_prep import beam_jobs
from intake.rejections import REJECTED_FILENAME
from models import artifact
from tfrecords import dataset_info, schema


class TeacherTargetsError(ValueError):
    """Datasets or a teacher that cannot make targets together; the message says why."""


@dataclasses.dataclass(frozen=True)
class TeacherJob:
    """One teacher-targets run.

    Attributes:
        dataset_dir: The student's dataset.
        teacher_dataset_dir: The same catalog with the teacher's front end.
        teacher: The teacher's model artifact (e.g. `pretrained/msd_musicnn`).
        output_dir: Where the distillation dataset is written.
        crop_frames: The student's crop length (`Experiment.crop_frames`).
        hop_frames: Frames between consecutive positions.
        batch_size: Teacher windows per forward pass.
    """

    dataset_dir: str
    teacher_dataset_dir: str
    teacher: str
    output_dir: str
    crop_frames: int = 231
    hop_frames: int = 64
    batch_size: int = 64

    def __post_init__(self):
        if self.crop_frames < 1 or self.hop_frames < 1 or self.batch_size < 1:
            raise TeacherTargetsError(f"crop_frames, hop_frames and batch_size must be >= 1: {self}")
        if os.path.abspath(self.output_dir) in (
            os.path.abspath(self.dataset_dir),
            os.path.abspath(self.teacher_dataset_dir),
        ):
            raise TeacherTargetsError(f"--output_dir {self.output_dir} must be a new folder, not an input dataset")


def crop_starts(num_frames: int, crop_frames: int, hop_frames: int) -> np.ndarray:
    """Student crop starts every `hop_frames`, the crop inside the (repeated-to-a-crop) track."""
    last = max(num_frames, crop_frames) - crop_frames
    return np.arange(0, last + 1, hop_frames, dtype=np.int64)


def teacher_windows(
    teacher_log_mel: np.ndarray, starts: np.ndarray, crop_frames: int, teacher_frames: int
) -> np.ndarray:
    """The teacher's inputs `[P, teacher_frames, mels]`, each centred on a student crop, clipped to the track."""
    frames = teacher_log_mel.shape[0]
    if frames < teacher_frames:  # Repeated, as `readers.repeat_to_frames` does.
        teacher_log_mel = np.tile(teacher_log_mel, (-(-teacher_frames // max(frames, 1)), 1))[:teacher_frames]
    last = teacher_log_mel.shape[0] - teacher_frames
    offsets = np.clip(starts + (crop_frames - teacher_frames) // 2, 0, last)
    return np.stack([teacher_log_mel[o : o + teacher_frames] for o in offsets])


def _check_inputs(job: TeacherJob) -> tuple[dataset_info.DatasetInfo, dataset_info.DatasetInfo, artifact.ModelInfo]:
    student = dataset_info.load(job.dataset_dir)
    teacher_data = dataset_info.load(job.teacher_dataset_dir)
    try:
        teacher = artifact.read_info(job.teacher)
    except artifact.ArtifactError as error:
        raise TeacherTargetsError(f"--teacher: {error}") from error
    if teacher_data.log_mel.fingerprint() != teacher.log_mel.fingerprint():
        raise TeacherTargetsError(
            f"{job.teacher} expects the log-mel {teacher.log_mel.to_dict()}; {job.teacher_dataset_dir} has "
            f"{teacher_data.log_mel.to_dict()}: preprocess the catalog with the teacher's front end "
            "(e.g. --log_mel_preset=musicnn) and pass it as --teacher_dataset_dir"
        )
    for name in ("sample_rate", "hop_length"):
        if getattr(student.log_mel, name) != getattr(teacher_data.log_mel, name):
            raise TeacherTargetsError(
                f"the student's and the teacher's front ends differ in {name} ({getattr(student.log_mel, name)} vs "
                f"{getattr(teacher_data.log_mel, name)}): their frames would not cover the same audio"
            )
    student_shards = {split: info.shards for split, info in student.splits.items()}
    teacher_shards = {split: info.shards for split, info in teacher_data.splits.items()}
    if student_shards != teacher_shards or student.catalog.get("sha256") != teacher_data.catalog.get("sha256"):
        raise TeacherTargetsError(
            f"{job.dataset_dir} and {job.teacher_dataset_dir} were not preprocessed from the same catalog with the "
            "same split settings (--split_by, --seed, --examples_per_shard, ...): their shards differ"
        )
    return student, teacher_data, teacher


class TargetsForShard(beam.DoFn):
    """Reads one student shard and its teacher twin, writes the shard with teacher targets; emits its track count."""

    def __init__(
        self,
        job: TeacherJob,
        student: dataset_info.DatasetInfo,
        teacher_data: dataset_info.DatasetInfo,
        staging_dir: str,
    ):
        self._job = job
        self._staging_dir = staging_dir
        self._student = student
        self._teacher_data = teacher_data
        self._model = None
        self._predict = None

    def setup(self):
        self._model, info = artifact.load(self._job.teacher)
        self._teacher_frames = info.crop_frames
        self._predict = tf.function(
            lambda x: self._model(x, training=False),
            input_signature=[tf.TensorSpec([None, info.crop_frames, info.log_mel.n_mels], tf.float32)],
            reduce_retracing=True,
        )

    def process(self, shard: str):
        job = self._job
        student_records = _read_records(job.dataset_dir, shard, self._student.compression)
        teacher_records = _read_records(job.teacher_dataset_dir, shard, self._teacher_data.compression)
        if len(student_records) != len(teacher_records):
            raise TeacherTargetsError(
                f"shard {shard}: {len(student_records)} tracks in {job.dataset_dir}, {len(teacher_records)} in "
                f"{job.teacher_dataset_dir}"
            )
        options = tf.io.TFRecordOptions(compression_type=self._student.compression)
        path = tf.io.gfile.join(self._staging_dir, shard)
        temporary = f"{path}.{uuid.uuid4().hex}.tmp"  # Renamed into place, as `beam_jobs.write_atomically` does.
        with tf.io.TFRecordWriter(temporary, options) as writer:
            for student_record, teacher_record in zip(student_records, teacher_records, strict=True):
                writer.write(self._with_targets(shard, student_record, teacher_record))
        tf.io.gfile.rename(temporary, path, overwrite=True)
        yield len(student_records)

    def _with_targets(self, shard: str, student_record: bytes, teacher_record: bytes) -> bytes:
        student = schema.decode_example(student_record, self._student.log_mel_dtype)
        teacher = schema.decode_example(teacher_record, self._teacher_data.log_mel_dtype)
        if student[schema.TRACK_ID] != teacher[schema.TRACK_ID]:
            raise TeacherTargetsError(
                f"shard {shard}: track {student[schema.TRACK_ID]!r} of {self._job.dataset_dir} meets "
                f"{teacher[schema.TRACK_ID]!r} in {self._job.teacher_dataset_dir}: not the same catalog"
            )
        starts = crop_starts(student[schema.LOG_MEL].shape[0], self._job.crop_frames, self._job.hop_frames)
        windows = teacher_windows(teacher[schema.LOG_MEL], starts, self._job.crop_frames, self._teacher_frames)
        tags, embeddings = [], []
        for first in range(0, len(windows), self._job.batch_size):
            outputs = self._predict(tf.constant(windows[first : first + self._job.batch_size]))
            tags.append(outputs[models.TAGS].numpy())
            embeddings.append(tf.math.l2_normalize(outputs[models.EMBEDDING], axis=-1).numpy())
        features = schema.teacher_features(starts, np.concatenate(tags), np.concatenate(embeddings))
        return schema.add_features(student_record, features)


def _read_records(dataset_dir: str, shard: str, compression: str) -> list[bytes]:
    path = tf.io.gfile.join(dataset_dir, shard)
    return [record.numpy() for record in tf.data.TFRecordDataset(path, compression_type=compression)]


def compute(job: TeacherJob, pipeline_args: list[str] | None = None) -> dataset_info.DatasetInfo:
    """Runs the job; returns the distillation dataset's info (written last).

    Raises:
        TeacherTargetsError: Inputs that do not fit together (named).
        beam_jobs.JobFailedError, beam_jobs.RunnerUnavailableError: The runner.
    """
    student, teacher_data, teacher = _check_inputs(job)
    return beam_jobs.run_staged_job(TeacherTargetsJob(job, student, teacher_data, teacher), pipeline_args).published


@dataclasses.dataclass
class TeacherTargetsJob(beam_jobs.StagedJob):
    """Student shards to shards with teacher targets, as a `beam_jobs.StagedJob`.

    Staged in `OUTPUT_DIR/_staging`: the new shards, under their final names.
    Published: the shards moved into `OUTPUT_DIR`, the student's
    `rejected.csv` copied, then `dataset_info.json`.
    """

    job: TeacherJob
    student: dataset_info.DatasetInfo
    teacher_data: dataset_info.DatasetInfo
    teacher: artifact.ModelInfo

    job_name = "compute_teacher_targets"
    progress_unit = "shards"

    def staging_dir(self, options) -> str:
        return tf.io.gfile.join(self.job.output_dir, beam_jobs.STAGING_DIRNAME)

    def progress_total(self) -> int:
        return len(self.shards)

    def count_done(self, staging_dir: str) -> int:
        """The shards written (each renamed into the staging folder when complete)."""
        written = set(tf.io.gfile.listdir(staging_dir))
        return sum(1 for shard in self.shards if shard in written)

    @property
    def shards(self) -> list[str]:
        return [shard for split in self.student.splits.values() for shard in split.shards]

    def build(self, pipeline: beam.Pipeline, staging_dir: str) -> int:
        _ = (
            pipeline
            | "Shards" >> beam.Create(self.shards)
            | "TeacherTargets" >> beam.ParDo(TargetsForShard(self.job, self.student, self.teacher_data, staging_dir))
        )
        logging.info(
            "Teacher targets: %d shards of %s with %s", len(self.shards), self.job.dataset_dir, self.job.teacher
        )
        return len(self.shards)

    def reconcile(self, staging_dir: str) -> list[str]:
        compression = self.student.compression
        written = sum(
            sum(1 for _ in tf.data.TFRecordDataset(tf.io.gfile.join(staging_dir, shard), compression_type=compression))
            for shard in self.shards
        )
        beam_jobs.check_counts(self.student.num_written, written, 0)
        return self.shards

    def publish(self, shards: list[str], staging_dir: str) -> dataset_info.DatasetInfo:
        output_dir = self.job.output_dir
        if tf.io.gfile.exists(dataset_info.info_path(output_dir)):
            tf.io.gfile.remove(dataset_info.info_path(output_dir))  # Incomplete until rewritten.
        for shard in shards:
            source = tf.io.gfile.join(staging_dir, shard)
            tf.io.gfile.rename(source, tf.io.gfile.join(output_dir, shard), overwrite=True)
        _copy_rejections(self.job)
        info = dataclasses.replace(self.student, teacher=self._teacher_info())
        beam_jobs.write_atomically(dataset_info.info_path(output_dir), info.to_json())
        return info

    def _teacher_info(self) -> dataset_info.TeacherInfo:
        teacher, job = self.teacher, self.job
        provenance = dataclasses.asdict(teacher.provenance) if teacher.provenance else {}
        if teacher.training:
            provenance = {"training": dataclasses.asdict(teacher.training)}
        return dataset_info.TeacherInfo(
            model=artifact.artifact_dir(job.teacher),
            model_name=teacher.model_name,
            vocabulary=list(teacher.vocabulary),
            embedding_dim=teacher.embedding_dim,
            crop_frames=job.crop_frames,
            hop_frames=job.hop_frames,
            teacher_dataset_dir=job.teacher_dataset_dir,
            provenance=provenance,
        )


def _copy_rejections(job: TeacherJob):
    """The student dataset's `rejected.csv` travels with it (the catalog rows it left out)."""
    source = tf.io.gfile.join(job.dataset_dir, REJECTED_FILENAME)
    if tf.io.gfile.exists(source):
        tf.io.gfile.copy(source, tf.io.gfile.join(job.output_dir, REJECTED_FILENAME), overwrite=True)
