"""Rejected catalog rows: the one rejection-record format, its reasons, and the `rejected.csv` report.

Every stage that reads a catalog (preprocessing, catalog embedding) reports
what it could not use as `Rejection`s with a reason, and writes them as
`rejected.csv` (`REJECTED_FILENAME`) next to its output, so that rows in =
rows written + rows rejected. The reasons of catalog rows and of their audio
are defined here; a later stage adds its own with `register_reasons`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json

REJECTED_FILENAME = "rejected.csv"

# The reasons a catalog row or its audio can be rejected, with what each means.
REASONS = {
    "invalid_row": "the catalog row itself is malformed (empty id or path, bad split or duration)",
    "duplicate_track_id": "an earlier catalog row has the same track_id",
    "no_usable_tag": "none of the row's tags is in the tag vocabulary",
    "missing_file": "the audio file does not exist",
    "unreadable_file": "the audio file exists but cannot be read",
    "empty": "the file has no bytes or decodes to no samples",
    "decode_error": "neither libsndfile nor FFmpeg can decode the file",
    "truncated": "the file decodes to fewer samples than its header or the catalog announces",
    "too_short": "the audio is shorter than the minimum duration",
    "silent": "the audio's peak level is below the silence threshold",
    "non_finite": "the decoded samples or the log-mel contain NaN or infinity",
}


def register_reasons(reasons: dict[str, str]) -> None:
    """Adds a later stage's own rejection reasons (with their meanings) to `REASONS`.

    Raises:
        ValueError: A reason already registered with another meaning.
    """
    for reason, meaning in reasons.items():
        if REASONS.get(reason, meaning) != meaning:
            raise ValueError(f"rejection reason {reason!r} is already registered as {REASONS[reason]!r}")
        REASONS[reason] = meaning


CSV_COLUMNS = ("row", "track_id", "path", "reason", "detail")


@dataclasses.dataclass(frozen=True)
class Rejection:
    """One catalog row that did not make it into the dataset.

    Attributes:
        row: The catalog line the row starts on (1-based, the header is line
            1, blank lines count): what an editor or a spreadsheet shows.
        track_id: The row's track id (may be empty for malformed rows).
        path: The row's audio path as written in the catalog.
        reason: One of `REASONS`.
        detail: A human-readable explanation naming the offending value.
    """

    row: int
    track_id: str
    path: str
    reason: str
    detail: str

    def __post_init__(self):
        if self.reason not in REASONS:
            raise ValueError(f"unknown rejection reason {self.reason!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """One line of JSON (how Beam jobs stage rejections)."""
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> Rejection:
        return cls(**json.loads(line))


def rejections_to_csv(rejections: list[Rejection]) -> str:
    """Renders rejections, ordered by catalog row, as CSV text."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for rejection in sorted(rejections, key=lambda r: (r.row, r.track_id)):
        writer.writerow(rejection.to_dict())
    return buffer.getvalue()


def rejections_from_csv(text: str) -> list[Rejection]:
    """Parses the output of `rejections_to_csv`."""
    rows = csv.DictReader(io.StringIO(text))
    return [Rejection(int(r["row"]), r["track_id"], r["path"], r["reason"], r["detail"]) for r in rows]
