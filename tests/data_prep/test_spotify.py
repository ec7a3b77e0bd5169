"""The Spotify catalog builder against a local fake of the Web API (no live network).

The fake (`spotify_fixtures/fake_spotify.py`) is a real HTTP server on
127.0.0.1 that serves recorded, schema-faithful Web API objects with the
API's paging envelopes, and misbehaves on cue: 429 with `Retry-After`, 5xx,
403 on `/audio-features`, 404 on an editorial playlist, null preview URLs,
a preview whose connection closes mid-body and one that is not audio.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import io
import json
import logging
import os
import pathlib
import shutil
import statistics
import subprocess
import sys

import pytest
import soundfile

from data_prep.spotify import build, client, collect
from data_prep.spotify.download import PreviewDownloader
from data_prep.spotify.local_audio import read_local_audio
from data_prep.spotify.retry import RateLimitError, RetryPolicy, parse_retry_after
from intake import catalog as catalog_lib
from tests.conftest import REPO_ROOT, tone
from tests.data_prep.spotify_fixtures.fake_spotify import ACCESS_TOKEN, DEMO_AUDIO_DIR, FakeSpotify, load_web_api

CLIENT_ID = "fixtureclientid0123456789abcdef0"
CLIENT_SECRET = "fixture-SECRET-9f8e7d6c5b4a-do-not-leak"
PLAYLIST = "3cEYpjA9oz9GiPac4AsH4n"
EDITORIAL = "37i9dQZF1DXcBWIGoYBM5M"
QUERY = "genre:jazz year:2020"
IDS = [track["id"] for track in load_web_api()["tracks"]]
DEMO = sorted(path.name for path in DEMO_AUDIO_DIR.glob("*.mp3"))
# t01-t12 have real previews, t13's connection breaks, t14's is an HTML page,
# t15-t17 have a null preview_url (t15 and t16 get local files).
PREVIEWS = {**{IDS[i]: DEMO[i] for i in range(12)}, IDS[12]: "truncated:" + DEMO[12], IDS[13]: "not_audio"}


class Sleeps(list):
    """Records the waits instead of waiting."""

    def __call__(self, seconds: float):
        self.append(seconds)


def _policy(sleeps: Sleeps, **overrides) -> RetryPolicy:
    return RetryPolicy(**{"max_attempts": 4, "backoff_s": 0.5, "sleep": sleeps, **overrides})


def _api(fake: FakeSpotify, retry: RetryPolicy, secret: str = CLIENT_SECRET) -> client.SpotifyApi:
    credentials = client.Credentials(CLIENT_ID, secret)
    return client.SpotifyApi(credentials, api_base=fake.api_base, token_url=fake.token_url, retry=retry)


def _ids_per_request(fake: FakeSpotify, path: str) -> list[int]:
    return [len(query["ids"].split(",")) for query in fake.queries(path)]


def _secrets() -> dict[str, str]:
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    return {"client secret": CLIENT_SECRET, "client id": CLIENT_ID, "basic auth": basic, "access token": ACCESS_TOKEN}


def _assert_no_secrets(name: str, data: str | bytes):
    for what, secret in _secrets().items():
        needle = secret.encode() if isinstance(data, bytes) else secret
        assert needle not in data, f"the {what} appears in {name}"


# Credentials.


def test_missing_credentials_are_named_without_values():
    with pytest.raises(client.CredentialsError, match="SPOTIPY_CLIENT_ID and SPOTIPY_CLIENT_SECRET"):
        client.Credentials.from_environment({})
    with pytest.raises(client.CredentialsError) as raised:
        client.Credentials.from_environment({"SPOTIPY_CLIENT_ID": CLIENT_ID, "SPOTIPY_CLIENT_SECRET": "  "})
    assert "set SPOTIPY_CLIENT_SECRET in the environment" in str(raised.value)
    assert CLIENT_ID not in str(raised.value)
    credentials = client.Credentials.from_environment(
        {"SPOTIPY_CLIENT_ID": CLIENT_ID, "SPOTIPY_CLIENT_SECRET": CLIENT_SECRET}
    )
    assert (credentials.client_id, credentials.client_secret) == (CLIENT_ID, CLIENT_SECRET)
    _assert_no_secrets("repr(credentials)", repr(credentials))


def test_rejected_credentials_fail_first_and_clearly():
    sleeps = Sleeps()
    with FakeSpotify(CLIENT_ID, CLIENT_SECRET) as fake:
        api = _api(fake, _policy(sleeps), secret="a-wrong-secret-value")
        with pytest.raises(client.CredentialsError, match="invalid_client") as raised:
            api.authenticate()
        assert fake.count("/v1/") == 0
    assert "a-wrong-secret-value" not in str(raised.value) and "SPOTIPY_CLIENT_SECRET" in str(raised.value)
    assert raised.value.__cause__ is None and sleeps == []


def test_unreachable_api_is_retried_then_reported():
    sleeps = Sleeps()
    credentials = client.Credentials(CLIENT_ID, CLIENT_SECRET)
    api = client.SpotifyApi(credentials, token_url="http://127.0.0.1:9/api/token", retry=_policy(sleeps))
    with pytest.raises(client.ApiError, match="network error: ConnectionError"):
        api.authenticate()
    assert sleeps == [0.5, 1.0, 2.0]  # Exponential backoff between the 4 attempts.


# Collection: pagination, duplicates, unavailable playlists, retries, batching.


@pytest.mark.parametrize("item_key", ["item", "track"])  # February 2026 renamed playlist items' `track`.
def test_pagination_follows_next_urls_across_sources(item_key):
    sleeps = Sleeps()
    with FakeSpotify(CLIENT_ID, CLIENT_SECRET) as fake:
        fake.item_key = item_key
        sources = collect.Sources(playlists=(PLAYLIST, EDITORIAL), search=QUERY)
        result = collect.collect(_api(fake, _policy(sleeps)), sources, playlist_page_size=5, search_page_size=4)
        playlist_queries = fake.queries(f"/v1/playlists/{PLAYLIST}/items")
        search_queries = fake.queries("/v1/search")
    assert [(q["offset"], q["limit"]) for q in playlist_queries] == [("0", "5"), ("5", "5"), ("10", "5")]
    assert [(q["offset"], q["limit"], q["q"]) for q in search_queries] == [
        ("0", "4", QUERY),
        ("4", "4", QUERY),
        ("8", "4", QUERY),
    ]
    assert [t.track_id for t in result.tracks] == IDS
    playlist, editorial, search = result.sources
    assert playlist == {
        "source": "playlist",
        "id": PLAYLIST,
        "status": "ok",
        "pages": 3,
        "items": 13,
        "new_tracks": 10,
        "skipped_local_file": 1,
        "skipped_not_a_track": 1,
        "skipped_unavailable": 1,
    }
    assert editorial["status"] == "unavailable" and editorial["error"]["http_status"] == 404
    assert "editorial" in editorial["error"]["note"]
    assert (search["pages"], search["items"], search["new_tracks"], search["duplicates"]) == (3, 9, 7, 2)
    t09 = result.tracks[8]
    assert t09.sources == (f"playlist:{PLAYLIST}", "search")
    assert (t09.name, t09.artist_names, t09.album) == ("Naima Stub", ("Coltrane Mock",), "Coltrane Mock Sessions")
    assert (t09.isrc, t09.popularity, t09.duration_ms, t09.release_date) == ("USFX12200009", 52, 243352, "2021-09-18")
    assert result.tracks[16].preview_url is None and t09.preview_url == f"{fake.base}/mp3-preview/{IDS[8]}"
    assert result.raw_tracks[IDS[8]]["external_ids"] == {"isrc": "USFX12200009"}
    assert sleeps == []


def test_max_tracks_stops_paging():
    with FakeSpotify(CLIENT_ID, CLIENT_SECRET) as fake:
        api = _api(fake, _policy(Sleeps()))
        result = collect.collect(
            api, collect.Sources(playlists=(PLAYLIST,), search=QUERY), max_tracks=4, playlist_page_size=5
        )
        assert fake.count(f"/v1/playlists/{PLAYLIST}/items") == 1 and fake.count("/v1/search") == 0
    assert [t.track_id for t in result.tracks] == IDS[:4]
    assert result.sources[0]["over_max_tracks"] == 1


def test_rate_limits_and_server_errors_are_retried():
    sleeps = Sleeps()
    with FakeSpotify(CLIENT_ID, CLIENT_SECRET) as fake:
        fake.fail("/v1/search", 429, headers={"Retry-After": "1"})
        fake.fail("/v1/artists", 502)
        api = _api(fake, _policy(sleeps))
        result = collect.collect(api, collect.Sources(search=QUERY), search_page_size=10)
        assert fake.count("/v1/search") == 2 and fake.count("/v1/artists") == 2
    assert sleeps == [1.0, 0.5]  # Retry-After: 1, then the first backoff.
    assert api.retries == {"429": 1, "5xx": 1, "network": 0}
    assert len(result.tracks) == 9 and len(result.raw_artists) == 6 and not result.errors


def test_long_rate_limits_and_persistent_errors_stop_the_collection():
    sleeps = Sleeps()
    with FakeSpotify(CLIENT_ID, CLIENT_SECRET) as fake:
        fake.fail("/v1/search", 429, headers={"Retry-After": "3600"})
        with pytest.raises(RateLimitError, match="wait 3600 s"):
            collect.collect(_api(fake, _policy(sleeps)), collect.Sources(search=QUERY))
        assert sleeps == []
        fake.fail("/v1/search", 503, times=10)
        with pytest.raises(client.ApiError, match="HTTP 503") as raised:
            collect.collect(_api(fake, _policy(sleeps, max_attempts=3)), collect.Sources(search=QUERY))
    assert raised.value.status == 503 and sleeps == [0.5, 1.0]


def test_parse_retry_after():
    assert parse_retry_after("7") == 7.0 and parse_retry_after(" 0 ") == 0.0 and parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412500.0) == pytest.approx(10.0)
    assert parse_retry_after("soon") is None
    assert RetryPolicy(backoff_s=1.0, max_backoff_s=5.0).backoff(4) == 5.0


def test_artists_and_audio_features_are_batched():
    with FakeSpotify(CLIENT_ID, CLIENT_SECRET) as fake:
        fake.add_search("year:1999", 120)
        api = _api(fake, _policy(Sleeps()))
        result = collect.collect(api, collect.Sources(search="year:1999"), search_page_size=10)
        assert fake.count("/v1/search") == 12
        # The API's maxima: 50 artists, 100 audio features per request.
        assert _ids_per_request(fake, "/v1/artists/") == [50, 50, 20]
        assert _ids_per_request(fake, "/v1/audio-features/") == [100, 20]
        small = collect.collect(
            api, collect.Sources(playlists=(PLAYLIST,), search=QUERY), artist_batch_size=4, features_batch_size=7
        )
        assert _ids_per_request(fake, "/v1/artists/")[3:] == [4, 4, 1]
        assert _ids_per_request(fake, "/v1/audio-features/")[2:] == [7, 7, 3]
        with pytest.raises(ValueError, match="1 to 50 ids"):
            api.artists([f"id{i}" for i in range(51)])
    assert len(result.tracks) == len(result.audio_features) == len(result.raw_artists) == 120
    assert len(small.audio_features) == 16 and small.feature_issues[IDS[11]].reason == "audio_features_missing"
    assert small.genres[IDS[5]] == ("vocal jazz", "soul jazz", "jazz", "jazz trio")  # Both artists, in order.
    assert small.genre_issues == {IDS[9]: collect.Issue("artists_without_genres", "no genres for Quiet Unknown")}


def test_refused_endpoints_fall_back_or_are_reported():
    with FakeSpotify(CLIENT_ID, CLIENT_SECRET) as fake:
        fake.features_forbidden = True
        fake.batch_forbidden = {"tracks", "artists"}
        values = (IDS[0], f"spotify:track:{IDS[1]}", f"https://open.spotify.com/track/{IDS[2]}?si=x", "0" * 22, "no!")
        api = _api(fake, _policy(Sleeps()))
        result = collect.collect(api, collect.Sources(track_ids=values))
        assert fake.count("/v1/tracks/") == 1 + 4 and fake.count("/v1/audio-features") == 1
        assert fake.count("/v1/artists/") == 1 + 2  # The refused batch, then one request per artist.
        fake.single_artist_forbidden = True
        refused = collect.collect(api, collect.Sources(track_ids=values))
        assert fake.count("/v1/artists/") == 3 + 2  # The batch and the first single request only.
    assert [t.track_id for t in result.tracks] == IDS[:3]
    assert result.sources == [
        {
            "source": "tracks_csv",
            "status": "ok",
            "items": 4,
            "invalid_ids": 1,
            "new_tracks": 3,
            "skipped_unavailable": 1,
            "unknown_ids": ["0" * 22],
        }
    ]
    assert result.genres[IDS[0]] == ("vocal jazz", "jazz")
    assert {i.reason for i in result.feature_issues.values()} == {"audio_features_unavailable"}
    assert len(result.feature_issues) == 3 and not result.audio_features
    assert [(e["request"], e["http_status"]) for e in result.errors] == [
        ("GET tracks", 403),
        ("GET artists", 403),
        ("GET audio-features", 403),
    ]
    assert {i.reason for i in refused.genre_issues.values()} == {"artist_genres_unavailable"}
    assert len(refused.genre_issues) == 3


# Downloads: resume, broken downloads, local files.


def _tracks(fake: FakeSpotify, indices) -> list[collect.Track]:
    return [collect.track_from_object(fake.track(IDS[i]), "test") for i in indices]


def test_interrupted_downloads_resume(tmp_path):
    sleeps = Sleeps()
    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    demo = [(DEMO_AUDIO_DIR / DEMO[i]).read_bytes() for i in range(3)]
    (audio_dir / f"{IDS[0]}.mp3.part").write_bytes(demo[0][:5000])  # Left by an interrupted run.
    (audio_dir / f"{IDS[1]}.mp3").write_bytes(demo[1])  # Completed by an earlier run.
    (audio_dir / f"{IDS[2]}.mp3").write_bytes(b"not an mp3 at all" * 10)  # A broken file under the final name.
    with FakeSpotify(CLIENT_ID, CLIENT_SECRET, PREVIEWS) as fake:
        downloader = PreviewDownloader(str(audio_dir), _policy(sleeps))
        results = build.gather_audio(_tracks(fake, range(3)), downloader, None, workers=3)
        requested = [fake.count(f"/mp3-preview/{IDS[i]}") for i in range(3)]
    assert requested == [1, 0, 1]
    assert [results[IDS[i]].status for i in range(3)] == ["downloaded", "existing", "downloaded"]
    for i in range(3):
        assert (audio_dir / f"{IDS[i]}.mp3").read_bytes() == demo[i]
        assert results[IDS[i]].duration_s == pytest.approx(15.0, abs=0.05)
    assert sorted(p.name for p in audio_dir.iterdir()) == [f"{IDS[i]}.mp3" for i in range(3)]
    assert sleeps == []


def test_broken_downloads_leave_nothing_under_the_final_name(tmp_path):
    sleeps = Sleeps()
    with FakeSpotify(CLIENT_ID, CLIENT_SECRET, {**PREVIEWS, IDS[14]: "cut:" + DEMO[14]}) as fake:
        fake.fail(f"/mp3-preview/{IDS[2]}", 503)
        fake.fail(f"/mp3-preview/{IDS[4]}", 429, headers={"Retry-After": "1"})
        fake.fail(f"/mp3-preview/{IDS[6]}", 429, headers={"Retry-After": "86400"})
        tracks = _tracks(fake, [2, 4, 6, 12, 13])
        tracks.append(
            dataclasses.replace(tracks[0], track_id=IDS[14], preview_url=f"{fake.base}/mp3-preview/{IDS[14]}")
        )
        # A preview URL the server does not know: 404.
        tracks.append(
            dataclasses.replace(tracks[0], track_id=IDS[15], preview_url=f"{fake.base}/mp3-preview/{IDS[15]}")
        )
        downloader = PreviewDownloader(str(tmp_path), _policy(sleeps, max_attempts=3))
        results = build.gather_audio(tracks, downloader, None, workers=4)
        counts = {i: fake.count(f"/mp3-preview/{IDS[i]}") for i in (2, 4, 6, 12, 13, 14, 15)}
    assert counts == {2: 2, 4: 2, 6: 1, 12: 3, 13: 1, 14: 1, 15: 1}
    assert results[IDS[2]].status == results[IDS[4]].status == "downloaded"
    failures = {i: (results[IDS[i]].issue.reason, results[IDS[i]].issue.detail) for i in (6, 12, 13, 14, 15)}
    assert failures[6][0] == "preview_download_failed" and "wait 86400 s" in failures[6][1]
    assert failures[12] == ("preview_download_failed", "ChunkedEncodingError after 3 attempts")
    assert failures[13][0] == "preview_not_audio" and failures[13][1].startswith("decode_error")
    assert failures[14][0] == "preview_not_audio" and failures[14][1].startswith("truncated: header announces")
    assert failures[15] == ("preview_download_failed", "HTTP 404 after 1 attempt")
    assert sorted(sleeps) == [0.5, 0.5, 1.0, 1.0]  # 503: backoff; 429: Retry-After; broken body: 0.5, 1.0.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{IDS[i]}.mp3" for i in (2, 4))


def test_local_audio_csv(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "local.csv").write_text(
        f"track_id,isrc,path\nspotify:track:{IDS[15]},,sub/a.wav\n,usfx1-22-00015,/abs/b.mp3\n{IDS[0]},USFX12000001,c.wav\n"
    )
    local = read_local_audio(str(tmp_path / "local.csv"))
    assert local.by_track_id == {IDS[15]: str(tmp_path / "sub" / "a.wav"), IDS[0]: str(tmp_path / "c.wav")}
    assert local.by_isrc == {"USFX12200015": "/abs/b.mp3", "USFX12000001": str(tmp_path / "c.wav")}
    (tmp_path / "bad.csv").write_text("isrc,file\nX,y\n")
    with pytest.raises(ValueError, match="needs a path column"):
        read_local_audio(str(tmp_path / "bad.csv"))
    (tmp_path / "twice.csv").write_text(f"track_id,path\n{IDS[0]},a\n{IDS[0]},b\n")
    with pytest.raises(ValueError, match="given twice"):
        read_local_audio(str(tmp_path / "twice.csv"))


def test_track_ids_csv(tmp_path):
    (tmp_path / "ids.csv").write_text(f"\ufeffname, track_id\nx,{IDS[0]}\ny, spotify:track:{IDS[1]} \nz,\n")
    assert collect.read_track_ids_csv(str(tmp_path / "ids.csv")) == [IDS[0], f"spotify:track:{IDS[1]}"]
    (tmp_path / "no_column.csv").write_text("id\nabc\n")
    with pytest.raises(ValueError, match="needs a track_id column"):
        collect.read_track_ids_csv(str(tmp_path / "no_column.csv"))
    with pytest.raises(ValueError, match="cannot read the file"):
        collect.read_track_ids_csv(str(tmp_path / "absent.csv"))
    assert collect.parse_track_id(f"https://open.spotify.com/intl-de/track/{IDS[2]}?si=abc") == IDS[2]
    with pytest.raises(ValueError, match="not a Spotify track id"):
        collect.parse_track_id(f"spotify:album:{IDS[2]}")


# The whole command, end to end.


def _local_audio_csv(directory: pathlib.Path) -> pathlib.Path:
    soundfile.write(directory / "round-midnight.wav", tone(3.0, 22050, frequency=330.0), 22050)
    (directory / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    rows = [
        ("", "usfx1-22-00015", "round-midnight.wav"),  # t15 by ISRC, normalised.
        (f"spotify:track:{IDS[15]}", "", str(DEMO_AUDIO_DIR / DEMO[15])),  # t16 by track id.
        (IDS[16], "", "does-not-exist.mp3"),  # t17: the given file is missing.
        (IDS[13], "", "broken.wav"),  # t14: its preview is not audio, nor is this.
    ]
    path = directory / "local_audio.csv"
    path.write_text("track_id,isrc,path\n" + "".join(",".join(row) + "\n" for row in rows))
    return path


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One run of the whole build, features available, with every kind of trouble."""
    directory = tmp_path_factory.mktemp("spotify")
    output_dir = directory / "catalog"
    local_csv = _local_audio_csv(directory)
    sleeps = Sleeps()
    capture = _Capture()
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)  # Nothing below, spotipy's DEBUG included, may log a credential.
    working_dir = directory / "cwd"  # Spotipy's default token cache would appear here as `.cache`.
    working_dir.mkdir()
    previous_dir = os.getcwd()
    os.chdir(working_dir)
    try:
        with FakeSpotify(CLIENT_ID, CLIENT_SECRET, PREVIEWS) as fake:
            fake.fail("/v1/search", 429, headers={"Retry-After": "1"})
            fake.fail("/v1/artists", 500)
            fake.fail(f"/mp3-preview/{IDS[2]}", 503)
            config = build.BuildConfig(
                output_dir=str(output_dir),
                sources=collect.Sources(playlists=(PLAYLIST, EDITORIAL), search=QUERY),
                local_audio=str(local_csv),
                playlist_page_size=5,
                search_page_size=4,
                download_workers=4,
            )
            retry = _policy(sleeps, max_attempts=3)
            result = build.build_catalog(_api(fake, retry), config, retry)
            requests_seen = list(fake.requests)
    finally:
        os.chdir(previous_dir)
        root.removeHandler(capture)
        root.setLevel(previous_level)
    assert not list(working_dir.iterdir())  # The token stays in memory.
    return result, output_dir, sleeps, capture.lines, requests_seen


