"""`dataset_info.json`: what a preprocessed dataset contains.

The file is written last, after every shard is in place, so its presence
marks a complete dataset; readers refuse a directory without it.
"""

from __future__ import annotations

import dataclasses
import json

import tensorflow as tf

from features.logmel import LogMelSpec

FILENAME = "dataset_info.json"
FORMAT_VERSION = 1


class IncompleteDatasetError(FileNotFoundError):
    """A dataset directory without `dataset_info.json` (missing or half written)."""


@dataclasses.dataclass
class SplitInfo:
    """One split of the dataset.

    Attributes:
        shards: Shard file names, relative to the dataset directory.
        examples: Number of tracks.
        seconds: Total audio duration in seconds.
        tag_counts: Tracks per vocabulary tag.
    """

    shards: list[str]
    examples: int
    seconds: float
    tag_counts: dict[str, int]


@dataclasses.dataclass(frozen=True)
class TeacherInfo:
    """The teacher whose outputs a distillation dataset carries (`schema.TEACHER_FEATURES`).

    Attributes:
        model: The teacher artifact's directory.
        model_name: Its architecture.
        vocabulary: Its tags, in the order of `teacher/tags`.
        embedding_dim: Size of `teacher/embedding` (L2-normalised).
        crop_frames: Frames of the student crop each position stands for.
        hop_frames: Frames between consecutive positions.
        teacher_dataset_dir: The dataset the teacher read (its own front end).
        provenance: The teacher's `model_info.json` weights record.
    """

    model: str
    model_name: str
    vocabulary: list[str]
    embedding_dim: int
    crop_frames: int
    hop_frames: int
    teacher_dataset_dir: str
    provenance: dict = dataclasses.field(default_factory=dict)

    @property
    def sizes(self) -> tuple[int, int]:
        """`(tags, embedding size)`, as `schema.parse_example` takes them."""
        return len(self.vocabulary), self.embedding_dim


@dataclasses.dataclass
class DatasetInfo:
    """The contents of `dataset_info.json`.

    Attributes:
        log_mel: The log-mel parameters the shards were computed with.
        log_mel_dtype: Storage dtype of the log-mel (`float16`/`float32`).
        compression: TFRecord compression (`GZIP`, `ZLIB` or '').
        vocabulary: The tag vocabulary, in label-vector order.
        splits: Per-split shard lists and counts.
        catalog: Where the catalog came from, its hash and row count.
        rejected: Rejected rows: count, count per reason and the report file.
        options: The preprocessing options (split method, seed, ...).
        out_of_vocabulary: Tag occurrences dropped, per tag.
        teacher: The teacher of a distillation dataset, None otherwise.
        dropped_tags: Tags left out of the vocabulary after the run, with why
            (e.g. every row carrying them was rejected).
        format_version: Version of this file's format.
    """

    log_mel: LogMelSpec
    log_mel_dtype: str
    compression: str
    vocabulary: list[str]
    splits: dict[str, SplitInfo]
    catalog: dict
    rejected: dict
    options: dict
    out_of_vocabulary: dict[str, int] = dataclasses.field(default_factory=dict)
    dropped_tags: dict[str, str] = dataclasses.field(default_factory=dict)
    teacher: TeacherInfo | None = None
    format_version: int = FORMAT_VERSION

    @property
    def num_tags(self) -> int:
        return len(self.vocabulary)

    @property
    def num_written(self) -> int:
        return sum(split.examples for split in self.splits.values())

    def to_json(self) -> str:
        payload = {
            "format_version": self.format_version,
            "log_mel": self.log_mel.to_fingerprinted_dict(),
            "log_mel_dtype": self.log_mel_dtype,
            "compression": self.compression,
            "vocabulary": list(self.vocabulary),
            "splits": {name: dataclasses.asdict(split) for name, split in self.splits.items()},
            "catalog": self.catalog,
            "rejected": self.rejected,
            "options": self.options,
            "out_of_vocabulary": self.out_of_vocabulary,
            "dropped_tags": self.dropped_tags,
            **({"teacher": dataclasses.asdict(self.teacher)} if self.teacher else {}),
        }
        return json.dumps(payload, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = FILENAME) -> DatasetInfo:
        payload = json.loads(text)
        if payload.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{source}: format_version {payload.get('format_version')} is not supported "
                f"(this code reads version {FORMAT_VERSION})"
            )
        spec = LogMelSpec.from_fingerprinted_dict(payload["log_mel"], source)
        return cls(
            log_mel=spec,
            log_mel_dtype=payload["log_mel_dtype"],
            compression=payload["compression"],
            vocabulary=payload["vocabulary"],
            splits={name: SplitInfo(**split) for name, split in payload["splits"].items()},
            catalog=payload["catalog"],
            rejected=payload["rejected"],
            options=payload["options"],
            out_of_vocabulary=payload.get("out_of_vocabulary", {}),
            dropped_tags=payload.get("dropped_tags", {}),
            teacher=TeacherInfo(**payload["teacher"]) if payload.get("teacher") else None,
        )


def info_path(dataset_dir: str) -> str:
    """Path of `dataset_info.json` in a dataset directory (local or URI)."""
    return tf.io.gfile.join(dataset_dir, FILENAME)


def load(dataset_dir: str) -> DatasetInfo:
    """Reads a dataset's info.

    Raises:
        IncompleteDatasetError: When `dataset_info.json` is missing, which
            means the directory holds no dataset or a run that did not finish.
    """
    path = info_path(dataset_dir)
    if not tf.io.gfile.exists(path):
        raise IncompleteDatasetError(
            f"{dataset_dir}: no {FILENAME}; this is not a complete dataset "
            "(never preprocessed, or a preprocessing run did not finish)"
        )
    with tf.io.gfile.GFile(path, "r") as handle:
        return DatasetInfo.from_json(handle.read(), source=path)


def shard_paths(dataset_dir: str, info: DatasetInfo, split: str) -> list[str]:
    """Absolute paths of a split's shards."""
    if split not in info.splits:
        raise KeyError(f"{dataset_dir}: no split {split!r}; the dataset has {sorted(info.splits)}")
    return [tf.io.gfile.join(dataset_dir, name) for name in info.splits[split].shards]
