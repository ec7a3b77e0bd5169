"""What the project's Beam jobs share: the four steps of a job, runners, pipeline options, counters, staged rejections.

`python -m data_prep` (catalog to TFRecords), `python -m serving.build_index`
(catalog to embeddings) and `python -m train.compute_teacher_targets`
(datasets to distillation targets) are each a `StagedJob` run by
`run_staged_job`: stage, run, reconcile, publish. They run on any Beam runner: the DirectRunner (the
default: threads on every core), Dask (`--runner=dask`: a `dask.distributed`
cluster, or a `LocalCluster` of one worker process per core), Dataflow,
Flink or Spark. The same pipeline code runs on all of them, so it uses only
what every runner supports: `Create`, `ParDo` (no outputs from
`finish_bundle`), `Flatten`, `GroupByKey`, and one end. Workers write their
outputs themselves (shards, staged features, one small JSON file per
rejection) under names that a retried bundle rewrites identically, through
temporary files renamed into place; the launcher reads them back and
reconciles its counts from them, never from Beam metrics (the Dask runner
reports none).
"""

from __future__ import annotations

import abc
import collections
import contextlib
import dataclasses
import logging
import math
import os
import socket
import uuid

import apache_beam as beam
import tensorflow as tf
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.pipeline import PipelineVisitor

from data_prep import progress
from data_prep.splits import stable_hash
from intake.rejections import Rejection

REJECTION_SUFFIX = ".rejection.json"
# The staging folder's name where a job stages next to its outputs.
STAGING_DIRNAME = "_staging"
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
_RUNNER_ALIASES = {"dask": DASK_RUNNER, "DaskRunner": DASK_RUNNER}
# Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in its workers' environment;
# any explicit threshold turns off glibc's adaptive mmap threshold, and every
# large array TensorFlow allocates becomes a fresh mmap: the log-mel ran at
# half speed (measured: 2.2x the CPU time). Workers this job starts keep
# glibc's default; for a cluster of your own see docs/clusters.md, "Dask".
LOCAL_CLUSTER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
# Dask partitions per worker thread (load balance) and the most elements per
# partition (work redone when a worker dies; scheduler overhead per task).
_PARTITIONS_PER_THREAD = 4
_MAX_ELEMENTS_PER_PARTITION = 64


class RunnerUnavailableError(RuntimeError):
    """The chosen runner cannot run here (a missing extra, an unreachable cluster)."""


class JobFailedError(RuntimeError):
    """The pipeline failed on its runner (e.g. a Dask worker died too often); nothing was published."""


class CountsDoNotReconcileError(RuntimeError):
    """What came in is not what was written plus what was rejected: a bug, never data; nothing was published."""


class StagedJob(abc.ABC):
    """A Beam job of this project, in the four steps every one of them takes (`run_staged_job`).

    1. **Stage**: `build` adds the job's transforms; its workers write what they
       make (shards, features, one file per rejection) under the staging folder,
       through `write_atomically`, under names a retried bundle rewrites
       identically.
    2. **Run** on the chosen runner (`run_pipeline`).
    3. **Reconcile**: the launcher reads the staged outputs back and checks that
       what came in equals what was written plus what was rejected
       (`check_counts`), never trusting Beam metrics (the Dask runner has none).
    4. **Publish**: the outputs move into place, the file that marks them
       complete last; the staging folder goes.

    A run that fails publishes nothing and leaves earlier outputs as they were.
    Its staging folder stays where it is (workers of a failed cluster job may
    still be writing into it; a reconciliation failure is a bug to look at),
    and the next run into the same place clears it; a job whose staging folder
    is new for every run (`staging_is_per_run`) removes it instead.

    While it runs, the job's progress (`progress_total`, `count_done`: what
    the workers staged so far) is reported every 10 s (`data_prep.progress`).

    Attributes:
        job_name: How progress lines name the job.
        metrics_namespace: The Beam counters to report, if the job counts any.
        staging_folders: Subfolders of the staging folder made before the run.
        staging_is_per_run: Whether each run stages into a folder of its own.
        progress_unit: What `progress_total` and `count_done` count.
    """

    job_name: str = "job"
    metrics_namespace: str | None = None
    staging_folders: tuple[str, ...] = ()
    staging_is_per_run: bool = False
    progress_unit: str = "tracks"

    def progress_total(self) -> int:
        """How many units the job has (0: no progress is reported)."""
        return 0

    def count_done(self, staging_dir: str) -> int:
        """How many units are done, from what the workers staged so far."""
        return 0

    @abc.abstractmethod
    def staging_dir(self, options: PipelineOptions) -> str:
        """Where the workers stage their outputs (a place they all reach)."""

    @abc.abstractmethod
    def build(self, pipeline: beam.Pipeline, staging_dir: str) -> int:
        """Adds the job's transforms to `pipeline`; returns its number of input elements."""

    @abc.abstractmethod
    def reconcile(self, staging_dir: str):
        """Reads the staged outputs back and checks the counts (`check_counts`); returns them for `publish`."""

    @abc.abstractmethod
    def publish(self, reconciled, staging_dir: str):
        """Moves the reconciled outputs into place, the completion marker last; returns the job's result."""