def _read_csv(path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(pathlib.Path(path).read_text(encoding="utf-8"))))


def test_report_accounts_for_every_track(built):
    result, output_dir, sleeps, _, _ = built
    report = json.loads((output_dir / "report.json").read_text())
    assert report == result.report
    rows, missing = _read_csv(output_dir / "catalog.csv"), _read_csv(output_dir / "missing.csv")
    assert report["tracks_collected"] == 17 == len(rows) + len(missing)
    audio = report["audio"]
    assert (audio["with_preview_url"], audio["previews_decoded"], audio["matched_locally"]) == (14, 12, 2)
    assert (audio["previews_downloaded"], audio["previews_already_present"]) == (12, 0)
    assert (audio["with_audio"], audio["without_audio"]) == (14, 3)
    assert audio["matched_locally_by"] == {"isrc": 1, "track_id": 1}
    assert {m["track_id"]: m["reason"] for m in missing} == {
        IDS[12]: "preview_download_failed",
        IDS[13]: "local_audio_unusable",
        IDS[16]: "local_audio_unusable",
    }
    assert "does-not-exist.mp3" in missing[2]["detail"] and "missing_file" in missing[2]["detail"]
    assert "the preview failed too (preview_not_audio" in missing[1]["detail"]
    assert audio["without_audio_by_reason"] == {"local_audio_unusable": 2, "preview_download_failed": 1}
    assert report["audio_features"] == {
        "with_features": 16,
        "without_features": 1,
        "by_reason": {"audio_features_missing": 1},
    }
    assert report["genres"] == {"with_genres": 16, "without_genres": 1, "by_reason": {"artists_without_genres": 1}}
    assert report["api"]["retries"] == {"429": 1, "5xx": 1, "network": 0}
    assert [e["http_status"] for e in report["api"]["refused"]] == [404]
    assert set(report["reasons"]) == {
        "preview_download_failed",
        "local_audio_unusable",
        "audio_features_missing",
        "artists_without_genres",
    }
    assert sorted(sleeps) == [0.5, 0.5, 0.5, 1.0, 1.0]  # 429 on search; 500 on artists; 503 and twice broken preview.
    text = build.report_lib.render_report(report, str(output_dir))
    assert "tracks collected:        17" in text and "HTTP 404" in text and "audio_features_missing" in text


