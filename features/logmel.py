"""The log-mel front end: the one feature definition of the project.

Every consumer of spectrograms computes them here: the Beam pipeline that
writes TFRecords, the waveform front-end layer of the models and the serving
graph. A second implementation anywhere else would be train/serve skew.

The definition reproduces the front end of the published reference models
(Won et al. 2020, minzwon/sota-music-tagging-models), i.e. torchaudio's

    MelSpectrogram(sample_rate=16000, n_fft=512, f_min=0, f_max=8000,
                   n_mels=128)  # + defaults below
    AmplitudeToDB()            # power to dB, no top_db

with the torchaudio defaults spelled out: a periodic Hann window of `n_fft`
samples, hop `n_fft // 2`, centred frames with reflect padding of `n_fft // 2`
on both sides, power 2, an HTK mel scale with triangles that are linear in Hz
(`torchaudio.functional.melscale_fbanks`, no area normalisation, DC bin
kept), then `10 * log10(max(x, 1e-10))`. Pretrained reference weights only
transfer with exactly this front end.

`tf.signal.linear_to_mel_weight_matrix` is deliberately not used: it builds
its triangles on the mel axis and zeroes the DC bin, which is a different
filterbank.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from features.logmel_spec import (  # noqa: F401 - the spec's one definition, re-exported with its computation.
    COMPRESSIONS,
    MEL_NORMS,
    MEL_SCALES,
    PAD_MODES,
    PRESETS,
    LogMelSpec,
)


def hz_to_mel_htk(frequency_hz):
    """HTK mel scale: 2595 * log10(1 + f / 700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(frequency_hz, dtype=np.float64) / 700.0)


def mel_to_hz_htk(mel):
    """Inverse of `hz_to_mel_htk`."""
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


# The Slaney (Auditory Toolbox) mel scale: linear up to 1 kHz, then logarithmic.
_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_BREAK_HZ = 1000.0
_SLANEY_BREAK_MEL = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel_slaney(frequency_hz):
    """The Slaney mel scale (librosa's `hz_to_mel(htk=False)`)."""
    frequency_hz = np.asarray(frequency_hz, dtype=np.float64)
    linear = frequency_hz / _SLANEY_HZ_PER_MEL
    logarithmic = (
        _SLANEY_BREAK_MEL + np.log(np.maximum(frequency_hz, _SLANEY_BREAK_HZ) / _SLANEY_BREAK_HZ) / _SLANEY_LOG_STEP
    )
    return np.where(frequency_hz >= _SLANEY_BREAK_HZ, logarithmic, linear)


def mel_to_hz_slaney(mel):
    """Inverse of `hz_to_mel_slaney`."""
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * _SLANEY_HZ_PER_MEL
    logarithmic = _SLANEY_BREAK_HZ * np.exp(_SLANEY_LOG_STEP * (mel - _SLANEY_BREAK_MEL))
    return np.where(mel >= _SLANEY_BREAK_MEL, logarithmic, linear)


_MEL_SCALES = {"htk": (hz_to_mel_htk, mel_to_hz_htk), "slaney": (hz_to_mel_slaney, mel_to_hz_slaney)}


def mel_filterbank(spec: LogMelSpec) -> np.ndarray:
    """The mel filterbank matrix: triangles linear in Hz between mel-spaced edges.

    With the defaults (`htk`, no normalisation) it is torchaudio's
    `melscale_fbanks`; with `slaney` scale and norm it is librosa's
    `filters.mel`.

    Args:
        spec: The log-mel parameters.

    Returns:
        A float64 array `[num_frequency_bins, n_mels]`; a power spectrum row
        vector times this matrix gives the mel band energies.
    """
    to_mel, to_hz = _MEL_SCALES[spec.mel_scale]
    bin_frequencies = np.linspace(0.0, spec.sample_rate / 2, spec.num_frequency_bins)
    mel_points = np.linspace(to_mel(spec.f_min), to_mel(spec.f_max), spec.n_mels + 2)
    edge_frequencies = to_hz(mel_points)
    edge_spacing = np.diff(edge_frequencies)
    offsets = edge_frequencies[np.newaxis, :] - bin_frequencies[:, np.newaxis]
    rising = -offsets[:, :-2] / edge_spacing[:-1]
    falling = offsets[:, 2:] / edge_spacing[1:]
    filterbank = np.maximum(0.0, np.minimum(rising, falling))
    if spec.mel_norm == "slaney":
        filterbank *= 2.0 / (edge_frequencies[2:] - edge_frequencies[:-2])
    return filterbank


