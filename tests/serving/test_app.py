"""`python -m serving.app` as a real server on localhost over the demo index: the API on real audio files,
limits and bad input, catalog audio with ranges, metrics, TF Serving embedding, the page in headless
Chromium, a schema-driven fuzz and a short load run.

One server (module-scoped, a child process on a free port) serves every test but the TF Serving one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import io
import json
import os
import pathlib
import re
import select
import shutil
import socket
import stat
import time

import httpx
import hypothesis
import numpy as np
import pytest
import schemathesis
import soundfile
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from benchmarks import app_load
from serving.app import catalog_audio
from serving.app.errors import ApiError
from serving.app.service import listen
from serving.catalog_index import CatalogIndex, TrackRecord
from serving.recommender import Recommender, TagFilter
from tests.conftest import DEMO_DIR, tone
from tests.serving import tf_serving_standin

MAX_UPLOAD_MB = 1
MAX_DURATION_S = 20
SERVER_FLAGS = [f"--max_upload_mb={MAX_UPLOAD_MB}", f"--max_duration_s={MAX_DURATION_S}", "--noaccess_log"]


@dataclasses.dataclass(frozen=True)
class Server:
    url: str
    upload_parent: pathlib.Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def upload_files(self) -> list[pathlib.Path]:
        """Whatever is left in the service's private upload directory (and the directory itself)."""
        (private,) = self.upload_parent.iterdir()
        return list(private.iterdir())


@pytest.fixture(scope="module")
def server(demo_index, tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    uploads = root / "uploads"
    uploads.mkdir()
    flags = [*SERVER_FLAGS, f"--upload_dir={uploads}"]
    with app_load.app_process(str(demo_index[0]), str(DEMO_DIR), str(root / "app.log"), flags) as url:
        yield Server(url, uploads)


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=120.0) as client:
        yield client


@pytest.fixture(scope="module")
def catalog(demo_index):
    return CatalogIndex.load(str(demo_index[0]))


def _upload(client, name: str, content: bytes, **params) -> httpx.Response:
    return client.post("/recommend", params=params, files={"audio": (name, content, "application/octet-stream")})