def test_catalog_rows_and_labels(built):
    _, output_dir, _, _, _ = built
    rows = {row["track_id"]: row for row in _read_csv(output_dir / "catalog.csv")}
    assert list(rows) == IDS[:12] + [IDS[14], IDS[15]]
    t06 = rows[IDS[5]]
    assert (t06["path"], t06["artist"], t06["artist_ids"]) == (
        f"audio/{IDS[5]}.mp3",
        "Nina Sample, The Fixture Trio",
        "0ArtistNinaSample00003|0ArtistFixtureTrio0004",
    )
    assert (t06["audio_source"], t06["duration_s"], t06["isrc"]) == ("preview", "15.000", "USFX12200006")
    assert rows[IDS[14]]["path"] == str(output_dir.parent / "round-midnight.wav")
    assert rows[IDS[14]]["duration_s"] == "3.000" and rows[IDS[14]]["audio_source"] == "local"
    assert rows[IDS[15]]["path"] == str(DEMO_AUDIO_DIR / DEMO[15])
    description = json.loads((output_dir / "labels.json").read_text())
    vocabulary = (output_dir / "vocabulary.txt").read_text().split("\n")[:-1]
    assert vocabulary == description["vocabulary"] and len(vocabulary) == 32 + len(description["genres"]["vocabulary"])
    # Thresholds come from the training split only: the training rows with features, not all 16.
    raw = json.loads((output_dir / "spotify_raw.json").read_text())
    training = [
        raw["audio_features"][i] for i, row in rows.items() if row["split"] == "train" and i in raw["audio_features"]
    ]
    assert description["computed_on_split"] == "train"
    thresholds = description["spotify_features"]["thresholds"]
    assert thresholds["energy"]["num_values"] == len(training) < 16
    for feature, threshold in thresholds.items():
        values = sorted(features[feature] for features in training)
        expected = {"mean": statistics.fmean(values), "median": statistics.median(values)}
        for statistic, value in expected.items():
            assert threshold["candidates"][statistic] == pytest.approx(value), (feature, statistic)
    # Every row's tags are in the vocabulary, and feature tags follow the thresholds.
    for track_id, row in rows.items():
        tags = row["tags"].split("|") if row["tags"] else []
        assert set(tags) <= set(vocabulary)
        features = raw["audio_features"].get(track_id)
        if features is None:
            assert not any(tag.endswith("_high") or tag.startswith("tempo_") for tag in tags)
            continue
        assert ("energy_high" in tags) == (features["energy"] > thresholds["energy"]["value"])
        assert sum(tag.startswith("tempo_") for tag in tags) == 1
    assert rows[IDS[11]]["tags"] == "jazz|big band|swing"  # Null features: genres only.


