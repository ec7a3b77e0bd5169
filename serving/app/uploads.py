"""Audio uploads streamed into a private temporary file, with the size limit enforced as the bytes arrive.

    async with uploads.receive(request, upload_dir, max_bytes) as upload:
        decode(upload.path)        # the file is deleted when the block ends

The body (`multipart/form-data` with one file field, `audio`) is parsed as it
streams in, never buffered whole: the audio part is written to a file created
with `tempfile.mkstemp` (mode 0600) in a directory made by
`private_directory` (mode 0700), counting bytes, and the request is refused
with 413 as soon as the count passes the limit, or before reading anything
when `Content-Length` already says it will. A client that stops sending
(no bytes for `UploadDeadlines.idle_s`) or takes longer than
`UploadDeadlines.total_s` over the whole body is answered 408 and its
connection closed, so stalled clients cannot hold the upload slots. The file
is deleted in every case when the block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import tempfile
from collections.abc import AsyncIterator

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from serving.app.errors import ApiError

FIELD = "audio"
# Room in a request for the multipart framing and small form fields around the file.
FRAMING_BYTES = 64 * 1024
_MAX_FILENAME = 200
_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


@dataclasses.dataclass(frozen=True)
class UploadDeadlines:
    """How long an upload may take to arrive.

    Attributes:
        idle_s: Longest wait for the next bytes of the body.
        total_s: Longest time to receive the whole body.
    """

    idle_s: float = 10.0
    total_s: float = 120.0

    def __post_init__(self):
        if self.idle_s <= 0 or self.total_s <= 0:
            raise ValueError(f"upload deadlines must be positive, got idle {self.idle_s} s, total {self.total_s} s")


@dataclasses.dataclass(frozen=True)
class Upload:
    """An uploaded file on disk.

    Attributes:
        path: The private temporary file.
        filename: The client's file name, made safe to show ('upload' if none).
        size: Bytes received.
        content_type: The part's declared content type ('' if none).
    """

    path: str
    filename: str
    size: int
    content_type: str


def private_directory(parent: str | None = None) -> str:
    """A new directory only this user can enter (mode 0700), for upload files."""
    return tempfile.mkdtemp(prefix="music-recommender-uploads-", dir=parent)


def safe_filename(raw: str) -> str:
    """The base name of a client-supplied file name, without control characters, shortened."""
    name = os.path.basename(raw.replace("\\", "/"))
    name = _UNPRINTABLE.sub("", name).strip()[:_MAX_FILENAME]
    return name or "upload"


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(
        413, "too_large", f"the upload exceeds the maximum of {max_bytes / 2**20:.1f} MiB", {"Connection": "close"}
    )


def _boundary(request: Request) -> bytes:
    """The multipart boundary of the request; 415 for any other content type."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        shown = content_type.decode("latin-1") or "none"
        raise ApiError(
            415, "unsupported_media_type", f"expected multipart/form-data with a file field {FIELD!r}, got {shown}"
        )
    boundary = options.get(b"boundary")
    if not boundary:
        raise ApiError(400, "malformed_upload", "multipart/form-data without a boundary")
    return boundary


