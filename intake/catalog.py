"""Catalog CSV reading, validation and the tag vocabulary.

A catalog is a CSV with one row per track. Required columns: `track_id` and
`path` (relative to the audio root, absolute, or a URI such as `gs://...`).
Optional columns: `artist`, `album`, `title`, `tags` (`|`-separated),
`split` (`train`, `valid` or `test`; wins over computed splits) and
`duration_s` (when given, audio that decodes much shorter is rejected as
truncated). Other columns are ignored.

Malformed rows are not fatal: they become `Rejection`s, so that every row of
the catalog is accounted for as written or rejected.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import io
import os
import posixpath
from collections.abc import Iterator

from intake.rejections import Rejection
from tfrecords.splits import SPLITS

REQUIRED_COLUMNS = ("track_id", "path")
TAG_SEPARATOR = "|"


class CatalogError(ValueError):
    """A catalog that cannot be read at all (as opposed to a bad row)."""


@dataclasses.dataclass(frozen=True)
class CatalogEntry:
    """One valid catalog row.

    Attributes:
        row: The line of the catalog file the row starts on (1-based, the
            header is line 1, blank lines count): what an editor shows.
        track_id: Unique id of the track.
        path: The audio path as written in the catalog.
        uri: The resolved location of the audio file.
        artist: Artist name ('' when unknown).
        album: Album name ('' when unknown).
        title: Track title ('' when unknown).
        tags: The row's tags in catalog order, without duplicates.
        split: The split given in the catalog, or None.
        duration_s: The duration the catalog announces, or None.
    """

    row: int
    track_id: str
    path: str
    uri: str
    artist: str = ""
    album: str = ""
    title: str = ""
    tags: tuple[str, ...] = ()
    split: str | None = None
    duration_s: float | None = None


@dataclasses.dataclass(frozen=True)
class Catalog:
    """A parsed catalog.

    Attributes:
        source: Where the catalog was read from.
        sha256: Hash of the catalog file's bytes.
        num_rows: Number of data rows in the file (blank lines are none).
        entries: The valid rows.
        rejections: The invalid rows, with reasons.
        audio_root: The directory relative audio paths were resolved against.
        format: `csv` (this module), `folder` (`intake.folder_catalog`) or `mtat` (`data_prep.mtat`).
        skipped: For a folder, the files that are no catalog rows, counted by kind (hidden, or by extension).
    """

    source: str
    sha256: str
    num_rows: int
    entries: tuple[CatalogEntry, ...]
    rejections: tuple[Rejection, ...]
    audio_root: str = ""
    format: str = "csv"
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)


def is_local(path: str) -> bool:
    """A path of this machine's file system (no `scheme://`, or `file://`): read without Beam."""
    return "://" not in path or path.startswith("file://")


def is_local_file(path: str) -> bool:
    """A local path (`is_local`) naming a file that exists: what a flag for a folder must not name."""
    return is_local(path) and os.path.isfile(path.removeprefix("file://"))


def read_text(path: str) -> bytes:
    """Reads a whole file: a local one directly, a URI (gs://, s3://, ...) through Beam's filesystems."""
    if is_local(path):
        with open(path.removeprefix("file://"), "rb") as handle:
            return handle.read()
    from apache_beam.io.filesystems import FileSystems  # Only for URIs: binaries start without Beam.

    with FileSystems.open(path, compression_type="uncompressed") as handle:
        return handle.read()


def resolve_audio_uri(path: str, audio_root: str) -> str:
    """Resolves a catalog path against the audio root.

    Absolute paths and URIs (`scheme://...`) are returned unchanged.
    """
    if "://" in path or posixpath.isabs(path):
        return path
    if not audio_root:
        return path
    if is_local(audio_root):
        return os.path.join(audio_root, path)
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.join(audio_root, path)


def parse_tags(value: str) -> tuple[str, ...]:
    """Splits a `|`-separated tag string; strips blanks and duplicates."""
    tags = []
    for tag in value.split(TAG_SEPARATOR):
        tag = tag.strip()
        if tag and tag not in tags:
            tags.append(tag)
    return tuple(tags)


