"""The web service's error model: every client error is JSON with a machine-readable reason.

    {"error": {"reason": "decode_error", "detail": "song.mp3: neither decoder could read it: ..."}}

Statuses: 400 malformed request body, 404 unknown track or route, 405 wrong
method, 413 upload too large or audio too long, 415 not multipart or not
audio, 422 invalid parameters or unusable audio (empty, truncated, too
short), 503 busy (with `Retry-After`). Anything else is a bug, answered 500
with reason `internal_error` and logged.
"""

from __future__ import annotations

import logging

import pydantic
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

_LOGGER = logging.getLogger(__name__)

# Starlette's own HTTP errors (routing, methods) by status.
_HTTP_REASONS = {404: "not_found", 405: "method_not_allowed", 400: "bad_request", 413: "too_large"}

# intake.audio.AudioError reasons: 415 for what is not (decodable) audio at all, 413 for audio past the
# maximum duration or the decoded-size bound (decoding stops there), 422 for audio that is unusable.
AUDIO_ERROR_STATUS = {"decode_error": 415, "too_long": 413, "too_large": 413}


class ApiError(Exception):
    """A request the service refuses, with the status and reason the client gets.

    Args:
        status: The HTTP status (4xx, or 503).
        reason: A short machine-readable reason (`too_large`, `unknown_track`, ...).
        detail: A sentence for people.
        headers: Extra response headers (`Retry-After`, ...).
    """

    def __init__(self, status: int, reason: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(f"{status} {reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail
        self.headers = headers or {}


class ErrorDetail(pydantic.BaseModel):
    """What went wrong."""

    reason: str = pydantic.Field(description="Machine-readable reason, e.g. `decode_error`, `unknown_track`.")
    detail: str = pydantic.Field(description="A sentence for people.")


class ErrorResponse(pydantic.BaseModel):
    """The body of every error response."""

    error: ErrorDetail


def error_response(status: int, reason: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"reason": reason, "detail": detail}}, status_code=status, headers=headers)


def responses(*statuses: int) -> dict[int, dict]:
    """The OpenAPI `responses` entry documenting error statuses with `ErrorResponse`."""
    return {status: {"model": ErrorResponse} for status in statuses}


def _validation_detail(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors():
        location = ".".join(str(part) for part in item.get("loc", ()) if part not in ("query", "path", "body"))
        parts.append(f"{location or 'request'}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def _api_error(request: Request, error: ApiError) -> JSONResponse:
    return error_response(error.status, error.reason, error.detail, error.headers)


async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    return error_response(422, "invalid_parameter", _validation_detail(error))


async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    reason = _HTTP_REASONS.get(error.status_code, "http_error")
    return error_response(error.status_code, reason, str(error.detail), getattr(error, "headers", None))


async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    _LOGGER.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "an unexpected error occurred; it has been logged")


def install_handlers(app: FastAPI) -> None:
    """Makes every error a JSON `ErrorResponse`."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
