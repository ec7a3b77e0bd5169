"""Builds a catalog directory from the Spotify Web API, end to end.

Steps: read the optional local-audio index (so that a bad file fails before
any request), authenticate, collect tracks, genres and audio features, dump
what the API returned, fetch every track's audio (preview download, else a
local file), assign artist-disjoint splits with `data_prep.splits`, derive
the labels on the training split, and write:

- `catalog.csv`: the tracks that have audio, in the format of
  `intake.catalog` (paths relative to the directory for previews,
  absolute for local files; `split` given, so `python -m data_prep` keeps
  these splits; `duration_s` is the decoded audio's, not the full track's);
- `missing.csv`: every other track with the reason it has no audio;
- `spotify_raw.json`: the track, artist and audio-features objects and the
  refused requests;
- `labels.json` and `vocabulary.txt`: the label derivation and the tags in
  label order (for `python -m data_prep --vocabulary=...`);
- `report.json`: the availability report (`data_prep.spotify.report`).
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import io
import json
import logging
import os

from data_prep.splits import assign_splits
from data_prep.spotify import collect as collect_lib
from data_prep.spotify import labels as labels_lib
from data_prep.spotify import report as report_lib
from data_prep.spotify.client import SpotifyApi
from data_prep.spotify.collect import Collection, Issue, Sources, Track
from data_prep.spotify.download import AudioResult, PreviewDownloader, verify_audio
from data_prep.spotify.local_audio import LocalAudio, read_local_audio
from data_prep.spotify.retry import RetryPolicy
from intake import audio
from intake.catalog import CatalogEntry

AUDIO_DIRNAME = "audio"
CATALOG_FILENAME = "catalog.csv"
MISSING_FILENAME = "missing.csv"
RAW_FILENAME = "spotify_raw.json"
LABELS_FILENAME = "labels.json"
VOCABULARY_FILENAME = "vocabulary.txt"
REPORT_FILENAME = "report.json"
CATALOG_COLUMNS = (
    "track_id",
    "path",
    "title",
    "artist",
    "album",
    "tags",
    "split",
    "duration_s",
    "artist_ids",
    "isrc",
    "release_date",
    "popularity",
    "audio_source",
)
MISSING_COLUMNS = ("track_id", "title", "artist", "isrc", "preview_url", "reason", "detail")
SPLIT_BY_CHOICES = ("artist", "track")


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """Settings of a catalog build.

    Attributes:
        output_dir: The catalog directory (local).
        sources: Where tracks come from.
        labels: `spotify_features`, `genres` or `both`.
        top_genres: Size of the genre vocabulary.
        max_tracks: Stop collecting after this many unique tracks.
        local_audio: CSV of local files for tracks without previews, or None.
        download_workers: Concurrent preview downloads.
        download_timeout_s: Connect timeout and longest pause in a download.
        split_by: `artist` (artist-disjoint by the first credited artist) or `track`.
        split_fractions: Target fractions of train, valid and test.
        seed: Seed of the split assignment.
        playlist_page_size: Items per playlist page.
        search_page_size: Tracks per search page.
        artist_batch_size: Ids per `/artists` request.
        features_batch_size: Ids per `/audio-features` request.
    """

    output_dir: str
    sources: Sources
    labels: str = "both"
    top_genres: int = 50
    max_tracks: int | None = None
    local_audio: str | None = None
    download_workers: int = 8
    download_timeout_s: float = 30.0
    split_by: str = "artist"
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    playlist_page_size: int = 50
    search_page_size: int = 10
    artist_batch_size: int = 50
    features_batch_size: int = 100

    def __post_init__(self):
        if self.labels not in labels_lib.LABEL_CHOICES:
            raise ValueError(f"labels must be one of {labels_lib.LABEL_CHOICES}, got {self.labels!r}")
        if self.split_by not in SPLIT_BY_CHOICES:
            raise ValueError(f"split_by must be one of {SPLIT_BY_CHOICES}, got {self.split_by!r}")
        if self.download_workers < 1:
            raise ValueError("download_workers must be at least 1")
        if self.max_tracks is not None and self.max_tracks < 1:
            raise ValueError("max_tracks must be at least 1")
        if self.sources.is_empty():
            raise ValueError("no source: give playlists, a search query or track ids")


@dataclasses.dataclass(frozen=True)
class BuildResult:
    """The outcome of a build: the report and the files written."""

    report: dict
    output_dir: str

    def path(self, filename: str) -> str:
        return os.path.join(self.output_dir, filename)


def _write_atomically(path: str, text: str):
    """Writes through a temporary file, so that a file is complete or absent."""
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
    os.replace(temporary, path)


def _json_text(data) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _csv_text(columns: tuple[str, ...], rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _audio_for(track: Track, downloader: PreviewDownloader, local: LocalAudio | None) -> AudioResult:
    """The preview if it downloads and decodes, else a matching local file."""
    preview = downloader.fetch(track.track_id, track.preview_url) if track.preview_url else None
    if preview is not None and preview.path:
        return preview
    match = local.find(track) if local else None
    if match:
        path, matched_by = match
        try:
            return AudioResult(track.track_id, path, "local", "local", verify_audio(path), matched_by=matched_by)
        except audio.AudioError as error:
            detail = f"{path} ({matched_by} match): {error.reason}: {error.detail}"
            if preview is not None:
                detail += f"; the preview failed too ({preview.issue.reason}: {preview.issue.detail})"
            issue = Issue("local_audio_unusable", detail)
            return AudioResult(
                track.track_id, None, None, "failed", issue=issue, attempts=preview.attempts if preview else 0
            )
    if preview is not None:
        return preview
    return AudioResult(track.track_id, None, None, "failed", issue=Issue("no_preview_url", "preview_url is null"))


def gather_audio(
    tracks: list[Track], downloader: PreviewDownloader, local: LocalAudio | None, workers: int
) -> dict[str, AudioResult]:
    """Fetches every track's audio with a bounded pool of threads."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="preview") as pool:
        results = list(pool.map(lambda track: _audio_for(track, downloader, local), tracks))
    return {result.track_id: result for result in results}


