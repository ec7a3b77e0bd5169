r"""The catalog index's memory, disk, build and load time per track at 100k and 1M tracks, and a sizing plan.

Usage:

    python -m benchmarks.index_sizing [--sizing_tracks=100000,1000000] [--sizing_dims=512,200] \
        [--output=BENCHMARKS.md]

For each size and embedding dimension a fresh process builds a
`CatalogIndex` (synthetic clustered unit embeddings, 50 tag probabilities and
realistic track records per track; ScaNN's configuration chosen by size, as
`serving.build_index` does) and saves it; a second fresh process loads it
(what every serving replica does), then times single queries of the searcher.
Memory is the resident set: of the loading process after minus before
`CatalogIndex.load` (a replica's cost), and the build process's peak.
Baseline: the embeddings' own float32 bytes (`dim x 4` per track), against
which the table gives the index's overhead. From the two sizes the section
fits `build time = a * n + b * n^1.5` (the tree's assignment grows with its
sqrt(n) leaves) and `memory = c + d * n`, and extrapolates to 100M tracks.
"""

from __future__ import annotations

from tf_startup import run

import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import flags

from benchmarks import report
from benchmarks.index_search import ClusteredUnitVectors

SECTION = "index_sizing"
NUM_TAGS = 50
QUERIES = 200
PLAN_SIZES = (1_000_000, 10_000_000, 30_000_000, 100_000_000)
REPLICA_RAM_GB = 64  # A common large serving machine; the plan shards above what fits in half of it.

_TRACKS = flags.DEFINE_list("sizing_tracks", ["100000", "1000000"], "Catalog sizes of the index_sizing benchmark.")
_DIMS = flags.DEFINE_list("sizing_dims", ["512", "200"], "Embedding sizes of the index_sizing benchmark.")
_CASE = flags.DEFINE_string("sizing_case", None, "Internal: `build:N:DIM:DIR` or `load:DIR`, run in a fresh process.")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _model_refs(dim: int):
    from serving.embedding.ensemble import EmbeddingModels
    from serving.export.exported_model import ModelRef

    embedding = ModelRef("ranker", 1, "/models/ranker/1", "0" * 16, "musicnn", (), dim, "fp", 16000)
    tags = tuple(f"tag{i}" for i in range(NUM_TAGS))
    tag_model = ModelRef("tagger", 1, "/models/tagger/1", "1" * 16, "crnn", tags, 32, "fp", 16000)
    return EmbeddingModels((embedding,)), tag_model


def _tracks(count: int):
    from serving.retrieval.catalog_index import TrackRecord

    return [
        TrackRecord(
            f"spotify:{i:022d}",
            artist=f"Artist {i % 50_021}",
            title=f"Track title number {i}",
            album=f"Album {i % 150_001}",
            path=f"audio/{i % 1000:03d}/{i:022d}.mp3",
            duration_s=30.0,
            content_sha256=f"{i:064x}",
        )
        for i in range(count)
    ]


def build_case(count: int, dim: int, directory: str) -> dict:
    from serving.retrieval.catalog_index import CatalogIndex

    embedding_models, tag_model = _model_refs(dim)
    embeddings = ClusteredUnitVectors(dim=dim).sample(count, seed=1)
    probabilities = np.random.default_rng(2).beta(0.5, 3.0, size=(count, NUM_TAGS)).astype(np.float32)
    tracks = _tracks(count)
    before = _rss_bytes()
    start = time.perf_counter()
    index = CatalogIndex.build(tracks, embeddings, probabilities, embedding_models, tag_model)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    index.save(directory)
    save_s = time.perf_counter() - start
    disk = sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(directory) for name in names)
    return {
        "kind": index.searcher.info.kind,
        "build_s": build_s,
        "save_s": save_s,
        "disk_bytes": disk,
        "build_peak_bytes": _peak_rss_bytes(),
        "inputs_bytes": before,
    }


def load_case(directory: str) -> dict:
    from serving.retrieval.catalog_index import CatalogIndex

    before = _rss_bytes()
    start = time.perf_counter()
    index = CatalogIndex.load(directory)
    load_s = time.perf_counter() - start
    resident = _rss_bytes() - before
    queries = ClusteredUnitVectors(dim=index.embeddings.shape[1]).sample(QUERIES, seed=9)
    for query in queries[:10]:
        index.searcher.search(query, 10)
    times = []
    for query in queries:
        start = time.perf_counter()
        index.searcher.search(query, 10)
        times.append(time.perf_counter() - start)
    return {"load_s": load_s, "resident_bytes": resident, "query_p50_ms": 1000 * float(np.median(times))}


