"""The TFRecord schema: one definition for the Beam writer and tf.data readers.

Each track is one `tf.train.Example`:

| feature         | type        | content                                             |
|-----------------|-------------|-----------------------------------------------------|
| track_id        | bytes       | the catalog's track id                              |
| artist          | bytes       | artist ('' when unknown)                            |
| album           | bytes       | album ('' when unknown)                             |
| title           | bytes       | title ('' when unknown)                             |
| tags            | bytes list  | the track's tags that were in the vocabulary        |
| log_mel         | bytes       | `[frames, n_mels]` row-major, little-endian float16 |
|                 |             | (or float32, see `dataset_info.json`)               |
| log_mel_shape   | int64 list  | `[frames, n_mels]`                                  |
| duration_s      | float       | duration of the 16 kHz mono waveform in seconds     |
| num_samples     | int64       | samples of the 16 kHz mono waveform                 |
| audio_sha256    | bytes       | SHA-256 (hex) of the audio file's bytes: the track's |
|                 |             | identity for duplicate detection ('' in datasets    |
|                 |             | written before it was recorded)                      |

Labels are derived, not stored: a reader builds the multi-hot `labels`
vector from `tags` and the vocabulary in `dataset_info.json` (`labels_for`,
`parse_example`), so a change of vocabulary (a tag dropped) is a change of
that file alone. Datasets written when `labels` was stored still read: the
stored vector is ignored.

A distillation dataset (`python -m train.compute_teacher_targets`) adds a
teacher model's outputs at `P` positions of the track (`dataset_info.json`'s
`teacher` block names the teacher, its vocabulary and embedding size):

| feature           | type        | content                                           |
|-------------------|-------------|---------------------------------------------------|
| teacher/starts    | int64 list  | `[P]` first log-mel frame of each student crop    |
| teacher/tags      | float list  | `[P, teacher tags]` row-major tag probabilities   |
| teacher/embedding | float list  | `[P, teacher embedding size]` row-major           |
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

TRACK_ID = "track_id"
ARTIST = "artist"
ALBUM = "album"
TITLE = "title"
TAGS = "tags"
LABELS = "labels"
LOG_MEL = "log_mel"
LOG_MEL_SHAPE = "log_mel_shape"
DURATION_S = "duration_s"
NUM_SAMPLES = "num_samples"
AUDIO_SHA256 = "audio_sha256"
TEACHER_STARTS = "teacher/starts"
TEACHER_TAGS = "teacher/tags"
TEACHER_EMBEDDING = "teacher/embedding"
TEACHER_FEATURES = (TEACHER_STARTS, TEACHER_TAGS, TEACHER_EMBEDDING)

LOG_MEL_DTYPES = {"float16": (np.dtype("<f2"), tf.float16), "float32": (np.dtype("<f4"), tf.float32)}


def _bytes_feature(values: list[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _int64_feature(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _float_feature(values) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def encode_example(
    *,
    track_id: str,
    log_mel: np.ndarray,
    tags: list[str],
    num_samples: int,
    sample_rate: int,
    artist: str = "",
    album: str = "",
    title: str = "",
    log_mel_dtype: str = "float16",
    audio_sha256: str = "",
) -> bytes:
    """Serializes one track.

    Args:
        track_id: The track id.
        log_mel: Float array `[frames, n_mels]` in dB.
        tags: The track's vocabulary tags (its labels are derived from them at read time).
        num_samples: Length of the mono waveform in samples.
        sample_rate: Sample rate of that waveform.
        artist: Artist name.
        album: Album name.
        title: Title.
        log_mel_dtype: Storage dtype of the log-mel, `float16` or `float32`.
        audio_sha256: SHA-256 of the audio file's bytes (`intake.audio.content_sha256`).

    Returns:
        The serialized `tf.train.Example`.
    """
    if log_mel.ndim != 2:
        raise ValueError(f"log_mel must be [frames, n_mels], got shape {log_mel.shape}")
    storage_dtype = LOG_MEL_DTYPES[log_mel_dtype][0]
    features = {
        TRACK_ID: _bytes_feature([track_id.encode("utf-8")]),
        ARTIST: _bytes_feature([artist.encode("utf-8")]),
        ALBUM: _bytes_feature([album.encode("utf-8")]),
        TITLE: _bytes_feature([title.encode("utf-8")]),
        TAGS: _bytes_feature([tag.encode("utf-8") for tag in tags]),
        LOG_MEL: _bytes_feature([np.ascontiguousarray(log_mel, dtype=storage_dtype).tobytes()]),
        LOG_MEL_SHAPE: _int64_feature(log_mel.shape),
        DURATION_S: _float_feature([num_samples / sample_rate]),
        NUM_SAMPLES: _int64_feature([num_samples]),
        AUDIO_SHA256: _bytes_feature([audio_sha256.encode("ascii")]),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString(deterministic=True)


def teacher_features(starts, tags: np.ndarray, embedding: np.ndarray) -> dict[str, tf.train.Feature]:
    """The teacher features of one track (added to its example by `add_features`)."""
    starts = np.asarray(starts, dtype=np.int64).reshape(-1)
    tags, embedding = np.asarray(tags, np.float32), np.asarray(embedding, np.float32)
    if tags.ndim != 2 or embedding.ndim != 2 or not len(starts) == len(tags) == len(embedding):
        raise ValueError(
            f"teacher outputs must be [P, ...] for {len(starts)} starts, got {tags.shape}, {embedding.shape}"
        )
    return {
        TEACHER_STARTS: _int64_feature(starts),
        TEACHER_TAGS: _float_feature(tags.reshape(-1)),
        TEACHER_EMBEDDING: _float_feature(embedding.reshape(-1)),
    }


def add_features(serialized: bytes, features: dict[str, tf.train.Feature]) -> bytes:
    """An example with more features (serialized deterministically, like `encode_example`)."""
    example = tf.train.Example.FromString(serialized)
    for name, feature in features.items():
        example.features.feature[name].CopyFrom(feature)
    return example.SerializeToString(deterministic=True)


def labels_for(tags, vocabulary) -> np.ndarray:
    """The multi-hot label vector `[len(vocabulary)]` (float32) of a track's tags."""
    present = set(tags)
    return np.array([tag in present for tag in vocabulary], np.float32)


