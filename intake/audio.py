"""Audio decoding, downmixing and resampling.

Decoding tries libsndfile first (through soundfile: WAV, FLAC, OGG Vorbis and
Opus, MP3 and more) and falls back to FFmpeg's libraries (through PyAV, whose
wheels bundle them: AAC/M4A, WMA and whatever libsndfile rejects). Every
failure is an `AudioError` that names the file and says what both decoders
reported, so a pipeline can reject the file with a reason instead of dying.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import struct

import numpy as np
import soundfile
import soxr

from intake import catalog


class AudioError(Exception):
    """A file that cannot be turned into a usable waveform.

    Attributes:
        reason: A short machine-readable reason (`missing_file`,
            `decode_error`, `empty`, `truncated`, `non_finite`, `too_long`,
            `too_large`).
        path: The file the error is about.
    """

    def __init__(self, reason: str, path: str, detail: str):
        super().__init__(f"{path}: {reason}: {detail}")
        self.reason = reason
        self.path = path
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class DecodedAudio:
    """A decoded waveform.

    Attributes:
        samples: Float32 array `[frames, channels]` in [-1, 1].
        sample_rate: Sample rate in Hz.
        decoder: Which decoder produced it (`soundfile` or `pyav`).
        minimum_frames: Frames a complete file decodes to at least, when the
            container header says (WAV data size, MP3 Xing/Info frame count).
    """

    samples: np.ndarray
    sample_rate: int
    decoder: str
    minimum_frames: int | None = None

    @property
    def duration_s(self) -> float:
        return self.samples.shape[0] / self.sample_rate


@dataclasses.dataclass(frozen=True)
class Decoding:
    """How a file decoded, without its samples (what `load_mono` returns beside the waveform).

    Attributes:
        sample_rate: The file's own sample rate in Hz.
        channels: Its channels.
        frames: Frames decoded, at its own rate.
        decoder: Which decoder read it (`soundfile` or `pyav`).
    """

    sample_rate: int
    channels: int
    frames: int
    decoder: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


# Frames libsndfile reads at a time when decoding as a stream (1.4 s at 48 kHz).
_BLOCK_FRAMES = 1 << 16


class _AllChannels:
    """Keeps every block as decoded: `[frames, channels]` at the file's own rate (`decode_audio`)."""

    def __init__(self, sample_rate: int, channels: int):
        self._channels, self._blocks = channels, []

    def add(self, block: np.ndarray):
        self._blocks.append(np.array(block, dtype=np.float32))  # The decoder may reuse its buffer.

    def finish(self) -> np.ndarray:
        if not self._blocks:
            return np.zeros((0, self._channels), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(self._blocks), dtype=np.float32)


