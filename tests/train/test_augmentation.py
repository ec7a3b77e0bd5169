"""Views for self-supervised training: exact gain on both compressions, band shifts, tempo, seeds."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from features.logmel import PRESETS, LogMelSpec, apply_gain, log_mel_spectrogram
from tfrecords import readers
from train import augmentation


def _music_like(seconds=4.0, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(0)
    return (0.2 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.normal(size=t.size)).astype(np.float32)


@pytest.mark.parametrize("spec", [LogMelSpec(), PRESETS["musicnn"]], ids=["db", "log10_1p"])
@pytest.mark.parametrize("gain_db", [-9.0, 6.0])
def test_gain_on_the_log_mel_equals_the_log_mel_of_the_louder_audio(spec, gain_db):
    waveform = _music_like()
    quiet = log_mel_spectrogram(waveform, spec)
    louder = log_mel_spectrogram(waveform * 10 ** (gain_db / 20), spec)
    np.testing.assert_allclose(apply_gain(quiet, gain_db, spec), louder, atol=2e-3)
    # Digital silence stays silent.
    silent = tf.fill([4, spec.n_mels], spec.silence_value)
    np.testing.assert_array_equal(apply_gain(silent, gain_db, spec), silent)


def test_band_shift_moves_bands_and_fills_with_silence():
    log_mel = tf.constant(np.tile(np.arange(8, dtype=np.float32), (3, 1)))
    up = augmentation.shift_bands(log_mel, tf.constant(2), -100.0).numpy()
    np.testing.assert_array_equal(up[0], [-100, -100, 0, 1, 2, 3, 4, 5])
    down = augmentation.shift_bands(log_mel, tf.constant(-1), -100.0).numpy()
    np.testing.assert_array_equal(down[0], [1, 2, 3, 4, 5, 6, 7, -100])


def test_a_view_is_a_function_of_its_seed_and_stays_in_shape():
    spec = LogMelSpec()
    track = tf.constant(np.random.default_rng(1).normal(-30, 10, size=(600, 128)).astype(np.float16))
    augment = augmentation.ViewAugment()
    first = augment.view(track, 231, spec, tf.constant([3, 4]))
    again = augment.view(track, 231, spec, tf.constant([3, 4]))
    other = augment.view(track, 231, spec, tf.constant([5, 6]))
    assert first.shape == (231, 128) and first.dtype == tf.float32
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_a_plain_view_is_a_crop_of_the_track_and_short_tracks_repeat():
    ramp = np.repeat(np.arange(50, dtype=np.float32)[:, None], 4, axis=1)
    crop = augmentation.random_crop(tf.constant(ramp), 120, tf.constant([0, 1])).numpy()
    np.testing.assert_array_equal(crop, readers.repeat_to_frames(tf.constant(ramp), 120).numpy()[:120])
    track = np.repeat(np.arange(400, dtype=np.float32)[:, None], 4, axis=1)
    crop = augmentation.random_crop(tf.constant(track), 100, tf.constant([7, 1])).numpy()
    start = int(crop[0, 0])
    np.testing.assert_array_equal(crop[:, 0], np.arange(start, start + 100))


def test_tempo_change_resamples_a_longer_or_shorter_crop():
    spec = LogMelSpec(n_mels=4)
    track = tf.constant(np.repeat(np.arange(1000, dtype=np.float32)[:, None], 4, axis=1))
    augment = augmentation.ViewAugment(max_gain_db=0, max_stretch=0.4, max_shift_bins=0, spec_augment=None)
    spans = []
    for seed in range(20):
        view = augment.view(track, 100, spec, tf.constant([seed, 0])).numpy()[:, 0]
        assert np.all(np.diff(view) > 0)  # Still the ramp, in order.
        spans.append(view[-1] - view[0])
    assert min(spans) < 80 and max(spans) > 120  # Up to 40 % faster or slower.


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="ViewAugment"):
        augmentation.ViewAugment(max_stretch=0.6)
