r"""Builds a music catalog from the Spotify Web API.

Usage (credentials of a Spotify app, client-credentials flow):

    export SPOTIPY_CLIENT_ID=... SPOTIPY_CLIENT_SECRET=...
    python -m data_prep.spotify --search="genre:jazz year:2020" --max_tracks=500 \
        --output_dir=/data/spotify_jazz --labels=both

then preprocess the tracks that have audio:

    python -m data_prep --catalog=/data/spotify_jazz/catalog.csv \
        --vocabulary=/data/spotify_jazz/vocabulary.txt --output_dir=/data/spotify_jazz_tfrecords

Sources combine: `--playlists=ID,URI or URL,...`, `--search=QUERY` and
`--tracks_csv=FILE` (a `track_id` column). Tracks without a usable preview
can take local files: `--local_audio=FILE` (columns `path` and `track_id`
and/or `isrc`). The command ends with an availability report (also in
`report.json`); tracks without audio are listed in `missing.csv`.
"""

from __future__ import annotations

from tf_startup import run

import logging as std_logging

from absl import app, flags, logging

from data_prep import splits
from data_prep.spotify import build, client, collect, labels
from data_prep.spotify.report import render_report
from data_prep.spotify.retry import RateLimitError, RetryPolicy

_PLAYLISTS = flags.DEFINE_list("playlists", [], "Playlist ids, URIs or URLs.")
_SEARCH = flags.DEFINE_string("search", None, 'Track search query, e.g. "genre:jazz year:2020".')
_TRACKS_CSV = flags.DEFINE_string("tracks_csv", None, "CSV with a track_id column (ids, URIs or URLs).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "The catalog directory.", required=True)
_LABELS = flags.DEFINE_enum(
    "labels",
    "both",
    labels.LABEL_CHOICES,
    "Tags: the 32 audio-feature tags, the top artist genres, or both (audio features are closed to "
    "apps created after Nov 2024, so `both` still tags tracks by genre then).",
)
_TOP_GENRES = flags.DEFINE_integer("top_genres", 50, "Size of the genre vocabulary.")
_MAX_TRACKS = flags.DEFINE_integer("max_tracks", None, "Stop after this many unique tracks.")
_MARKET = flags.DEFINE_string("market", None, "ISO 3166-1 alpha-2 market for track relinking, e.g. US.")
_LOCAL_AUDIO = flags.DEFINE_string(
    "local_audio", None, "CSV of local audio for tracks without a usable preview: path and track_id and/or isrc."
)
_DOWNLOAD_WORKERS = flags.DEFINE_integer("download_workers", 8, "Concurrent preview downloads.")
_DOWNLOAD_TIMEOUT_S = flags.DEFINE_float("download_timeout_s", 30.0, "Connect timeout and longest stall of a download.")
_SPLIT_BY = flags.DEFINE_enum(
    "split_by", "artist", build.SPLIT_BY_CHOICES, "Splits disjoint by first credited artist, or per track."
)
_SPLIT_FRACTIONS = flags.DEFINE_list(
    "split_fractions", ["0.8", "0.1", "0.1"], "Train, valid, test fractions: three numbers from 0 that add up to 1."
)
flags.register_validator("split_fractions", splits.check_split_fractions_flag)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the split assignment.")
_PLAYLIST_PAGE_SIZE = flags.DEFINE_integer("playlist_page_size", 50, "Items per playlist page (1-50).")
_SEARCH_PAGE_SIZE = flags.DEFINE_integer(
    "search_page_size", 10, "Tracks per search page (development-mode apps may ask for at most 10)."
)
_REQUEST_TIMEOUT_S = flags.DEFINE_float("request_timeout_s", 10.0, "Timeout of each Web API request.")
_MAX_ATTEMPTS = flags.DEFINE_integer("max_attempts", 6, "Attempts per request or download, the first included.")
_RETRY_BACKOFF_S = flags.DEFINE_float("retry_backoff_s", 1.0, "First backoff after a 5xx or network error (doubles).")
_MAX_RETRY_AFTER_S = flags.DEFINE_float(
    "max_retry_after_s", 900.0, "Longest Retry-After to wait for; a longer rate limit stops the command."
)
_API_BASE = flags.DEFINE_string("api_base", client.API_BASE, "Web API base URL.")
_TOKEN_URL = flags.DEFINE_string("token_url", client.TOKEN_URL, "Accounts service token URL.")


def _config() -> build.BuildConfig:
    track_ids = tuple(collect.read_track_ids_csv(_TRACKS_CSV.value)) if _TRACKS_CSV.value else ()
    sources = collect.Sources(playlists=tuple(_PLAYLISTS.value), search=_SEARCH.value or None, track_ids=track_ids)
    if sources.is_empty():
        raise app.UsageError("give at least one of --playlists, --search and --tracks_csv")
    return build.BuildConfig(
        output_dir=_OUTPUT_DIR.value,
        sources=sources,
        labels=_LABELS.value,
        top_genres=_TOP_GENRES.value,
        max_tracks=_MAX_TRACKS.value,
        local_audio=_LOCAL_AUDIO.value,
        download_workers=_DOWNLOAD_WORKERS.value,
        download_timeout_s=_DOWNLOAD_TIMEOUT_S.value,
        split_by=_SPLIT_BY.value,
        split_fractions=tuple(float(f) for f in _SPLIT_FRACTIONS.value),
        seed=_SEED.value,
        playlist_page_size=_PLAYLIST_PAGE_SIZE.value,
        search_page_size=_SEARCH_PAGE_SIZE.value,
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.get_absl_handler()  # Make sure absl's handler is installed first.
    # This command reports every refused request itself; spotipy would log each as an ERROR.
    std_logging.getLogger("spotipy").setLevel(std_logging.CRITICAL)
    retry = RetryPolicy(
        max_attempts=_MAX_ATTEMPTS.value,
        backoff_s=_RETRY_BACKOFF_S.value,
        max_retry_after_s=_MAX_RETRY_AFTER_S.value,
    )
    try:
        config = _config()
        api = client.SpotifyApi(
            client.Credentials.from_environment(),
            api_base=_API_BASE.value,
            token_url=_TOKEN_URL.value,
            timeout_s=_REQUEST_TIMEOUT_S.value,
            retry=retry,
            market=_MARKET.value,
        )
        result = build.build_catalog(api, config, retry)
    except (client.CredentialsError, client.ApiError, RateLimitError, labels.LabelError, ValueError) as error:
        raise SystemExit(f"data_prep.spotify: {error}") from None
    print(render_report(result.report, result.output_dir))
    print(f"catalog: {result.path(build.CATALOG_FILENAME)}")


if __name__ == "__main__":
    run(main)