def test_splits_are_artist_disjoint(built):
    _, output_dir, _, _, _ = built
    rows = _read_csv(output_dir / "catalog.csv")
    split_of_artist = {}
    for row in rows:
        assert split_of_artist.setdefault(row["artist_ids"].split("|")[0], row["split"]) == row["split"]
    assert {row["split"] for row in rows} == {"train", "valid", "test"}


def test_no_credential_in_any_output_or_log(built):
    result, output_dir, _, log_lines, requests_seen = built
    files = [path for path in output_dir.rglob("*") if path.is_file()]
    assert {path.name for path in files} >= {"catalog.csv", "missing.csv", "spotify_raw.json", "labels.json"}
    for path in files:
        _assert_no_secrets(str(path), path.read_bytes())
    _assert_no_secrets("the logs", "\n".join(log_lines))
    assert any("spotipy" in line or "HTTP" in line for line in log_lines)  # The capture did capture.
    # Spotify puts the app's client id into preview URLs; the outputs carry a placeholder instead.
    assert "cid=[SPOTIPY_CLIENT_ID]" in (output_dir / "spotify_raw.json").read_text()
    assert ("POST", "/api/token", {}) in requests_seen


def test_the_catalog_feeds_the_preprocessing_pipeline(built, tmp_path):
    from data_prep import pipeline

    _, output_dir, _, _, _ = built
    parsed = catalog_lib.read_catalog(str(output_dir / "catalog.csv"))
    assert parsed.num_rows == 14 and not parsed.rejections
    vocabulary = tuple((output_dir / "vocabulary.txt").read_text().splitlines())  # As `--vocabulary` reads it.
    config = pipeline.PreprocessConfig(output_dir=str(tmp_path / "tfrecords"), vocabulary=vocabulary)
    summary = pipeline.run(parsed, config, ["--direct_running_mode=in_memory"])
    info = summary.info
    assert info.catalog["rows"] == 14 and info.num_written == 14 and info.rejected["count"] == 0
    given = {split: sum(1 for e in parsed.entries if e.split == split) for split in ("train", "valid", "test")}
    assert {name: split.examples for name, split in info.splits.items()} == given
    assert list(info.vocabulary) == list(vocabulary)


