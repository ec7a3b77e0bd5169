"""A user's music folder for tests: real encoded files with and without tags, nested folders, odd names, a
duplicate, junk and hidden files."""

from __future__ import annotations

import dataclasses
import pathlib
import shutil

import mutagen
import numpy as np
import soundfile
from mutagen.easymp4 import EasyMP4
from mutagen.id3 import TCON, TIT2, TPE1
from mutagen.wave import WAVE

from tests.conftest import tone
from tests.intake.encoded_audio import encode_m4a


@dataclasses.dataclass(frozen=True)
class MusicFolder:
    """The folder and what a scan must find in it."""

    root: pathlib.Path
    audio: tuple[str, ...]  # Relative paths of the audio files, in the catalog's order.
    undecodable: tuple[str, ...]  # Audio names whose bytes are no audio: rejected where audio is decoded.
    skipped: dict[str, int]  # What the scan counts and leaves out.


def _tone(seconds: float, frequency: float, channels: int = 2) -> np.ndarray:
    return tone(seconds, 44100, channels=channels, frequency=frequency)


def _tag(path: pathlib.Path, easy_class, **tags):
    audio = easy_class(str(path)) if easy_class is not None else mutagen.File(str(path), easy=True)
    if audio.tags is None:
        audio.add_tags()
    for key, value in tags.items():
        audio[key] = value
    audio.save()


def make_music_folder(root: pathlib.Path) -> MusicFolder:
    """Writes the folder under `root` (created)."""
    album = root / "Artist A" / "Album X"
    album.mkdir(parents=True)
    song = album / "01 Song.mp3"
    soundfile.write(song, _tone(5.0, 440.0), 44100, format="MP3")
    _tag(song, None, artist="The Tagged Artist", title="Tagged Song", album="Tagged Album", genre="Rock; Indie")
    soundfile.write(album / "02 Untagged.flac", _tone(5.0, 550.0), 44100, format="FLAC")

    odd = root / "Sp ace & ünïcödé"
    odd.mkdir()
    vorbis = odd / "Çafé — naïve.ogg"
    soundfile.write(vorbis, _tone(5.0, 660.0), 44100, format="OGG", subtype="VORBIS")
    _tag(vorbis, None, artist="Ärtist", title="Naïve", genre="Jazz")
    option_like = root / "--help.wav"
    soundfile.write(option_like, _tone(5.0, 330.0, channels=1), 44100, format="WAV")
    wave = WAVE(str(option_like))
    wave.add_tags()
    wave.tags.add(TPE1(encoding=3, text=["Wave Artist"]))
    wave.tags.add(TIT2(encoding=3, text=["Looks Like An Option"]))
    wave.tags.add(TCON(encoding=3, text=["Electronic"]))
    wave.save()

    deep = root / "nested" / "deeper" / "deepest"
    deep.mkdir(parents=True)
    soundfile.write(
        deep / "track.opus", tone(5.0, 48000, channels=2, frequency=770.0), 48000, format="OGG", subtype="OPUS"
    )
    m4a = deep / "aac.m4a"
    m4a.write_bytes(encode_m4a(_tone(5.0, 880.0), 44100))
    _tag(m4a, EasyMP4, artist="MP4 Artist", title="In An MP4", album="Atoms", genre="Pop")
    soundfile.write(deep / "plain.aiff", _tone(5.0, 990.0), 44100, format="AIFF")

    copies = root / "Copies"
    copies.mkdir()
    shutil.copy(song, copies / "01 Song.mp3")  # The same bytes, another place: another track id.
    (root / "broken.mp3").write_bytes(b"ID3 not really an mp3 " * 40)

    (root / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a real jpeg")
    (root / "notes.txt").write_text("liner notes")
    (root / "README").write_text("no extension")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    hidden = root / ".hidden"
    hidden.mkdir()
    shutil.copy(song, hidden / "secret.mp3")
    audio = (
        "--help.wav",
        "Artist A/Album X/01 Song.mp3",
        "Artist A/Album X/02 Untagged.flac",
        "Copies/01 Song.mp3",
        "Sp ace & ünïcödé/Çafé — naïve.ogg",
        "broken.mp3",
        "nested/deeper/deepest/aac.m4a",
        "nested/deeper/deepest/plain.aiff",
        "nested/deeper/deepest/track.opus",
    )
    skipped = {"(none)": 1, ".jpg": 1, ".txt": 1, "hidden": 2}
    return MusicFolder(root, audio, ("broken.mp3",), skipped)
