"""tf.data readers over real TFRecord files on disk."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from features.logmel import LogMelSpec
from tests.tfrecords.dataset_writer import ramp_log_mel, write_dataset
from tfrecords import readers, schema

VOCABULARY = ["a", "b", "c"]
CROP = 40


@pytest.fixture(scope="module")
def ramp_dataset(tmp_path_factory):
    """Tracks whose log-mel value is `1000 * index + frame`, of varied lengths."""
    directory = tmp_path_factory.mktemp("ramp")
    lengths = {"train": [100, 57, 240, 30, 81, 160], "valid": [90, 300, 41], "test": [50]}
    tracks = {}
    for split, split_lengths in lengths.items():
        tracks[split] = {
            f"{split}{i}": (ramp_log_mel(n, 16, offset=1000.0 * (i + 1)), [VOCABULARY[i % 3]])
            for i, n in enumerate(split_lengths)
        }
    info = write_dataset(directory, tracks, VOCABULARY, spec=LogMelSpec(n_mels=16))
    return directory, tracks, info


def _assert_valid_crop(crop, tracks):
    """A crop is a contiguous run of one track's frames; a shorter track is repeated from its start."""
    values = crop[:, 0]
    track_index = int(values[0] // 1000) - 1
    frames = values - 1000.0 * (track_index + 1)
    length = next(lm.shape[0] for lm, _ in tracks.values() if lm[0, 0] == 1000.0 * (track_index + 1))
    if length >= CROP:
        np.testing.assert_array_equal(np.diff(frames), 1.0)
        assert frames[0] >= 0 and frames[-1] < length
    else:  # The whole track, then again from its first frame.
        np.testing.assert_array_equal(frames, np.arange(CROP) % length)
    np.testing.assert_array_equal(crop, crop[:, :1].repeat(crop.shape[1], axis=1))


def test_train_shapes_and_crop_bounds(ramp_dataset):
    directory, tracks, _ = ramp_dataset
    dataset = readers.train_dataset(str(directory), crop_frames=CROP, crops_per_track=3, global_batch_size=8, seed=1)
    for log_mel, labels in dataset.take(10):
        assert log_mel.shape == (8, CROP, 16) and labels.shape == (8, 3)
        assert log_mel.dtype == tf.float32
        for crop, label in zip(log_mel.numpy(), labels.numpy(), strict=True):
            _assert_valid_crop(crop, tracks["train"])
            track_index = int(crop[0, 0] // 1000) - 1
            np.testing.assert_array_equal(label, np.eye(3)[track_index % 3])


def test_train_is_deterministic_with_a_seed_and_varies_without(ramp_dataset):
    directory = str(ramp_dataset[0])

    def first_batches(seed):
        dataset = readers.train_dataset(directory, crop_frames=CROP, global_batch_size=4, seed=seed)
        return np.concatenate([x.numpy() for x, _ in dataset.take(5)])

    np.testing.assert_array_equal(first_batches(7), first_batches(7))
    assert not np.array_equal(first_batches(7), first_batches(8))


def test_one_epoch_without_repeat_visits_every_track_k_times(ramp_dataset):
    directory, tracks, _ = ramp_dataset
    dataset = readers.train_dataset(
        str(directory), crop_frames=CROP, crops_per_track=2, global_batch_size=1, seed=3, repeat=False
    )
    starts = [int(x.numpy()[0, 0, 0] // 1000) for x, _ in dataset]
    assert sorted(starts) == sorted([i + 1 for i in range(len(tracks["train"])) for _ in range(2)])


def test_spec_augment_masks_time_and_frequency(ramp_dataset):
    directory = str(ramp_dataset[0])
    augment = readers.SpecAugment(num_time_masks=1, max_time_mask_frames=10, num_freq_masks=1, max_freq_mask_bins=4)
    plain = readers.train_dataset(directory, crop_frames=CROP, global_batch_size=16, seed=5)
    masked = readers.train_dataset(directory, crop_frames=CROP, global_batch_size=16, seed=5, spec_augment=augment)
    (x, _), (y, _) = next(iter(plain)), next(iter(masked))
    x, y = x.numpy(), y.numpy()
    changed = x != y
    assert changed.any()
    for crop, original, mask in zip(y, x, changed, strict=True):
        np.testing.assert_allclose(crop[mask], original.mean(), rtol=1e-5)
        assert mask.any(axis=1).sum() <= CROP and (~mask).any()


def _expected_count(length: int, chunk: int, most: int) -> int:
    """The rule, written out again: the fewest chunks that leave no gap (hop <= chunk), between 1 and `most`."""
    length = max(length, chunk)
    for count in range(1, most + 1):
        if (length - chunk) / count <= chunk:
            return count
    return most


def test_eval_chunks_follow_the_reference_offsets(ramp_dataset):
    directory, tracks, _ = ramp_dataset
    dataset = readers.eval_dataset(str(directory), split="valid", chunk_frames=CROP, num_chunks=4)
    seen, counts = [], {}
    for item in dataset:
        track_id = item[schema.TRACK_ID].numpy().decode()
        seen.append(track_id)
        log_mel, _ = tracks["valid"][track_id]
        chunks = item[schema.LOG_MEL].numpy()
        length = log_mel.shape[0]
        counts[length] = count = _expected_count(length, CROP, 4)
        assert chunks.shape == (count, CROP, 16) and int(item[readers.NUM_CHUNKS]) == count
        hop = (max(length, CROP) - CROP) // count
        for i, chunk in enumerate(chunks):
            expected = log_mel[i * hop : i * hop + CROP, 0]
            np.testing.assert_array_equal(chunk[: expected.size, 0], expected)
        assert item[schema.ARTIST].numpy().decode() == "artist " + track_id
    assert counts == {90: 2, 300: 4, 41: 1}
    assert sorted(seen) == sorted(tracks["valid"])
    again = [item[schema.TRACK_ID].numpy().decode() for item in dataset]
    assert again == seen


@pytest.mark.parametrize(
    ("seconds", "crnn_passes", "short_chunk_passes"),
    [(1, 1, 1), (29, 1, 7), (30, 1, 8), (180, 6, 16), (600, 16, 16)],
)
def test_forward_passes_follow_the_track_length(seconds, crnn_passes, short_chunk_passes):
    """One pass for a track up to two chunks long, the full count from 17 chunks on (16 kHz, hop 256)."""
    frames = int(seconds * 16000) // 256 + 1
    assert int(readers.chunk_count(frames, 1813, 16)) == crnn_passes == _expected_count(frames, 1813, 16)
    assert int(readers.chunk_count(frames, 231, 16)) == short_chunk_passes == _expected_count(frames, 231, 16)
    log_mel = tf.zeros([frames, 4])
    assert readers.evenly_spaced_chunks(log_mel, 1813, 16).shape[0] == crnn_passes


def test_long_tracks_get_the_reference_chunks_unchanged():
    """17 chunks or longer: exactly the Won et al. evaluation's 16 chunks, starting at i * ((T - C) // 16)."""
    log_mel = tf.constant(ramp_log_mel(17 * CROP + 5, 3))
    chunks = readers.evenly_spaced_chunks(log_mel, CROP, 16).numpy()
    hop = (17 * CROP + 5 - CROP) // 16
    reference = np.stack([log_mel.numpy()[i * hop : i * hop + CROP] for i in range(16)])
    np.testing.assert_array_equal(chunks, reference)


def test_distributed_global_batch_and_sharding(ramp_dataset, two_cpu_mirrored_strategy):
    directory = str(ramp_dataset[0])
    strategy = two_cpu_mirrored_strategy
    assert strategy.num_replicas_in_sync == 2
    contexts = []

    def dataset_fn(context):
        contexts.append(context)
        return readers.train_dataset(directory, crop_frames=CROP, global_batch_size=8, seed=2, input_context=context)

    distributed = strategy.distribute_datasets_from_function(dataset_fn)
    batch, labels = next(iter(distributed))
    per_replica = strategy.experimental_local_results(batch)
    assert [x.shape[0] for x in per_replica] == [4, 4]
    assert contexts[0].get_per_replica_batch_size(8) == 4


def test_input_pipelines_split_the_shards(ramp_dataset):
    directory, tracks, _ = ramp_dataset
    seen = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline_id, num_replicas_in_sync=2
        )
        dataset = readers.train_dataset(
            str(directory), crop_frames=CROP, global_batch_size=2, seed=0, repeat=False, input_context=context
        )
        seen.append({int(x[0, 0, 0] // 1000) for x, _ in dataset.unbatch().batch(1)})
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(1, len(tracks["train"]) + 1))


def test_gzip_datasets_read_the_same(tmp_path):
    tracks = {"train": {"t0": (ramp_log_mel(60, 8, 1000.0), ["a"])}}
    write_dataset(tmp_path, tracks, ["a"], spec=LogMelSpec(n_mels=8), compression="GZIP", shards_per_split=1)
    item = next(iter(readers.eval_dataset(str(tmp_path), split="train", chunk_frames=60, num_chunks=1)))
    np.testing.assert_array_equal(item[schema.LOG_MEL].numpy()[0], tracks["train"]["t0"][0])


def test_missing_split_and_incomplete_dataset(ramp_dataset, tmp_path):
    with pytest.raises(KeyError, match="no split 'holdout'"):
        readers.train_dataset(str(ramp_dataset[0]), split="holdout")
    with pytest.raises(FileNotFoundError, match="not a complete dataset"):
        readers.eval_dataset(str(tmp_path))
