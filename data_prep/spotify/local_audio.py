"""Local audio files for tracks without a usable preview, matched by track id or ISRC.

The `--local_audio` CSV has a `path` column (absolute, or relative to the
CSV's folder) and a `track_id` column, an `isrc` column or both; a row may
fill either. A track id match wins over an ISRC match. ISRCs are compared
without case, spaces and hyphens (`US-RC1-17-00001` = `usrc11700001`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os

from data_prep.spotify.collect import Track, parse_track_id, read_csv_text


def normalise_isrc(isrc: str) -> str:
    return "".join(isrc.split()).replace("-", "").upper()


@dataclasses.dataclass(frozen=True)
class LocalAudio:
    """Local files by track id and by ISRC.

    Attributes:
        source: The CSV the index was read from.
        by_track_id: Absolute paths by Spotify track id.
        by_isrc: Absolute paths by normalised ISRC.
    """

    source: str
    by_track_id: dict[str, str]
    by_isrc: dict[str, str]

    def find(self, track: Track) -> tuple[str, str] | None:
        """The file for a track and how it matched (`track_id` or `isrc`), or None."""
        if track.track_id in self.by_track_id:
            return self.by_track_id[track.track_id], "track_id"
        if track.isrc and normalise_isrc(track.isrc) in self.by_isrc:
            return self.by_isrc[normalise_isrc(track.isrc)], "isrc"
        return None


def read_local_audio(path: str) -> LocalAudio:
    """Reads the `--local_audio` CSV.

    Raises:
        ValueError: For a file that cannot be read, without a `path` column and a `track_id` or `isrc`
            column, for a row with neither, a bad track id, or a key given twice.
    """
    path = os.path.abspath(path)
    root = os.path.dirname(path)
    reader = csv.DictReader(io.StringIO(read_csv_text(path), newline=""))
    header = [name.strip() for name in reader.fieldnames or []]
    if "path" not in header or not ({"track_id", "isrc"} & set(header)):
        raise ValueError(f"{path}: needs a path column and a track_id or isrc column; the header has {header}")
    reader.fieldnames = header
    by_track_id, by_isrc = {}, {}
    for row_number, row in enumerate(reader, start=1):
        file_path = (row.get("path") or "").strip()
        track_id = (row.get("track_id") or "").strip()
        isrc = normalise_isrc(row.get("isrc") or "")
        if not file_path or not (track_id or isrc):
            raise ValueError(f"{path}: row {row_number} needs a path and a track_id or an isrc")
        file_path = file_path if os.path.isabs(file_path) else os.path.normpath(os.path.join(root, file_path))
        if track_id:
            try:
                track_id = parse_track_id(track_id)
            except ValueError as error:
                raise ValueError(f"{path}: row {row_number}: {error}") from None
            if track_id in by_track_id:
                raise ValueError(f"{path}: row {row_number}: track_id {track_id} is given twice")
            by_track_id[track_id] = file_path
        if isrc:
            if isrc in by_isrc:
                raise ValueError(f"{path}: row {row_number}: isrc {isrc} is given twice")
            by_isrc[isrc] = file_path
    return LocalAudio(path, by_track_id, by_isrc)
