r"""The preprocessing job on Dask worker processes against the DirectRunner, and where Dask pays off.

Usage:

    python -m benchmarks.preprocess_on_dask [--small_rows=4] [--output=BENCHMARKS.md]

Catalog: `../shared/data/music/catalog.csv` (199 x 30 s MP3s) when present,
else the bundled demo catalog (the section then says so). Baseline: `python
-m data_prep`'s default, the DirectRunner with one thread per core. Against it,
in the same run and on the same catalog:

- `--runner=dask` with no address: the job starts a `LocalCluster` of one
  worker process per core (single-threaded) and closes it at the end, so its
  start-up (the cluster, TensorFlow imported by every worker) is timed;
- `--runner=dask --dask_client_address=...` on a cluster that is already up
  (configured as `deploy/dask.yaml` says) and has run the job once (workers
  warm): what a long-lived cluster costs.

Each system runs on a `--small_rows` subset and on the whole catalog; the fixed
cost and the marginal rate (tracks per second beyond the small pass) of each
give the crossover: the catalog size from which a Dask cluster of W such
machines finishes before one machine's DirectRunner,
`N* = (fixed_dask - fixed_direct) / (1/rate_direct - 1/(W * rate_dask))`.
Single runs: on a shared machine expect 10-40 % noise.
"""

from __future__ import annotations

from tf_startup import run

import dataclasses
import logging
import math
import tempfile
import time

from absl import flags

from benchmarks import preprocess_throughput, report
from data_prep import beam_jobs, pipeline
from intake import catalog as catalog_lib

SECTION = "preprocess_on_dask"
DIRECT = "DirectRunner, threads (baseline)"
DASK_STARTED = "Dask, LocalCluster started by the job"
DASK_RUNNING = "Dask, cluster already running (warm workers)"
MACHINES = (1, 2, 4, 16)

_SMALL_ROWS = flags.DEFINE_integer("dask_small_rows", 4, "Rows of the small catalog of the Dask benchmark.")


@dataclasses.dataclass(frozen=True)
class Pass:
    system: str
    tracks: int
    wall_s: float


@dataclasses.dataclass(frozen=True)
class Cost:
    """A system's time model `fixed_s + tracks / rate`, from a small and a large pass."""

    fixed_s: float
    rate: float  # Tracks per second beyond the fixed cost.

    @classmethod
    def from_passes(cls, small: Pass, large: Pass) -> Cost:
        rate = (large.tracks - small.tracks) / (large.wall_s - small.wall_s)
        return cls(fixed_s=small.wall_s - small.tracks / rate, rate=rate)


def crossover_tracks(direct: Cost, dask: Cost, machines: int) -> float:
    """The catalog size from which Dask on `machines` machines like this one beats one DirectRunner (inf: never)."""
    saving_per_track = 1 / direct.rate - 1 / (machines * dask.rate)
    extra_fixed = dask.fixed_s - direct.fixed_s
    if saving_per_track <= 0:
        return math.inf
    return max(extra_fixed, 0.0) / saving_per_track


def time_run(catalog: catalog_lib.Catalog, system: str, args: list[str], scratch_dir: str) -> Pass:
    with tempfile.TemporaryDirectory(dir=scratch_dir) as out_dir:
        config = pipeline.PreprocessConfig(output_dir=out_dir, split_by="track")
        start = time.perf_counter()
        summary = pipeline.run(catalog, config, args)
        wall_s = time.perf_counter() - start
    logging.info("%s: %d tracks in %.1f s", system, summary.info.num_written, wall_s)
    return Pass(system, summary.info.num_written, wall_s)


def measure(catalogs: dict[str, catalog_lib.Catalog], scratch_dir: str) -> dict[tuple[str, str], Pass]:
    """Every system on every catalog; the running cluster is warmed by one untimed pass first."""
    import dask
    import distributed

    passes = {}
    for label, catalog in catalogs.items():
        passes[(DIRECT, label)] = time_run(catalog, DIRECT, [], scratch_dir)
        passes[(DASK_STARTED, label)] = time_run(catalog, DASK_STARTED, ["--runner=dask"], scratch_dir)
    workers = report.num_cpus()
    with (
        dask.config.set(beam_jobs.LOCAL_CLUSTER_CONFIG),
        distributed.LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as cluster,
    ):
        args = ["--runner=dask", f"--dask_client_address={cluster.scheduler_address}"]
        time_run(next(iter(catalogs.values())), "warm-up", args, scratch_dir)
        for label, catalog in catalogs.items():
            passes[(DASK_RUNNING, label)] = time_run(catalog, DASK_RUNNING, args, scratch_dir)
    return passes


