"""The classic content baseline: MFCC statistics of each track.

20 MFCCs (librosa: 128-band Slaney mel power in dB, DCT-II) and their deltas
over the whole track, summarised by mean and standard deviation: 80 values
per track. Standardised per dimension over the catalog, then compared by
cosine. Pretrained embeddings should retrieve clearly better than this; it is
the reference point of `serving.evaluate_retrieval --mfcc_baseline`.
"""

from __future__ import annotations

import librosa
import numpy as np

from intake.audio import AudioError
from intake.audio_checks import AudioChecks, load_checked_waveform
from intake.catalog import Catalog

SAMPLE_RATE = 16000
NUM_MFCC = 20


def mfcc_statistics(waveform: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mean and standard deviation of 20 MFCCs and their deltas: `[80]` float32."""
    mfcc = librosa.feature.mfcc(y=np.asarray(waveform, np.float32), sr=sample_rate, n_mfcc=NUM_MFCC)
    features = np.concatenate([mfcc, librosa.feature.delta(mfcc)], axis=0)
    return np.concatenate([features.mean(axis=1), features.std(axis=1)]).astype(np.float32)


def catalog_statistics(catalog: Catalog, checks: AudioChecks = AudioChecks(), on_track=None):
    """`mfcc_statistics` of every usable catalog track, standardised over the catalog (`on_track()` after each).

    Returns:
        (track ids, `[tracks, 80]` array, `{track_id: reason}` of the tracks
        that could not be decoded or are unusable).
    """
    ids, rows, skipped = [], [], {}
    for entry in catalog.entries:
        try:
            waveform, _ = load_checked_waveform(entry, SAMPLE_RATE, checks)
        except AudioError as error:  # Reported, not fatal: the baseline scores the usable tracks.
            skipped[entry.track_id] = str(error)
        else:
            ids.append(entry.track_id)
            rows.append(mfcc_statistics(waveform))
        if on_track is not None:
            on_track()
    statistics = np.stack(rows) if rows else np.zeros((0, 2 * 2 * NUM_MFCC), np.float32)
    standardised = (statistics - statistics.mean(axis=0)) / (statistics.std(axis=0) + 1e-8)
    return ids, standardised.astype(np.float32), skipped
