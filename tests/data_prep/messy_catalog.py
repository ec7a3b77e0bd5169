"""A catalog for the pipeline's tests: the demo catalog plus one row per kind of bad (and unusual but good) input."""

from __future__ import annotations

import csv

import numpy as np
import soundfile

from tests.conftest import tone
from tests.intake.encoded_audio import encode_m4a


def write_messy_catalog(directory, demo_catalog):
    """The demo catalog plus one row per kind of bad (and unusual but good) input."""
    audio_dir = directory / "audio"
    audio_dir.mkdir()
    demo_rows = list(csv.DictReader(open(demo_catalog, encoding="utf-8")))
    first_mp3 = demo_catalog.parent / demo_rows[0]["path"]
    files = {
        "junk.mp3": b"ID3 definitely not an mp3" * 50,
        "empty.wav": b"",
        "truncated.mp3": first_mp3.read_bytes()[:100_000],
        "aac.m4a": encode_m4a(tone(3.0, 44100, channels=2, frequency=660.0), 44100),
    }
    for name, data in files.items():
        (audio_dir / name).write_bytes(data)
    soundfile.write(audio_dir / "short.wav", tone(0.5, 16000), 16000)
    soundfile.write(audio_dir / "silent.wav", np.zeros((32000, 2), np.float32), 16000)
    nan = tone(2.0, 16000)
    nan[500] = np.nan
    soundfile.write(audio_dir / "nan.wav", nan, 16000, subtype="FLOAT")
    soundfile.write(audio_dir / "stereo.flac", tone(4.0, 48000, channels=2, frequency=880.0), 48000)
    soundfile.write(audio_dir / "mono8k.wav", tone(3.0, 8000, frequency=220.0), 8000)

    rows = [{**row, "path": str(demo_catalog.parent / row["path"])} for row in demo_rows]
    crafted = [
        ("missing", "audio/missing.mp3", "Band A", "hyperrogue", "", ""),
        ("ghost_only", "audio/ghost.mp3", "Band F", "ghost", "", ""),
        ("junk", "audio/junk.mp3", "Band A", "hyperrogue", "", ""),
        ("empty", "audio/empty.wav", "Band A", "hyperrogue", "", ""),
        ("short", "audio/short.wav", "Band B", "starfighter", "", ""),
        ("silent", "audio/silent.wav", "Band B", "starfighter", "", ""),
        ("nan", "audio/nan.wav", "Band B", "starfighter", "", ""),
        ("truncated_mp3", "audio/truncated.mp3", "Band C", "dave-gnukem", "", ""),
        ("longer_in_catalog", str(first_mp3), "Band C", "dave-gnukem", "", "60.0"),
        ("untagged", "audio/mono8k.wav", "Band C", "", "", ""),
        ("stereo_48k_flac", "audio/stereo.flac", "Band D", "pekka-kana-2", "", "4.0"),
        ("mono_8k_wav", "audio/mono8k.wav", "Band D", "pekka-kana-2|unseen", "", ""),
        ("aac_m4a", "audio/aac.m4a", "Band E", "starfighter", "", ""),
        ("stereo_48k_flac", "audio/stereo.flac", "Band D", "pekka-kana-2", "", ""),  # duplicate id
        ("bad_split", "audio/stereo.flac", "Band D", "pekka-kana-2", "holdout", ""),
    ]
    fields = ["track_id", "path", "title", "artist", "album", "tags", "duration_s", "split"]
    for track_id, path, artist, tags, split, duration in crafted:
        rows.append(
            {
                "track_id": track_id,
                "path": path,
                "title": track_id,
                "artist": artist,
                "album": "",
                "tags": tags,
                "duration_s": duration,
                "split": split,
            }
        )
    path = directory / "catalog.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path
