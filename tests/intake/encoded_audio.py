"""Audio files written in memory for tests: any libsndfile format, and AAC in MP4 through FFmpeg (PyAV)."""

from __future__ import annotations

import io

import av
import numpy as np
import soundfile


def encode(samples, rate, fmt, **kwargs) -> bytes:
    """`samples` (`[frames, channels]`) as a file of libsndfile's `fmt` (WAV, FLAC, OGG, MP3, ...)."""
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=fmt, **kwargs)
    return buffer.getvalue()


def encode_m4a(samples: np.ndarray, rate: int) -> bytes:
    """AAC in MP4, which libsndfile cannot read, written with FFmpeg (PyAV)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "stereo" if samples.shape[1] == 2 else "mono"
        planar = np.ascontiguousarray(samples.T)
        for start in range(0, planar.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(planar[:, start : start + 1024]), format="fltp", layout=stream.layout.name
            )
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()
