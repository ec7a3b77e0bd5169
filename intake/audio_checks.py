"""Decoding a catalog track and the checks its audio must pass before a model sees it: one definition for every stage.

Preprocessing (`data_prep`), catalog embedding (`serving.build_index`) and
queries (`serving.query`, `serving.app`) all call `AudioChecks.check` on the
mono waveform (`load_checked_waveform` decodes a catalog row's file and checks it), with the same default
thresholds, so that audio the catalog
would reject (silence, a fragment) is refused as a query too, with the same
reason (see `intake.rejections.REASONS`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from intake import audio
from intake.audio import AudioError
from intake.catalog import CatalogEntry


@dataclasses.dataclass(frozen=True)
class AudioChecks:
    """Thresholds of usable audio.

    Attributes:
        min_duration_s: Shorter audio is `too_short`.
        silence_threshold_dbfs: Audio whose peak is below this level is `silent`.
        truncation_tolerance_s: Audio this much shorter than the duration a
            catalog declares (or 2 % of it, whichever is larger) is `truncated`.
    """

    min_duration_s: float = 1.0
    silence_threshold_dbfs: float = -80.0
    truncation_tolerance_s: float = 0.5

    def check(self, waveform: np.ndarray, sample_rate: int, name: str, declared_duration_s: float | None = None):
        """Raises `AudioError` (`empty`, `too_short`, `truncated` or `silent`, naming `name`) for unusable audio."""
        if waveform.size == 0:
            raise AudioError("empty", name, "the file decodes to 0 samples")
        seconds = waveform.size / sample_rate
        if seconds < self.min_duration_s:
            raise AudioError("too_short", name, f"{seconds:.3f} s < minimum {self.min_duration_s} s")
        tolerance = max(self.truncation_tolerance_s, 0.02 * (declared_duration_s or 0.0))
        if declared_duration_s is not None and seconds < declared_duration_s - tolerance:
            raise AudioError(
                "truncated", name, f"decodes to {seconds:.2f} s but the catalog says {declared_duration_s} s"
            )
        peak = float(np.max(np.abs(waveform)))
        peak_dbfs = 20.0 * math.log10(peak) if peak > 0 else -math.inf
        if peak_dbfs < self.silence_threshold_dbfs:
            raise AudioError(
                "silent", name, f"peak level {peak_dbfs:.1f} dBFS < threshold {self.silence_threshold_dbfs} dBFS"
            )


def load_checked_waveform(
    entry: CatalogEntry,
    sample_rate: int,
    checks: AudioChecks,
    source: str | bytes | None = None,
) -> tuple[np.ndarray, audio.DecodedAudio]:
    """Decodes a catalog track to a mono waveform and checks it is usable.

    Args:
        entry: The catalog row (its declared `duration_s` detects truncation).
        sample_rate: The target sample rate in Hz.
        checks: The thresholds.
        source: What `audio.open_source(entry.uri)` returned, if the caller
            already opened it (a remote file is then not read twice).

    Returns:
        The waveform and the decoded source.

    Raises:
        audio.AudioError: With the rejection reason (see `rejections.REASONS`),
            naming the file.
    """
    source = audio.open_source(entry.uri) if source is None else source
    waveform, decoded = audio.load_mono(source, entry.uri, sample_rate)
    checks.check(waveform, sample_rate, entry.uri, entry.duration_s)
    return waveform, decoded