def _run_case(case: str) -> dict:
    command = [sys.executable, "-m", "benchmarks.index_sizing", f"--sizing_case={case}"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{case} failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@dataclasses.dataclass(frozen=True)
class Case:
    tracks: int
    dim: int
    kind: str
    build_s: float
    load_s: float
    resident_bytes: int
    build_peak_bytes: int
    disk_bytes: int
    query_p50_ms: float

    @property
    def bytes_per_track(self) -> float:
        return self.resident_bytes / self.tracks


def measure(tracks: list[int], dims: list[int]) -> list[Case]:
    cases = []
    for dim in dims:
        for count in tracks:
            directory = tempfile.mkdtemp(prefix=f"sizing_{count}_{dim}_")
            try:
                built = _run_case(f"build:{count}:{dim}:{directory}/index")
                loaded = _run_case(f"load:{directory}/index")
            finally:
                shutil.rmtree(directory, ignore_errors=True)
            case = Case(
                count,
                dim,
                built["kind"],
                built["build_s"],
                loaded["load_s"],
                loaded["resident_bytes"],
                built["build_peak_bytes"],
                built["disk_bytes"],
                loaded["query_p50_ms"],
            )
            print(case, flush=True)
            cases.append(case)
    return cases


def fit_build_time(small: Case, large: Case) -> tuple[float, float]:
    """(a, b) of `seconds = a * n + b * n^1.5` through both cases (b clipped at 0)."""
    matrix = np.array([[small.tracks, small.tracks**1.5], [large.tracks, large.tracks**1.5]], np.float64)
    a, b = np.linalg.solve(matrix, [small.build_s, large.build_s])
    if b < 0 or a < 0:
        return large.build_s / large.tracks, 0.0
    return float(a), float(b)


def fit_memory(small: Case, large: Case) -> tuple[float, float]:
    """(fixed bytes, bytes per track) through both cases."""
    per_track = (large.resident_bytes - small.resident_bytes) / (large.tracks - small.tracks)
    return small.resident_bytes - per_track * small.tracks, per_track


def _gb(value: float) -> str:
    return f"{value / 1e9:.1f} GB"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def plan_rows(cases: list[Case]) -> list[list[str]]:
    """The sizing plan: RAM per replica, build time and shards, per size and dimension."""
    rows = []
    for dim in sorted({c.dim for c in cases}, reverse=True):
        ordered = sorted((c for c in cases if c.dim == dim), key=lambda c: c.tracks)
        small, large = ordered[0], ordered[-1]
        a, b = fit_build_time(small, large)
        fixed, per_track = fit_memory(small, large)
        for size in PLAN_SIZES:
            ram = fixed + per_track * size
            shards = max(1, int(np.ceil(ram / (REPLICA_RAM_GB * 1e9 / 2))))
            build = a * size + b * size**1.5
            sharded_build = a * size + b * size * (size / shards) ** 0.5
            how = "one index" if shards == 1 else f"{shards} shards of {_gb(ram / shards)}"
            rows.append(
                [
                    f"{size:,}",
                    dim,
                    _gb(ram),
                    _duration(build),
                    how,
                    _duration(sharded_build / shards) + (" each, in parallel" if shards > 1 else ""),
                ]
            )
    return rows


def run_benchmark(command: str) -> report.Section:
    load_at_start = report.load_average()
    cases = measure([int(n) for n in _TRACKS.value], [int(d) for d in _DIMS.value])
    rows = [
        [
            f"{c.tracks:,}",
            c.dim,
            c.kind,
            f"{c.build_s:.1f}",
            f"{c.load_s:.1f}",
            _gb(c.resident_bytes),
            f"{c.bytes_per_track:,.0f}",
            f"{c.bytes_per_track / (4 * c.dim):.1f}x",
            _gb(c.build_peak_bytes),
            _gb(c.disk_bytes),
            f"{c.query_p50_ms:.2f}",
        ]
        for c in cases
    ]
    header = [
        "Tracks",
        "Dim",
        "ScaNN",
        "Build (s)",
        "Load (s)",
        "RAM per replica",
        "Bytes per track",
        "vs float32 embedding (baseline)",
        "Build peak RSS",
        "Disk",
        "Query p50 (ms)",
    ]
    plan = report.markdown_table(
        ["Tracks", "Dim", "RAM per replica (one index)", "Build, one index", "Plan", "Build per shard"],
        plan_rows(cases),
    )
    notes = [
        f"Each index: synthetic clustered unit embeddings, {NUM_TAGS} tag probabilities and a track record "
        "(ids, artist, title, album, path, content hash) per track; ScaNN chosen by size as `serving.build_index` "
        "does (brute force below 20k tracks, AH with exact re-scoring below 100k, a tree of sqrt(n) leaves + AH + "
        "re-scoring from 100k). RAM per replica: the resident set a fresh "
        "process gains by `CatalogIndex.load`. Query: one 10-NN searcher query, after 10 warm-up queries.",
        "Where the memory goes: the float32 embeddings twice (the catalog's own copy, which stage 2's exact "
        "re-scoring and the recommender read, and ScaNN's re-ordering copy), ScaNN's 4-bit codes, the tag "
        "probabilities (200 B) and the Python track records (several hundred bytes each).",
        f"Sizing plan (extrapolated from these two sizes: memory linear; build `a*n + b*n^1.5`, linear where the "
        "two sizes give no positive `n^1.5` term; building takes about 2.2x the replica's RAM at its peak; a shard "
        f"is planned whenever one index would need more than half of a {REPLICA_RAM_GB} GB machine):\n\n" + plan,
        report.load_note(load_at_start),
    ]
    return report.Section(
        name=SECTION,
        title="Index sizing: memory, disk, build and load per track",
        command=command,
        table=report.markdown_table(header, rows),
        notes=notes,
    )


def main(argv):
    del argv
    if _CASE.value:
        kind, _, rest = _CASE.value.partition(":")
        if kind == "build":
            count, dim, directory = rest.split(":", 2)
            print(json.dumps(build_case(int(count), int(dim), directory)))
        else:
            print(json.dumps(load_case(rest)))
        return
    print(report.update_section(run_benchmark(report.invocation("benchmarks.index_sizing"))))


if __name__ == "__main__":
    run(main)