@dataclasses.dataclass(frozen=True)
class JobOutcome:
    """What `run_staged_job` returns: the job's published result and its Beam counters (None where the runner
    reports none, or the job counts nothing)."""

    published: object
    counters: dict[str, int] | None


def run_staged_job(job: StagedJob, pipeline_args: list[str] | None = None) -> JobOutcome:
    """Runs `job` through its four steps on the runner `pipeline_args` choose (see `StagedJob`).

    Raises:
        CountsDoNotReconcileError: The staged outputs do not add up (the message names the staging folder).
        RunnerUnavailableError, JobFailedError: The runner (see `run_pipeline`).
    """
    options = default_pipeline_options(list(pipeline_args or []))
    staging_dir = job.staging_dir(options)
    remove_tree(staging_dir)
    tf.io.gfile.makedirs(staging_dir)
    for folder in job.staging_folders:
        tf.io.gfile.makedirs(tf.io.gfile.join(staging_dir, folder))
    try:
        pipeline = beam.Pipeline(options=options)
        num_elements = job.build(pipeline, staging_dir)
        with _progress(job, staging_dir):
            result = run_pipeline(pipeline, num_elements)
        try:
            reconciled = job.reconcile(staging_dir)
        except CountsDoNotReconcileError as error:
            kept = "" if job.staging_is_per_run else f"; staging data left in {staging_dir}"
            raise CountsDoNotReconcileError(f"counts do not reconcile: {error}{kept}") from None
        published = job.publish(reconciled, staging_dir)
    except BaseException:
        if job.staging_is_per_run:
            remove_tree(staging_dir)
        raise
    remove_tree(staging_dir)
    counters = beam_counters(result, job.metrics_namespace) if job.metrics_namespace else None
    return JobOutcome(published, counters)


def _progress(job: StagedJob, staging_dir: str):
    total = job.progress_total()
    if not total:
        return contextlib.nullcontext()
    return progress.Progress(job.job_name, total, lambda: job.count_done(staging_dir), job.progress_unit)


def count_staged(folder: str, suffix: str) -> int:
    """How many files named `*suffix` the workers have staged in `folder` so far (temporary files not counted)."""
    return sum(1 for name in tf.io.gfile.listdir(folder) if name.endswith(suffix))


def check_counts(num_in: int, num_written: int, num_rejected: int, unit: str = "tracks"):
    """Raises `CountsDoNotReconcileError` unless `num_in == num_written + num_rejected`."""
    if num_written + num_rejected != num_in:
        raise CountsDoNotReconcileError(f"{num_in} {unit} in, {num_written} written + {num_rejected} rejected")


def remove_tree(path: str):
    """Removes a folder and everything in it, if it exists (any file system TensorFlow reaches)."""
    if tf.io.gfile.exists(path):
        tf.io.gfile.rmtree(path)


