"""The app server, one `python -m serving.app` child process shared by the whole package, and shared helpers."""

from __future__ import annotations

import dataclasses
import pathlib
import socket

import httpx
import pytest

from serving.app.child_process import app_process
from serving.retrieval.catalog_index import CatalogIndex
from tests.conftest import DEMO_DIR

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


@pytest.fixture(scope="package")
def server(demo_index, tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    uploads = root / "uploads"
    uploads.mkdir()
    flags = [*SERVER_FLAGS, f"--upload_dir={uploads}"]
    with app_process(str(demo_index[0]), str(DEMO_DIR), str(root / "app.log"), flags) as url:
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


def _error(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body["error"]["reason"], body["error"]["detail"]


def _raw_request(port: int, head: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(head.encode())
    return sock
