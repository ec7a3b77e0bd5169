"""`serving.app.service` on real audio: decoding, embedding in process or through TF Serving, busy refusals and load."""

from __future__ import annotations

import io
import os
import socket
import stat
import time

import httpx
import numpy as np
import pytest
import soundfile
import tensorflow as tf

from serving.app.child_process import app_process
from tests.conftest import tone
from tests.serving import tf_serving_standin
from tests.serving.app.conftest import MAX_DURATION_S, _error, _raw_request, _upload


def _wav(seconds: float, sample_rate: int = 8000, level: float = 0.3) -> bytes:
    buffer = io.BytesIO()
    waveform = tone(seconds, sample_rate) if level else np.zeros((int(seconds * sample_rate), 1), np.float32)
    soundfile.write(buffer, waveform, sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _constant_flac(seconds: float, channels: int = 8, sample_rate: int = 96_000) -> bytes:
    """A decompression bomb in miniature: a constant level compresses to almost nothing."""
    buffer = io.BytesIO()
    soundfile.write(
        buffer, np.full((int(seconds * sample_rate), channels), 0.3, np.float32), sample_rate, format="FLAC"
    )
    return buffer.getvalue()


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
    "name, make, status, reason",
    [
        ("notes.txt", lambda mp3: b"these are not the sounds you are looking for\n" * 50, 415, "decode_error"),
        ("empty.mp3", lambda mp3: b"", 422, "empty"),
        ("cut.mp3", lambda mp3: mp3[: len(mp3) // 2], 422, "truncated"),
        ("blip.wav", lambda mp3: _wav(0.5), 422, "too_short"),
        ("silence.wav", lambda mp3: _wav(3.0, level=0.0), 422, "silent"),  # data_prep rejects it as well.
        ("long.wav", lambda mp3: _wav(MAX_DURATION_S + 5.0), 413, "too_long"),
        ("bomb.flac", lambda mp3: _constant_flac(10.0), 413, "too_large"),  # 8 ch x 96 kHz in a few KB.
    ],
)
def test_bad_audio_is_refused_with_a_reason(client, server, demo_audio_files, name, make, status, reason):
    response = _upload(client, name, make(demo_audio_files[1].read_bytes()))
    got_status, got_reason, detail = _error(response)
    assert (got_status, got_reason) == (status, reason), detail
    assert name in detail and str(server.upload_parent) not in detail
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
            app_process(str(demo_index[0]), None, str(tmp_path / "app.log"), [*flags, f"--server={address}"]) as url,
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