def log_mel_spectrogram(
    waveform: tf.Tensor,
    spec: LogMelSpec = LogMelSpec(),
    compute_dtype: tf.DType = tf.float64,
) -> tf.Tensor:
    """Computes the log-mel spectrogram of mono waveforms.

    The STFT runs in `compute_dtype`; the filterbank and the logarithm run in
    float32 (for every variant: musicnn's own extractor casts to float16
    before `log10(1 + 10000 x)`, which overflows on loud audio), which is exact enough there (a mel band is a positive sum of
    positive powers, so float32 keeps ~1e-7 relative precision). With the
    default float64 STFT the result matches an exact computation to about
    2e-5 dB everywhere. A float32 STFT is faster on accelerators without
    float64 support, but bands 60 dB or more below the loudest band of their
    frame then lose precision (a few tenths of a dB near the -100 dB floor):
    the FFT's rounding error scales with the frame's energy.

    Args:
        waveform: Float tensor `[..., samples]` at `spec.sample_rate`. Needs more
            than `spec.n_fft // 2` samples (reflect padding).
        spec: The log-mel parameters.
        compute_dtype: `tf.float64` or `tf.float32`.

    Returns:
        Float32 tensor `[..., frames, n_mels]` (dB, or `log10_1p` values),
        with `frames = 1 + samples // hop_length`.
    """
    if compute_dtype not in (tf.float32, tf.float64):
        raise ValueError(f"compute_dtype must be float32 or float64, got {compute_dtype}")
    waveform = tf.cast(tf.convert_to_tensor(waveform), compute_dtype)
    rank = waveform.shape.rank
    if rank is None:
        raise ValueError("log_mel_spectrogram needs a waveform of known rank")
    pad = spec.n_fft // 2
    paddings = [[0, 0]] * (rank - 1) + [[pad, pad]]
    padded = tf.pad(waveform, paddings, mode=spec.pad_mode.upper())
    stft = tf.signal.stft(
        padded,
        frame_length=spec.n_fft,
        frame_step=spec.hop_length,
        fft_length=spec.n_fft,
        window_fn=_periodic_hann_window,
        pad_end=False,
    )
    power = tf.math.square(tf.math.real(stft)) + tf.math.square(tf.math.imag(stft))
    filterbank = tf.constant(mel_filterbank(spec), dtype=tf.float32)
    mel_power = tf.tensordot(tf.cast(power, tf.float32), filterbank, axes=1)
    if spec.compression == "log10_1p":
        return tf.math.log1p(spec.log_gain * mel_power) * (1.0 / np.log(10.0))
    return tf.math.log(tf.maximum(mel_power, spec.amin)) * (10.0 / np.log(10.0))


def _periodic_hann_window(window_length, dtype):
    return tf.signal.hann_window(window_length, periodic=True, dtype=dtype)


def minimum_num_samples(spec: LogMelSpec) -> int:
    """The shortest waveform `log_mel_spectrogram` accepts (reflect padding needs it)."""
    return spec.n_fft // 2 + 1


def apply_gain(log_mel: tf.Tensor, gain_db, spec: LogMelSpec) -> tf.Tensor:
    """The log-mel of the same audio played `gain_db` dB louder (or quieter), computed on the log-mel.

    Exact for either compression: `db` adds the gain (cells at the power
    floor `amin`, digital silence or an empty band, stay there; a quieter
    cell stops at the floor); `log10_1p` inverts `log10(1 + g x)`, scales
    the power by `10^(gain_db / 10)` and compresses again.
    """
    log_mel = tf.convert_to_tensor(log_mel)
    gain_db = tf.cast(gain_db, log_mel.dtype)
    if spec.compression == "log10_1p":
        power_gain = tf.pow(tf.constant(10.0, log_mel.dtype), gain_db / 10.0)
        power = tf.maximum(tf.math.expm1(log_mel * np.log(10.0)), 0.0)  # g·x ≥ 0 (a stored value never is < 0).
        return tf.math.log1p(power_gain * power) * (1.0 / np.log(10.0))
    floor = tf.cast(spec.silence_value, log_mel.dtype)
    return tf.where(log_mel <= floor, log_mel, tf.maximum(log_mel + gain_db, floor))
