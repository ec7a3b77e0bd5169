"""`serving.app.catalog_audio`: catalog audio served with ranges, and only from inside the audio root."""

from __future__ import annotations

import http.client
import json
import shutil

import httpx
import pytest

from serving.app import catalog_audio
from serving.app.child_process import app_process
from serving.app.errors import ApiError
from serving.retrieval.catalog_index import TrackRecord
from tests.serving.app.conftest import _error


def test_catalog_audio_is_served_with_ranges(client, demo_audio_files):
    mp3 = demo_audio_files[0]
    data = mp3.read_bytes()
    url = f"/tracks/{mp3.stem}/audio"
    full = client.get(url)
    assert full.status_code == 200 and full.content == data
    assert full.headers["content-type"] == "audio/mpeg" and full.headers["accept-ranges"] == "bytes"
    part = client.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    assert client.get(url, headers={"Range": "bytes=-10"}).content == data[-10:]
    unsatisfiable = client.get(url, headers={"Range": f"bytes={len(data) + 10}-"})
    assert unsatisfiable.status_code == 416 and unsatisfiable.headers["content-range"] == f"bytes */{len(data)}"
    assert _error(unsatisfiable)[1] == "range_not_satisfiable"  # JSON, like every other error.
    for malformed in ("bytes=5-2", "bytes=abc", "pages=1-2", "bytes=", f"bytes={'9' * 5000}-", f"bytes=0-{'9' * 19}"):
        assert _error(client.get(url, headers={"Range": malformed}))[:2] == (400, "malformed_range"), malformed
    assert _error(client.get("/tracks/no-such-track/audio"))[:2] == (404, "unknown_track")


@pytest.mark.parametrize(
    "path",
    [
        "/tracks/..%2F..%2Fsetup.py/audio",
        "/tracks/../../setup.py/audio",
        "/tracks/%2E%2E/%2E%2E/setup.py/audio",
        "/tracks/%2Fetc%2Fpasswd/audio",
        "/tracks/audio%2Fstarfighter--death.mp3/audio",
    ],
)
def test_track_ids_never_reach_the_file_system(server, path):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request("GET", path)  # Sent as is: no client-side normalisation of `..`.
    response = connection.getresponse()
    body = response.read()
    connection.close()
    assert response.status == 404 and b"setuptools" not in body and b"root:" not in body
    assert json.loads(body)["error"]["reason"] in ("unknown_track", "not_found")


def test_catalog_audio_resolves_only_inside_the_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside.mp3"
    (root / "audio").mkdir(parents=True)
    (root / "audio" / "a.mp3").write_bytes(b"inside")
    outside.write_bytes(b"outside")
    (root / "audio" / "link.mp3").symlink_to(outside)
    assert catalog_audio.resolve(str(root), TrackRecord("a", path="audio/a.mp3")) == str(root / "audio" / "a.mp3")
    for path in ("../outside.mp3", "audio/../../outside.mp3", "audio/link.mp3", str(outside), "audio/missing.mp3"):
        with pytest.raises(ApiError) as raised:
            catalog_audio.resolve(str(root), TrackRecord("t", path=path))
        assert raised.value.status == 404 and str(tmp_path) not in raised.value.detail
    assert not catalog_audio.servable(TrackRecord("t", path="gs://bucket/a.mp3"))
    assert not catalog_audio.servable(TrackRecord("t", path=""))


def test_head_answers_a_track_audio_headers_without_the_body(client, demo_audio_files):
    mp3 = demo_audio_files[0]
    response = client.head(f"/tracks/{mp3.stem}/audio")
    assert response.status_code == 200 and response.content == b""
    assert int(response.headers["content-length"]) == mp3.stat().st_size
    assert response.headers["accept-ranges"] == "bytes" and response.headers["content-type"] == "audio/mpeg"


def test_no_audio_url_for_a_track_whose_file_the_service_would_refuse(demo_index, demo_audio_files, tmp_path):
    """A file outside the audio root (a symlink out of it) or missing gets `audio_url: null`, not a URL that 404s."""
    root = tmp_path / "root"
    (root / "audio").mkdir(parents=True)
    inside, outside, missing = demo_audio_files[:3]
    shutil.copy(inside, root / "audio" / inside.name)
    (root / "audio" / outside.name).symlink_to(outside)  # Resolves outside the root.
    flags = [f"--upload_dir={tmp_path}", "--noaccess_log"]
    with app_process(str(demo_index[0]), str(root), str(tmp_path / "app.log"), flags) as url:
        with httpx.Client(base_url=url, timeout=120.0) as client:
            tracks = {t["track_id"]: t for t in client.get("/tracks", params={"limit": 100}).json()["tracks"]}
            assert tracks[inside.stem]["audio_url"] == f"/tracks/{inside.stem}/audio"
            assert client.get(tracks[inside.stem]["audio_url"]).status_code == 200
            for refused in (outside, missing):
                assert tracks[refused.stem]["audio_url"] is None
                assert client.get(f"/tracks/{refused.stem}/audio").status_code == 404
