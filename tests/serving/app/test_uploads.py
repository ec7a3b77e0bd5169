"""`serving.app.uploads`: malformed, oversized and stalled multipart uploads are refused or time out."""

from __future__ import annotations

import json
import re
import select
import socket
import time

import httpx
import pytest

from serving.app.child_process import app_process
from tests.serving.app.conftest import MAX_UPLOAD_MB, _error, _raw_request, _upload


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
        app_process(str(demo_index[0]), None, str(tmp_path / "app.log"), flags) as url,
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
