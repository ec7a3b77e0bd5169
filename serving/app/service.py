"""The recommendation service behind the web routes: an upload or a catalog track in, similar catalog tracks out.

    service = RecommendationService(catalog, make_embedder(catalog, config), config, Metrics(catalog))
    service.similar("track-id", RecommendParams())

It owns the index, the embedder (in-process SavedModels, or TF Serving with
`AppConfig.server`) and a thread pool of `inference_threads`: embedding is
CPU-heavy and blocking, so it never runs on the event loop; at most
`max_pending_uploads` uploads are received or processed at once, further ones
get 503 with `Retry-After`. Searches (milliseconds each) run in the request's
own thread; `Recommender` is safe to call concurrently. `serving.app.routes`
maps HTTP onto it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import shutil
from urllib.parse import quote

import numpy as np
import soundfile
from fastapi import Request

from intake import audio
from serving.app import catalog_audio, errors, schemas, uploads
from serving.app.errors import ApiError
from serving.app.metrics import Metrics
from serving.embedding import embedders, query_audio
from serving.embedding.tf_serving_client import ServingError
from serving.export.saved_model import MIN_SECONDS
from serving.retrieval import catalog_map, index_layout, rendering
from serving.retrieval.catalog_index import CatalogIndex, TrackRecord
from serving.retrieval.recommender import (
    DEFAULT_EXPANSION,
    QueryExpansion,
    RecommendationResult,
    Recommender,
    TagFilter,
)
from serving.retrieval.recommender import Query as RecommenderQuery

_MAX_SHOWN_ID = 200


@dataclasses.dataclass(frozen=True)
class AppConfig:
    """What the service serves and its limits.

    Attributes:
        index_dir: The index built by `serving.build_index`.
        export_base: The serving base path of the exported models, if they moved since the
            index was built (in-process embedding only).
        server: TF Serving's `host:port`; None embeds in-process.
        protocol: `grpc` or `rest` (with `server`).
        audio_root: The folder the catalog's track paths are relative to (the
            catalog CSV's folder); None: the folder an index built from a folder
            of music recorded, else no catalog audio.
        max_upload_bytes: Largest upload accepted.
        max_duration_s: Longest audio accepted (decoded duration).
        inference_threads: Uploads decoded and embedded at once.
        max_pending_uploads: Uploads received or processed at once; more get
            503.
        upload_parent_dir: Where the private upload directory is created
            (default: the system's temporary directory).
        upload_deadlines: How long an upload may stall and take overall
            before it is answered 408 and its slot freed.
        tag_filter: The tag sets' default settings: what stage 1 filters by when a request asks for it, and what
            explains the answers (requests may override).
        expansion: Query expansion by default (None: off; requests may override).
        warmup: Run one query on silence before serving (also checks that the
            models answer).
    """

    index_dir: str
    export_base: str | None = None
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
    expansion: QueryExpansion | None = DEFAULT_EXPANSION
    warmup: bool = True

    def __post_init__(self):
        if self.max_upload_bytes < 1 or self.max_duration_s <= MIN_SECONDS:
            raise ValueError(f"limits must allow some audio: at least 1 byte and more than {MIN_SECONDS} s")
        if self.inference_threads < 1 or self.max_pending_uploads < 1:
            raise ValueError("inference_threads and max_pending_uploads must be >= 1")
        if self.audio_root is None:  # An index built from a folder of music plays its files from there.
            recorded = index_layout.recorded_audio_root(self.index_dir)
            if recorded is not None and not os.path.isdir(recorded):
                raise FileNotFoundError(
                    f"{self.index_dir} was built from the folder {recorded}, which is gone: give --audio_root"
                )
            object.__setattr__(self, "audio_root", recorded)
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
        self.recommender = Recommender(catalog, None, expansion=config.expansion, tag_sets=config.tag_filter)
        self.catalog_map = catalog_map.CatalogMap.load(config.index_dir)
        self._map_positions = {}  # Of the tracks the index holds (a map is rewritten with every change of it).
        if self.catalog_map is not None:
            points = zip(self.catalog_map.track_ids, self.catalog_map.positions.tolist(), strict=True)
            self._map_positions = {track_id: point for track_id, point in points if track_id in catalog}
        self._map_json = None
        self.upload_dir = uploads.private_directory(config.upload_parent_dir)
        self._pool = concurrent.futures.ThreadPoolExecutor(config.inference_threads, thread_name_prefix="inference")
        self._pending = 0
        self._search_text = [" ".join((t.track_id, t.artist, t.title, t.album)).casefold() for t in self.catalog.tracks]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self.upload_dir, ignore_errors=True)

    # Tracks.

    def audio_url(self, track: TrackRecord) -> str | None:
        """Where the page plays the track (None when this service would not serve its audio: no audio root, no
        local file, a file outside the root or missing)."""
        if self.config.audio_root is None:
            return None
        try:
            catalog_audio.resolve(self.config.audio_root, track)
        except ApiError:
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

    def _expansion(self, params: schemas.RecommendParams):
        if params.query_expansion is None:
            return self.config.expansion
        return QueryExpansion(params.query_expansion) if params.query_expansion else None

    def map_json(self) -> bytes:
        """`GET /map`'s body, serialised once (a 100,000-track map is a few MB)."""
        if self.catalog_map is None:
            raise ApiError(
                404,
                "no_map",
                "this index has no catalog map: rebuild or update it with `python -m serving.build_index`",
            )
        if self._map_json is None:
            top = catalog_map.top_tags(self.catalog)
            track_ids = list(self._map_positions)
            rows = [self.catalog.row(track_id) for track_id in track_ids]
            tracks = [self.catalog.tracks[row] for row in rows]
            payload = {
                "method": self.catalog_map.method,
                "tags": list(self.catalog.vocabulary),
                "track_ids": track_ids,
                "x": [round(self._map_positions[track_id][0], 5) for track_id in track_ids],
                "y": [round(self._map_positions[track_id][1], 5) for track_id in track_ids],
                "top_tag": [-1] * len(rows) if top is None else [int(top[row]) for row in rows],
                "labels": [" — ".join(part for part in (t.title or t.track_id, t.artist) if part) for t in tracks],
            }
            self._map_json = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return self._map_json

    def _map_position(self, query_track_id: str | None, result: RecommendationResult) -> list[float] | None:
        """A catalog track's own point, or an upload's: the score-weighted mean of its answers' points."""
        if not self._map_positions:
            return None
        if query_track_id is not None:
            return self._map_positions.get(query_track_id)
        placed = [
            (self._map_positions[r.track.track_id], max(r.score, 0.0) + 1e-6)
            for r in result.recommendations
            if r.track.track_id in self._map_positions
        ]
        if not placed:
            return None
        total = sum(weight for _, weight in placed)
        return [sum(point[axis] * weight for point, weight in placed) / total for axis in (0, 1)]

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
                    expansion=self._expansion(params),
                )
        except ValueError as error:
            raise ApiError(422, "invalid_parameter", str(error)) from None

    def _top_tags(self, probabilities) -> list[dict]:
        tags = rendering.top_tags(probabilities, self.catalog.vocabulary, schemas.TOP_TAGS)
        return [{"tag": tag, "probability": p} for tag, p in tags]

    def _response(
        self,
        result: RecommendationResult,
        query: RecommenderQuery,
        params: schemas.RecommendParams,
        info: dict,
        timings: dict,
    ) -> dict:
        body = result.to_dict(track_view=self.track_dict)
        if self.catalog.tag_model is None and params.tag_filter:
            body["notes"].append("this index has no tag model: stage 1 (tag filter) is off")
        body["query"] = {**info, "top_tags": self._top_tags(query.tag_probabilities)}
        body["timings_ms"] = {stage: round(1000.0 * seconds, 3) for stage, seconds in timings.items()}
        body["map_position"] = self._map_position(info.get("track_id"), result)
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
        query = RecommenderQuery(
            embedding=embedding,
            tag_probabilities=tags,
            content_sha256=content_sha256,
            embedded_by=self.embedder.embedding_models,
        )
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
        return query_audio.load_query_audio(
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
            "embedding_models": [
                {**_model_info(ref), "weight": weight}
                for ref, weight in zip(
                    self.catalog.embedding_models.models, self.catalog.embedding_models.weights, strict=True
                )
            ],
            "tag_model": _model_info(self.catalog.tag_model),
            "embedder": f"tf-serving {config.server} ({config.protocol})" if config.server else "in-process",
            "audio_served": config.audio_root is not None,
            "max_upload_bytes": config.max_upload_bytes,
            "max_duration_s": config.max_duration_s,
        }


def make_embedder(catalog: CatalogIndex, config: AppConfig):
    """The index's models, in-process or through TF Serving."""
    return embedders.make_embedder(
        catalog.embedding_models, catalog.tag_model, config.server, config.protocol, config.export_base
    )
