"""serving.app.connections: request heads have a deadline, connections a bound, repeated log lines a rate."""

from __future__ import annotations

import logging
import socket
import urllib.parse

import httpx
import pytest

from serving.app import connections
from serving.app.child_process import app_process
from tests.conftest import DEMO_DIR
from tests.serving.app.conftest import SERVER_FLAGS

HEADER_TIMEOUT_S = 3.0
MAX_CONNECTIONS = 4
PARTIAL_HEAD = "GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: "  # Never finished.


@pytest.fixture(scope="module")
def bounded_server(demo_index, tmp_path_factory):
    root = tmp_path_factory.mktemp("bounded_app")
    flags = [*SERVER_FLAGS, f"--header_timeout_s={HEADER_TIMEOUT_S}", f"--max_connections={MAX_CONNECTIONS}"]
    with app_process(str(demo_index[0]), str(DEMO_DIR), str(root / "app.log"), flags) as url:
        yield url, urllib.parse.urlsplit(url).port


def _closed_by_the_server(sock: socket.socket) -> bool:
    """Whether the server closes the connection without sending anything (recv gives b'' or a reset) before
    the socket's 30 s guard."""
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _whole_response(sock: socket.socket) -> bytes:
    """One HTTP response with a Content-Length, read to its last byte."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def _partial(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(PARTIAL_HEAD.encode())
    return sock


def test_stalled_heads_are_closed_and_connections_are_bounded(bounded_server):
    url, port = bounded_server
    stalled = [_partial(port) for _ in range(MAX_CONNECTIONS)]
    try:
        one_more = socket.create_connection(("127.0.0.1", port), timeout=30)
        one_more.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")  # Complete: only the bound refuses it.
        assert _closed_by_the_server(one_more), "a connection past --max_connections was answered"
        one_more.close()
        for sock in stalled:  # Each is closed once its head is overdue.
            assert _closed_by_the_server(sock), "a connection that never finished its head was kept open"
    finally:
        for sock in stalled:
            sock.close()
    assert httpx.get(f"{url.rstrip('/')}/healthz", timeout=30).status_code == 200  # Their slots are free again.


def test_a_keep_alive_connection_has_the_deadline_for_its_next_head_too(bounded_server):
    _, port = bounded_server
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        assert _whole_response(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(PARTIAL_HEAD.encode())
        assert _closed_by_the_server(sock)
    finally:
        sock.close()


def test_repeated_log_records_are_limited_per_minute_and_counted():
    now = [0.0]
    limiter = connections.RepeatLimiter(max_per_minute=3, clock=lambda: now[0])
    logger = logging.getLogger("tests.repeat_limiter")
    passed = []

    class Collect(logging.Handler):
        def emit(self, record):
            passed.append(record.getMessage())

    handler = Collect()
    logger.addHandler(handler)
    logger.addFilter(limiter)
    logger.propagate, before = False, logger.propagate
    try:
        for number in range(10):
            logger.error("accept failed: %s", number)
        logger.error("another message")
        now[0] = 61.0
        logger.error("accept failed: %s", "later")
    finally:
        logger.removeHandler(handler)
        logger.removeFilter(limiter)
        logger.propagate = before
    assert passed == [
        "accept failed: 0",
        "accept failed: 1",
        "accept failed: 2",
        "another message",
        "accept failed: later (and 7 more like it in the last minute, not logged)",
    ]


def test_bounds_must_be_positive():
    with pytest.raises(ValueError, match="header_timeout_s > 0"):
        connections.bounded_protocol(0, 10)
    assert connections.bounded_protocol(2.5, 3).max_connections == 3
