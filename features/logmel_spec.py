"""The parameters of the log-mel front end (`LogMelSpec`) and its named presets, without TensorFlow.

The computation is `features.logmel`, which re-exports these: one
definition, split so that binaries can offer the presets and build a spec
from their flags before they load TensorFlow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np

# Bumped whenever the computation (`features.logmel`) changes in a way that changes values;
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
