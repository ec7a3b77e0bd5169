"""A folder of music as a catalog (`intake.folder_catalog`), on real encoded files with and without tags."""

from __future__ import annotations

import pytest

from intake import catalog as catalog_lib
from intake import folder_catalog
from tests.intake.music_folder import make_music_folder


@pytest.fixture(scope="module")
def music(tmp_path_factory):
    return make_music_folder(tmp_path_factory.mktemp("music") / "My Music")


def test_every_audio_file_is_a_row_and_everything_else_is_counted(music):
    scanned = catalog_lib.read_catalog(str(music.root))
    assert scanned.format == folder_catalog.FORMAT and scanned.audio_root == str(music.root)
    assert [entry.path for entry in scanned.entries] == list(music.audio)
    assert scanned.num_rows == len(music.audio) and not scanned.rejections
    assert scanned.skipped == music.skipped
    assert all(entry.uri == str(music.root / entry.path) for entry in scanned.entries)
    assert folder_catalog.scan_summary(scanned) == (
        f"folder {music.root}: 9 audio files; skipped 5 other files ((none) 1, .jpg 1, .txt 1, hidden 2)"
    )


def test_metadata_comes_from_the_files_tags_and_else_from_the_names(music):
    entries = {entry.path: entry for entry in catalog_lib.read_catalog(str(music.root)).entries}
    mp3 = entries["Artist A/Album X/01 Song.mp3"]
    assert (mp3.artist, mp3.title, mp3.album, mp3.tags) == (
        "The Tagged Artist",
        "Tagged Song",
        "Tagged Album",
        ("rock", "indie"),
    )
    assert mp3.duration_s == pytest.approx(5.0, abs=0.1)
    flac = entries["Artist A/Album X/02 Untagged.flac"]
    assert (flac.artist, flac.title, flac.album, flac.tags) == ("Artist A", "02 Untagged", "Album X", ())
    assert flac.duration_s == pytest.approx(5.0, abs=0.01)
    ogg = entries["Sp ace & ünïcödé/Çafé — naïve.ogg"]
    assert (ogg.artist, ogg.title, ogg.album, ogg.tags) == ("Ärtist", "Naïve", "Sp ace & ünïcödé", ("jazz",))
    wav = entries["--help.wav"]  # ID3 inside a RIFF file; a name that looks like an option.
    assert (wav.artist, wav.title, wav.album, wav.tags) == ("Wave Artist", "Looks Like An Option", "", ("electronic",))
    m4a = entries["nested/deeper/deepest/aac.m4a"]
    assert (m4a.artist, m4a.title, m4a.album, m4a.tags) == ("MP4 Artist", "In An MP4", "Atoms", ("pop",))
    opus = entries["nested/deeper/deepest/track.opus"]
    assert (opus.artist, opus.album, opus.title) == ("deeper", "deepest", "track")
    assert opus.duration_s == pytest.approx(5.0, abs=0.05)
    broken = entries["broken.mp3"]  # No audio in it: kept here, rejected with a reason where audio is decoded.
    assert (broken.title, broken.duration_s) == ("broken", None)


def test_track_ids_are_stable_unique_and_safe_whatever_the_names(music):
    first = catalog_lib.read_catalog(str(music.root))
    again = catalog_lib.read_catalog(str(music.root))
    ids = [entry.track_id for entry in first.entries]
    assert ids == [entry.track_id for entry in again.entries] and len(set(ids)) == len(ids)
    assert all(entry.track_id == folder_catalog.track_id(entry.path) for entry in first.entries)
    by_path = dict(zip((entry.path for entry in first.entries), ids, strict=True))
    assert by_path["Artist A/Album X/01 Song.mp3"].startswith("artist-a-album-x-01-song-")
    assert by_path["Copies/01 Song.mp3"].startswith("copies-01-song-")  # Same bytes, another place.
    assert by_path["--help.wav"].startswith("help-") and by_path["Sp ace & ünïcödé/Çafé — naïve.ogg"].startswith(
        "sp-ace-unicode-cafe-naive-"
    )
    assert all(track_id.isascii() and " " not in track_id and "/" not in track_id for track_id in ids)
    assert folder_catalog.track_id("a b.mp3") != folder_catalog.track_id("a_b.mp3")  # Alike, still two ids.


def test_the_written_catalog_csv_gives_the_same_catalog(music, tmp_path):
    scanned = catalog_lib.read_catalog(str(music.root))
    written = folder_catalog.write_catalog_csv(scanned, str(tmp_path / "out"))
    again = catalog_lib.read_catalog(written)
    assert again.format == "csv" and again.num_rows == scanned.num_rows

    def described(entry):
        return (entry.track_id, entry.uri, entry.artist, entry.album, entry.title, entry.tags, entry.duration_s)

    assert [described(e) for e in again.entries] == [
        (*described(e)[:6], None if e.duration_s is None else round(e.duration_s, 3)) for e in scanned.entries
    ]


def test_an_audio_root_with_a_folder_and_a_folder_that_cannot_be_listed_are_named(music, tmp_path):
    with pytest.raises(catalog_lib.CatalogError, match="is a folder, its own audio root"):
        catalog_lib.read_catalog(str(music.root), audio_root="/elsewhere")
    with pytest.raises(catalog_lib.CatalogError, match="no such folder"):
        folder_catalog.read_folder(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    (empty / ".git").mkdir(parents=True)
    (empty / ".git" / "HEAD").write_text("ref")
    scanned = catalog_lib.read_catalog(str(empty))
    assert scanned.num_rows == 0 and scanned.skipped == {"hidden": 1}
