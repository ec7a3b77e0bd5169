"""The web app's routes: the JSON API, the page, metrics and security headers, over a `RecommendationService`.

    app = create_app(AppConfig(index_dir="demo_output/index", audio_root="demo"))
    uvicorn.run(app, host="127.0.0.1", port=8080)

`create_app` loads the index and the models it was built with, runs one
warm-up query, and returns a FastAPI app serving `/healthz`, `/metrics`,
`/tracks`, `/tracks/{id}/similar`, `/tracks/{id}/audio`, `/recommend` (upload)
and the page (`/`, `/static`).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import socket
from typing import Annotated

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from serving.app import catalog_audio, errors, schemas, uploads
from serving.app.metrics import Metrics, MetricsMiddleware
from serving.app.service import AppConfig, RecommendationService, make_embedder
from serving.retrieval.sharded_index import load_index

STATIC_DIR = pathlib.Path(__file__).resolve().parent / "static"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (IPv4 or IPv6, as the host is).

    The protocol is named explicitly: asyncio switches Nagle's algorithm off
    (TCP_NODELAY) only on connections whose socket says IPPROTO_TCP, and with
    it on, every small response waits ~40 ms for the client's delayed ACK.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
    except OSError:
        sock.close()
        raise
    return sock


class SecurityHeadersMiddleware:
    """ASGI middleware adding a strict Content-Security-Policy (same origin only) and `nosniff` to every response."""

    _HEADERS = [
        (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
    ]

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self._HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [uploads.FIELD],
                    "properties": {
                        uploads.FIELD: {"type": "string", "format": "binary", "description": "An audio file."}
                    },
                }
            }
        },
    }
}


RecommendQuery = Annotated[schemas.RecommendParams, Query()]
TrackPageQuery = Annotated[schemas.TrackPageParams, Query()]


def _add_api_routes(app: FastAPI, service: RecommendationService, metrics: Metrics) -> None:

    @app.get("/healthz", response_model=schemas.Health, tags=["service"])
    def healthz():
        """Ready: the index and models are loaded."""
        return service.health()

    @app.get("/metrics", response_class=Response, tags=["service"], responses={200: {"content": {"text/plain": {}}}})
    def prometheus_metrics():
        """Prometheus metrics: requests, latencies, stage timings, model and index versions."""
        return Response(metrics.exposition(), media_type=metrics.content_type)

    @app.get(
        "/map",
        response_class=Response,
        responses={200: {"model": schemas.CatalogMap, "content": {"application/json": {}}}, **errors.responses(404)},
        tags=["catalog"],
    )
    def catalog_map():
        """The catalog map: every track's point (similar tracks near each other), its top tag and its label."""
        return Response(service.map_json(), media_type="application/json", headers={"Cache-Control": "max-age=60"})

    @app.get("/tracks", response_model=schemas.TrackPage, responses=errors.responses(422), tags=["catalog"])
    def list_tracks(params: TrackPageQuery):
        """Catalog tracks, a page at a time, optionally matching `q`."""
        return service.tracks_page(params)

    @app.get(
        "/tracks/{track_id:path}/similar",
        response_model=schemas.RecommendResponse,
        responses=errors.responses(404, 422),
        tags=["recommend"],
    )
    def similar(track_id: str, params: RecommendQuery):
        """Catalog tracks similar to a catalog track."""
        return service.similar(track_id, params)

    @app.get(
        "/tracks/{track_id:path}/audio",
        response_class=FileResponse,
        responses={
            200: {"content": {"audio/*": {}}, "description": "The audio file."},
            206: {"content": {"audio/*": {}}, "description": "The requested byte range."},
            **errors.responses(400, 404, 416),
        },
        tags=["catalog"],
    )
    def track_audio(track_id: str, request: Request):
        """A catalog track's audio file, with HTTP range requests (seeking)."""
        path = service.audio_file(track_id)
        catalog_audio.check_range(request.headers.get("range"), os.path.getsize(path))
        return FileResponse(path, media_type=catalog_audio.media_type(path), headers={"Cache-Control": "max-age=3600"})

    # HEAD answers GET's headers without the body (players and proxies ask it first); HTTP defines it with GET,
    # so the API schema lists GET alone.
    app.add_api_route(
        "/tracks/{track_id:path}/audio",
        track_audio,
        methods=["HEAD"],
        response_class=FileResponse,
        include_in_schema=False,
    )

    @app.post(
        "/recommend",
        response_model=schemas.RecommendResponse,
        responses=errors.responses(400, 408, 413, 415, 422, 502, 503),
        openapi_extra=_UPLOAD_BODY,
        tags=["recommend"],
    )
    async def recommend(request: Request, params: RecommendQuery):
        """Catalog tracks similar to an uploaded audio file (multipart field `audio`)."""
        return await service.recommend_upload(request, params)


def _add_page(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def create_app(config: AppConfig) -> FastAPI:
    """Loads the index and models and returns the web app.

    Raises:
        FileNotFoundError: No index (or no models) where given.
        serving.export.exported_model.ModelMismatchError: The models found are not
            those the index was built with.
    """
    catalog = load_index(config.index_dir)  # One index, or the shards of one (read as one).
    metrics = Metrics(catalog)
    service = RecommendationService(catalog, make_embedder(catalog, config), config, metrics)
    if config.warmup:
        service.warm_up()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.close()

    app = FastAPI(
        title="music-recommender",
        summary="Content-based music recommendations: upload a song, get similar catalog tracks.",
        version="1",
        docs_url=None,  # Swagger UI and ReDoc load from CDNs; the schema is at /openapi.json.
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.service = service
    errors.install_handlers(app)
    _add_api_routes(app, service, metrics)
    _add_page(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(SecurityHeadersMiddleware)
    return app