def _check_declared_length(request: Request, max_bytes: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes + FRAMING_BYTES:
        raise _too_large(max_bytes)


class _PartWriter:
    """Multipart parser callbacks: the `audio` part goes to `handle`, other parts are counted and dropped."""

    def __init__(self, handle, max_bytes: int):
        self.handle = handle
        self.max_bytes = max_bytes
        self.size = 0
        self.other_bytes = 0
        self.filename: str | None = None
        self.content_type = ""
        self.finished = False
        self._headers: dict[bytes, bytes] = {}
        self._field = self._value = b""
        self._in_audio = False
        self._part_name = ""

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_end": self._end,
        }

    def _part_begin(self):
        self._headers, self._in_audio = {}, False

    def _header_field(self, data: bytes, start: int, end: int):
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int):
        self._value += data[start:end]

    def _header_end(self):
        self._headers[self._field.strip().lower()] = self._value.strip()
        self._field = self._value = b""

    def _headers_finished(self):
        disposition, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if disposition != b"form-data" or b"name" not in options:
            raise ApiError(
                400, "malformed_upload", "a multipart part without 'Content-Disposition: form-data; name=...'"
            )
        self._part_name = options[b"name"].decode("latin-1")[:100]
        if self._part_name != FIELD:
            return
        if self.filename is not None:
            raise ApiError(422, "too_many_files", f"send one file in the field {FIELD!r}")
        self._in_audio = True
        self.filename = safe_filename(options.get(b"filename", b"").decode("utf-8", "replace"))
        self.content_type = self._headers.get(b"content-type", b"").decode("latin-1")[:100]

    def _part_data(self, data: bytes, start: int, end: int):
        if self._in_audio:
            self.size += end - start
            if self.size > self.max_bytes:
                raise _too_large(self.max_bytes)
            self.handle.write(data[start:end])
        else:
            self.other_bytes += end - start
            if self.other_bytes > FRAMING_BYTES and self.filename is None:  # A file sent under another name.
                raise ApiError(
                    422, "missing_audio", f"no file in the form field {FIELD!r} (the request sends {self._part_name!r})"
                )
            if self.other_bytes > FRAMING_BYTES:
                raise ApiError(
                    413, "too_large", f"form fields other than {FIELD!r} are limited to {FRAMING_BYTES} bytes"
                )

    def _end(self):
        self.finished = True


def _suffix(filename: str) -> str:
    suffix = os.path.splitext(filename)[1]
    return suffix.lower() if _SUFFIX.match(suffix) else ""


def _timed_out(detail: str) -> ApiError:
    return ApiError(408, "upload_timeout", detail, {"Connection": "close"})


async def _chunks(request: Request, deadlines: UploadDeadlines) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive; 408 when the client stalls or is too slow overall."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadlines.total_s
    stream = request.stream().__aiter__()
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise _timed_out(f"the upload did not arrive within {deadlines.total_s:g} s")
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), timeout=min(deadlines.idle_s, remaining))
        except StopAsyncIteration:
            return
        except TimeoutError:
            if deadline - loop.time() <= 0:
                raise _timed_out(f"the upload did not arrive within {deadlines.total_s:g} s") from None
            raise _timed_out(f"no upload data for {deadlines.idle_s:g} s") from None
        yield chunk


async def _stream_into(request: Request, parser: MultipartParser, max_bytes: int, deadlines: UploadDeadlines) -> None:
    """Feeds the body to the parser as it arrives; the whole body is bounded too (framing, epilogue)."""
    received = 0
    try:
        async for chunk in _chunks(request, deadlines):
            received += len(chunk)
            if received > max_bytes + FRAMING_BYTES:
                raise _too_large(max_bytes)
            if chunk:
                parser.write(chunk)
    except MultipartParseError as error:
        raise ApiError(400, "malformed_upload", f"the multipart body cannot be parsed: {error}") from None
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "the client went away during the upload") from None


@contextlib.asynccontextmanager
async def receive(
    request: Request, directory: str, max_bytes: int, deadlines: UploadDeadlines = UploadDeadlines()
) -> AsyncIterator[Upload]:
    """Streams the request's `audio` file into a private temporary file, deleted when the block ends.

    Args:
        request: A `multipart/form-data` request with one file field `audio`.
        directory: A private directory (`private_directory`).
        max_bytes: The largest file accepted.
        deadlines: How long the body may take to arrive.

    Raises:
        ApiError: 415 not multipart; 413 too large (as soon as it is known);
            408 stalled or too slow; 400 malformed body; 422 no file or more
            than one.
    """
    boundary = _boundary(request)
    _check_declared_length(request, max_bytes)
    descriptor, path = tempfile.mkstemp(dir=directory, prefix="upload-")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            writer = _PartWriter(handle, max_bytes)
            await _stream_into(request, MultipartParser(boundary, writer.callbacks()), max_bytes, deadlines)
        if not writer.finished:
            raise ApiError(400, "malformed_upload", "the multipart body ends before its closing boundary")
        if writer.filename is None:
            raise ApiError(422, "missing_audio", f"no file in the form field {FIELD!r}")
        suffixed = path + _suffix(writer.filename)
        if suffixed != path:
            os.rename(path, suffixed)
            path = suffixed
        yield Upload(path, writer.filename, writer.size, writer.content_type)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
