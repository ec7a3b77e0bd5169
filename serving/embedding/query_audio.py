"""A query's audio: decoded and checked like the catalog's, then embedded.

waveform, duration_s, sha256 = load_query_audio("song.mp3", sample_rate=16000)
query = audio_query("song.mp3", LocalEmbedder(catalog.embedding_models, catalog.tag_model))
"""

from __future__ import annotations

import numpy as np

from intake import audio
from intake.audio_checks import AudioChecks
from serving.export.saved_model import MIN_SECONDS
from serving.retrieval.recommender import Query

# The catalog's checks, with the models' minimum length.
QUERY_CHECKS = AudioChecks(min_duration_s=MIN_SECONDS)


def load_query_audio(
    path: str, sample_rate: int, name: str | None = None, max_seconds: float | None = None
) -> tuple[np.ndarray, float, str]:
    """Decodes a query's audio file and checks it as the catalog's audio is checked (`AudioChecks`).

    Args:
        path: The audio file (local path or URI; any format `intake.audio` reads).
        sample_rate: The models' sample rate.
        name: The file's name in error messages (default: `path`).
        max_seconds: Decoding stops past this much audio (`too_long`).

    Returns:
        The mono waveform at `sample_rate`, the decoded duration in seconds and
        the file's SHA-256 (exact duplicates of the query share it).

    Raises:
        intake.audio.AudioError: Missing, unreadable or undecodable, too
            long, or unusable (`empty`, `too_short` below the models' minimum,
            `silent`); the message names the file.
    """
    name = name or path
    source = audio.open_source(path)
    waveform, decoded = audio.load_mono(source, name, sample_rate, max_seconds)
    QUERY_CHECKS.check(waveform, sample_rate, name)
    return waveform, decoded.duration_s, audio.content_sha256(source)


def audio_query(path: str, embedder) -> Query:
    """Decodes an audio file (see `load_query_audio`) and embeds it with a `LocalEmbedder` or `RemoteEmbedder`."""
    waveform, _, content_sha256 = load_query_audio(path, embedder.sample_rate)
    embedding, tags = embedder.features(waveform)
    return Query(
        embedding=embedding,
        tag_probabilities=tags,
        content_sha256=content_sha256,
        embedded_by=embedder.embedding_models,
    )
