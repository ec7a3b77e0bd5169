"""A folder of music as a catalog: every audio file under it, described by its own tags.

`read_folder(DIR)` walks `DIR` recursively and makes one catalog row per
audio file (`AUDIO_EXTENSIONS`: MP3, FLAC, Ogg Vorbis, Opus, M4A/MP4, WAV,
AIFF), in path order. Each row's metadata comes from the file's own tags,
read with mutagen (ID3 in MP3, WAV and AIFF; Vorbis comments in FLAC, Ogg
and Opus; MP4 atoms): artist, title, album, the genres as tags
(`Rock; Indie` gives `rock|indie`) and the duration. Where a tag is missing,
the names stand in: the title is the file's name without extension, the
album its folder's, the artist the folder above (both only inside `DIR`).

Track ids are stable and unique: the path relative to `DIR` written in
lowercase letters, digits and dashes, then 8 hex digits of that path's
SHA-256 (`Artist/Album/01 Song.mp3` -> `artist-album-01-song-1f0c9d2e`), so
a file keeps its id as long as it keeps its place, and two paths that read
alike still differ.

Hidden files and folders (a name starting with `.`) and files of other
types are skipped and counted (`Catalog.skipped`); a file that cannot be
read or holds no audio stays in the catalog and is rejected, with its
reason, where the audio is decoded, as a CSV row's would be. The rows are
the catalog CSV `catalog_csv` renders (absolute paths), parsed as any
catalog CSV is, so a folder and the `catalog.csv` written from it
(`write_catalog_csv`) give the same catalog.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import io
import os
import re
import unicodedata

from intake import catalog as catalog_lib

FORMAT = "folder"
CATALOG_FILENAME = "catalog.csv"
AUDIO_EXTENSIONS = (".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".mp4", ".wav", ".aif", ".aiff")
COLUMNS = ("track_id", "path", "artist", "album", "title", "tags", "duration_s")
HIDDEN = "hidden"  # `Catalog.skipped` key of hidden files and folders' contents.
_GENRE_SEPARATORS = re.compile(r"\s*[;/|,]\s*")
_ID3_FRAMES = {"artist": "TPE1", "title": "TIT2", "album": "TALB", "genre": "TCON"}


def is_folder(path: str) -> bool:
    """Whether a catalog flag's value names a local folder (read with `read_folder`)."""
    return catalog_lib.is_local(path) and os.path.isdir(path.removeprefix("file://"))


def read_folder(folder: str) -> catalog_lib.Catalog:
    """The catalog of every audio file under `folder` (see the module docstring).

    Raises:
        catalog_lib.CatalogError: `folder` cannot be listed.
    """
    folder = os.path.abspath(folder.removeprefix("file://"))
    paths, skipped = audio_files(folder)
    text = catalog_csv([describe(folder, path) for path in paths]).encode("utf-8")
    parsed = catalog_lib.parse_catalog(text, folder, folder)
    entries = tuple(_relative(entry, folder) for entry in parsed.entries)
    return dataclasses.replace(parsed, entries=entries, format=FORMAT, skipped=skipped)


def audio_files(folder: str) -> tuple[list[str], dict[str, int]]:
    """The audio files under `folder`, sorted by relative path, and the count of what was skipped.

    Skipped: `HIDDEN` (hidden files, and every file in a hidden folder), else
    by extension (`.jpg`, `.txt`, `(none)`).

    Raises:
        catalog_lib.CatalogError: `folder` cannot be listed.
    """
    if not os.path.isdir(folder):
        raise catalog_lib.CatalogError(f"{folder}: no such folder")
    found, skipped = [], collections.Counter()

    def refuse(error: OSError):
        raise catalog_lib.CatalogError(f"{error.filename}: cannot list the folder ({error.strerror})")

    for directory, subdirectories, files in os.walk(folder, onerror=refuse):
        for hidden in [name for name in subdirectories if name.startswith(".")]:
            subdirectories.remove(hidden)
            skipped[HIDDEN] += sum(len(names) for _, _, names in os.walk(os.path.join(directory, hidden)))
        for name in files:
            extension = os.path.splitext(name)[1].lower()
            if name.startswith("."):
                skipped[HIDDEN] += 1
            elif extension in AUDIO_EXTENSIONS:
                found.append(os.path.join(directory, name))
            else:
                skipped[extension or "(none)"] += 1
    found.sort(key=lambda path: _relative_path(folder, path))
    return found, dict(sorted(skipped.items()))