def feature_spec(teacher: bool = False) -> dict:
    """The parsing spec for `tf.io.parse_example` / `parse_single_example`.

    `teacher` adds the teacher features (a distillation dataset).
    """
    spec = {
        TRACK_ID: tf.io.FixedLenFeature([], tf.string),
        ARTIST: tf.io.FixedLenFeature([], tf.string),
        ALBUM: tf.io.FixedLenFeature([], tf.string),
        TITLE: tf.io.FixedLenFeature([], tf.string),
        TAGS: tf.io.VarLenFeature(tf.string),
        LOG_MEL: tf.io.FixedLenFeature([], tf.string),
        LOG_MEL_SHAPE: tf.io.FixedLenFeature([2], tf.int64),
        DURATION_S: tf.io.FixedLenFeature([], tf.float32),
        NUM_SAMPLES: tf.io.FixedLenFeature([], tf.int64),
        AUDIO_SHA256: tf.io.FixedLenFeature([], tf.string, default_value=""),
    }
    if teacher:
        spec[TEACHER_STARTS] = tf.io.VarLenFeature(tf.int64)
        spec[TEACHER_TAGS] = tf.io.VarLenFeature(tf.float32)
        spec[TEACHER_EMBEDDING] = tf.io.VarLenFeature(tf.float32)
    return spec


