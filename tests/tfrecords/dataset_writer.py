"""Writes small synthetic datasets in the pipeline's format, for reader tests."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from features.logmel import LogMelSpec
from tfrecords import dataset_info, schema


def ramp_log_mel(num_frames: int, n_mels: int, offset: float = 0.0) -> np.ndarray:
    """A log-mel whose value at frame t is `offset + t`: crops reveal their start."""
    return np.repeat((offset + np.arange(num_frames, dtype=np.float32))[:, np.newaxis], n_mels, axis=1)


def write_dataset(
    directory,
    tracks: dict[str, dict[str, list]],
    vocabulary: list[str],
    spec: LogMelSpec = LogMelSpec(),
    compression: str = "",
    shards_per_split: int = 2,
    log_mel_dtype: str = "float32",
) -> dataset_info.DatasetInfo:
    """Writes `tracks` = {split: {track_id: (log_mel, tags)}} as a dataset."""
    splits = {}
    suffix = ".gz" if compression == "GZIP" else ""
    for split, items in tracks.items():
        names = [f"{split}-{i:05d}-of-{shards_per_split:05d}.tfrecord{suffix}" for i in range(shards_per_split)]
        writers = [
            tf.io.TFRecordWriter(str(directory / n), tf.io.TFRecordOptions(compression_type=compression)) for n in names
        ]
        seconds = 0.0
        for i, (track_id, (log_mel, tags)) in enumerate(sorted(items.items())):
            num_samples = (log_mel.shape[0] - 1) * spec.hop_length
            seconds += num_samples / spec.sample_rate
            writers[i % shards_per_split].write(
                schema.encode_example(
                    track_id=track_id,
                    log_mel=log_mel,
                    tags=list(tags),
                    num_samples=num_samples,
                    sample_rate=spec.sample_rate,
                    artist="artist " + track_id,
                    log_mel_dtype=log_mel_dtype,
                )
            )
        for writer in writers:
            writer.close()
        splits[split] = dataset_info.SplitInfo(
            shards=names, examples=len(items), seconds=seconds, tag_counts={t: 0 for t in vocabulary}
        )
    info = dataset_info.DatasetInfo(
        log_mel=spec,
        log_mel_dtype=log_mel_dtype,
        compression=compression,
        vocabulary=vocabulary,
        splits=splits,
        catalog={"source": "synthetic", "sha256": "", "rows": sum(len(v) for v in tracks.values())},
        rejected={"count": 0, "by_reason": {}, "file": "rejected.csv"},
        options={},
    )
    (directory / dataset_info.FILENAME).write_text(info.to_json())
    return info
