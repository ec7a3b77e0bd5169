"""Collects tracks, artist genres and audio features from the Web API.

Tracks come from playlists (`GET /playlists/{id}/items`), a search
(`GET /search?type=track`) and lists of track ids (`GET /tracks?ids=`), all
paginated through the responses' `next` URLs, in that order and without
duplicates. Artist genres are fetched in batches of 50 ids
(`GET /artists?ids=`), audio features in batches of 100
(`GET /audio-features?ids=`).

Spotify closed several endpoints and fields to new applications (November
2024: audio features, preview URLs in many responses, Spotify-owned editorial
and algorithmic playlists; February 2026 for development-mode apps: the
several-ids endpoints `/tracks` and `/artists`). Those refusals are not
fatal: a playlist that answers 403/404 is reported and skipped, a refused
batch endpoint falls back to one request per id, and tracks keep an `Issue`
that says why they have no features or genres. Rate limits, 5xx errors that
outlast the retries and refusals of the search raise `ApiError`.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import logging
import re
import urllib.parse
from collections.abc import Iterable, Sequence

from data_prep.spotify.client import MAX_ARTIST_IDS, MAX_AUDIO_FEATURE_IDS, MAX_TRACK_IDS, ApiError, SpotifyApi
from intake.catalog import TAG_SEPARATOR, read_text

_TRACK_URI = re.compile(r"^spotify:track:([0-9A-Za-z]+)$")
_TRACK_URL = re.compile(r"^(?:https?://)?open\.spotify\.com/(?:intl-[\w-]+/)?track/([0-9A-Za-z]+)(?:[?#].*)?$")
_BASE62 = re.compile(r"^[0-9A-Za-z]+$")

# What an issue's reason means, for the report.
FEATURE_REASONS = {
    "audio_features_unavailable": "GET /audio-features was refused (closed to apps created after 27 Nov 2024)",
    "audio_features_missing": "Spotify returned null features for the track",
}
GENRE_REASONS = {
    "artist_genres_unavailable": "the artists endpoints were refused, so the artists' genres are unknown",
    "artists_without_genres": "Spotify lists no genres for any of the track's artists",
}
EDITORIAL_PLAYLIST_HINT = (
    "Spotify-owned editorial and algorithmic playlists answer 404 to apps created after 27 Nov 2024"
)


@dataclasses.dataclass(frozen=True)
class Issue:
    """Why a track lacks something: a reason code and a human-readable detail."""

    reason: str
    detail: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Sources:
    """Where tracks are collected from.

    Attributes:
        playlists: Playlist ids, URIs or URLs.
        search: A track search query (e.g. `genre:jazz year:2020`), or None.
        track_ids: Track ids, URIs or URLs.
    """

    playlists: tuple[str, ...] = ()
    search: str | None = None
    track_ids: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        return not (self.playlists or self.search or self.track_ids)


@dataclasses.dataclass(frozen=True)
class Track:
    """The metadata of one collected track.

    Attributes:
        track_id: The Spotify track id.
        name: The track's title.
        artist_ids: The artists' Spotify ids, in credit order.
        artist_names: The artists' names, in credit order.
        album: The album's name.
        release_date: The album's release date as Spotify gives it
            (`YYYY`, `YYYY-MM` or `YYYY-MM-DD`), or ''.
        popularity: Spotify's popularity (0-100), or None when absent.
        isrc: The ISRC from `external_ids`, or None.
        duration_ms: The full track's duration.
        preview_url: The 30 s preview MP3's URL without its `cid` parameter, or None.
        sources: The sources the track was found in (`playlist:ID`, `search`, `tracks_csv`).
    """

    track_id: str
    name: str
    artist_ids: tuple[str, ...]
    artist_names: tuple[str, ...]
    album: str
    release_date: str
    popularity: int | None
    isrc: str | None
    duration_ms: int | None
    preview_url: str | None
    sources: tuple[str, ...]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Collection:
    """Everything collected from the API.

    Attributes:
        tracks: The unique tracks, in collection order.
        raw_tracks: The API's track objects by track id.
        raw_artists: The API's artist objects by artist id.
        audio_features: The API's audio-features objects by track id.
        genres: Each track's artist genres, in credit order, without duplicates.
        feature_issues: Why tracks have no audio features.
        genre_issues: Why tracks have no genres.
        sources: A report per source (playlist, search, track list).
        errors: The refused requests the collection continued after.
    """

    tracks: list[Track] = dataclasses.field(default_factory=list)
    raw_tracks: dict[str, dict] = dataclasses.field(default_factory=dict)
    raw_artists: dict[str, dict] = dataclasses.field(default_factory=dict)
    audio_features: dict[str, dict] = dataclasses.field(default_factory=dict)
    genres: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    feature_issues: dict[str, Issue] = dataclasses.field(default_factory=dict)
    genre_issues: dict[str, Issue] = dataclasses.field(default_factory=dict)
    sources: list[dict] = dataclasses.field(default_factory=list)
    errors: list[dict] = dataclasses.field(default_factory=list)

    def raw_dump(self) -> dict:
        """What the API returned, for `spotify_raw.json`."""
        return {
            "sources": self.sources,
            "tracks": self.raw_tracks,
            "artists": self.raw_artists,
            "audio_features": self.audio_features,
            "errors": self.errors,
        }


def parse_track_id(value: str) -> str:
    """A track id from an id, a `spotify:track:` URI or an open.spotify.com URL.

    Raises:
        ValueError: For anything else.
    """
    value = value.strip()
    for pattern in (_TRACK_URI, _TRACK_URL):
        match = pattern.match(value)
        if match:
            return match.group(1)
    if _BASE62.match(value):
        return value
    raise ValueError(f"{value!r} is not a Spotify track id, URI or URL")


def read_csv_text(path: str) -> str:
    """A UTF-8 CSV file's text (local path or URI).

    Raises:
        ValueError: When the file cannot be read or is not UTF-8.
    """
    try:
        return read_text(path).decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error})") from None
    except Exception as error:  # noqa: BLE001 - every filesystem raises its own.
        raise ValueError(f"{path}: cannot read the file ({error})") from None


def read_track_ids_csv(path: str) -> list[str]:
    """The `track_id` column of a CSV file (ids, URIs or URLs), in file order.

    Raises:
        ValueError: When the file cannot be read or has no `track_id` column.
    """
    text = read_csv_text(path)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [name.strip() for name in reader.fieldnames or []]
    if "track_id" not in header:
        raise ValueError(f"{path}: needs a track_id column; the header has {header}")
    reader.fieldnames = header
    return [row["track_id"].strip() for row in reader if (row.get("track_id") or "").strip()]


def _batches(items: Sequence[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def preview_url_without_client_id(url: str | None) -> str | None:
    """Drops the `cid` query parameter (the requesting app's client id) from a preview URL.

    The preview is served without it, and the client id then stays out of the
    URLs that are requested, logged (urllib3 logs them at DEBUG) and written.
    """
    if not url:
        return None
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k != "cid"]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def track_from_object(track: dict, source: str) -> Track:
    """A `Track` from a Web API track object (full or as in playlist items)."""
    album = track.get("album") or {}
    artists = [artist for artist in track.get("artists") or [] if artist]
    popularity = track.get("popularity")
    return Track(
        track_id=track["id"],
        name=track.get("name") or "",
        artist_ids=tuple(artist.get("id") or "" for artist in artists),
        artist_names=tuple(artist.get("name") or "" for artist in artists),
        album=album.get("name") or "",
        release_date=album.get("release_date") or "",
        popularity=int(popularity) if isinstance(popularity, (int, float)) else None,
        isrc=((track.get("external_ids") or {}).get("isrc") or None),
        duration_ms=track.get("duration_ms"),
        preview_url=preview_url_without_client_id(track.get("preview_url")),
        sources=(source,),
    )


class _Collector:
    """Accumulates unique tracks up to a maximum."""

    def __init__(self, collection: Collection, max_tracks: int | None):
        self._collection = collection
        self._max_tracks = max_tracks
        self._index: dict[str, int] = {}

    @property
    def full(self) -> bool:
        return self._max_tracks is not None and len(self._index) >= self._max_tracks

    def add(self, track: dict | None, source: str, counts: collections.Counter) -> None:
        """Adds a track object, or counts why it is skipped."""
        if not track:
            counts["skipped_unavailable"] += 1
        elif track.get("type", "track") != "track":
            counts["skipped_not_a_track"] += 1
        elif track.get("is_local") or not track.get("id"):
            counts["skipped_local_file"] += 1
        elif track["id"] in self._index:
            position = self._index[track["id"]]
            known = self._collection.tracks[position]
            if source not in known.sources:
                self._collection.tracks[position] = dataclasses.replace(known, sources=known.sources + (source,))
            counts["duplicates"] += 1
        elif not self.full:
            self._index[track["id"]] = len(self._collection.tracks)
            self._collection.tracks.append(track_from_object(track, source))
            self._collection.raw_tracks[track["id"]] = track
            counts["new_tracks"] += 1
        else:
            counts["over_max_tracks"] += 1


def _record_error(collection: Collection, error: ApiError, note: str = "") -> dict:
    entry = error.to_dict()
    if note:
        entry["note"] = note
    collection.errors.append(entry)
    logging.warning("%s%s", error, f" ({note})" if note else "")
    return entry


def _collect_playlist(api: SpotifyApi, playlist: str, page_size: int, collector: _Collector, collection: Collection):
    counts = collections.Counter()
    report = {"source": "playlist", "id": playlist, "status": "ok"}
    try:
        for page in api.playlist_item_pages(playlist, page_size):
            counts["pages"] += 1
            for item in page.get("items") or []:
                counts["items"] += 1
                # The February 2026 API renames a playlist item's `track` to `item`.
                track = item.get("item") if item.get("item") is not None else item.get("track")
                if track is not None and item.get("is_local"):
                    track = {**track, "is_local": True}
                collector.add(track, f"playlist:{playlist}", counts)
            if collector.full:
                break
    except ApiError as error:
        if error.status not in (400, 403, 404):
            raise
        note = EDITORIAL_PLAYLIST_HINT if error.status == 404 else "the playlist is not accessible to this app"
        report.update(status="unavailable", error=_record_error(collection, error, note))
    report.update(dict(sorted(counts.items())))
    collection.sources.append(report)


def _collect_search(api: SpotifyApi, query: str, page_size: int, collector: _Collector, collection: Collection):
    counts = collections.Counter()
    for page in api.search_track_pages(query, page_size):
        counts["pages"] += 1
        for track in page.get("items") or []:
            counts["items"] += 1
            collector.add(track, "search", counts)
        if collector.full:
            break
    collection.sources.append({"source": "search", "query": query, "status": "ok", **dict(sorted(counts.items()))})


def _collect_track_ids(api: SpotifyApi, values: Sequence[str], collector: _Collector, collection: Collection):
    counts = collections.Counter()
    ids = []
    for value in values:
        try:
            ids.append(parse_track_id(value))
        except ValueError as error:
            counts["invalid_ids"] += 1
            logging.warning("tracks_csv: %s", error)
    unknown = []
    batch_refused = None
    for batch in _batches(ids, MAX_TRACK_IDS):
        if collector.full:
            break
        if batch_refused is None:
            try:
                objects = api.tracks(batch)
            except ApiError as error:
                if error.status != 403:
                    raise
                batch_refused = _record_error(collection, error, "falling back to GET /tracks/{id} per track")
        if batch_refused is not None:
            objects = []
            for track_id in batch:
                try:
                    objects.append(api.track(track_id))
                except ApiError as error:
                    if error.status not in (400, 404):
                        raise
                    objects.append(None)
        for track_id, track in zip(batch, objects, strict=True):
            counts["items"] += 1
            if track is None:
                unknown.append(track_id)
            collector.add(track, "tracks_csv", counts)
    report = {"source": "tracks_csv", "status": "ok", **dict(sorted(counts.items()))}
    if unknown:
        report["unknown_ids"] = unknown
    collection.sources.append(report)


def _fetch_artists(api: SpotifyApi, artist_ids: list[str], batch_size: int, collection: Collection) -> dict[str, Issue]:
    """Fills `collection.raw_artists`; returns why the other artists are unknown."""
    unavailable: dict[str, Issue] = {}
    batch_refused = None
    for batch in _batches(artist_ids, batch_size):
        if batch_refused is None:
            try:
                for artist_id, artist in zip(batch, api.artists(batch), strict=True):
                    if artist:
                        collection.raw_artists[artist.get("id") or artist_id] = artist
                continue
            except ApiError as error:
                if not 400 <= (error.status or 0) < 500:
                    raise
                batch_refused = _record_error(collection, error, "falling back to GET /artists/{id} per artist")
        for position, artist_id in enumerate(batch):
            try:
                collection.raw_artists[artist_id] = api.artist(artist_id)
            except ApiError as error:
                if not 400 <= (error.status or 0) < 500:
                    raise
                if error.status == 404:
                    continue
                _record_error(collection, error, "genres unavailable for the remaining artists")
                detail = f"{batch_refused['request']} and {error.what} refused (HTTP {error.status}: {error.message})"
                remaining = batch[position:] + artist_ids[artist_ids.index(batch[-1]) + 1 :]
                unavailable.update({a: Issue("artist_genres_unavailable", detail) for a in remaining})
                return unavailable
    return unavailable


def _assign_genres(collection: Collection, unavailable: dict[str, Issue]):
    for track in collection.tracks:
        genres = []
        for artist_id in track.artist_ids:
            for genre in (collection.raw_artists.get(artist_id) or {}).get("genres") or []:
                genre = genre.strip().replace(TAG_SEPARATOR, "/")
                if genre and genre not in genres:
                    genres.append(genre)
        collection.genres[track.track_id] = tuple(genres)
        if genres:
            continue
        refused = [unavailable[a] for a in track.artist_ids if a in unavailable]
        if refused:
            collection.genre_issues[track.track_id] = refused[0]
        else:
            names = ", ".join(track.artist_names) or "no credited artist"
            collection.genre_issues[track.track_id] = Issue("artists_without_genres", f"no genres for {names}")


def _fetch_audio_features(api: SpotifyApi, batch_size: int, collection: Collection):
    track_ids = [track.track_id for track in collection.tracks]
    for start, batch in zip(range(0, len(track_ids), batch_size), _batches(track_ids, batch_size), strict=True):
        try:
            results = api.audio_features(batch)
        except ApiError as error:
            if not 400 <= (error.status or 0) < 500:
                raise
            _record_error(collection, error, "continuing without audio features")
            issue = Issue("audio_features_unavailable", f"{error.what} refused (HTTP {error.status}: {error.message})")
            collection.feature_issues.update({t: issue for t in track_ids[start:]})
            return
        by_id = {features["id"]: features for features in results or [] if features and features.get("id")}
        for track_id in batch:
            if track_id in by_id:
                collection.audio_features[track_id] = by_id[track_id]
            else:
                collection.feature_issues[track_id] = Issue("audio_features_missing", "Spotify returned null features")


def collect(
    api: SpotifyApi,
    sources: Sources,
    max_tracks: int | None = None,
    playlist_page_size: int = 50,
    search_page_size: int = 10,
    artist_batch_size: int = MAX_ARTIST_IDS,
    features_batch_size: int = MAX_AUDIO_FEATURE_IDS,
) -> Collection:
    """Collects tracks, then their artists' genres and their audio features.

    Args:
        api: The Web API client.
        sources: Playlists, a search query and track ids.
        max_tracks: Stop after this many unique tracks.
        playlist_page_size: Items per playlist page (the API allows 1-50).
        search_page_size: Tracks per search page (10 is the most that
            development-mode apps may ask for since February 2026).
        artist_batch_size: Ids per `/artists` request (at most 50).
        features_batch_size: Ids per `/audio-features` request (at most 100).

    Returns:
        The collection.

    Raises:
        ApiError: On rate limits, server errors or refused searches.
    """
    if sources.is_empty():
        raise ValueError("no source: give playlists, a search query or track ids")
    collection = Collection()
    collector = _Collector(collection, max_tracks)
    for playlist in sources.playlists:
        if not collector.full:
            _collect_playlist(api, playlist, playlist_page_size, collector, collection)
    if sources.search and not collector.full:
        _collect_search(api, sources.search, search_page_size, collector, collection)
    if sources.track_ids and not collector.full:
        _collect_track_ids(api, sources.track_ids, collector, collection)
    logging.info("Collected %d tracks", len(collection.tracks))
    artist_ids = list(dict.fromkeys(a for track in collection.tracks for a in track.artist_ids if a))
    unavailable = _fetch_artists(api, artist_ids, artist_batch_size, collection) if artist_ids else {}
    _assign_genres(collection, unavailable)
    if collection.tracks:
        _fetch_audio_features(api, features_batch_size, collection)
    return collection