def _wav(seconds: float, sample_rate: int = 8000, level: float = 0.3) -> bytes:
    buffer = io.BytesIO()
    waveform = tone(seconds, sample_rate) if level else np.zeros((int(seconds * sample_rate), 1), np.float32)
    soundfile.write(buffer, waveform, sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _error(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body["error"]["reason"], body["error"]["detail"]


# The API on real audio.


def test_health_and_schema(server, client, model_refs):
    assert server.url.startswith("http://127.0.0.1:")  # The default address.
    health = client.get("/healthz").raise_for_status().json()
    assert health["status"] == "ok" and health["tracks"] == 16 and health["embedder"] == "in-process"
    assert health["audio_served"] and health["max_upload_bytes"] == MAX_UPLOAD_MB * 2**20
    assert health["embedding_model"]["checksum"] == model_refs["embedding"].checksum
    assert health["tag_model"]["checksum"] == model_refs["tag"].checksum
    paths = client.get("/openapi.json").raise_for_status().json()["paths"]
    assert {"/recommend", "/tracks", "/tracks/{track_id}/similar", "/tracks/{track_id}/audio", "/healthz"} <= set(paths)
    assert "multipart/form-data" in paths["/recommend"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 404  # Swagger UI would load from a CDN.


def test_an_uploaded_catalog_file_gets_what_its_catalog_track_gets(client, server, catalog, demo_audio_files):
    """The upload path (decode, embed in the server, search) reproduces the index's own embedding of the file."""
    mp3 = demo_audio_files[5]
    uploaded = _upload(client, mp3.name, mp3.read_bytes(), k=5).raise_for_status().json()
    stored = client.get(f"/tracks/{mp3.stem}/similar", params={"k": 5}).raise_for_status().json()
    ids = [r["track_id"] for r in uploaded["recommendations"]]
    # As many as stage 1 lets through (the smoke-trained tagger decides), the same for both paths.
    assert 3 <= len(ids) == uploaded["found"] == stored["found"] <= 5
    assert mp3.stem not in ids  # The file itself is an exact duplicate.
    assert ids == [r["track_id"] for r in stored["recommendations"]]
    np.testing.assert_allclose(
        [r["score"] for r in uploaded["recommendations"]], [r["score"] for r in stored["recommendations"]], atol=1e-4
    )
    assert [t["tag"] for t in uploaded["query_tags"]] == [t["tag"] for t in stored["query_tags"]]
    query = uploaded["query"]
    assert (
        query["kind"] == "upload" and query["filename"] == mp3.name and query["duration_s"] == pytest.approx(15, 0.01)
    )
    probabilities = [t["probability"] for t in query["top_tags"]]
    assert probabilities == sorted(probabilities, reverse=True) and len(probabilities) == len(catalog.vocabulary)
    for r in uploaded["recommendations"]:
        assert r["audio_url"] == f"/tracks/{r['track_id']}/audio"
        assert {t["tag"] for t in r["shared_tags"]} <= {t["tag"] for t in uploaded["query_tags"]}
    assert set(uploaded["timings_ms"]) == {"decode", "embed", "search"}
    # The upload went to a private directory and is gone.
    (private,) = server.upload_parent.iterdir()
    assert stat.S_IMODE(private.stat().st_mode) == 0o700 and server.upload_files() == []


@pytest.mark.parametrize(
    "params",
    [
        {"k": 4},
        {"k": 6, "max_per_artist": 1, "tag_threshold": 0.0, "tag_top_n": 2},
        {"k": 3, "tag_filter": "false"},
        {"k": 5, "embedding_rank": "false", "tag_threshold": 0.2},
    ],
)
def test_similar_tracks_are_the_recommenders(client, catalog, params):
    recommender = Recommender(catalog, TagFilter())
    track_id = catalog.tracks[9].track_id
    body = client.get(f"/tracks/{track_id}/similar", params=params).raise_for_status().json()
    tag_filter = None
    if params.get("tag_filter") != "false":
        tag_filter = TagFilter(params.get("tag_threshold", 0.5), params.get("tag_top_n", 3))
    expected = recommender.recommend(
        recommender.query_for_track(track_id),
        params["k"],
        tag_filter=tag_filter,
        rank_by_embedding=params.get("embedding_rank") != "false",
        max_per_artist=params.get("max_per_artist"),
    )
    assert [r["track_id"] for r in body["recommendations"]] == [r.track.track_id for r in expected.recommendations]
    np.testing.assert_allclose(
        [r["score"] for r in body["recommendations"]], [r.score for r in expected.recommendations]
    )
    assert body["query_tags"] == [{"tag": t, "probability": p} for t, p in expected.query_tags]
    assert body["notes"] == list(expected.notes) and body["query"]["track_id"] == track_id
    for r in body["recommendations"]:
        track = catalog.track(r["track_id"])
        assert (r["artist"], r["title"], r["album"]) == (track.artist, track.title, track.album)


def test_tracks_are_listed_by_page_and_filtered(client, catalog):
    ids = []
    for offset in range(0, 20, 6):
        page = client.get("/tracks", params={"limit": 6, "offset": offset}).raise_for_status().json()
        assert page["total"] == 16 and page["offset"] == offset and page["limit"] == 6
        ids += [t["track_id"] for t in page["tracks"]]
    assert ids == [t.track_id for t in catalog.tracks]
    found = client.get("/tracks", params={"q": "STARFIGHTER"}).raise_for_status().json()
    assert found["total"] == 4 and all(t["track_id"].startswith("starfighter--") for t in found["tracks"])
    assert client.get("/tracks", params={"q": "no such thing"}).json() == {
        "total": 0,
        "offset": 0,
        "limit": 50,
        "tracks": [],
    }


# Catalog audio.


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
    for malformed in ("bytes=5-2", "bytes=abc", "pages=1-2", "bytes="):
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


def test_connections_do_not_wait_for_delayed_acks():
    """Accepted connections have Nagle's algorithm off, as uvicorn accepts them (asyncio, on `listen`'s socket)."""

    async def accepted_nodelay() -> int:
        sock = listen("127.0.0.1", 0)
        accepted = asyncio.get_running_loop().create_future()

        class Accept(asyncio.Protocol):
            def connection_made(self, transport):
                accepted.set_result(
                    transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                )
                transport.close()

        server = await asyncio.get_running_loop().create_server(Accept, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            value = await asyncio.wait_for(accepted, 30)
            writer.close()
        return value

    assert asyncio.run(accepted_nodelay()) != 0


# Bad input: a clear 4xx with a reason, never a 500.


@pytest.mark.parametrize(
    "name, make, status, reason",
    [
        ("notes.txt", lambda mp3: b"these are not the sounds you are looking for\n" * 50, 415, "decode_error"),
        ("empty.mp3", lambda mp3: b"", 422, "empty"),
        ("cut.mp3", lambda mp3: mp3[: len(mp3) // 2], 422, "truncated"),
        ("blip.wav", lambda mp3: _wav(0.5), 422, "too_short"),
        ("silence.wav", lambda mp3: _wav(3.0, level=0.0), 422, "silent"),  # data_prep rejects it as well.
        ("long.wav", lambda mp3: _wav(MAX_DURATION_S + 5.0), 413, "too_long"),
    ],
)
def test_bad_audio_is_refused_with_a_reason(client, server, demo_audio_files, name, make, status, reason):
    response = _upload(client, name, make(demo_audio_files[1].read_bytes()))
    got_status, got_reason, detail = _error(response)
    assert (got_status, got_reason) == (status, reason), detail
    assert name in detail and str(server.upload_parent) not in detail
    assert server.upload_files() == []


def _multipart(parts: list[tuple[str, bytes]], boundary: str = "b0undary", close: bool = True) -> bytes:
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="x.mp3"\r\n\r\n'.encode()
        + content
        + b"\r\n"
        for name, content in parts
    )
    return body + (f"--{boundary}--\r\n".encode() if close else b"")


@pytest.mark.parametrize(
    "request_args, status, reason",
    [
        ({"json": {"audio": "x"}}, 415, "unsupported_media_type"),
        ({"content": _multipart([("file", b"data")])}, 422, "missing_audio"),
        ({"content": _multipart([("file", b"\0" * 240_000)])}, 422, "missing_audio"),  # A song in another field.
        ({"content": _multipart([("audio", b"song"), ("notes", b"\0" * 240_000)])}, 413, "too_large"),
        ({"content": _multipart([("audio", b"one"), ("audio", b"two")])}, 422, "too_many_files"),
        ({"content": _multipart([("audio", b"data" * 100)], close=False)}, 400, "malformed_upload"),
        ({"content": b"--b0undary\r\nno headers at all"}, 400, "malformed_upload"),
    ],
)
def test_malformed_uploads_are_refused(client, server, request_args, status, reason):
    headers = {} if "json" in request_args else {"Content-Type": "multipart/form-data; boundary=b0undary"}
    response = client.post("/recommend", headers=headers, **request_args)
    assert _error(response)[:2] == (status, reason)
    assert server.upload_files() == []


@pytest.mark.parametrize(
    "method, url, status, reason",
    [
        ("GET", "/tracks/starfighter--death/similar?k=0", 422, "invalid_parameter"),
        ("GET", "/tracks/starfighter--death/similar?k=ten", 422, "invalid_parameter"),
        ("GET", "/tracks/starfighter--death/similar?k=1000", 422, "invalid_parameter"),
        ("GET", "/tracks/starfighter--death/similar?tag_threshold=nan", 422, "invalid_parameter"),
        ("GET", "/tracks/starfighter--death/similar?tag_threshold=2", 422, "invalid_parameter"),
        ("GET", "/tracks/starfighter--death/similar?topk=3", 422, "invalid_parameter"),
        ("GET", "/tracks/starfighter--death/similar?tag_filter=false&embedding_rank=false", 422, "invalid_parameter"),
        ("GET", "/tracks/no-such-track/similar", 404, "unknown_track"),
        ("POST", "/recommend?max_per_artist=-1", 422, "invalid_parameter"),
        ("GET", "/tracks?limit=0", 422, "invalid_parameter"),
        ("GET", "/tracks?offset=-1", 422, "invalid_parameter"),
        ("GET", "/no/such/route", 404, "not_found"),
        ("DELETE", "/recommend", 405, "method_not_allowed"),
    ],
)
def test_malformed_parameters_are_refused(client, method, url, status, reason):
    status_got, reason_got, detail = _error(client.request(method, url))
    assert (status_got, reason_got) == (status, reason) and detail


def _raw_request(port: int, head: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(head.encode())
    return sock


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except OSError:  # A reset after the response was read.
        pass
    sock.close()
    return data


def test_oversized_uploads_are_refused_while_streaming(server):
    head = "POST /recommend HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=b0undary\r\n"
    # Declared too large: refused before any of the body is read.
    sock = _raw_request(server.port, head + f"Content-Length: {50 * 2**20}\r\n\r\n")
    response = _read_response(sock)
    assert response.startswith(b"HTTP/1.1 413") and b'"too_large"' in response
    # Chunked, size unknown up front: refused once the limit is passed, long before the body would end.
    sock = _raw_request(server.port, head + "Transfer-Encoding: chunked\r\n\r\n")
    part = b'--b0undary\r\nContent-Disposition: form-data; name="audio"; filename="big.mp3"\r\n\r\n'
    sock.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
    sent, chunk, body_size = 0, b"\0" * 65536, 32 * 2**20
    while sent < body_size and not select.select([sock], [], [], 0.01)[0]:
        try:
            sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        except OSError:
            break
        sent += len(chunk)
    response = _read_response(sock)
    assert response.startswith(b"HTTP/1.1 413") and b'"too_large"' in response and b"connection: close" in response
    assert MAX_UPLOAD_MB * 2**20 <= sent < body_size
    assert server.upload_files() == []


# Metrics and the page.


def _samples(client) -> dict:
    families = text_string_to_metric_families(client.get("/metrics").raise_for_status().text)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in families for s in family.samples}


def test_metrics_count_requests_and_name_the_versions(client, model_refs):
    def value(samples, metric, /, **labels):
        return samples.get((metric, tuple(sorted(labels.items()))), 0.0)

    similar = {"method": "GET", "route": "/tracks/{track_id}/similar"}
    before = _samples(client)
    client.get("/tracks/starfighter--death/similar").raise_for_status()
    client.get("/tracks/nope/similar")
    _upload(client, "noise.bin", b"\x01\x02" * 1000)
    after = _samples(client)
    total = "recommender_http_requests_total"
    assert value(after, total, **similar, status="200") == value(before, total, **similar, status="200") + 1
    assert value(after, total, **similar, status="404") == value(before, total, **similar, status="404") + 1
    recommend = {"method": "POST", "route": "/recommend", "status": "415"}
    assert value(after, total, **recommend) == value(before, total, **recommend) + 1
    count = "recommender_http_request_duration_seconds_count"
    assert value(after, count, **similar) == value(before, count, **similar) + 2
    for stage in ("search", "decode"):
        stage_count = "recommender_stage_duration_seconds_count"
        assert value(after, stage_count, stage=stage) == value(before, stage_count, stage=stage) + 1
    for role, ref in model_refs.items():
        labels = {"role": role, "name": ref.name, "version": str(ref.version), "checksum": ref.checksum}
        assert value(after, "recommender_model_info", **labels, architecture=ref.model_name) == 1
    assert value(after, "recommender_index_tracks") == 16
    assert any(name == "recommender_index_info" and dict(labels)["searcher"] for name, labels in after)


def test_the_page_and_its_assets_are_self_contained(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    texts = [page.text]
    for asset, content_type in (("/static/app.js", "javascript"), ("/static/app.css", "text/css")):
        response = client.get(asset)
        assert response.status_code == 200 and content_type in response.headers["content-type"]
        texts.append(response.text)
    for text in texts:
        assert not re.search(r"""(src|href|url)\s*[=(]\s*["']?(https?:)?//""", text), "no external resources"
        assert "http://" not in text and "https://" not in text
    assert re.search(r'<label for="audio-file">', page.text) and 'aria-live="polite"' in page.text


# The page in a real browser.


def _chromium() -> str:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    assert executable, "Debian's chromium is not installed; `make test` installs it (make system-packages)"
    return executable


def test_page_in_headless_chromium(server, demo_audio_files, catalog, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    mp3 = demo_audio_files[12]
    outside_requests, console_errors = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: m.type == "error" and console_errors.append(m.text))
            page.on(
                "request",
                lambda r: (
                    r.url.startswith(("http:", "https:"))
                    and not r.url.startswith(server.url)
                    and outside_requests.append(r.url)
                ),
            )
            page.goto(server.url + "/")
            expect(page.locator("#track-select option")).to_have_count(len(catalog))
            # Upload a demo MP3 and wait for the results.
            page.get_by_label("Audio file").set_input_files(str(mp3))
            page.get_by_role("button", name="Recommend for this file").click()
            expect(page.get_by_role("status")).to_contain_text("songs similar to", timeout=120_000)
            expect(page.get_by_role("status")).to_contain_text(re.compile(r"^Found \d+ songs"))
            # As many as stage 1 lets through (the smoke-trained tagger decides), all of them shown.
            found = int(re.search(r"Found (\d+) songs", page.get_by_role("status").inner_text())[1])
            assert 3 <= found <= 10
            expect(page.locator("#recommendations li")).to_have_count(found)
            # The page says which exported models tagged the query and ranked the results.
            expect(page.locator("#made-by")).to_contain_text("Tags by crnn v1 (crnn, trained on ")
            expect(page.locator("#made-by")).to_contain_text(
                "Ranked by short_chunk_res v1 (short_chunk_res, trained on "
            )
            sources = page.eval_on_selector_all("#recommendations audio", "els => els.map(e => e.getAttribute('src'))")
            assert len(sources) == found and all(re.fullmatch(r"/tracks/[^/]+/audio", s) for s in sources)
            assert f"/tracks/{mp3.stem}/audio" not in sources
            bars = page.locator("#tag-chart li")
            tags = len(catalog.vocabulary)
            assert bars.count() == tags and all(bars.nth(i).get_attribute("aria-label") for i in range(tags))
            assert page.locator("#tag-chart .fill").first.evaluate("e => e.getBoundingClientRect().width") > 0
            # A player really loads its audio (range requests to the service).
            player = page.locator("#recommendations audio").first
            player.evaluate("a => { a.preload = 'metadata'; a.load(); }")
            deadline = time.monotonic() + 30
            while not player.evaluate("a => a.duration > 14") and time.monotonic() < deadline:
                time.sleep(0.1)
            assert player.evaluate("a => a.duration") == pytest.approx(15, abs=0.5)
            page.screenshot(path=str(tmp_path / "app_page.png"), full_page=True)
            # Keyboard only: pick a catalog track and press Enter on the button.
            track = catalog.tracks[3]
            page.get_by_label("Track", exact=True).select_option(track.track_id)
            page.get_by_role("button", name="Recommend for this track").focus()
            page.keyboard.press("Enter")
            expect(page.locator("#query-summary")).to_contain_text(f"Songs similar to {track.title}")
            assert console_errors == []
            # Errors are announced, not thrown.
            page.get_by_label("Audio file").set_input_files(
                files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not audio at all\n" * 20}]
            )
            page.get_by_role("button", name="Recommend for this file").click()
            expect(page.get_by_role("alert")).to_contain_text("decode_error")
        finally:
            browser.close()
    assert outside_requests == [] and all("status of 415" in e for e in console_errors)
    assert (tmp_path / "app_page.png").stat().st_size > 10_000


# Schema-driven fuzz: no input finds a 5xx, and every answer is what the schema documents.

FUZZED = [
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/tracks"),
    ("GET", "/tracks/{track_id}/similar"),
    ("GET", "/tracks/{track_id}/audio"),
    ("POST", "/recommend"),
]
FUZZ_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def api_schema(server):
    return schemathesis.openapi.from_url(server.url + "/openapi.json")


def test_every_operation_is_fuzzed(api_schema):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert sorted((o.method.upper(), o.path) for o in operations) == sorted(FUZZED)


@pytest.mark.parametrize("method, path", FUZZED)
def test_fuzzing_the_api_finds_no_server_error(api_schema, method, path):
    """Schemathesis cases from the OpenAPI schema, valid and invalid (for track routes also on a real track)."""
    operation = api_schema[path][method]
    strategies = [operation.as_strategy(mode) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
    if "{track_id}" in path:
        strategies.append(operation.as_strategy(path_parameters={"track_id": "starfighter--death"}))

    @hypothesis.settings(
        max_examples=60,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=hypothesis.strategies.one_of(strategies))
    def call(case):
        case.call_and_validate(checks=FUZZ_CHECKS, timeout=60)

    call()


# Under load, and through TF Serving.


def test_a_short_load_run_has_no_errors(server, catalog, demo_audio_files):
    files = [str(p) for p in demo_audio_files[:4]]
    result = app_load.run_load(server.url, 6, 2, 4.0, files, [t.track_id for t in catalog.tracks], k=5)
    assert result.error_count == 0, result.errors
    assert result.count(app_load.SIMILAR) > 0 and result.count(app_load.RECOMMEND) > 0
    assert server.upload_files() == []


def _partial_upload(port: int) -> socket.socket:
    """An upload that has started and not finished: it holds an upload slot."""
    sock = _raw_request(
        port,
        "POST /recommend HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=b0undary\r\n"
        "Content-Length: 100000\r\n\r\n--b0undary\r\n",
    )
    return sock


def test_through_tf_serving_and_busy_refusals(demo_index, model_refs, demo_audio_files, server, client, tmp_path):
    models = {ref.name: {ref.version: tf.saved_model.load(ref.path)} for ref in model_refs.values()}
    mp3 = demo_audio_files[8]
    local = _upload(client, mp3.name, mp3.read_bytes(), k=6).raise_for_status().json()
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    flags = ["--noaccess_log", "--max_pending_uploads=1", "--inference_threads=1", f"--upload_dir={uploads}"]
    with tf_serving_standin.grpc_server(models) as (address, service):
        with (
            app_load.app_process(
                str(demo_index[0]), None, str(tmp_path / "app.log"), [*flags, f"--server={address}"]
            ) as url,
            httpx.Client(base_url=url, timeout=120.0) as remote_client,
        ):
            assert remote_client.get("/healthz").json()["embedder"] == f"tf-serving {address} (grpc)"
            remote = _upload(remote_client, mp3.name, mp3.read_bytes(), k=6).raise_for_status().json()
            # Without --audio_root there is no catalog audio.
            assert all(r["audio_url"] is None for r in remote["recommendations"])
            assert _error(remote_client.get(f"/tracks/{mp3.stem}/audio"))[:2] == (404, "audio_not_served")
            # One upload slot: a second upload while one is in progress is told to retry.
            holder = _partial_upload(int(url.rsplit(":", 1)[1]))
            time.sleep(0.5)
            busy = _upload(remote_client, mp3.name, mp3.read_bytes())
            holder.close()
            assert _error(busy)[:2] == (503, "busy") and busy.headers["retry-after"] == "1"
        requested = {
            (r.model_spec.name, r.model_spec.version.value, r.model_spec.signature_name) for r in service.requests
        }
    assert requested == {("short_chunk_res", 1, "embed"), ("crnn", 1, "tags")}
    assert [r["track_id"] for r in remote["recommendations"]] == [r["track_id"] for r in local["recommendations"]]
    np.testing.assert_allclose(
        [r["score"] for r in remote["recommendations"]], [r["score"] for r in local["recommendations"]], atol=1e-5
    )
    assert os.listdir(uploads) == []  # The private upload directory goes when the service stops.


def _stalled_upload(port: int) -> socket.socket:
    """A client that announces a 1 MB upload, sends about 1 kB of it and then nothing."""
    head = (
        "POST /recommend HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=b0undary\r\n"
        "Content-Length: 1048576\r\n\r\n--b0undary\r\n"
        'Content-Disposition: form-data; name="audio"; filename="x.mp3"\r\n\r\n'
    )
    return _raw_request(port, head + "\0" * 1000)


def _status_and_reason(sock: socket.socket) -> tuple[int, str]:
    """The status and error reason of the one response on `sock` (read by its Content-Length, not to EOF)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed without a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed inside the response body"
        body += chunk
    return int(head.split()[1]), json.loads(body[:length])["error"]["reason"]


def test_stalled_uploads_time_out_and_free_their_slots(demo_index, demo_audio_files, tmp_path):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    flags = [
        "--noaccess_log",
        f"--upload_dir={uploads}",
        "--max_pending_uploads=32",
        "--upload_idle_timeout_s=1",
        "--upload_deadline_s=4",
    ]
    mp3 = demo_audio_files[2]
    with (
        app_load.app_process(str(demo_index[0]), None, str(tmp_path / "app.log"), flags) as url,
        httpx.Client(base_url=url, timeout=60.0) as client,
    ):
        port = int(url.rsplit(":", 1)[1])
        stalled = [_stalled_upload(port) for _ in range(40)]
        time.sleep(0.3)
        started, answer = time.monotonic(), None
        while time.monotonic() - started < 20:  # A normal upload gets through once the stalled ones time out.
            answer = _upload(client, mp3.name, mp3.read_bytes(), k=3)
            if answer.status_code != 503:
                break
            time.sleep(float(answer.headers["retry-after"]) / 4)
        assert answer.status_code == 200, answer.text
        outcomes = [_status_and_reason(sock) for sock in stalled]
        for sock in stalled:
            sock.close()
        # 32 held a slot until their idle deadline; the rest were refused at once.
        assert outcomes.count((408, "upload_timeout")) == 32 and outcomes.count((503, "busy")) == 8
        # A client that keeps sending, too slowly, meets the total deadline.
        trickle = _stalled_upload(port)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            readable, _, _ = select.select([trickle], [], [], 0.5)
            if readable:
                break
            trickle.sendall(b"\0")
        assert _status_and_reason(trickle) == (408, "upload_timeout")
        trickle.close()
        assert client.get("/healthz").status_code == 200
        (private,) = uploads.iterdir()
        assert list(private.iterdir()) == []  # Every stalled upload's temporary file is gone.
