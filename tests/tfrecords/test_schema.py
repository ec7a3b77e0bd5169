"""The TFRecord schema: every field survives a round trip."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from features.logmel import LogMelSpec
from tfrecords import dataset_info, schema


def _example(log_mel_dtype="float16"):
    rng = np.random.default_rng(0)
    log_mel = rng.uniform(-100.0, 40.0, size=(50, 128)).astype(np.float32)
    serialized = schema.encode_example(
        track_id="t-1 é",
        log_mel=log_mel,
        tags=["rock", "jazz"],
        num_samples=12_800,
        sample_rate=16000,
        artist="Ärtist",
        album="Album",
        title="Title",
        log_mel_dtype=log_mel_dtype,
        audio_sha256="ab" * 32,
    )
    return log_mel, serialized


@pytest.mark.parametrize("log_mel_dtype, tolerance", [("float16", 0.05), ("float32", 0.0)])
def test_round_trip_numpy_and_graph(log_mel_dtype, tolerance):
    log_mel, serialized = _example(log_mel_dtype)
    decoded = schema.decode_example(serialized, log_mel_dtype)
    vocabulary = ["blues", "jazz", "rock"]
    parsed = schema.parse_example(tf.constant(serialized), vocabulary, n_mels=128, log_mel_dtype=log_mel_dtype)
    np.testing.assert_array_equal(parsed[schema.LABELS], [0, 1, 1])  # Derived from the tags and the vocabulary.
    np.testing.assert_array_equal(schema.labels_for(decoded[schema.TAGS], vocabulary), [0, 1, 1])
    for values in (decoded, {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in parsed.items()}):
        assert np.abs(values[schema.LOG_MEL] - log_mel).max() <= tolerance
        assert values[schema.NUM_SAMPLES] == 12_800
        assert values[schema.DURATION_S] == pytest.approx(0.8)
        assert list(values[schema.LOG_MEL_SHAPE]) == [50, 128]
    assert decoded[schema.TRACK_ID] == "t-1 é"
    assert decoded[schema.ARTIST] == "Ärtist"
    assert decoded[schema.ALBUM] == "Album"
    assert decoded[schema.TITLE] == "Title"
    assert decoded[schema.TAGS] == ["rock", "jazz"]
    assert decoded[schema.AUDIO_SHA256] == parsed[schema.AUDIO_SHA256].numpy().decode() == "ab" * 32
    assert parsed[schema.TRACK_ID].numpy().decode() == "t-1 é"
    assert [t.decode() for t in parsed[schema.TAGS].numpy()] == ["rock", "jazz"]
    assert parsed[schema.LOG_MEL].dtype == tf.float32


def test_a_record_written_before_the_audio_hash_reads_as_unknown():
    _, serialized = _example("float16")
    example = tf.train.Example.FromString(serialized)
    del example.features.feature[schema.AUDIO_SHA256]
    older = example.SerializeToString()
    assert schema.decode_example(older)[schema.AUDIO_SHA256] == ""
    parsed = schema.parse_example(tf.constant(older), ["jazz"], n_mels=128)
    assert parsed[schema.AUDIO_SHA256].numpy() == b""


def test_float16_error_bound_over_the_db_range():
    values = np.linspace(-100.0, 60.0, 100_001, dtype=np.float32)
    stored = values.astype("<f2").astype(np.float32)
    assert np.abs(stored - values).max() <= 0.05


def test_labels_follow_the_vocabulary_not_what_was_stored():
    """A tag dropped from the vocabulary (`dataset_info.json`) leaves the labels; a dataset written when the
    multi-hot vector was stored reads by its tags, the stored vector ignored."""
    _, serialized = _example()
    stored = schema.add_features(
        serialized, {schema.LABELS: tf.train.Feature(int64_list=tf.train.Int64List(value=[1] * 5))}
    )
    for record in (serialized, stored):
        dropped = schema.parse_example(tf.constant(record), ["blues", "rock"], n_mels=128)
        np.testing.assert_array_equal(dropped[schema.LABELS], [0, 1])
        untagged = schema.parse_example(tf.constant(record), [], n_mels=128)
        assert untagged[schema.LABELS].shape == (0,)


def test_rejects_wrong_rank():
    with pytest.raises(ValueError, match="frames, n_mels"):
        schema.encode_example(track_id="x", log_mel=np.zeros(5), tags=[], num_samples=1, sample_rate=16000)


def test_dataset_info_round_trip_and_fingerprint_check(tmp_path):
    info = dataset_info.DatasetInfo(
        log_mel=LogMelSpec(n_mels=96),
        log_mel_dtype="float16",
        compression="",
        vocabulary=["a", "b"],
        splits={"train": dataset_info.SplitInfo(["train-00000-of-00001.tfrecord"], 3, 9.5, {"a": 2, "b": 1})},
        catalog={"source": "c.csv", "sha256": "x", "rows": 4},
        rejected={"count": 1, "by_reason": {"silent": 1}, "file": "rejected.csv"},
        options={"split_by": "artist"},
    )
    text = info.to_json()
    assert dataset_info.DatasetInfo.from_json(text) == info
    tampered = text.replace(info.log_mel.fingerprint(), "0" * 16)
    with pytest.raises(ValueError, match="fingerprint"):
        dataset_info.DatasetInfo.from_json(tampered)
    with pytest.raises(dataset_info.IncompleteDatasetError, match="not a complete dataset"):
        dataset_info.load(str(tmp_path))