def results(passes, labels: list[str]) -> tuple[str, dict[str, Cost]]:
    small, large = labels
    rows, costs = [], {}
    for system in (DIRECT, DASK_STARTED, DASK_RUNNING):
        cost = Cost.from_passes(passes[(system, small)], passes[(system, large)])
        costs[system] = cost
        base = passes[(DIRECT, large)]
        rows.append(
            [
                system,
                f"{passes[(system, small)].wall_s:.1f}",
                f"{passes[(system, large)].wall_s:.1f}",
                f"{base.wall_s / passes[(system, large)].wall_s:.2f}x",
                f"{cost.fixed_s:.1f}",
                f"{cost.rate:.2f}",
                f"{cost.rate / Cost.from_passes(passes[(DIRECT, small)], base).rate:.2f}x",
            ]
        )
    header = [
        "System",
        f"Wall, {small} (s)",
        f"Wall, {large} (s)",
        f"Speed vs baseline, {large}",
        "Fixed cost (s)",
        "Marginal tracks/s",
        "Marginal rate vs baseline",
    ]
    return report.markdown_table(header, rows), costs


def _tracks(count: float) -> str:
    if math.isinf(count):
        return "never"
    return "the first track" if count < 1 else f"{count:,.0f} tracks"


def crossover_table(costs: dict[str, Cost]) -> str:
    rows = []
    for system in (DASK_STARTED, DASK_RUNNING):
        cells = []
        for machines in MACHINES:
            cells.append(_tracks(crossover_tracks(costs[DIRECT], costs[system], machines)))
        rows.append([system, *cells])
    header = ["Dask on W machines like this one", *(f"W = {m}" for m in MACHINES)]
    return report.markdown_table(header, rows)


def run_benchmark(command: str) -> report.Section:
    preprocess_throughput.quiet_logs()
    load_at_start = report.load_average()
    path, is_fallback = preprocess_throughput.find_catalog()
    catalog = catalog_lib.read_catalog(path)
    catalogs = {"small": preprocess_throughput.subset(catalog, _SMALL_ROWS.value), "full": catalog}
    preprocess_throughput.warm_file_cache(catalog)
    with tempfile.TemporaryDirectory(prefix="dask_bench_") as scratch_dir:
        passes = measure(catalogs, scratch_dir)
    labels = [f"{label} ({c.num_rows} rows)" for label, c in catalogs.items()]
    passes = {(system, labels[list(catalogs).index(label)]): p for (system, label), p in passes.items()}
    table, costs = results(passes, labels)
    direct, warm = costs[DIRECT], costs[DASK_RUNNING]
    notes = [
        preprocess_throughput.fallback_note(catalog, is_fallback),
        f"Workers: the DirectRunner's {report.num_cpus()} threads in one process; Dask's {report.num_cpus()} "
        "single-threaded worker processes (one per core). Outputs are identical (tested byte for byte). Fixed "
        "cost and marginal rate come from the two passes of each system (`wall = fixed + tracks / rate`).",
        "Crossover (catalog size from which Dask on W machines finishes first), from these fixed costs and rates; "
        "it assumes the catalog and outputs on storage every machine reads at this speed and the scheduler's "
        "per-task cost (about 1 ms per partition of up to 64 tracks) negligible:\n\n" + crossover_table(costs),
        f"Per track, a warm Dask worker process runs at {warm.rate / direct.rate:.2f}x the DirectRunner's "
        f"threads ({warm.rate:.2f} vs {direct.rate:.2f} tracks/s on the same {report.num_cpus()} cores). Catalog "
        f"size from which a running cluster finishes first: on one machine, {_tracks(crossover_tracks(direct, warm, 1))}; "
        f"on two, {_tracks(crossover_tracks(direct, warm, 2))}; on 16, {_tracks(crossover_tracks(direct, warm, 16))}. "
        f"MagnaTagATune's 25,863 clips take {25863 / direct.rate / 60:.0f} min on this machine's DirectRunner, "
        f"{25863 / (16 * warm.rate) / 60:.1f} min on 16 such machines. A cluster the job starts for itself pays "
        "its start-up (workers importing TensorFlow) every run: keep one running for repeated jobs.",
        report.load_note(load_at_start),
    ]
    return report.Section(
        name=SECTION,
        title="Preprocessing on Dask worker processes vs the DirectRunner",
        command=command,
        table=table,
        notes=notes,
    )


def main(argv):
    del argv
    print(report.update_section(run_benchmark(report.invocation("benchmarks.preprocess_on_dask"))))


if __name__ == "__main__":
    run(main)