def test_features_refused_and_previews_already_present(built, tmp_path):
    _, first_dir, _, _, _ = built
    shutil.copytree(first_dir / "audio", tmp_path / "audio")
    (tmp_path / "audio" / f"{IDS[0]}.mp3.part").write_bytes(b"partial")
    sleeps = Sleeps()
    with FakeSpotify(CLIENT_ID, CLIENT_SECRET, PREVIEWS) as fake:
        fake.features_forbidden = True
        config = build.BuildConfig(output_dir=str(tmp_path), sources=collect.Sources(playlists=(PLAYLIST,)))
        retry = _policy(sleeps, max_attempts=1)
        result = build.build_catalog(_api(fake, retry), config, retry)
        previews_requested = fake.count("/mp3-preview/")
    report = result.report
    assert previews_requested == 0 and report["audio"]["previews_already_present"] == 10
    assert report["audio_features"]["by_reason"] == {"audio_features_unavailable": 10}
    description = json.loads((tmp_path / "labels.json").read_text())
    assert description["spotify_features"]["status"].startswith("not derived: GET audio-features refused (HTTP 403")
    assert description["vocabulary"] == description["genres"]["vocabulary"] and description["vocabulary"]
    assert report["catalog"]["with_feature_tags"] == 0 and report["catalog"]["rows"] == 10
    assert not (tmp_path / "audio" / f"{IDS[0]}.mp3.part").exists()
    assert "audio_features_unavailable" in report["reasons"]


