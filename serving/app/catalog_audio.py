"""Catalog audio served by the web app: a track's file under the audio root, never outside it.

A track id is only ever a key into the index; the file comes from the path
the catalog recorded for that track, joined to `--audio_root` and resolved
(symlinks included) before it is checked to lie inside the root.
"""

from __future__ import annotations

import mimetypes
import os
import re

from serving.app.errors import ApiError
from serving.retrieval.catalog_index import TrackRecord

# At most 18 digits a position (more than any file has bytes): longer numbers are malformed, not parsed.
_RANGE_SPEC = re.compile(r"^\s*(\d{0,18})\s*-\s*(\d{0,18})\s*$")
_EXTRA_TYPES = {".opus": "audio/ogg", ".m4a": "audio/mp4", ".flac": "audio/flac", ".wav": "audio/wav"}


def servable(track: TrackRecord) -> bool:
    """Whether the catalog recorded a local, relative file for the track."""
    return bool(track.path) and "://" not in track.path and not os.path.isabs(track.path)


def resolve(audio_root: str, track: TrackRecord) -> str:
    """The real path of the track's audio file inside `audio_root`.

    Raises:
        ApiError: 404 when the catalog has no local file for the track, when
            the path leads outside the root (`..`, symlinks) or when the file
            is missing. The messages never show server paths.
    """
    if not servable(track):
        raise ApiError(404, "no_audio", f"the catalog has no local audio file for track {track.track_id!r}")
    root = os.path.realpath(audio_root)
    candidate = os.path.realpath(os.path.join(root, track.path))
    if os.path.commonpath([root, candidate]) != root:
        raise ApiError(404, "no_audio", f"the audio of track {track.track_id!r} is outside the audio root")
    if not os.path.isfile(candidate):
        raise ApiError(404, "no_audio", f"the audio file of track {track.track_id!r} is missing")
    return candidate


def media_type(path: str) -> str:
    """The Content-Type of an audio file, from its extension."""
    extension = os.path.splitext(path)[1].lower()
    return _EXTRA_TYPES.get(extension) or mimetypes.guess_type(path)[0] or "application/octet-stream"


def check_range(header: str | None, size: int) -> None:
    """Refuses a `Range` header the file cannot serve, in the service's JSON error format.

    Valid ranges are left to the file response; this answers what it would
    answer in plain text: 400 `malformed_range` (not `bytes=START-END,...`,
    or a start after its end) and 416 `range_not_satisfiable` (every range
    past the end of the file, with `Content-Range: bytes */SIZE`).
    """
    if header is None:
        return
    unit, _, specs = header.partition("=")
    if unit.strip().lower() != "bytes" or not specs.strip():
        raise ApiError(400, "malformed_range", f"Range {header[:100]!r}: expected bytes=START-END")
    satisfiable = False
    for spec in specs.split(","):
        match = _RANGE_SPEC.match(spec)
        if not match or not (match[1] or match[2]):
            raise ApiError(400, "malformed_range", f"Range {header[:100]!r}: {spec.strip()!r} is not START-END")
        start, end = match[1], match[2]
        if start and end and int(start) > int(end):
            raise ApiError(400, "malformed_range", f"Range {header[:100]!r}: {spec.strip()!r} starts after it ends")
        satisfiable |= int(end) > 0 if not start else int(start) < size
    if not satisfiable:
        raise ApiError(416, "range_not_satisfiable", f"the file has {size} bytes", {"Content-Range": f"bytes */{size}"})
