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

import dataclasses
import hashlib
import json

import numpy as np
import tensorflow as tf

# Bumped whenever the computation below changes in a way that changes values;
# it is part of the fingerprint so that stale datasets are detected.
_IMPLEMENTATION_VERSION = 1

MEL_SCALES = ("htk", "slaney")
MEL_NORMS = ("none", "slaney")
COMPRESSIONS = ("db", "log10_1p")
PAD_MODES = ("reflect", "constant")


@dataclasses.dataclass(frozen=True)
class LogMelSpec:
    """Parameters of the log-mel spectrogram.

    Attributes:
        sample_rate: Sample rate in Hz of the waveform the spectrogram is
            computed from.
        n_fft: FFT size and window length in samples.
        hop_length: Hop between frames in samples.
        n_mels: Number of mel bands.
        f_min: Lowest filterbank frequency in Hz.
        f_max: Highest filterbank frequency in Hz.
        amin: Floor applied to the power before taking the logarithm (`db`).
        mel_scale: `htk` (2595 log10(1 + f / 700), torchaudio's default) or
            `slaney` (linear below 1 kHz, logarithmic above; librosa's default).
        mel_norm: `none` (triangles of height 1) or `slaney` (each triangle
            divided by its width in Hz / 2: equal area, librosa's default).
        compression: `db` (`10 log10(max(x, amin))`) or `log10_1p`
            (`log10(1 + log_gain * x)`, musicnn's).
        log_gain: The gain inside `log10_1p`.
        pad_mode: How centred frames are padded at both ends: `reflect`
            (torchaudio) or `constant` zeros (librosa >= 0.10).
    """

    sample_rate: int = 16000
    n_fft: int = 512
    hop_length: int = 256
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float = 8000.0
    amin: float = 1e-10
    mel_scale: str = "htk"
    mel_norm: str = "none"
    compression: str = "db"
    log_gain: float = 10000.0
    pad_mode: str = "reflect"

    def __post_init__(self):
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        if self.n_fft <= 0 or self.hop_length <= 0 or self.n_mels <= 0:
            raise ValueError(
                f"n_fft, hop_length and n_mels must be positive, got {self.n_fft}, {self.hop_length}, {self.n_mels}"
            )
        if not 0.0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(
                f"need 0 <= f_min < f_max <= sample_rate / 2, got f_min={self.f_min}, "
                f"f_max={self.f_max}, sample_rate={self.sample_rate}"
            )
        if self.amin <= 0 or self.log_gain <= 0:
            raise ValueError(f"amin and log_gain must be positive, got {self.amin}, {self.log_gain}")
        for name, choices in (
            ("mel_scale", MEL_SCALES),
            ("mel_norm", MEL_NORMS),
            ("compression", COMPRESSIONS),
            ("pad_mode", PAD_MODES),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")

    @property
    def num_frequency_bins(self) -> int:
        """Number of one-sided FFT bins."""
        return self.n_fft // 2 + 1

    @property
    def silence_value(self) -> float:
        """The log-mel value of digital silence: the dB of the power floor
        `amin`, or 0 for `log10_1p`. Padding uses it."""
        if self.compression == "log10_1p":
            return 0.0
        return float(10.0 * np.log10(self.amin))

    def num_frames(self, num_samples: int) -> int:
        """Number of frames for a waveform of `num_samples` samples."""
        return 1 + num_samples // self.hop_length

    def num_samples_for_frames(self, num_frames: int) -> int:
        """Smallest number of samples that yields `num_frames` frames."""
        return (num_frames - 1) * self.hop_length

    def to_dict(self) -> dict:
        """The parameters as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> LogMelSpec:
        """Inverse of `to_dict`; unknown keys are an error."""
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown log-mel parameters: {sorted(unknown)}")
        return cls(**values)

    def to_fingerprinted_dict(self) -> dict:
        """`to_dict` plus the fingerprint, as stored next to data and models."""
        return {**self.to_dict(), "fingerprint": self.fingerprint()}

    @classmethod
    def from_fingerprinted_dict(cls, values: dict, source: str) -> LogMelSpec:
        """Inverse of `to_fingerprinted_dict`; a fingerprint that this code
        does not reproduce (another log-mel implementation) is an error."""
        fields = dict(values)
        fingerprint = fields.pop("fingerprint")
        spec = cls.from_dict(fields)
        if spec.fingerprint() != fingerprint:
            raise ValueError(
                f"{source}: the log-mel fingerprint {fingerprint} does not match this code's {spec.fingerprint()}: "
                "it was made by a different log-mel implementation"
            )
        return spec

    def fingerprint(self) -> str:
        """A short stable hash of the parameters and the implementation.

        Variant parameters at their defaults are left out of the hash, so
        that the fingerprints of datasets and models made before the
        variants existed stay valid.
        """
        params = {
            name: value
            for name, value in self.to_dict().items()
            if name not in _VARIANT_DEFAULTS or value != _VARIANT_DEFAULTS[name]
        }
        payload = json.dumps({"params": params, "implementation": _IMPLEMENTATION_VERSION}, sort_keys=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


_VARIANT_DEFAULTS = {
    "mel_scale": "htk",
    "mel_norm": "none",
    "compression": "db",
    "log_gain": 10000.0,
    "pad_mode": "reflect",
}

# Named front ends: the reference taggers' (Won et al. 2020; 96 bands for the
# CRNN) and musicnn's (librosa 0.10's melspectrogram defaults, 96 bands).
PRESETS = {
    "won2020": LogMelSpec(n_mels=128),
    "won2020_96": LogMelSpec(n_mels=96),
    "musicnn": LogMelSpec(
        n_mels=96, mel_scale="slaney", mel_norm="slaney", compression="log10_1p", log_gain=10000.0, pad_mode="constant"
    ),
}


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