def test_underivable_feature_labels_fail_clearly_after_writing_the_report(tmp_path):
    with FakeSpotify(CLIENT_ID, CLIENT_SECRET, PREVIEWS) as fake:
        config = build.BuildConfig(
            output_dir=str(tmp_path),
            sources=collect.Sources(playlists=(PLAYLIST,)),
            labels="spotify_features",
            max_tracks=5,
        )
        retry = _policy(Sleeps())
        with pytest.raises(build.labels_lib.LabelError, match="at least 9 distinct tempi"):
            build.build_catalog(_api(fake, retry), config, retry)
    report = json.loads((tmp_path / "report.json").read_text())
    assert "at least 9 distinct tempi" in report["error"] and report["tracks_collected"] == 5
    assert (tmp_path / "spotify_raw.json").exists() and (tmp_path / "missing.csv").exists()
    assert not (tmp_path / "catalog.csv").exists()


# The binary.


def _run_binary(args, env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "data_prep.spotify", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_binary_end_to_end(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOTIPY_")}
    with FakeSpotify(CLIENT_ID, CLIENT_SECRET, PREVIEWS) as fake:
        fake.fail("/v1/search", 429, headers={"Retry-After": "1"})
        common = [f"--api_base={fake.api_base}", f"--token_url={fake.token_url}", f"--output_dir={tmp_path}"]
        missing = _run_binary([f"--search={QUERY}", *common], env)
        assert missing.returncode == 1 and fake.count("/") == 0
        assert "SPOTIPY_CLIENT_ID and SPOTIPY_CLIENT_SECRET" in missing.stderr
        env.update(SPOTIPY_CLIENT_ID=CLIENT_ID, SPOTIPY_CLIENT_SECRET=CLIENT_SECRET)
        args = [f"--search={QUERY}", "--search_page_size=4", "--labels=genres", "--retry_backoff_s=0.01", *common]
        completed = _run_binary(args, env)
        searches = [
            t for (_, path, _), t in zip(fake.requests, fake.request_times, strict=True) if path == "/v1/search"
        ]
    assert completed.returncode == 0, completed.stderr
    assert searches[1] - searches[0] >= 0.95  # The real sleep honours Retry-After: 1.
    assert "labels (genres): genres: top " in completed.stdout and "spotify_features" not in completed.stdout
    assert "tracks collected:         9" in completed.stdout and f"catalog: {tmp_path}/catalog.csv" in completed.stdout
    for name, text in (("stdout", completed.stdout), ("stderr", completed.stderr), ("missing stderr", missing.stderr)):
        _assert_no_secrets(name, text)
    rows = _read_csv(tmp_path / "catalog.csv")
    assert [row["track_id"] for row in rows] == IDS[8:12]  # t13 and t14 are broken, t15-t17 have no preview.
    assert [bool(row["tags"]) for row in rows] == [True, False, True, True]  # t10's artist has no genres.