def parse_catalog(text: bytes, source: str, audio_root: str) -> Catalog:
    """Parses and validates catalog CSV bytes.

    Args:
        text: The CSV file's bytes (UTF-8, optionally with a BOM).
        source: Where the bytes came from, for messages.
        audio_root: Directory that relative paths are resolved against.

    Returns:
        The catalog with its valid entries and row-level rejections.

    Raises:
        CatalogError: When the file is not UTF-8 CSV, has no header or lacks a
            required column.
    """
    try:
        decoded = text.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise CatalogError(f"{source}: not UTF-8 text ({error})") from error
    reader = csv.reader(io.StringIO(decoded, newline=""))
    try:
        return _parse_rows(reader, text, source, audio_root)
    except csv.Error as error:
        # An unclosed quote reads on to the end of the file: the field outgrows csv's limit, or the file ends.
        raise CatalogError(
            f"{source}: not valid CSV at line {reader.line_num} ({error}); is a quote left open on or before that line?"
        ) from error


def _records(reader) -> Iterator[tuple[int, list[str]]]:
    """Each non-blank record with the file line it starts on (1-based: what an editor or a spreadsheet shows)."""
    line = reader.line_num + 1
    for values in reader:
        if values:  # csv gives [] for a blank line; a line of empty fields is a (malformed) row.
            yield line, values
        line = reader.line_num + 1


def _parse_rows(reader, text: bytes, source: str, audio_root: str) -> Catalog:
    records = _records(reader)
    first = next(records, None)
    if first is None:
        raise CatalogError(f"{source}: the catalog is empty (no header row)")
    header = [name.strip() for name in first[1]]
    missing = [column for column in REQUIRED_COLUMNS if column not in header]
    if missing:
        raise CatalogError(f"{source}: missing required column(s) {missing}; the header has {header}")
    entries, rejections, first_row_of = [], [], {}
    num_rows = 0
    for line, values in records:
        num_rows += 1
        row = dict(zip(header, values, strict=False))
        if len(values) > len(header):
            row[None] = values[len(header) :]
        result = _parse_row(row, line, audio_root, first_row_of)
        if isinstance(result, Rejection):
            rejections.append(result)
        else:
            first_row_of[result.track_id] = line
            entries.append(result)
    return Catalog(
        source=source,
        sha256=hashlib.sha256(text).hexdigest(),
        num_rows=num_rows,
        entries=tuple(entries),
        rejections=tuple(rejections),
        audio_root=audio_root,
    )


def _parse_row(row: dict, row_number: int, audio_root: str, first_row_of: dict[str, int]) -> CatalogEntry | Rejection:
    def value(column: str) -> str:
        cell = row.get(column)
        return cell.strip() if isinstance(cell, str) else ""

    track_id, path = value("track_id"), value("path")

    def reject(reason: str, detail: str) -> Rejection:
        return Rejection(row_number, track_id, path, reason, detail)

    if None in row:
        return reject("invalid_row", f"row has {len(row[None])} more field(s) than the header")
    if not track_id:
        return reject("invalid_row", "empty track_id")
    if not path:
        return reject("invalid_row", "empty path")
    if track_id in first_row_of:
        return reject("duplicate_track_id", f"track_id {track_id!r} first appears on line {first_row_of[track_id]}")
    split = value("split") or None
    if split is not None and split not in SPLITS:
        return reject("invalid_row", f"split {split!r} is not one of {list(SPLITS)}")
    duration_s = None
    if value("duration_s"):
        try:
            duration_s = float(value("duration_s"))
        except ValueError:
            return reject("invalid_row", f"duration_s {value('duration_s')!r} is not a number")
        if not duration_s > 0:
            return reject("invalid_row", f"duration_s {duration_s} is not positive")
    return CatalogEntry(
        row=row_number,
        track_id=track_id,
        path=path,
        uri=resolve_audio_uri(path, audio_root),
        artist=value("artist"),
        album=value("album"),
        title=value("title"),
        tags=parse_tags(value("tags")),
        split=split,
        duration_s=duration_s,
    )


