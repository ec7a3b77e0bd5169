"""The log-mel front end against an independent NumPy implementation."""

from __future__ import annotations

import dataclasses

import librosa
import numpy as np
import pytest
import soundfile
import soxr
import tensorflow as tf

from features.logmel import PRESETS, LogMelSpec, log_mel_spectrogram, mel_filterbank
from tests.features.reference_logmel import reference_filterbank, reference_log_mel


@pytest.mark.parametrize("n_mels", [128, 96])
def test_filterbank_matches_torchaudio_formula_and_librosa_htk(n_mels):
    spec = LogMelSpec(n_mels=n_mels)
    ours = mel_filterbank(spec)
    np.testing.assert_allclose(ours, reference_filterbank(16000, 512, n_mels, 0.0, 8000.0), atol=1e-9)
    librosa_fb = librosa.filters.mel(sr=16000, n_fft=512, n_mels=n_mels, fmin=0, fmax=8000, htk=True, norm=None).T
    np.testing.assert_allclose(ours, librosa_fb, atol=1e-6)
    assert ours.shape == (257, n_mels)


def test_filterbank_is_not_tf_signal_filterbank():
    """The reason tf.signal.linear_to_mel_weight_matrix is not used."""
    tf_fb = tf.signal.linear_to_mel_weight_matrix(128, 257, 16000, 0.0, 8000.0).numpy()
    assert np.abs(tf_fb - mel_filterbank(LogMelSpec())).max() > 1e-3


@pytest.mark.parametrize("num_samples, frames", [(59049, 231), (16000, 63), (464000, 1813), (257, 2)])
def test_frame_count(num_samples, frames):
    spec = LogMelSpec()
    out = log_mel_spectrogram(np.zeros(num_samples, np.float32) + 0.01, spec)
    assert out.shape == (frames, 128)
    assert spec.num_frames(num_samples) == frames


def _demo_waveform(path, seconds=None):
    samples, rate = soundfile.read(path, dtype="float32")
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    waveform = soxr.resample(mono, rate, 16000, quality="HQ").astype(np.float32)
    return waveform[: int(seconds * 16000)] if seconds else waveform


def test_parity_with_numpy_reference_on_real_audio(demo_audio_files):
    spec = LogMelSpec()
    worst = 0.0
    for path in demo_audio_files[::3]:
        waveform = _demo_waveform(path)
        ours = log_mel_spectrogram(waveform, spec).numpy()
        reference = reference_log_mel(waveform, spec)
        assert ours.shape == reference.shape
        worst = max(worst, float(np.abs(ours - reference).max()))
    assert worst <= 0.01, f"max abs difference {worst} dB"


def test_parity_for_96_mels_and_batches(demo_audio_files):
    spec = LogMelSpec(n_mels=96)
    batch = np.stack([_demo_waveform(p, seconds=4.0) for p in demo_audio_files[:2]])
    ours = log_mel_spectrogram(batch, spec).numpy()
    assert ours.shape == (2, spec.num_frames(64000), 96)
    for i in range(2):
        np.testing.assert_allclose(ours[i], reference_log_mel(batch[i], spec), atol=0.01)


def test_float32_compute_path_is_close_but_less_exact(demo_audio_files):
    waveform = _demo_waveform(demo_audio_files[0], seconds=5.0)
    reference = reference_log_mel(waveform, LogMelSpec())
    float32 = log_mel_spectrogram(waveform, compute_dtype=tf.float32).numpy()
    loud = reference > -60.0
    assert np.abs(float32 - reference)[loud].max() < 0.01


def test_tone_lands_in_its_mel_band():
    spec = LogMelSpec()
    t = np.arange(16000) / 16000
    waveform = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    log_mel = log_mel_spectrogram(waveform, spec).numpy()
    expected_band = int(np.argmax(mel_filterbank(spec)[int(round(1000.0 / (16000 / 512)))]))
    assert np.bincount(log_mel.argmax(axis=1)).argmax() == expected_band