def track_id(relative_path: str) -> str:
    """The track id of a file at `relative_path` (POSIX, inside the folder): a readable slug plus a hash."""
    normalized = unicodedata.normalize("NFC", relative_path)
    stem = os.path.splitext(normalized)[0]
    slug = re.sub(r"[\W_]+", "-", unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode().lower())
    digest = hashlib.sha256(normalized.encode("utf-8")).hexdigest()[:8]
    return f"{slug.strip('-')[:80] or 'track'}-{digest}"


def describe(folder: str, path: str) -> dict[str, str]:
    """One catalog row for the audio file at `path`: its own tags, the names where they are missing."""
    relative = _relative_path(folder, path)
    tags = file_tags(path)
    parts = relative.split("/")
    return {
        "track_id": track_id(relative),
        "path": path,
        "artist": tags.get("artist") or (parts[-3] if len(parts) >= 3 else ""),
        "album": tags.get("album") or (parts[-2] if len(parts) >= 2 else ""),
        "title": tags.get("title") or os.path.splitext(parts[-1])[0],
        "tags": catalog_lib.TAG_SEPARATOR.join(_genres(tags.get("genre", ""))),
        "duration_s": tags.get("duration_s", ""),
    }


def file_tags(path: str) -> dict[str, str]:
    """`artist`, `title`, `album`, `genre` (as written) and `duration_s` from the file's tags; {} when mutagen
    cannot read it (the decoder then says why, or decodes it anyway)."""
    import mutagen  # Only for folders: a CSV catalog needs no tag library.
    from mutagen.id3 import ID3

    try:
        audio = mutagen.File(path, easy=True)
    except Exception:  # noqa: BLE001 - mutagen raises its own error per format, and OSError.
        return {}
    if audio is None:
        return {}
    found = {}
    tags = audio.tags
    for key, frame in _ID3_FRAMES.items():
        if isinstance(tags, ID3):  # WAV and AIFF keep plain ID3 even when asked for the easy interface.
            values = tags[frame].text if frame in tags else []
        else:
            values = tags.get(key, []) if tags is not None else []
        text = "; ".join(str(value).strip() for value in values if str(value).strip())
        if text:
            found[key] = text
    length = getattr(audio.info, "length", 0) or 0
    if length > 0:
        found["duration_s"] = f"{length:.3f}"
    return found


def catalog_csv(rows: list[dict[str, str]]) -> str:
    """The rows as catalog CSV text (`COLUMNS`), as `write_catalog_csv` writes it."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_catalog_csv(catalog: catalog_lib.Catalog, output_dir: str) -> str:
    """Writes the catalog a folder gave as `OUTPUT_DIR/catalog.csv` (absolute paths: a run can be repeated or
    edited from it); returns its path."""
    rows = [
        {
            "track_id": entry.track_id,
            "path": entry.uri,
            "artist": entry.artist,
            "album": entry.album,
            "title": entry.title,
            "tags": catalog_lib.TAG_SEPARATOR.join(entry.tags),
            "duration_s": "" if entry.duration_s is None else f"{entry.duration_s:.3f}",
        }
        for entry in catalog.entries
    ]
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, CATALOG_FILENAME)
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8", newline="") as handle:
        handle.write(catalog_csv(rows))
    os.replace(temporary, path)
    return path


def scan_summary(catalog: catalog_lib.Catalog) -> str:
    """One line on what a folder gave: its audio files, and what was skipped, by kind."""
    skipped = sum(catalog.skipped.values())
    kinds = ", ".join(f"{kind} {count}" for kind, count in catalog.skipped.items())
    return f"folder {catalog.source}: {catalog.num_rows} audio files" + (
        f"; skipped {skipped} other files ({kinds})" if skipped else ""
    )


def _genres(value: str) -> list[str]:
    genres = []
    for genre in _GENRE_SEPARATORS.split(value):
        genre = genre.strip().lower()
        if genre and genre not in genres:
            genres.append(genre)
    return genres


def _relative_path(folder: str, path: str) -> str:
    return os.path.relpath(path, folder).replace(os.sep, "/")


def _relative(entry: catalog_lib.CatalogEntry, folder: str) -> catalog_lib.CatalogEntry:
    """The entry with its path relative to the folder (what the index records and the web app serves)."""
    return dataclasses.replace(entry, path=_relative_path(folder, entry.uri))
