"""An independent NumPy log-mel (torchaudio's formulas written out, float64): the reference the TensorFlow one is
checked against."""

from __future__ import annotations

import numpy as np

from features.logmel import LogMelSpec


def reference_filterbank(sample_rate, n_fft, n_mels, f_min, f_max):
    """torchaudio.functional.melscale_fbanks(norm=None, mel_scale='htk'), written out."""
    n_freqs = n_fft // 2 + 1
    all_freqs = np.linspace(0, sample_rate // 2, n_freqs)
    m_min = 2595.0 * np.log10(1.0 + f_min / 700.0)
    m_max = 2595.0 * np.log10(1.0 + f_max / 700.0)
    m_pts = np.linspace(m_min, m_max, n_mels + 2)
    f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)
    fb = np.zeros((n_freqs, n_mels))
    for m in range(n_mels):
        left, center, right = f_pts[m], f_pts[m + 1], f_pts[m + 2]
        for k, f in enumerate(all_freqs):
            if left <= f <= center and center > left:
                fb[k, m] = (f - left) / (center - left)
            elif center < f <= right:
                fb[k, m] = (right - f) / (right - center)
    return np.maximum(fb, 0.0)


def reference_log_mel(waveform, spec: LogMelSpec):
    """torchaudio MelSpectrogram + AmplitudeToDB in float64 NumPy."""
    n_fft, hop = spec.n_fft, spec.hop_length
    padded = np.pad(waveform.astype(np.float64), (n_fft // 2, n_fft // 2), mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    num_frames = 1 + (padded.size - n_fft) // hop
    frames = np.stack([padded[i * hop : i * hop + n_fft] * window for i in range(num_frames)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    fb = reference_filterbank(spec.sample_rate, n_fft, spec.n_mels, spec.f_min, spec.f_max)
    return 10.0 * np.log10(np.maximum(power @ fb, spec.amin))