def _catalog_path(result: AudioResult) -> str:
    if result.source == "preview":
        return f"{AUDIO_DIRNAME}/{os.path.basename(result.path)}"
    return os.path.abspath(result.path)


def _assign_splits(tracks: list[Track], collection: Collection, config: BuildConfig) -> dict[str, str]:
    """Splits with `data_prep.splits`, grouped by first artist id, stratified on genres.

    `split_by=track` leaves the artist empty, which `data_prep.splits` groups per track.
    """
    entries = [
        CatalogEntry(
            row=row,
            track_id=track.track_id,
            path=track.track_id,
            uri=track.track_id,
            artist=track.artist_ids[0] if track.artist_ids and config.split_by == "artist" else "",
            tags=collection.genres.get(track.track_id, ()),
        )
        for row, track in enumerate(tracks, start=1)
    ]
    genres = sorted({genre for entry in entries for genre in entry.tags})
    return assign_splits(entries, genres, "artist", config.split_fractions, config.seed)


def _feature_status_without_training_features(collection: Collection) -> str:
    issues = list(collection.feature_issues.values())
    unavailable = [i for i in issues if i.reason == "audio_features_unavailable"]
    if unavailable and len(unavailable) == len(collection.tracks):
        return f"not derived: {unavailable[0].detail}"
    return "not derived: no training track has audio features"


def derive_labels(
    catalog_tracks: list[Track], split_of: dict[str, str], collection: Collection, config: BuildConfig
) -> tuple[labels_lib.FeatureLabeler | None, labels_lib.GenreLabeler | None, dict]:
    """Derives the labels on the training split.

    Returns:
        The feature labeler (or None), the genre labeler (or None), and the
        description written to `labels.json`.

    Raises:
        labels_lib.LabelError: When training features exist but too few
            distinct tempi do.
    """
    training = [t for t in catalog_tracks if split_of[t.track_id] == "train"]
    description = {
        "labels": config.labels,
        "computed_on_split": "train",
        "num_training_tracks": len(training),
        "split_by": config.split_by,
        "split_fractions": list(config.split_fractions),
        "seed": config.seed,
    }
    feature_labeler = genre_labeler = None
    if config.labels in ("spotify_features", "both"):
        training_features = [
            collection.audio_features[t.track_id] for t in training if t.track_id in collection.audio_features
        ]
        if training_features:
            feature_labeler = labels_lib.derive_feature_labeler(training_features)
            status = f"derived on {len(training_features)} training tracks with audio features"
            description["spotify_features"] = {"status": status, **feature_labeler.to_dict()}
        else:
            description["spotify_features"] = {
                "status": _feature_status_without_training_features(collection),
                "tags": [],
            }
    if config.labels in ("genres", "both"):
        genre_labeler = labels_lib.derive_genre_labeler(
            [collection.genres.get(t.track_id, ()) for t in training], config.top_genres
        )
        if genre_labeler.tags:
            status = f"top {len(genre_labeler.tags)} of the genres of {len(training)} training tracks"
        else:
            status = "not derived: no training track has artist genres"
        description["genres"] = {"status": status, **genre_labeler.to_dict()}
    vocabulary = list(feature_labeler.tags if feature_labeler else ()) + list(
        genre_labeler.tags if genre_labeler else ()
    )
    description["vocabulary"] = vocabulary
    return feature_labeler, genre_labeler, description


