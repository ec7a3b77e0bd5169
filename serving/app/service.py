"""The recommendation web service: an upload or a catalog track in, similar catalog tracks out.

    app = create_app(AppConfig(index_dir="demo_output/index", audio_root="demo"))
    uvicorn.run(app, host="127.0.0.1", port=8080)

`create_app` loads the index and the models it was built with (in-process
from the SavedModels, or TF Serving with `AppConfig.server`), runs one
warm-up query, and returns a FastAPI app serving the JSON API, the page
(`/`) and Prometheus metrics. Embedding is CPU-heavy and blocking, so it runs
in a thread pool of `inference_threads`, never on the event loop; at most
`max_pending_uploads` uploads are received or processed at once, further
ones get 503 with `Retry-After`. Searches (milliseconds each) run in the
request's own thread; `Recommender` is safe to call concurrently.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import os
import pathlib
import shutil
import socket
from typing import Annotated
from urllib.parse import quote

import numpy as np
import soundfile
from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from data_prep import audio
from serving import queries
from serving.app import catalog_audio, errors, schemas, uploads
from serving.app.errors import ApiError
from serving.app.metrics import Metrics, MetricsMiddleware
from serving.catalog_index import CatalogIndex, TrackRecord
from serving.client import ServingError
from serving.embedders import LocalEmbedder, RemoteEmbedder
from serving.recommender import Query as RecommenderQuery
from serving.recommender import RecommendationResult, Recommender, TagFilter
from serving.saved_model import MIN_SECONDS

STATIC_DIR = pathlib.Path(__file__).resolve().parent / "static"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_MAX_SHOWN_ID = 200


@dataclasses.dataclass(frozen=True)
class AppConfig:
    """What the service serves and its limits.

    Attributes:
        index_dir: The index built by `serving.build_index`.
        export_dir: Where the exported models are, if they moved since the
            index was built (in-process embedding only).
        server: TF Serving's `host:port`; None embeds in-process.
        protocol: `grpc` or `rest` (with `server`).
        audio_root: The folder the catalog's track paths are relative to (the
            catalog CSV's folder); None serves no catalog audio.
        max_upload_bytes: Largest upload accepted.
        max_duration_s: Longest audio accepted (decoded duration).
        inference_threads: Uploads decoded and embedded at once.
        max_pending_uploads: Uploads received or processed at once; more get
            503.
        upload_parent_dir: Where the private upload directory is created
            (default: the system's temporary directory).
        upload_deadlines: How long an upload may stall and take overall
            before it is answered 408 and its slot freed.
        tag_filter: Stage 1's default settings (requests may override).
        warmup: Run one query on silence before serving (also checks that the
            models answer).
    """

    index_dir: str
    export_dir: str | None = None
    server: str | None = None
    protocol: str = "grpc"
    audio_root: str | None = None
    max_upload_bytes: int = 50 * 2**20
    max_duration_s: float = 600.0
    inference_threads: int = 2
    max_pending_uploads: int = 32
    upload_parent_dir: str | None = None
    upload_deadlines: uploads.UploadDeadlines = uploads.UploadDeadlines()
    tag_filter: TagFilter = TagFilter()
    warmup: bool = True

    def __post_init__(self):
        if self.max_upload_bytes < 1 or self.max_duration_s <= MIN_SECONDS:
            raise ValueError(f"limits must allow some audio: at least 1 byte and more than {MIN_SECONDS} s")
        if self.inference_threads < 1 or self.max_pending_uploads < 1:
            raise ValueError("inference_threads and max_pending_uploads must be >= 1")
        if self.audio_root is not None and not os.path.isdir(self.audio_root):
            raise FileNotFoundError(f"--audio_root {self.audio_root}: no such directory")


def _shown(track_id: str) -> str:
    return repr(track_id[:_MAX_SHOWN_ID] + ("…" if len(track_id) > _MAX_SHOWN_ID else ""))


def _model_info(ref) -> dict | None:
    if ref is None:
        return None
    return {"name": ref.name, "version": ref.version, "checksum": ref.checksum, "architecture": ref.model_name}


def declared_duration_s(path: str) -> float | None:
    """The duration the file's header announces, read without decoding (None if it says nothing)."""
    try:
        return soundfile.info(path).duration
    except Exception:  # noqa: BLE001 - libsndfile rejects many formats; PyAV may know them.
        pass
    try:
        import av

        with av.open(path, mode="r") as container:
            return container.duration / 1e6 if container.duration else None
    except Exception:  # noqa: BLE001 - not audio at all: decoding will say so.
        return None


class RecommendationService:
    """Queries from uploads and catalog tracks, as JSON-ready dicts.

    Args:
        catalog: The index.
        embedder: A `LocalEmbedder` or `RemoteEmbedder` for the index's models.
        config: Limits and defaults.
        metrics: Where stage timings go.
    """

    def __init__(self, catalog: CatalogIndex, embedder, config: AppConfig, metrics: Metrics):
        self.catalog = catalog
        self.embedder = embedder
        self.config = config
        self.metrics = metrics
        self.recommender = Recommender(catalog, config.tag_filter)
        self.upload_dir = uploads.private_directory(config.upload_parent_dir)
        self._pool = concurrent.futures.ThreadPoolExecutor(config.inference_threads, thread_name_prefix="inference")
        self._pending = 0
        self._search_text = [" ".join((t.track_id, t.artist, t.title, t.album)).casefold() for t in self.catalog.tracks]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self.upload_dir, ignore_errors=True)

    # Tracks.

    def audio_url(self, track: TrackRecord) -> str | None:
        """Where the page plays the track (None when this service serves no audio for it)."""
        if self.config.audio_root is None or not catalog_audio.servable(track):
            return None
        return f"/tracks/{quote(track.track_id, safe='')}/audio"

    def track(self, track_id: str) -> TrackRecord:
        """The catalog track; 404 `unknown_track` for an id the index does not hold."""
        if track_id not in self.catalog:
            raise ApiError(404, "unknown_track", f"no track {_shown(track_id)} in the index")
        return self.catalog.track(track_id)

    def track_dict(self, track: TrackRecord) -> dict:
        """A track as the API shows it (`schemas.Track`): no file paths or hashes."""
        return {
            "track_id": track.track_id,
            "artist": track.artist,
            "title": track.title,
            "album": track.album,
            "duration_s": track.duration_s,
            "audio_url": self.audio_url(track),
        }

    def tracks_page(self, params: schemas.TrackPageParams) -> dict:
        """A page of the catalog in index order, optionally only tracks matching `q` (any case)."""
        rows = range(len(self.catalog))
        if params.q:
            needle = params.q.casefold()
            rows = [row for row in rows if needle in self._search_text[row]]
        page = rows[params.offset : params.offset + params.limit]
        return {
            "total": len(rows),
            "offset": params.offset,
            "limit": params.limit,
            "tracks": [self.track_dict(self.catalog.tracks[row]) for row in page],
        }

    def audio_file(self, track_id: str) -> str:
        """The checked path of a track's audio file (404 with a reason otherwise)."""
        track = self.track(track_id)
        if self.config.audio_root is None:
            raise ApiError(404, "audio_not_served", "this service was started without --audio_root: no catalog audio")
        return catalog_audio.resolve(self.config.audio_root, track)

    # Recommendations.

    def _tag_filter(self, params: schemas.RecommendParams) -> TagFilter | None:
        if not params.tag_filter or self.catalog.tag_model is None:
            return None
        default = self.config.tag_filter
        threshold = default.threshold if params.tag_threshold is None else params.tag_threshold
        top_n = default.top_n if params.tag_top_n is None else params.tag_top_n
        return TagFilter(threshold, top_n)

    def _recommend(
        self, query: RecommenderQuery, params: schemas.RecommendParams, timings: dict[str, float]
    ) -> RecommendationResult:
        try:
            with self.metrics.stage("search", timings):
                return self.recommender.recommend(
                    query,
                    params.k,
                    tag_filter=self._tag_filter(params),
                    rank_by_embedding=params.embedding_rank,
                    max_per_artist=params.max_per_artist,
                )
        except ValueError as error:
            raise ApiError(422, "invalid_parameter", str(error)) from None

    def _top_tags(self, probabilities) -> list[dict]:
        tags = queries.top_tags(probabilities, self.catalog.vocabulary, schemas.TOP_TAGS)
        return [{"tag": tag, "probability": p} for tag, p in tags]

    def _response(
        self,
        result: RecommendationResult,
        query: RecommenderQuery,
        params: schemas.RecommendParams,
        info: dict,
        timings: dict,
    ) -> dict:
        body = result.to_dict()
        body["recommendations"] = [
            {
                **self.track_dict(r.track),
                "rank": r.rank,
                "score": r.score,
                "shared_tags": [dataclasses.asdict(t) for t in r.shared_tags],
                "explanation": r.explanation,
            }
            for r in result.recommendations
        ]
        if self.catalog.tag_model is None and params.tag_filter:
            body["notes"].append("this index has no tag model: stage 1 (tag filter) is off")
        body["query"] = {**info, "top_tags": self._top_tags(query.tag_probabilities)}
        body["timings_ms"] = {stage: round(1000.0 * seconds, 3) for stage, seconds in timings.items()}
        return body

    def similar(self, track_id: str, params: schemas.RecommendParams) -> dict:
        """Recommendations for a catalog track (from its stored embedding and tags)."""
        query = self.recommender.query_for_track(self.track(track_id).track_id)
        timings = {}
        result = self._recommend(query, params, timings)
        return self._response(result, query, params, {"kind": "track", "track_id": track_id}, timings)

    @contextlib.contextmanager
    def _admitted(self):
        """Counts an upload in progress; 503 when `max_pending_uploads` are already (event-loop thread only)."""
        if self._pending >= self.config.max_pending_uploads:
            raise ApiError(503, "busy", f"{self._pending} uploads are in progress; retry shortly", {"Retry-After": "1"})
        self._pending += 1
        self.metrics.uploads.inc()
        try:
            yield
        finally:
            self._pending -= 1
            self.metrics.uploads.dec()

    async def recommend_upload(self, request: Request, params: schemas.RecommendParams) -> dict:
        """Recommendations for the audio file uploaded in `request`."""
        with self._admitted():
            async with uploads.receive(
                request, self.upload_dir, self.config.max_upload_bytes, self.config.upload_deadlines
            ) as upload:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._pool, self._recommend_file, upload, params)

    def _recommend_file(self, upload: uploads.Upload, params: schemas.RecommendParams) -> dict:
        """Decode, embed and search (in the inference pool)."""
        timings = {}
        try:
            with self.metrics.stage("decode", timings):
                waveform, duration_s, content_sha256 = self._decode(upload)
            with self.metrics.stage("embed", timings):
                embedding, tags = self.embedder.features(waveform)
        except audio.AudioError as error:
            status = errors.AUDIO_ERROR_STATUS.get(error.reason, 422)
            detail = error.detail.replace(upload.path, upload.filename).replace(self.upload_dir, "")
            raise ApiError(status, error.reason, f"{upload.filename}: {detail}") from None
        except ServingError as error:
            raise ApiError(502, "model_server_error", f"TF Serving failed: {error}") from None
        query = RecommenderQuery(embedding=embedding, tag_probabilities=tags, content_sha256=content_sha256)
        result = self._recommend(query, params, timings)
        info = {"kind": "upload", "filename": upload.filename, "duration_s": round(duration_s, 3)}
        return self._response(result, query, params, info, timings)

    def _too_long(self, upload: uploads.Upload, seconds: float) -> ApiError:
        return ApiError(
            413,
            "too_long",
            f"{upload.filename}: the audio lasts {seconds:.1f} s, more than the maximum of {self.config.max_duration_s:g} s",
        )

    def _decode(self, upload: uploads.Upload) -> tuple[np.ndarray, float, str]:
        """The mono waveform at the models' rate, its duration and the file's hash; limits checked."""
        declared = declared_duration_s(upload.path)
        if declared is not None and declared > self.config.max_duration_s:
            raise self._too_long(upload, declared)
        # Decoding stops past the limit, whatever the header claimed.
        return queries.load_query_audio(
            upload.path, self.embedder.sample_rate, upload.filename, self.config.max_duration_s
        )

    def warm_up(self) -> None:
        """One embedding of silence and one search, so that the first request pays no start-up cost."""
        embedding, tags = self.embedder.features(np.zeros(int(2 * MIN_SECONDS * self.embedder.sample_rate), np.float32))
        # An untrained model may embed silence as zeros, which cannot be normalised.
        query = RecommenderQuery(embedding=embedding + 1e-6, tag_probabilities=tags)
        defaults = schemas.RecommendParams()
        self.recommender.recommend(query, defaults.k, tag_filter=self._tag_filter(defaults))

    def health(self) -> dict:
        """What `/healthz` answers: the index, the models, how uploads are embedded, the limits."""
        config = self.config
        return {
            "status": "ok",
            "tracks": len(self.catalog),
            "searcher": self.catalog.searcher.info.kind,
            "embedding_model": _model_info(self.catalog.embedding_model),
            "tag_model": _model_info(self.catalog.tag_model),
            "embedder": f"tf-serving {config.server} ({config.protocol})" if config.server else "in-process",
            "audio_served": config.audio_root is not None,
            "max_upload_bytes": config.max_upload_bytes,
            "max_duration_s": config.max_duration_s,
        }


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


def make_embedder(catalog: CatalogIndex, config: AppConfig):
    """The index's models, in-process or through TF Serving."""
    if config.server:
        return RemoteEmbedder(config.server, catalog.embedding_model, catalog.tag_model, config.protocol)
    return LocalEmbedder(catalog.embedding_model, catalog.tag_model, config.export_dir)


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
        serving.exported_model.ModelMismatchError: The models found are not
            those the index was built with.
    """
    catalog = CatalogIndex.load(config.index_dir)
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
