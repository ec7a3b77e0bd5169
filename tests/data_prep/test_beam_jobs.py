"""What the two Beam jobs share, on the real DirectRunner: options, counters, staged rejections."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

from data_prep import beam_jobs
from data_prep.rejections import Rejection
from tests.conftest import REPO_ROOT


def test_default_options_use_every_core_in_threads_unless_told_otherwise():
    options = beam_jobs.default_pipeline_options([])
    assert options.view_as(StandardOptions).runner == "DirectRunner"
    assert options.view_as(DirectOptions).direct_num_workers == 0
    assert options.view_as(DirectOptions).direct_running_mode == "multi_threading"
    given = beam_jobs.default_pipeline_options(["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    assert given.view_as(DirectOptions).direct_running_mode == "in_memory"
    assert given.view_as(DirectOptions).direct_num_workers == 1


class _CountAndReject(beam.DoFn):
    def __init__(self, staging_dir: str):
        self._staging_dir = staging_dir

    def process(self, number: int):
        Metrics.counter("test_beam_jobs", "seen").inc()
        if number % 3 == 0:
            rejection = Rejection(number, f"t{number}", f"{number}.mp3", "silent", f"quiet, é {number}")
            beam_jobs.stage_rejection(self._staging_dir, rejection)
        else:
            yield number


def test_rejections_are_staged_by_the_workers_and_read_back_with_the_counters(tmp_path):
    staging_dir = tmp_path / "rejected"
    staging_dir.mkdir()
    options = beam_jobs.default_pipeline_options([])
    pipeline = beam.Pipeline(options=options)
    _ = pipeline | beam.Create(range(1, 11)) | beam.ParDo(_CountAndReject(str(staging_dir)))
    result = pipeline.run()
    result.wait_until_finish()
    staged = beam_jobs.read_rejections(str(staging_dir))
    assert [r.row for r in staged] == [3, 6, 9]
    assert all(r.reason == "silent" and r.path == f"{r.row}.mp3" and r.detail.endswith(f"é {r.row}") for r in staged)
    assert beam_jobs.beam_counters(result, "test_beam_jobs") == {"seen": 10}
    assert beam_jobs.read_rejections(str(tmp_path / "nothing_here")) == []


def test_a_retried_rejection_rewrites_the_same_file(tmp_path):
    rejection = Rejection(4, "t4", "4.mp3", "silent", "quiet")
    for _ in range(2):
        beam_jobs.stage_rejection(str(tmp_path), rejection)
    assert len(list(tmp_path.iterdir())) == 1
    assert beam_jobs.read_rejections(str(tmp_path)) == [rejection]


def test_dask_is_named_by_its_short_name_and_its_input_split_for_every_worker():
    options = beam_jobs.default_pipeline_options(["--runner=dask"])
    assert options.view_as(StandardOptions).runner == beam_jobs.DASK_RUNNER and beam_jobs.is_dask(options)
    assert not beam_jobs.is_dask(beam_jobs.default_pipeline_options([]))
    dask_options = beam_jobs._dask_options(options)
    beam_jobs._choose_partitions(options, num_elements=10, num_threads=2)
    assert dask_options.npartitions == 8  # Four per worker thread.
    dask_options.npartitions = None
    beam_jobs._choose_partitions(options, num_elements=100_000, num_threads=8)
    assert dask_options.npartitions == 1563  # At most 64 elements per partition.
    given = beam_jobs.default_pipeline_options(["--runner=dask", "--dask_partition_size=5"])
    beam_jobs._choose_partitions(given, num_elements=100, num_threads=2)
    assert beam_jobs._dask_options(given).npartitions is None  # The user's choice stands.


def test_a_pipeline_for_dask_must_have_one_end():
    """Beam's Dask runner computes the graph of the last transform only: a second branch would be lost."""
    pipeline = beam.Pipeline(options=beam_jobs.default_pipeline_options(["--runner=dask"]))
    numbers = pipeline | beam.Create(range(3))
    _ = numbers | "Double" >> beam.Map(lambda n: 2 * n)
    _ = numbers | "Square" >> beam.Map(lambda n: n * n)
    assert beam_jobs.pipeline_ends(pipeline) == ["Double", "Square"]
    with pytest.raises(ValueError, match=r"needs exactly one end; this one has \['Double', 'Square'\]"):
        beam_jobs.run_pipeline(pipeline, 3)


@pytest.mark.parametrize("timeout", [["--dask_connection_timeout=2"], []])
def test_an_unreachable_dask_scheduler_is_named_with_the_reason(timeout):
    """Refused: the probe's own connection says so (Dask's client would retry for its timeout, about 40 s by
    default, and then report only that it timed out)."""
    args = ["--runner=dask", "--dask_client_address=tcp://127.0.0.1:9", *timeout]
    pipeline = beam.Pipeline(options=beam_jobs.default_pipeline_options(args))
    _ = pipeline | beam.Create(range(3)) | beam.Map(abs)
    with pytest.raises(
        beam_jobs.RunnerUnavailableError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9: "
    ):
        beam_jobs.run_pipeline(pipeline, 3)
    with pytest.raises(ConnectionRefusedError):
        beam_jobs._probe_scheduler("tcp://127.0.0.1:9", 2.0)
    beam_jobs._probe_scheduler("inproc://a/b", 2.0)  # Not TCP: left to Dask.


def test_the_shipped_dask_configuration_is_what_the_jobs_local_cluster_uses():
    import yaml

    shipped = yaml.safe_load((REPO_ROOT / "deploy" / "dask.yaml").read_text())
    flattened = {
        "distributed.nanny.pre-spawn-environ." + name: value
        for name, value in shipped["distributed"]["nanny"]["pre-spawn-environ"].items()
    }
    assert flattened == beam_jobs.LOCAL_CLUSTER_CONFIG