def _catalog_rows(catalog_tracks, audio_results, split_of, collection, feature_labeler, genre_labeler):
    rows = []
    for track in catalog_tracks:
        result = audio_results[track.track_id]
        tags = []
        features = collection.audio_features.get(track.track_id)
        if feature_labeler is not None and features is not None:
            tags += feature_labeler.tags_for(features)
        if genre_labeler is not None:
            tags += genre_labeler.tags_for(collection.genres.get(track.track_id, ()))
        rows.append(
            {
                "track_id": track.track_id,
                "path": _catalog_path(result),
                "title": track.name,
                "artist": ", ".join(track.artist_names),
                "album": track.album,
                "tags": "|".join(tags),
                "split": split_of[track.track_id],
                "duration_s": f"{result.duration_s:.3f}",
                "artist_ids": "|".join(track.artist_ids),
                "isrc": track.isrc or "",
                "release_date": track.release_date,
                "popularity": "" if track.popularity is None else track.popularity,
                "audio_source": result.source,
            }
        )
    return rows


def _missing_rows(collection: Collection, audio_results: dict[str, AudioResult]) -> list[dict]:
    return [
        {
            "track_id": track.track_id,
            "title": track.name,
            "artist": ", ".join(track.artist_names),
            "isrc": track.isrc or "",
            "preview_url": track.preview_url or "",
            "reason": audio_results[track.track_id].issue.reason,
            "detail": audio_results[track.track_id].issue.detail,
        }
        for track in collection.tracks
        if audio_results[track.track_id].path is None
    ]


def build_catalog(api: SpotifyApi, config: BuildConfig, retry: RetryPolicy | None = None) -> BuildResult:
    """Builds the catalog directory (see the module docstring).

    Args:
        api: The Web API client.
        config: The build settings.
        retry: The retry policy of the preview downloads.

    Returns:
        The report and where the files are.

    Raises:
        CredentialsError: For missing or rejected credentials.
        ApiError: On rate limits, server errors or refused searches.
        LabelError: When the feature labels cannot be derived; the raw dump,
            `missing.csv` and `report.json` (with the error) are written.
    """
    output_dir = os.path.abspath(config.output_dir)
    audio_dir = os.path.join(output_dir, AUDIO_DIRNAME)
    os.makedirs(audio_dir, exist_ok=True)
    for name in (CATALOG_FILENAME, MISSING_FILENAME, LABELS_FILENAME, VOCABULARY_FILENAME, REPORT_FILENAME):
        if os.path.exists(os.path.join(output_dir, name)):
            os.remove(os.path.join(output_dir, name))  # Never leave a previous run's outputs beside this one's.
    local = read_local_audio(config.local_audio) if config.local_audio else None

    def write(filename: str, text: str):
        _write_atomically(os.path.join(output_dir, filename), api.redact(text))

    api.authenticate()
    collection = collect_lib.collect(
        api,
        config.sources,
        max_tracks=config.max_tracks,
        playlist_page_size=config.playlist_page_size,
        search_page_size=config.search_page_size,
        artist_batch_size=config.artist_batch_size,
        features_batch_size=config.features_batch_size,
    )
    write(RAW_FILENAME, _json_text(collection.raw_dump()))

    downloader = PreviewDownloader(audio_dir, retry, config.download_timeout_s)
    logging.info("Fetching the audio of %d tracks with %d workers", len(collection.tracks), config.download_workers)
    audio_results = gather_audio(collection.tracks, downloader, local, config.download_workers)
    catalog_tracks = [t for t in collection.tracks if audio_results[t.track_id].path]
    write(MISSING_FILENAME, _csv_text(MISSING_COLUMNS, _missing_rows(collection, audio_results)))

    split_of = _assign_splits(catalog_tracks, collection, config)
    api_stats = {"requests": api.requests_made, "retries": dict(api.retries)}
    try:
        feature_labeler, genre_labeler, description = derive_labels(catalog_tracks, split_of, collection, config)
    except labels_lib.LabelError as error:
        report = report_lib.build_report(collection, audio_results, [], {"labels": config.labels}, api_stats)
        write(REPORT_FILENAME, _json_text({**report, "error": str(error)}))
        raise
    rows = _catalog_rows(catalog_tracks, audio_results, split_of, collection, feature_labeler, genre_labeler)
    write(LABELS_FILENAME, _json_text(description))
    write(VOCABULARY_FILENAME, "".join(f"{tag}\n" for tag in description["vocabulary"]))
    write(CATALOG_FILENAME, _csv_text(CATALOG_COLUMNS, rows))
    report = report_lib.build_report(collection, audio_results, rows, description, api_stats)
    write(REPORT_FILENAME, _json_text(report))
    return BuildResult(report=report, output_dir=output_dir)