def test_silence_is_the_floor():
    log_mel = log_mel_spectrogram(np.zeros(4000, np.float32)).numpy()
    np.testing.assert_allclose(log_mel, LogMelSpec().silence_value)
    musicnn = log_mel_spectrogram(np.zeros(4000, np.float32), PRESETS["musicnn"]).numpy()
    np.testing.assert_array_equal(musicnn, PRESETS["musicnn"].silence_value)
    assert PRESETS["musicnn"].silence_value == 0.0


@pytest.mark.parametrize("n_mels", [96, 128])
def test_slaney_variant_is_librosas_default_filterbank(n_mels):
    spec = dataclasses.replace(PRESETS["musicnn"], n_mels=n_mels)
    librosa_fb = librosa.filters.mel(sr=16000, n_fft=512, n_mels=n_mels).T  # htk=False, norm="slaney"
    np.testing.assert_allclose(mel_filterbank(spec), librosa_fb, atol=1e-7)
    unnormalised = dataclasses.replace(spec, mel_norm="none")
    np.testing.assert_allclose(
        mel_filterbank(unnormalised), librosa.filters.mel(sr=16000, n_fft=512, n_mels=n_mels, norm=None).T, atol=1e-6
    )


def test_musicnn_variant_is_librosas_melspectrogram_in_float32(demo_audio_files):
    """musicnn's extractor: librosa.feature.melspectrogram (zero-padded centred frames), log10(1 + 10000 x)."""
    waveform, _ = librosa.load(demo_audio_files[0], sr=16000)
    mel = librosa.feature.melspectrogram(y=waveform, sr=16000, n_fft=512, hop_length=256, n_mels=96).T
    expected = np.log10(1.0 + 10000.0 * mel.astype(np.float32))
    ours = log_mel_spectrogram(waveform, PRESETS["musicnn"]).numpy()
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    # The torchaudio variant on the same audio differs at the edges (reflect padding) and everywhere in scale.
    assert np.abs(log_mel_spectrogram(waveform, LogMelSpec(n_mels=96)).numpy() - ours).max() > 1.0


def test_variant_fingerprints_and_the_fingerprints_datasets_already_carry():
    """Adding the variant parameters kept the fingerprints of existing datasets and models (the values
    this code computed before the variants existed); each variant has its own."""
    assert LogMelSpec().fingerprint() == "0c13f48a2e2dfdc2"
    assert LogMelSpec(n_mels=96).fingerprint() == "e29f74838f36327e"
    fingerprints = {spec.fingerprint() for spec in PRESETS.values()}
    for name, value in (
        ("mel_scale", "slaney"),
        ("mel_norm", "slaney"),
        ("compression", "log10_1p"),
        ("pad_mode", "constant"),
    ):
        fingerprints.add(dataclasses.replace(LogMelSpec(), **{name: value}).fingerprint())
    assert len(fingerprints) == len(PRESETS) + 4
    musicnn = PRESETS["musicnn"]
    assert LogMelSpec.from_fingerprinted_dict(musicnn.to_fingerprinted_dict(), "x") == musicnn
    with pytest.raises(ValueError, match="mel_scale must be one of"):
        LogMelSpec(mel_scale="mel")
    with pytest.raises(ValueError, match="compression must be one of"):
        LogMelSpec(compression="ln")


def test_spec_validation_and_fingerprint():
    with pytest.raises(ValueError, match="f_max"):
        LogMelSpec(f_max=9000.0)
    assert LogMelSpec().fingerprint() == LogMelSpec().fingerprint()
    assert LogMelSpec(n_mels=96).fingerprint() != LogMelSpec().fingerprint()
    assert LogMelSpec.from_dict(LogMelSpec(n_mels=96).to_dict()) == LogMelSpec(n_mels=96)
    with pytest.raises(ValueError, match="unknown"):
        LogMelSpec.from_dict({"n_mel": 96})