def default_pipeline_options(pipeline_args: list[str]) -> PipelineOptions:
    """Pipeline options with this project's defaults.

    Without any runner flags the pipeline runs on the DirectRunner with one
    worker thread per core: decoding, resampling, the log-mel, inference and
    file writes release the GIL, and threads spare the worker processes'
    start-up (each would import TensorFlow). `--runner=dask` names Beam's
    Dask runner. Flags in `pipeline_args` win.
    """
    options = PipelineOptions(pipeline_args)
    standard = options.view_as(StandardOptions)
    if standard.runner is None:
        standard.runner = "DirectRunner"
    standard.runner = _RUNNER_ALIASES.get(standard.runner, standard.runner)
    if standard.runner in ("DirectRunner", "direct", "PrismRunner") or standard.runner.endswith("DirectRunner"):
        direct = options.view_as(DirectOptions)
        if "--direct_num_workers" not in " ".join(pipeline_args):
            direct.direct_num_workers = 0  # One worker per core.
        if "--direct_running_mode" not in " ".join(pipeline_args):
            direct.direct_running_mode = "multi_threading"
    return options


_RUNNER_LOGGERS = ("apache_beam", "distributed")
_quiet_runner_logs = False


def quiet_runner_logs():
    """Keeps the runners' warnings and errors on the console, not their INFO chatter (Beam, Dask)."""
    global _quiet_runner_logs
    _quiet_runner_logs = True
    for name in _RUNNER_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def is_dask(options: PipelineOptions) -> bool:
    return options.view_as(StandardOptions).runner == DASK_RUNNER


def pipeline_ends(pipeline: beam.Pipeline) -> list[str]:
    """The labels of the transforms whose outputs no other transform reads."""

    class _Ends(PipelineVisitor):
        def __init__(self):
            self.transforms, self.consumed = [], set()

        def visit_transform(self, node):
            self.transforms.append(node)
            self.consumed.update(node.inputs)

    visitor = _Ends()
    pipeline.visit(visitor)
    return [
        node.full_label
        for node in visitor.transforms
        if not any(output in visitor.consumed for output in node.outputs.values())
    ]


def run_pipeline(pipeline: beam.Pipeline, num_elements: int):
    """Runs `pipeline` to completion on its runner and returns the result.

    On Dask it connects to `--dask_client_address` (or `--dask_scheduler_file`),
    or else starts a `LocalCluster` of one worker process per core and closes
    it at the end; unless `--dask_npartitions`/`--dask_partition_size` say
    otherwise, the input (`num_elements` long) is split into partitions of at
    most 64 elements, at least 4 per worker thread.

    Raises:
        RunnerUnavailableError: Dask is not installed or its scheduler cannot be reached.
        JobFailedError: The runner gave up on the job (its message says why).
    """
    options = pipeline.options  # The pipeline's own copy: the Dask runner reads its settings there.
    if not is_dask(options):
        result = pipeline.run()
        result.wait_until_finish()
        return result
    ends = pipeline_ends(pipeline)
    if len(ends) != 1:  # Beam's Dask runner computes the last transform's graph only.
        raise ValueError(f"a pipeline for the Dask runner needs exactly one end; this one has {ends}")
    with _dask_client(options) as client:
        _choose_partitions(options, num_elements, sum(client.nthreads().values()))
        result = pipeline.run()
        try:
            result.wait_until_finish()
        except _cluster_failures() as error:  # The cluster gave up; a bug in the job's code raises as itself.
            raise JobFailedError(f"the job failed on the Dask cluster: {type(error).__name__}: {error}") from error
        finally:
            result.client.close()
    return result


def _dask_options(options: PipelineOptions):
    try:
        import distributed  # noqa: F401
        from apache_beam.runners.dask.dask_runner import DaskOptions
    except (ImportError, AttributeError):
        raise RunnerUnavailableError(
            "--runner=dask needs Dask: pip install 'music-recommender[dask]' (apache-beam[dask])"
        ) from None
    return options.view_as(DaskOptions)


def _cluster_failures() -> tuple[type[BaseException], ...]:
    """What Dask raises when the cluster, not the job's code, failed: workers that kept dying, lost connections."""
    import distributed
    from distributed.comm.core import CommClosedError

    return (distributed.KilledWorker, CommClosedError, OSError, TimeoutError)


# How long a given scheduler address may take to accept a TCP connection before the run says it cannot reach it.
SCHEDULER_PROBE_SECONDS = 5.0


def _probe_scheduler(address: str, timeout_s: float):
    """Opens and closes one TCP connection to a `tcp://host:port` scheduler address (other protocols are left
    to Dask).

    Raises:
        OSError: Refused, unreachable or silent for `timeout_s`, naming the reason.
    """
    protocol, _, location = address.rpartition("://")
    if protocol not in ("", "tcp") or ":" not in location:
        return
    host, _, port = location.rpartition(":")
    if not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except TimeoutError:
        raise OSError(f"no answer within {timeout_s:g} s") from None


