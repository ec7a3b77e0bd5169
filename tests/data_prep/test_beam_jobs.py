"""What the Beam jobs share, on the real DirectRunner: the four steps of a job, options, counters, staged rejections."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

from data_prep import beam_jobs, progress
from intake.rejections import Rejection
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


class _StageNumbers(beam.DoFn):
    """Writes each number as a file of its own in the staging folder, or rejects it; `lose` drops one silently."""

    def __init__(self, staging_dir: str, lose: int | None, sleep_s: float = 0.0):
        self._staging_dir, self._lose, self._sleep_s = staging_dir, lose, sleep_s

    def process(self, number: int):
        Metrics.counter("test_beam_jobs", "seen").inc()
        time.sleep(self._sleep_s)
        if number % 4 == 0:
            rejection = Rejection(number, f"t{number}", f"{number}.mp3", "silent", "quiet")
            beam_jobs.stage_rejection(f"{self._staging_dir}/rejections", rejection)
        elif number != self._lose:
            beam_jobs.write_atomically(f"{self._staging_dir}/numbers/{number}.json", json.dumps(number * number))
        return ()


@dataclasses.dataclass
class _SquaresJob(beam_jobs.StagedJob):
    """Numbers to `OUTPUT_DIR/squares.json`, the four steps on the real runner."""

    output_dir: str
    numbers: list[int]
    lose: int | None = None
    per_run: bool = False
    sleep_s: float = 0.0

    job_name = "squares"
    progress_unit = "numbers"
    metrics_namespace = "test_beam_jobs"
    staging_folders = ("numbers", "rejections")

    def progress_total(self) -> int:
        return len(self.numbers)

    def count_done(self, staging_dir: str) -> int:
        return beam_jobs.count_staged(f"{staging_dir}/numbers", ".json") + beam_jobs.count_staged(
            f"{staging_dir}/rejections", beam_jobs.REJECTION_SUFFIX
        )

    @property
    def staging_is_per_run(self):
        return self.per_run

    def staging_dir(self, options) -> str:
        return f"{self.output_dir}/{beam_jobs.STAGING_DIRNAME}"

    def build(self, pipeline, staging_dir: str) -> int:
        _ = pipeline | beam.Create(self.numbers) | beam.ParDo(_StageNumbers(staging_dir, self.lose, self.sleep_s))
        return len(self.numbers)

    def reconcile(self, staging_dir: str):
        squares = sorted(json.loads(path.read_text()) for path in (Path(staging_dir) / "numbers").iterdir())
        rejections = beam_jobs.read_rejections(f"{staging_dir}/rejections")
        beam_jobs.check_counts(len(self.numbers), len(squares), len(rejections), unit="numbers")
        return squares, rejections

    def publish(self, reconciled, staging_dir: str):
        squares, rejections = reconciled
        beam_jobs.write_atomically(f"{self.output_dir}/squares.json", json.dumps(squares))
        return squares, [r.row for r in rejections]


def test_a_staged_job_publishes_what_its_workers_staged_and_clears_the_staging_folder(tmp_path):
    outcome = beam_jobs.run_staged_job(_SquaresJob(str(tmp_path), list(range(1, 10))), [])
    assert outcome.published == ([1, 4, 9, 25, 36, 49, 81], [4, 8])
    assert outcome.counters == {"seen": 9}
    assert json.loads((tmp_path / "squares.json").read_text()) == [1, 4, 9, 25, 36, 49, 81]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["squares.json"]


def test_a_running_job_reports_what_its_workers_staged(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(progress, "REPORT_INTERVAL_S", 0.1)
    numbers = list(range(1, 13))
    job = _SquaresJob(str(tmp_path), numbers, sleep_s=0.1)
    outcome = beam_jobs.run_staged_job(job, ["--direct_num_workers=1", "--direct_running_mode=in_memory"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("squares: ")]
    done = [int(line.split(": ")[1].split(" of ")[0]) for line in lines]
    assert len(lines) >= 3 and done == sorted(done) and any(0 < count < 12 for count in done)
    assert lines[-1].startswith("squares: 12 of 12 numbers (100%)")  # Staged squares + rejections = the input.
    assert len(outcome.published[0]) + len(outcome.published[1]) == 12


def test_counts_that_do_not_reconcile_publish_nothing_and_keep_the_staging_folder_to_look_at(tmp_path):
    (tmp_path / "squares.json").write_text("[1]")  # An earlier run's output.
    (tmp_path / beam_jobs.STAGING_DIRNAME).mkdir()
    (tmp_path / beam_jobs.STAGING_DIRNAME / "left_by_a_killed_run").write_text("x")
    with pytest.raises(beam_jobs.CountsDoNotReconcileError) as raised:
        beam_jobs.run_staged_job(_SquaresJob(str(tmp_path), list(range(1, 10)), lose=5), [])
    staging = tmp_path / beam_jobs.STAGING_DIRNAME
    assert str(raised.value) == (
        f"counts do not reconcile: 9 numbers in, 6 written + 2 rejected; staging data left in {staging}"
    )
    assert (tmp_path / "squares.json").read_text() == "[1]"
    assert sorted(path.name for path in (staging / "numbers").iterdir()) == [f"{n}.json" for n in (1, 2, 3, 6, 7, 9)]
    assert not (staging / "left_by_a_killed_run").exists()  # The run started from an empty staging folder.


def test_a_failed_job_with_a_staging_folder_of_its_own_removes_it(tmp_path):
    with pytest.raises(beam_jobs.CountsDoNotReconcileError, match="^counts do not reconcile: 3 numbers in, 2 "):
        beam_jobs.run_staged_job(_SquaresJob(str(tmp_path), [1, 2, 3], lose=2, per_run=True), [])
    assert list(tmp_path.iterdir()) == []


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
