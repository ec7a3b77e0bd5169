"""The one set of audio checks: decoded catalog audio is refused with the reason every stage reports."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from intake.audio import AudioError
from intake.audio_checks import AudioChecks, load_checked_waveform
from intake.catalog import CatalogEntry
from tests.conftest import tone


def _entry(path, duration_s=None) -> CatalogEntry:
    return CatalogEntry(row=1, track_id="t", path=str(path), uri=str(path), duration_s=duration_s)


def _write(tmp_path, name, samples, rate=22050):
    path = tmp_path / name
    soundfile.write(path, samples, rate, subtype="FLOAT")  # Float: quiet audio stays quiet, not zero.
    return path


def test_usable_audio_is_decoded_to_mono_at_the_target_rate(tmp_path):
    path = _write(tmp_path, "ok.wav", tone(2.0, 22050, channels=2))
    waveform, decoded = load_checked_waveform(_entry(path, duration_s=2.0), 16000, AudioChecks())
    assert waveform.ndim == 1 and abs(waveform.size - 32000) <= 2 and decoded.sample_rate == 22050


@pytest.mark.parametrize(
    ("samples", "duration_s", "checks", "reason", "detail"),
    [
        (tone(0.5, 22050), None, AudioChecks(), "too_short", "0.500 s < minimum 1.0 s"),
        (tone(3.0, 22050), None, AudioChecks(min_duration_s=5.0), "too_short", "< minimum 5.0 s"),
        (np.zeros((44100, 1), np.float32), None, AudioChecks(), "silent", "dBFS < threshold -80.0 dBFS"),
        (1e-5 * tone(2.0, 22050), None, AudioChecks(), "silent", "peak level"),
        (tone(2.0, 22050), 10.0, AudioChecks(), "truncated", "decodes to 2.00 s but the catalog says 10.0 s"),
    ],
)
def test_unusable_audio_is_refused_naming_the_file_and_reason(tmp_path, samples, duration_s, checks, reason, detail):
    path = _write(tmp_path, f"{reason}.wav", samples)
    with pytest.raises(AudioError) as raised:
        load_checked_waveform(_entry(path, duration_s), 16000, checks)
    assert raised.value.reason == reason and detail in raised.value.detail and str(path) in str(raised.value)


def test_a_short_declared_duration_within_tolerance_is_accepted(tmp_path):
    path = _write(tmp_path, "almost.wav", tone(9.9, 22050))
    waveform, _ = load_checked_waveform(_entry(path, duration_s=10.0), 16000, AudioChecks())
    assert waveform.size > 0


def test_checks_apply_to_any_waveform_with_a_name():
    with pytest.raises(AudioError, match="upload.mp3"):
        AudioChecks().check(np.zeros(0, np.float32), 16000, "upload.mp3")
    AudioChecks().check(tone(1.5, 16000)[:, 0], 16000, "upload.mp3")
