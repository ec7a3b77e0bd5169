"""Decoding, downmixing and resampling of real and crafted audio files."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
import soundfile

from intake import audio
from tests.conftest import tone
from tests.intake.encoded_audio import encode, encode_m4a


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG", "MP3"])
def test_decodes_formats_with_libsndfile(fmt):
    samples = tone(2.0, 44100, channels=2)
    decoded = audio.decode_audio(encode(samples, 44100, fmt), "x." + fmt.lower())
    assert decoded.decoder == "soundfile"
    assert decoded.sample_rate == 44100
    assert decoded.samples.shape[1] == 2
    assert abs(decoded.duration_s - 2.0) < 0.06


def test_decodes_real_mp3_by_path(demo_audio_files):
    decoded = audio.decode_audio(str(demo_audio_files[0]), str(demo_audio_files[0]))
    assert decoded.decoder == "soundfile" and decoded.sample_rate == 44100
    assert abs(decoded.duration_s - 15.0) < 0.1
    assert decoded.minimum_frames is not None and decoded.samples.shape[0] >= decoded.minimum_frames


def test_falls_back_to_ffmpeg_for_m4a(tmp_path):
    data = encode_m4a(tone(1.5, 22050, channels=2), 22050)
    with pytest.raises(soundfile.LibsndfileError):
        soundfile.read(io.BytesIO(data))
    path = tmp_path / "song.m4a"
    path.write_bytes(data)
    decoded = audio.decode_audio(str(path), str(path))
    assert decoded.decoder == "pyav"
    assert decoded.sample_rate == 22050 and decoded.samples.shape[1] == 2
    assert abs(decoded.duration_s - 1.5) < 0.1
    waveform, _ = audio.load_mono(str(path), str(path), 16000)
    spectrum = np.abs(np.fft.rfft(waveform))
    assert abs(np.argmax(spectrum) * 16000 / waveform.size - 440.0) < 5.0


def test_garbage_names_the_file_and_both_decoders():
    with pytest.raises(audio.AudioError) as raised:
        audio.decode_audio(b"this is not audio" * 100, "catalog/bad.mp3")
    assert raised.value.reason == "decode_error"
    assert "catalog/bad.mp3" in str(raised.value)
    assert "soundfile:" in raised.value.detail and "pyav:" in raised.value.detail
    assert "BytesIO" not in raised.value.detail
    # A file that exists but is not audio: libsndfile's own words ("does not exist ... a pipe?") come as detail only.
    assert raised.value.detail.startswith("not a recognised audio format (")


def test_an_existing_file_that_is_not_audio_is_said_to_be_no_audio(tmp_path):
    path = tmp_path / "notes.mp3"
    path.write_text("shopping list\n" * 50)
    with pytest.raises(audio.AudioError) as raised:
        audio.decode_audio(str(path), str(path))
    assert str(raised.value).startswith(f"{path}: decode_error: not a recognised audio format (soundfile: ")


def test_empty_file():
    with pytest.raises(audio.AudioError, match="0 bytes") as raised:
        audio.decode_audio(b"", "empty.wav")
    assert raised.value.reason == "empty"


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 32000, 48000])
def test_complete_mp3s_of_every_mpeg_version_are_not_truncated(rate):
    """MPEG-1 (32-48 kHz) frames hold 1152 samples, MPEG-2/2.5 (8-24 kHz) 576."""
    data = encode(tone(3.0, rate), rate, "MP3")
    decoded = audio.decode_audio(data, f"{rate}.mp3")
    assert decoded.minimum_frames is not None and decoded.samples.shape[0] >= decoded.minimum_frames
    assert decoded.minimum_frames > 0.9 * 3.0 * rate
    with pytest.raises(audio.AudioError, match="truncated"):
        audio.decode_audio(data[: len(data) // 2], f"{rate}.mp3")


@pytest.mark.parametrize("fmt", ["WAV", "MP3"])
def test_truncated_files_are_detected(fmt):
    data = encode(tone(3.0, 44100, channels=2), 44100, fmt)
    audio.decode_audio(data, "whole")  # The complete file is fine.
    with pytest.raises(audio.AudioError) as raised:
        audio.decode_audio(data[: len(data) // 2], "half." + fmt.lower())
    assert raised.value.reason == "truncated"
    assert "half." in str(raised.value)


def test_truncated_real_mp3(demo_audio_files):
    data = demo_audio_files[0].read_bytes()
    with pytest.raises(audio.AudioError, match="truncated"):
        audio.decode_audio(data[: len(data) // 3], demo_audio_files[0].name)


def test_non_finite_samples_are_rejected():
    samples = tone(1.0, 16000)
    samples[100] = np.nan
    data = encode(samples, 16000, "WAV", subtype="FLOAT")
    with pytest.raises(audio.AudioError) as raised:
        audio.load_mono(data, "nan.wav", 16000)
    assert raised.value.reason == "non_finite"


@pytest.mark.parametrize("channels", [1, 2, 6])
def test_to_mono_averages_channels(channels):
    samples = np.random.default_rng(0).standard_normal((1000, channels)).astype(np.float32)
    np.testing.assert_allclose(audio.to_mono(samples), samples.mean(axis=1), atol=1e-6)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 16000])
def test_resample_keeps_duration_and_pitch(rate):
    waveform = tone(2.0, rate, frequency=1000.0)[:, 0]
    resampled = audio.resample(waveform, rate, 16000)
    assert resampled.dtype == np.float32
    assert abs(resampled.size - 32000) <= 1
    spectrum = np.abs(np.fft.rfft(resampled))
    assert abs(np.argmax(spectrum) * 16000 / resampled.size - 1000.0) < 2.0


@pytest.mark.parametrize("container", ["wav", "m4a"])
def test_decoding_stops_past_the_maximum_duration(tmp_path, container):
    samples = tone(3.0, 22050, channels=2)
    data = encode(samples, 22050, "WAV") if container == "wav" else encode_m4a(samples, 22050)
    path = tmp_path / f"long.{container}"
    path.write_bytes(data)
    with pytest.raises(audio.AudioError, match="more than the maximum of 2 s") as raised:
        audio.load_mono(str(path), str(path), 16000, max_seconds=2.0)
    assert raised.value.reason == "too_long" and raised.value.path == str(path)
    waveform, decoded = audio.load_mono(str(path), str(path), 16000, max_seconds=3.5)
    assert decoded.decoder == ("soundfile" if container == "wav" else "pyav")
    assert abs(waveform.size / 16000 - 3.0) < 0.1


def _constant(seconds: float, channels: int, sample_rate: int, container: str) -> bytes:
    buffer = io.BytesIO()
    samples = np.full((int(seconds * sample_rate), channels), 0.3, np.float32)
    soundfile.write(buffer, samples, sample_rate, format=container, subtype="PCM_16")
    return buffer.getvalue()


def test_a_decompression_bomb_is_refused_from_its_header_before_decoding(tmp_path):
    """8 channels at 96 kHz of a constant level: a few KB of FLAC that decode to 7.7 M samples."""
    path = tmp_path / "bomb.flac"
    path.write_bytes(_constant(10.0, 8, 96_000, "FLAC"))
    assert path.stat().st_size * audio.MAX_EXPANSION // 2 < 10 * 8 * 96_000
    with pytest.raises(audio.AudioError, match="over 400 times the file's size") as raised:
        audio.load_mono(str(path), str(path), 16000, max_seconds=600.0)
    assert raised.value.reason == "too_large" and raised.value.path == str(path)
    waveform, _ = audio.load_mono(str(path), str(path), 16000)  # Without a limit (a catalog): decoded.
    assert waveform.size == 10 * 16000


@pytest.mark.parametrize("container", ["WAV", "m4a"])
def test_channels_times_rate_count_against_a_duration_limit(tmp_path, container):
    """Within a 10 s limit in seconds, not in samples (10 s of stereo 48 kHz): 2 s of 8 channels at 96 kHz (WAV,
    libsndfile), 6 s of stereo at 96 kHz (AAC, FFmpeg)."""
    if container == "WAV":
        data = _constant(2.0, 8, 96_000, "WAV")
    else:
        data = encode_m4a(tone(6.0, 96_000, channels=2), 96_000)
    path = tmp_path / f"wide.{container.lower()}"
    path.write_bytes(data)
    with pytest.raises(audio.AudioError, match="a 10 s upload may decode to") as raised:
        audio.load_mono(str(path), str(path), 16000, max_seconds=10.0)
    assert raised.value.reason == "too_large"
    stereo = tmp_path / "stereo.wav"
    stereo.write_bytes(_constant(9.0, 2, 48_000, "WAV"))
    waveform, _ = audio.load_mono(str(stereo), str(stereo), 16000, max_seconds=10.0)
    assert waveform.size == 9 * 16000


@pytest.mark.parametrize(
    "channels, rate, container", [(2, 44100, "WAV"), (8, 96000, "FLAC"), (1, 22050, "m4a"), (2, 16000, "OGG")]
)
def test_decoding_as_a_stream_gives_the_samples_of_decoding_the_whole_file(tmp_path, channels, rate, container):
    """Block by block (several libsndfile blocks, FFmpeg frames) to mono 16 kHz: bit for bit the whole-file path."""
    levels = np.linspace(0.2, 1.0, channels, dtype=np.float32)[np.newaxis]
    samples = tone(5.0, rate, channels=channels, frequency=523.0) * levels
    data = encode_m4a(samples, rate) if container == "m4a" else encode(samples, rate, container)
    path = tmp_path / f"x.{container.lower()}"
    path.write_bytes(data)
    whole = audio.decode_audio(str(path), str(path))
    expected = audio.resample(audio.to_mono(whole.samples), whole.sample_rate, 16000)
    streamed, decoding = audio.load_mono(str(path), str(path), 16000)
    np.testing.assert_array_equal(streamed, expected)
    assert (decoding.sample_rate, decoding.channels, decoding.frames) == (rate, channels, whole.samples.shape[0])
    assert decoding.decoder == whole.decoder and decoding.duration_s == pytest.approx(whole.duration_s)


def test_a_stream_holds_the_mono_output_not_the_files_channels(tmp_path):
    """8 channels at 96 kHz for 20 s: 61 MB as decoded, 1.3 MB as mono 16 kHz."""
    path = tmp_path / "wide.flac"
    soundfile.write(path, tone(20.0, 96000, channels=8, frequency=200.0), 96000, format="FLAC", subtype="PCM_16")

    def peak_bytes(function):
        """The most memory `function` held above what was held before it (tracing left as it was found)."""
        started = not tracemalloc.is_tracing()
        if started:
            tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            function()
            return tracemalloc.get_traced_memory()[1] - before
        finally:
            if started:
                tracemalloc.stop()

    whole = peak_bytes(lambda: audio.to_mono(audio.decode_audio(str(path), str(path)).samples))
    streamed = peak_bytes(lambda: audio.load_mono(str(path), str(path), 16000))
    assert whole > 61_000_000 and streamed < 8_000_000, (whole, streamed)