def read_catalog(path: str, audio_root: str | None = None) -> Catalog:
    """Reads a catalog CSV from a local path or URI, or makes one of a local folder of music.

    Args:
        path: The catalog file, or a folder (`intake.folder_catalog`).
        audio_root: Directory for relative audio paths; defaults to the
            catalog's own directory. A folder is its own audio root.

    Returns:
        The parsed catalog.

    Raises:
        CatalogError: The catalog cannot be read, or an audio root was given with a folder.
    """
    from intake import folder_catalog  # It builds on this module.

    if path.startswith("~"):  # `--data=~/Music`: the shell leaves a tilde after `=` as it is.
        path = os.path.expanduser(path)
    if folder_catalog.is_folder(path):
        if audio_root:
            raise CatalogError(f"{path} is a folder, its own audio root: give --audio_root only with a catalog CSV")
        return folder_catalog.read_folder(path)
    if "://" not in path:
        path = os.path.abspath(path)
    if audio_root is None:
        audio_root = _folder_of(path)
    try:
        data = read_text(path)
    except Exception as error:  # noqa: BLE001 - every filesystem raises its own.
        raise CatalogError(f"{path}: cannot read the catalog ({error})") from error
    return parse_catalog(data, path, audio_root)


def _folder_of(path: str) -> str:
    if is_local(path):
        return os.path.dirname(path)
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.split(path)[0]


@dataclasses.dataclass(frozen=True)
class TagVocabulary:
    """The tags that become the multi-hot label vector.

    Attributes:
        tags: The tags, in label-vector order.
        out_of_vocabulary: Tag occurrences dropped because their tag is not
            in the vocabulary, per tag.
    """

    tags: tuple[str, ...]
    out_of_vocabulary: dict[str, int]

    def index(self) -> dict[str, int]:
        return {tag: i for i, tag in enumerate(self.tags)}


def build_vocabulary(
    entries: tuple[CatalogEntry, ...] | list[CatalogEntry],
    min_count: int = 1,
    max_tags: int | None = None,
    given: list[str] | None = None,
) -> TagVocabulary:
    """Chooses the tag vocabulary.

    Args:
        entries: The catalog entries.
        min_count: Tags on fewer tracks are left out.
        max_tags: Keep at most this many of the most frequent tags.
        given: A fixed vocabulary (e.g. the MagnaTagATune top 50); overrides
            `min_count` and `max_tags`.

    Returns:
        The vocabulary, most frequent tag first (ties by name) unless given,
        and the counts of dropped tag occurrences.
    """
    counts = collections.Counter(tag for entry in entries for tag in entry.tags)
    if given is not None:
        if len(set(given)) != len(given):
            raise ValueError("the given tag vocabulary has duplicate tags")
        tags = tuple(given)
    else:
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        tags = tuple(tag for tag, count in ranked if count >= min_count)
        if max_tags is not None:
            tags = tags[:max_tags]
    kept = set(tags)
    dropped = {tag: count for tag, count in sorted(counts.items()) if tag not in kept}
    return TagVocabulary(tags=tags, out_of_vocabulary=dropped)


def reject_untagged(
    entries: list[CatalogEntry], vocabulary: TagVocabulary
) -> tuple[list[CatalogEntry], list[Rejection]]:
    """Separates entries with at least one vocabulary tag from the others."""
    kept, rejected = [], []
    known = set(vocabulary.tags)
    for entry in entries:
        if any(tag in known for tag in entry.tags):
            kept.append(entry)
        else:
            detail = (
                f"tags {list(entry.tags)} are not in the vocabulary"
                if entry.tags
                else "the row has no tags (--norequire_tags keeps such rows, for training without tags)"
            )
            rejected.append(Rejection(entry.row, entry.track_id, entry.path, "no_usable_tag", detail))
    return kept, rejected
