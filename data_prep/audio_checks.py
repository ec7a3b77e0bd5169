"""The checks decoded audio must pass before a model sees it: one definition for every stage.

Preprocessing (`data_prep`), catalog embedding (`serving.build_index`) and
queries (`serving.query`, `serving.app`) all call `AudioChecks.check` on the
mono waveform, with the same default thresholds, so that audio the catalog
would reject (silence, a fragment) is refused as a query too, with the same
reason (see `data_prep.rejections.REASONS`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from data_prep.audio import AudioError


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