class _MonoAt:
    """Downmixes and resamples each block as it comes (`load_mono`): memory for the mono output only.

    soxr's stream gives the same samples as its one-shot resampling of the
    whole signal (tested), so a stream and a whole file agree to the bit.
    """

    def __init__(self, target_rate: int, sample_rate: int, channels: int):
        self._resampler = None
        if sample_rate != target_rate:
            self._resampler = soxr.ResampleStream(sample_rate, target_rate, 1, dtype="float32", quality="HQ")
        self._pieces, self.non_finite = [], 0

    def add(self, block: np.ndarray):
        finite = np.isfinite(block)
        if not finite.all():
            self.non_finite += int(np.count_nonzero(~finite))
        mono = to_mono(block)
        self._pieces.append(mono if self._resampler is None else self._resampler.resample_chunk(mono))

    def finish(self) -> np.ndarray:
        if self._resampler is not None:
            self._pieces.append(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        if not self._pieces:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(self._pieces).astype(np.float32, copy=False)


def _open_source(source: str | bytes):
    """A path stays a path (libsndfile then reads it natively, without holding
    the GIL); bytes become a file object."""
    return io.BytesIO(source) if isinstance(source, bytes) else source


def _header_bytes(source: str | bytes) -> bytes:
    """The first bytes of the file, past an ID3v2 tag if there is one."""
    if isinstance(source, bytes):
        return source[: _HEADER_BYTES + _id3_size(source)]
    with open(source, "rb") as handle:
        head = handle.read(_HEADER_BYTES)
        skip = _id3_size(head)
        if skip:
            handle.seek(0)
            head = handle.read(skip + _HEADER_BYTES)
        return head


_HEADER_BYTES = 1 << 16


def _id3_size(data: bytes) -> int:
    if data[:3] != b"ID3" or len(data) < 10:
        return 0
    size = data[6:10]
    return 10 + ((size[0] << 21) | (size[1] << 14) | (size[2] << 7) | size[3])


class _TooLongError(Exception):
    """More audio than the caller's maximum: decoding stopped there."""


class _TooLargeError(Exception):
    """More decoded samples than a duration limit allows (channels x rate), or too many per byte of the file."""


# With a duration limit (an untrusted upload), the decoded size is bounded too, from the header before
# decoding and while decoding: at most this many samples (all channels) per second of the limit, what
# stereo at 48 kHz needs, and at most this many bytes of 16-bit samples per byte of the file (lossy codecs
# at their lowest bitrates stay under about 130; a constant signal in FLAC reaches thousands).
MAX_SAMPLES_PER_SECOND_OF_LIMIT = 2 * 48_000
MAX_EXPANSION = 400


@dataclasses.dataclass(frozen=True)
class _SizeBound:
    """The most samples (all channels) an upload may decode to: `max_seconds` and the file's size set it."""

    max_seconds: float
    file_bytes: int

    @property
    def samples(self) -> int:
        by_duration = int(self.max_seconds * MAX_SAMPLES_PER_SECOND_OF_LIMIT)
        return min(by_duration, MAX_EXPANSION * self.file_bytes // 2)

    def check(self, samples: int, channels: int, sample_rate: int):
        """Raises `_TooLargeError` when `samples` (declared or decoded so far) exceed the bound, saying why."""
        if samples <= self.samples:
            return
        if self.samples < int(self.max_seconds * MAX_SAMPLES_PER_SECOND_OF_LIMIT):
            raise _TooLargeError(
                f"{channels} channel(s) at {sample_rate} Hz decode to {samples:,} samples or more from "
                f"{self.file_bytes:,} bytes, over {MAX_EXPANSION} times the file's size"
            )
        raise _TooLargeError(
            f"{channels} channel(s) at {sample_rate} Hz decode to {samples:,} samples or more, over the "
            f"{self.samples:,} a {self.max_seconds:g} s upload may decode to ({MAX_SAMPLES_PER_SECOND_OF_LIMIT:,} "
            "per second: stereo at 48 kHz)"
        )


def _frame_limit(max_seconds: float | None, sample_rate: int) -> int | None:
    return None if max_seconds is None else int(max_seconds * sample_rate)


def _decode_with_soundfile(source: str | bytes, sink_for, max_seconds: float | None, bound: _SizeBound | None):
    """Feeds the file's blocks to `sink_for(sample_rate, channels)`; returns (Decoding, sink, minimum frames)."""
    with soundfile.SoundFile(_open_source(source)) as audio_file:
        limit = _frame_limit(max_seconds, audio_file.samplerate)
        channels, rate = audio_file.channels, audio_file.samplerate
        if bound is not None:
            if 0 < audio_file.frames < 2**62:  # The header's length, when it gives one.
                bound.check(audio_file.frames * channels, channels, rate)
            limit = min(limit, bound.samples // channels)
        sink, frames = sink_for(rate, channels), 0
        # One frame past the limit tells "too long" from "exactly the limit" without reading on.
        wanted = None if limit is None else limit + 1
        while wanted is None or frames < wanted:
            # `read`, not `blocks`: `blocks` counts down the header's length, which a truncated MP3 overstates.
            count = _BLOCK_FRAMES if wanted is None else min(_BLOCK_FRAMES, wanted - frames)
            block = audio_file.read(count, dtype="float32", always_2d=True)
            if not block.shape[0]:
                break
            frames += block.shape[0]
            if limit is not None and frames > limit:
                if bound is not None:
                    bound.check(frames * channels, channels, rate)
                raise _TooLongError()
            sink.add(block)
        if audio_file.format == "WAV":
            minimum = _wav_declared_frames(_header_bytes(source))
        elif audio_file.format == "MP3":
            minimum = _mp3_declared_frames(_header_bytes(source))
        else:
            minimum = None
        return Decoding(rate, channels, frames, "soundfile"), sink, minimum


def _wav_declared_frames(data: bytes) -> int | None:
    """Frames announced by a RIFF/WAVE header (libsndfile trusts the file size)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    position, block_align = 12, None
    while position + 8 <= len(data):
        chunk_id, chunk_size = data[position : position + 4], struct.unpack_from("<I", data, position + 4)[0]
        if chunk_id == b"fmt " and position + 22 <= len(data):
            block_align = struct.unpack_from("<H", data, position + 20)[0]
        if chunk_id == b"data":
            if not block_align or chunk_size == 0xFFFFFFFF:  # Streamed WAV: size unknown.
                return None
            return chunk_size // block_align
        position += 8 + chunk_size + (chunk_size & 1)
    return None


# Samples per frame by (MPEG version bits, layer bits) of the frame header.
_MP3_SAMPLES_PER_FRAME = {
    (0b11, 0b01): 1152,  # MPEG-1 Layer III
    (0b10, 0b01): 576,  # MPEG-2 Layer III (16, 22.05, 24 kHz)
    (0b00, 0b01): 576,  # MPEG-2.5 Layer III (8, 11.025, 12 kHz)
    (0b11, 0b10): 1152,  # MPEG-1 Layer II
    (0b10, 0b10): 1152,
    (0b00, 0b10): 1152,
}


def _mp3_declared_frames(data: bytes) -> int | None:
    """Samples announced by an MP3's Xing/Info header (as LAME writes), if any.

    The header counts MPEG frames, encoder delay and padding included, which
    a decoder trims (at most about two frames), so the result is the count
    minus three frames: a lower bound that every complete file reaches.
    """
    start = _id3_size(data)
    frame_header = data[start : start + 4]
    if len(frame_header) < 4 or frame_header[0] != 0xFF or (frame_header[1] & 0xE0) != 0xE0:
        return None  # No frame right after the tag: nothing reliable to check.
    version, layer = (frame_header[1] >> 3) & 0b11, (frame_header[1] >> 1) & 0b11
    samples_per_frame = _MP3_SAMPLES_PER_FRAME.get((version, layer))
    header = data[start : start + 200]
    for tag in (b"Xing", b"Info"):
        offset = header.find(tag)
        if samples_per_frame and offset >= 0 and offset + 12 <= len(header):
            flags = struct.unpack_from(">I", header, offset + 4)[0]
            if flags & 1:
                num_frames = struct.unpack_from(">I", header, offset + 8)[0]
                return max(0, (num_frames - 3) * samples_per_frame)
    return None


def _decode_with_pyav(source: str | bytes, sink_for, max_seconds: float | None, bound: _SizeBound | None):
    """As `_decode_with_soundfile`, through FFmpeg's decoders, frame by frame."""
    import av  # Imported lazily: only needed for files libsndfile rejects.

    with av.open(_open_source(source), mode="r") as container:
        if not container.streams.audio:
            raise ValueError("no audio stream")
        stream = container.streams.audio[0]
        channels, rate = stream.channels, stream.rate
        if bound is not None and container.duration:  # Microseconds, as the container declares it.
            declared = int(container.duration / 1e6 * rate) * channels
            bound.check(declared, channels, rate)
        resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=rate)
        limit = _frame_limit(max_seconds, rate)
        sink, frames = sink_for(rate, channels), 0

        def feed(converted_frames):
            nonlocal frames
            for converted in converted_frames:
                block = converted.to_ndarray().T  # Planar [channels, frames] -> [frames, channels].
                frames += block.shape[0]
                sink.add(block)

        for frame in container.decode(stream):
            feed(resampler.resample(frame))
            if bound is not None:
                bound.check(frames * channels, channels, rate)
            if limit is not None and frames > limit:
                raise _TooLongError()
        feed(resampler.resample(None))
    return Decoding(rate, channels, frames, "pyav"), sink, None


_BYTESIO_REPR = re.compile(r"<_io\.BytesIO object at 0x[0-9a-f]+>")


def decode_audio(source: str | bytes, path: str, max_seconds: float | None = None) -> DecodedAudio:
    """Decodes an audio file.

    Args:
        source: A local file path, or the file's bytes (for remote files).
        path: The file's name or URI, used in error messages.
        max_seconds: Stop decoding past this much audio and raise `too_long`
            (bounds the memory a file can make a service spend, whatever its
            header says); also bounds the decoded size (`too_large`: at most
            `MAX_SAMPLES_PER_SECOND_OF_LIMIT` samples per second of it and
            `MAX_EXPANSION` times the file's size), from the header before
            decoding and while decoding. None decodes everything.

    Returns:
        The decoded audio with all its channels at its own sample rate.

    Raises:
        AudioError: `empty` for a zero-byte file, `decode_error` when neither
            decoder can read it, `truncated` when the decoded length falls
            short of what the container header announces, `too_long` past
            `max_seconds`, `too_large` past the decoded-size bound.
    """
    decoding, sink, minimum = _decode(source, path, max_seconds, _AllChannels)
    return DecodedAudio(sink.finish(), decoding.sample_rate, decoding.decoder, minimum)


def _decode(source: str | bytes, path: str, max_seconds: float | None, sink_for):
    """Decodes with libsndfile, else FFmpeg, into a fresh `sink_for(sample_rate, channels)` each; checks the
    length against the header's. Returns (Decoding, sink, the frames the header announces at least)."""
    size = len(source) if isinstance(source, bytes) else os.path.getsize(source)
    if size == 0:
        raise AudioError("empty", path, "the file has 0 bytes")
    errors = []
    bound = None if max_seconds is None else _SizeBound(max_seconds, size)
    for decode in (_decode_with_soundfile, _decode_with_pyav):
        try:
            decoding, sink, minimum = decode(source, sink_for, max_seconds, bound)
        except _TooLongError:
            raise AudioError("too_long", path, f"the audio lasts more than the maximum of {max_seconds:g} s") from None
        except _TooLargeError as error:
            raise AudioError("too_large", path, str(error)) from None
        except Exception as error:  # noqa: BLE001 - each decoder raises its own types.
            message = _BYTESIO_REPR.sub("the file", str(error))
            errors.append(f"{decode.__name__.removeprefix('_decode_with_')}: {message}")
            continue
        if minimum is not None and decoding.frames < minimum:
            raise AudioError(
                "truncated",
                path,
                f"header announces at least {minimum} frames, only {decoding.frames} could be decoded",
            )
        return decoding, sink, minimum
    raise AudioError("decode_error", path, "not a recognised audio format (" + "; ".join(errors) + ")")


def open_source(uri: str) -> str | bytes:
    """What `decode_audio` reads: a local path as it is (libsndfile reads it
    natively, without the GIL), a remote file's bytes (gs://, s3://, ...).

    Raises:
        AudioError: `missing_file` or `unreadable_file`.
    """
    if catalog.is_local(uri):  # No Beam needed (binaries start fast).
        path = uri.removeprefix("file://")
        if not os.path.isfile(path):
            raise AudioError("missing_file", uri, "no such file")
        if not os.access(path, os.R_OK):
            raise AudioError("unreadable_file", uri, "permission denied")
        return path
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(uri, compression_type="uncompressed") as handle:
            return handle.read()
    except Exception as error:  # noqa: BLE001 - each filesystem raises its own.
        try:
            exists = FileSystems.exists(uri)
        except Exception:  # noqa: BLE001
            exists = True
        if not exists:
            raise AudioError("missing_file", uri, "no such file") from error
        raise AudioError("unreadable_file", uri, str(error)) from error


def content_sha256(source: str | bytes) -> str:
    """SHA-256 of an audio file's bytes (what `open_source` returned): equal hashes are exact duplicates."""
    digest = hashlib.sha256()
    if isinstance(source, bytes):
        digest.update(source)
        return digest.hexdigest()
    with open(source, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Averages the channels of a `[frames, channels]` array.

    Channel by channel, in one thread: `ndarray.mean(axis=1)` over a few
    interleaved channels is about 30 times slower, and a BLAS matrix-vector
    product starts OpenBLAS's thread pool, whose threads spin after the call
    and take the CPU from the other tracks the pipeline's workers decode
    (about 20 % of the preprocessing's throughput on two cores).
    """
    if samples.ndim == 1:
        return samples.astype(np.float32, copy=False)
    channels = samples.shape[1]
    mono = np.array(samples[:, 0], dtype=np.float32)
    for channel in range(1, channels):
        mono += samples[:, channel]
    if channels > 1:
        mono *= np.float32(1.0 / channels)
    return mono


def resample(waveform: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Resamples a mono waveform with soxr's high-quality filter."""
    if source_rate == target_rate:
        return waveform.astype(np.float32, copy=False)
    return soxr.resample(waveform, source_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def load_mono(
    source: str | bytes, path: str, sample_rate: int, max_seconds: float | None = None
) -> tuple[np.ndarray, Decoding]:
    """Decodes, downmixes and resamples an audio file, as a stream.

    Each decoded block is downmixed and resampled before the next is read, so
    memory holds the mono output at `sample_rate`, not the file's channels at
    its own rate (a 96 kHz 8-channel upload costs what a 16 kHz mono one
    does). The samples equal those of decoding the whole file first.

    Args:
        source: A local file path or the file's bytes.
        path: The file's name, for error messages.
        sample_rate: The target sample rate in Hz.
        max_seconds: See `decode_audio`.

    Returns:
        The mono float32 waveform at `sample_rate`, and how the file decoded.

    Raises:
        AudioError: See `decode_audio`; also `non_finite` when the
            decoded samples contain NaN or infinity.
    """
    decoding, sink, _ = _decode(source, path, max_seconds, lambda rate, channels: _MonoAt(sample_rate, rate, channels))
    if sink.non_finite:
        raise AudioError("non_finite", path, f"{sink.non_finite} decoded samples are NaN or infinite")
    return sink.finish(), decoding