def parse_example(
    serialized: tf.Tensor,
    vocabulary,
    n_mels: int,
    log_mel_dtype: str = "float16",
    cast_log_mel: bool = True,
    teacher_sizes: tuple[int, int] | None = None,
) -> dict:
    """Parses one serialized example into tensors.

    Args:
        serialized: Scalar string tensor.
        vocabulary: The dataset's tag vocabulary (`dataset_info.json`): the
            `labels` columns.
        n_mels: Number of mel bands (fixes the static shape).
        log_mel_dtype: Storage dtype of the log-mel.
        cast_log_mel: Cast the log-mel to float32; False keeps the storage
            dtype, so that readers crop before they cast (less memory traffic).
        teacher_sizes: `(teacher tags, teacher embedding size)` of a
            distillation dataset: the teacher features are parsed too, as
            `[P]`, `[P, tags]` and `[P, embedding size]`.

    Returns:
        A dict with the schema's features; `log_mel` decoded to
        `[frames, n_mels]` (float32 unless `cast_log_mel` is False),
        `labels` as float32 `[len(vocabulary)]` (derived from `tags`) and
        `tags` as a dense string vector.
    """
    parsed = tf.io.parse_single_example(serialized, feature_spec(teacher=teacher_sizes is not None))
    raw = tf.io.decode_raw(parsed[LOG_MEL], LOG_MEL_DTYPES[log_mel_dtype][1], little_endian=True)
    log_mel = tf.reshape(tf.cast(raw, tf.float32) if cast_log_mel else raw, [-1, n_mels])
    tf.debugging.assert_equal(
        tf.shape(log_mel, out_type=tf.int64), parsed[LOG_MEL_SHAPE], message="log_mel_shape mismatch"
    )
    parsed[LOG_MEL] = log_mel
    parsed[TAGS] = tf.sparse.to_dense(parsed[TAGS], default_value=b"")
    vocabulary = tf.constant(list(vocabulary), tf.string, shape=[len(vocabulary)])
    matches = tf.equal(parsed[TAGS][:, tf.newaxis], vocabulary[tf.newaxis, :])  # [track's tags, vocabulary]
    parsed[LABELS] = tf.cast(tf.reduce_any(matches, axis=0), tf.float32)
    if teacher_sizes is not None:
        num_teacher_tags, embedding_size = teacher_sizes
        parsed[TEACHER_STARTS] = tf.cast(tf.sparse.to_dense(parsed[TEACHER_STARTS]), tf.int32)
        parsed[TEACHER_TAGS] = tf.reshape(tf.sparse.to_dense(parsed[TEACHER_TAGS]), [-1, num_teacher_tags])
        parsed[TEACHER_EMBEDDING] = tf.reshape(tf.sparse.to_dense(parsed[TEACHER_EMBEDDING]), [-1, embedding_size])
    return parsed


def decode_example(serialized: bytes, log_mel_dtype: str = "float16") -> dict:
    """Decodes a serialized example into Python and NumPy values (no graph; labels: `labels_for` its tags)."""
    example = tf.train.Example.FromString(serialized)
    feature = example.features.feature

    def text(name: str) -> str:
        return feature[name].bytes_list.value[0].decode("utf-8")

    shape = tuple(feature[LOG_MEL_SHAPE].int64_list.value)
    storage_dtype = LOG_MEL_DTYPES[log_mel_dtype][0]
    log_mel = np.frombuffer(feature[LOG_MEL].bytes_list.value[0], dtype=storage_dtype).reshape(shape)
    return {
        TRACK_ID: text(TRACK_ID),
        ARTIST: text(ARTIST),
        ALBUM: text(ALBUM),
        TITLE: text(TITLE),
        TAGS: [tag.decode("utf-8") for tag in feature[TAGS].bytes_list.value],
        LOG_MEL: log_mel.astype(np.float32),
        LOG_MEL_SHAPE: shape,
        DURATION_S: feature[DURATION_S].float_list.value[0],
        NUM_SAMPLES: feature[NUM_SAMPLES].int64_list.value[0],
        AUDIO_SHA256: text(AUDIO_SHA256) if feature[AUDIO_SHA256].bytes_list.value else "",
    }
