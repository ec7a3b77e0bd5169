"""Load test of the web service: 16 concurrent clients for 30 s against `/tracks/{id}/similar` and `/recommend`.

The service (`python -m serving.app`) runs as a second process on 127.0.0.1
(a free port) over the demo index, embedding uploads in-process; the clients
are threads of this process, each with its own keep-alive HTTP connection.
Of the 16 clients, 4 upload the bundled demo MP3s (15 s each) to
`/recommend` and 12 ask `/tracks/{id}/similar` for the demo tracks, round
robin, k=10, for 30 s; every request started before the end is waited for.
Any non-2xx answer or transport failure counts as an error, and the
benchmark fails if there is one.

Baseline, measured in the same run against the same server: one client
issuing the same requests sequentially (similar-only, then upload-only, for
`--app_baseline_s` each). The ratios say what 16 concurrent clients cost in
latency and gain in throughput over one.

Needs the demo index: run `make demo` first (it builds `demo_output/index`),
or point `--app_index_dir` at another index (with `--app_audio_root`, the
folder its catalog paths are relative to).

Usage:

    make demo
    python -m benchmarks --only=app_load [--app_clients=16 --app_duration_s=30]
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import pathlib
import tempfile
import threading
import time
from collections.abc import Sequence

import httpx
import numpy as np
from absl import flags

from benchmarks import report
from serving.app.child_process import app_process
from serving.retrieval.catalog_index import CatalogIndex

SECTION = "app_load"
SIMILAR = "/tracks/{id}/similar"
RECOMMEND = "/recommend"
DEMO_INDEX = report.REPO_ROOT / "demo_output" / "index"
DEMO_AUDIO_ROOT = report.REPO_ROOT / "demo"

_INDEX_DIR = flags.DEFINE_string("app_index_dir", str(DEMO_INDEX), "The index the app_load benchmark serves.")
_AUDIO_ROOT = flags.DEFINE_string("app_audio_root", str(DEMO_AUDIO_ROOT), "Its catalog's audio root.")
_CLIENTS = flags.DEFINE_integer("app_clients", 16, "Concurrent clients of the app_load benchmark.", lower_bound=2)
_UPLOADERS = flags.DEFINE_integer("app_upload_clients", 4, "Of which upload to /recommend.", lower_bound=1)
_DURATION_S = flags.DEFINE_float("app_duration_s", 30.0, "Seconds of concurrent load.", lower_bound=1.0)
_BASELINE_S = flags.DEFINE_float("app_baseline_s", 10.0, "Seconds per endpoint of the 1-client baseline.")


@dataclasses.dataclass
class LoadResult:
    """What a load run saw.

    Attributes:
        latencies_s: Per endpoint, the latency of every successful request.
        errors: Per endpoint, a description of every failed one.
        wall_s: From the first request to the last answer.
    """

    latencies_s: dict[str, list[float]]
    errors: dict[str, list[str]]
    wall_s: float

    @property
    def error_count(self) -> int:
        return sum(len(e) for e in self.errors.values())

    def count(self, endpoint: str) -> int:
        return len(self.latencies_s.get(endpoint, ()))

    def percentile_ms(self, endpoint: str, q: float) -> float:
        values = self.latencies_s.get(endpoint) or [float("nan")]
        return 1000.0 * float(np.percentile(values, q))

    def throughput(self, endpoint: str | None = None) -> float:
        """Successful requests per second (of one endpoint, or all)."""
        count = self.count(endpoint) if endpoint else sum(len(v) for v in self.latencies_s.values())
        return count / self.wall_s if self.wall_s else 0.0


def _client(
    base_url: str,
    endpoint: str,
    items: Sequence,
    start: int,
    deadline: float,
    result: LoadResult,
    lock: threading.Lock,
    k: int,
) -> None:
    """One client: requests back to back until the deadline, cycling through `items` from `start`."""
    with httpx.Client(base_url=base_url, timeout=120.0) as client:
        for item in itertools.islice(itertools.cycle(items), start, None):
            if time.monotonic() >= deadline:
                return
            began = time.perf_counter()
            try:
                if endpoint == RECOMMEND:
                    path = pathlib.Path(item)
                    files = {"audio": (path.name, path.read_bytes(), "audio/mpeg")}
                    response = client.post(RECOMMEND, params={"k": k}, files=files)
                else:
                    response = client.get(f"/tracks/{item}/similar", params={"k": k})
                elapsed = time.perf_counter() - began
                error = None if response.is_success else f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as failure:
                elapsed, error = time.perf_counter() - began, f"{type(failure).__name__}: {failure}"
            with lock:
                if error is None:
                    result.latencies_s.setdefault(endpoint, []).append(elapsed)
                else:
                    result.errors.setdefault(endpoint, []).append(error)


def run_load(
    base_url: str,
    clients: int,
    upload_clients: int,
    duration_s: float,
    audio_files: Sequence[str],
    track_ids: Sequence[str],
    k: int = 10,
) -> LoadResult:
    """Runs `clients` concurrent clients for `duration_s`: `upload_clients` of them upload `audio_files` to
    `/recommend`, the others ask `/tracks/{id}/similar` for `track_ids` (0 uploaders: similar only;
    `upload_clients == clients`: uploads only).

    Returns:
        Latencies and errors per endpoint (`SIMILAR`, `RECOMMEND`).
    """
    if not 0 <= upload_clients <= clients:
        raise ValueError(f"upload_clients must be in [0, {clients}], got {upload_clients}")
    result = LoadResult({}, {}, 0.0)
    lock = threading.Lock()
    start = time.monotonic()
    deadline = start + duration_s
    threads = []
    for i in range(clients):
        uploads = i < upload_clients
        endpoint, items = (RECOMMEND, list(audio_files)) if uploads else (SIMILAR, list(track_ids))
        threads.append(
            threading.Thread(
                target=_client,
                args=(base_url, endpoint, items, i, deadline, result, lock, k),
                name=f"client-{i}",
                daemon=True,
            )
        )
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.wall_s = time.monotonic() - start
    return result


def catalog_track_ids(base_url: str) -> list[str]:
    """Every track id the service lists (`GET /tracks`, page by page)."""
    ids, offset = [], 0
    with httpx.Client(base_url=base_url, timeout=30.0) as client:
        while True:
            page = client.get("/tracks", params={"limit": 500, "offset": offset}).raise_for_status().json()
            ids += [track["track_id"] for track in page["tracks"]]
            offset += len(page["tracks"])
            if not page["tracks"] or offset >= page["total"]:
                return ids


def _row(label: str, clients: str, result: LoadResult, endpoint: str, baseline: LoadResult | None) -> tuple:
    p50, p99 = result.percentile_ms(endpoint, 50), result.percentile_ms(endpoint, 99)
    throughput = result.throughput(endpoint)
    if baseline is None:
        vs_throughput = vs_p50 = "1.00x (baseline)"
    else:
        vs_throughput = f"{throughput / baseline.throughput(endpoint):.2f}x"
        vs_p50 = f"{p50 / baseline.percentile_ms(endpoint, 50):.2f}x"
    errors = len(result.errors.get(endpoint, ()))
    return (
        label,
        clients,
        result.count(endpoint),
        errors,
        f"{throughput:.1f}",
        f"{p50:.0f}",
        f"{p99:.0f}",
        vs_throughput,
        vs_p50,
    )


def run_benchmark(command: str) -> report.Section:
    """Runs the load test and returns its section of BENCHMARKS.md.

    Raises:
        FileNotFoundError: No index (run `make demo`).
        RuntimeError: A request failed (the section is not written).
    """
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Not a line per request.
    index_dir = _INDEX_DIR.value
    if not os.path.exists(os.path.join(index_dir, "catalog_index.json")):
        raise FileNotFoundError(f"{index_dir}: no index; run `make demo` first (it builds demo_output/index)")
    index = CatalogIndex.load(index_dir)
    models_used = " + ".join(ref.name for ref in (*index.embedding_models.models, index.tag_model) if ref)
    audio_files = sorted(str(p) for p in (DEMO_AUDIO_ROOT / "audio").glob("*.mp3"))
    load_at_start = report.load_average()
    clients, uploaders = _CLIENTS.value, min(_UPLOADERS.value, _CLIENTS.value - 1)
    with tempfile.TemporaryDirectory() as work_dir:
        log_path = os.path.join(work_dir, "app.log")
        with app_process(index_dir, _AUDIO_ROOT.value, log_path, ["--noaccess_log"]) as url:
            track_ids = catalog_track_ids(url)
            run_load(url, 2, 1, 3.0, audio_files, track_ids)  # Warm-up: connections, first uploads.
            similar_alone = run_load(url, 1, 0, _BASELINE_S.value, audio_files, track_ids)
            recommend_alone = run_load(url, 1, 1, _BASELINE_S.value, audio_files, track_ids)
            loaded = run_load(url, clients, uploaders, _DURATION_S.value, audio_files, track_ids)
        failures = {e: v for r in (similar_alone, recommend_alone, loaded) for e, v in r.errors.items() if v}
        if failures:
            raise RuntimeError(f"requests failed under load: { {e: v[:3] for e, v in failures.items()} }")
    rows = [
        _row(SIMILAR, "1 (baseline)", similar_alone, SIMILAR, None),
        _row(SIMILAR, f"{clients - uploaders} of {clients}", loaded, SIMILAR, similar_alone),
        _row(RECOMMEND, "1 (baseline)", recommend_alone, RECOMMEND, None),
        _row(RECOMMEND, f"{uploaders} of {clients}", loaded, RECOMMEND, recommend_alone),
    ]
    table = report.markdown_table(
        [
            "endpoint",
            "clients",
            "requests",
            "errors",
            "req/s",
            "p50 (ms)",
            "p99 (ms)",
            "req/s vs 1 client",
            "p50 vs 1 client",
        ],
        rows,
    )
    notes = [
        f"`python -m serving.app` in a second process on 127.0.0.1 over the demo index ({len(track_ids)} tracks), "
        f"embedding in-process ({models_used} SavedModels, 2 inference threads); clients are threads "
        f"of the benchmark process with keep-alive connections. Load: {clients} clients for {_DURATION_S.value:.0f} s, "
        f"{uploaders} uploading the 15 s demo MP3s to `/recommend`, {clients - uploaders} asking "
        "`/tracks/{id}/similar`, k=10, back to back. Latency is client-side, request sent to body read. "
        f"Total under load: {loaded.throughput():.1f} req/s, **{loaded.error_count} errors** (any non-2xx or "
        "transport failure fails the benchmark).",
        f"Baseline: one client issuing the same requests sequentially against the same server in the same run "
        f"({_BASELINE_S.value:.0f} s per endpoint). The ratios are the throughput and the p50 latency of the "
        f"{clients} concurrent clients relative to one. On {report.num_cpus()} cores the load generator's threads "
        "(one Python process), the service's event loop and its inference threads (decode + every model of "
        "the index per upload, CPU-bound) all share the CPU, so throughput under load can fall below a lone client's and the "
        "p50 ratio is mostly queueing; the figure that must hold is zero errors.",
        report.load_note(load_at_start),
    ]
    return report.Section(
        name=SECTION,
        title=f"Web service under load ({clients} clients, {_DURATION_S.value:.0f} s)",
        command=command,
        table=table,
        notes=notes,
    )
