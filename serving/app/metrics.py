"""Prometheus metrics of the web service, in a registry of its own.

- `recommender_http_requests_total{method, route, status}`: requests by method (`KNOWN_METHODS`, any other as
  `other`), route
  template (`/tracks/{track_id}/similar`, never the raw path) and status;
- `recommender_http_request_duration_seconds{method, route}`: latency histogram;
- `recommender_stage_duration_seconds{stage}`: decode, embed and search time
  of the recommendations;
- `recommender_uploads_in_progress`: uploads being received or processed;
- `recommender_model_info{role, name, version, checksum, architecture}` and
  `recommender_index_info{searcher, embedding_dim, model}`: constant 1, with
  the versions as labels; `recommender_index_tracks`: the catalog size.
"""

from __future__ import annotations

import contextlib
import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from serving.retrieval.catalog_index import CatalogIndex

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNMATCHED_ROUTE = "unmatched"
# Request methods are labels from this closed set; any other is counted as `other` (one label per made-up
# method would grow /metrics and the process without bound).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"


class Metrics:
    """The service's metrics.

    Args:
        catalog: The index served (its models and searcher become info labels).
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, catalog: CatalogIndex):
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "recommender_http_requests",
            "HTTP requests by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "recommender_http_request_duration_seconds",
            "HTTP request latency by route.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stages = Histogram(
            "recommender_stage_duration_seconds",
            "Time per recommendation stage (decode, embed, search).",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.uploads = Gauge(
            "recommender_uploads_in_progress", "Uploads being received or processed.", registry=self.registry
        )
        self._describe(catalog)

    def _describe(self, catalog: CatalogIndex) -> None:
        models = Gauge(
            "recommender_model_info",
            "The models embedding queries (value 1).",
            ["role", "name", "version", "checksum", "architecture"],
            registry=self.registry,
        )
        roles = [("embedding", ref) for ref in catalog.embedding_models.models] + [("tag", catalog.tag_model)]
        for role, ref in roles:
            if ref is not None:
                models.labels(role, ref.name, str(ref.version), ref.checksum, ref.model_name).set(1)
        info = catalog.searcher.info
        Gauge(
            "recommender_index_info",
            "The catalog index served (value 1).",
            ["searcher", "embedding_dim", "model"],
            registry=self.registry,
        ).labels(info.kind, str(info.embedding_dim), catalog.embedding_models.key).set(1)
        Gauge("recommender_index_tracks", "Tracks in the catalog index.", registry=self.registry).set(len(catalog))

    @contextlib.contextmanager
    def stage(self, name: str, timings: dict[str, float] | None = None):
        """Times a block as recommendation stage `name` (also into `timings[name]`, in seconds, if given)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.stages.labels(name).observe(elapsed)
            if timings is not None:
                timings[name] = elapsed

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in KNOWN_METHODS else OTHER_METHOD
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)


def _route_template(route) -> str:
    """`/tracks/{track_id}/similar` for a matched route (without converters), else `unmatched`."""
    return getattr(route, "path_format", None) or getattr(route, "path", None) or UNMATCHED_ROUTE


class MetricsMiddleware:
    """ASGI middleware counting and timing every HTTP request by its route template.

    Args:
        app: The wrapped ASGI app.
        metrics: Where to record.
    """

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # What the client gets if the app raises before responding.

        async def send_and_record_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record_status)
        finally:
            route = _route_template(scope.get("route"))
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - start)