@contextlib.contextmanager
def _dask_client(options: PipelineOptions):
    """A client of the cluster the options name, or of a `LocalCluster` started (and closed) here."""
    dask_options = _dask_options(options)
    import dask
    import distributed

    if _quiet_runner_logs:  # Importing `distributed` set its own levels.
        quiet_runner_logs()
    cluster = None
    try:
        if dask_options.address or dask_options.scheduler_file:
            given = {"timeout": dask_options.timeout} if isinstance(dask_options.timeout, int) else {}
            if dask_options.address:  # Refused or unroutable: said in seconds, not after distributed's retries.
                _probe_scheduler(dask_options.address, min(SCHEDULER_PROBE_SECONDS, given.get("timeout") or 1e9))
            client = distributed.Client(
                address=dask_options.address, scheduler_file=dask_options.scheduler_file, **given
            )
        else:
            workers = len(os.sched_getaffinity(0))
            with dask.config.set(LOCAL_CLUSTER_CONFIG):
                cluster = distributed.LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
                )
            client = distributed.Client(cluster)
            dask_options.address = cluster.scheduler_address
            logging.info(
                "Started a Dask LocalCluster of %d worker processes at %s (dashboard: %s)",
                workers,
                cluster.scheduler_address,
                cluster.dashboard_link,
            )
    except OSError as error:
        where = dask_options.address or dask_options.scheduler_file or "a LocalCluster"
        raise RunnerUnavailableError(f"cannot reach the Dask scheduler at {where}: {error}") from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            dask_options.address = None
            cluster.close()


def _choose_partitions(options: PipelineOptions, num_elements: int, num_threads: int):
    dask_options = _dask_options(options)
    if dask_options.npartitions or dask_options.partition_size:
        return
    wanted = max(_PARTITIONS_PER_THREAD * max(num_threads, 1), math.ceil(num_elements / _MAX_ELEMENTS_PER_PARTITION))
    dask_options.npartitions = max(1, min(num_elements, wanted))


def beam_counters(result, namespace: str) -> dict[str, int] | None:
    """The committed Beam counters of a finished pipeline in `namespace` (None where the runner reports none)."""
    try:
        query = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(namespace))
    except Exception:  # noqa: BLE001 - not every runner reports metrics (Dask raises NotImplementedError).
        return None
    counters = collections.Counter()
    for counter in query["counters"]:
        counters[counter.key.metric.name] += counter.committed or 0
    return dict(counters)


def write_atomically(path: str, data: bytes | str):
    """Writes `path` through a temporary file renamed into place.

    A worker that dies mid-write, or a stale one whose work the engine gave
    to another, never leaves a partial file under the final name.
    """
    temporary = f"{path}.{uuid.uuid4().hex}.tmp"
    with tf.io.gfile.GFile(temporary, "wb" if isinstance(data, bytes) else "w") as handle:
        handle.write(data)
    tf.io.gfile.rename(temporary, path, overwrite=True)


def stage_rejection(staging_dir: str, rejection: Rejection):
    """Writes one rejection as its own small file in `staging_dir` (read back with `read_rejections`).

    A worker writes it where it rejects the track, so the pipeline needs no
    text sink (the fixed cost of Beam's `WriteToText`, with its own
    shuffle, is larger than a small catalog's work). The file is named by the
    row and track id: a bundle the runner retries rewrites the same file.
    """
    name = f"{stable_hash(f'{rejection.row}:{rejection.track_id}'):016x}{REJECTION_SUFFIX}"
    write_atomically(tf.io.gfile.join(staging_dir, name), rejection.to_json())


def read_rejections(staging_dir: str) -> list[Rejection]:
    """The rejections `stage_rejection` wrote into `staging_dir`, by row and track id."""
    rejections = []
    for path in tf.io.gfile.glob(tf.io.gfile.join(staging_dir, f"*{REJECTION_SUFFIX}")):
        with tf.io.gfile.GFile(path) as handle:
            rejections.append(Rejection.from_json(handle.read()))
    return sorted(rejections, key=lambda r: (r.row, r.track_id))
