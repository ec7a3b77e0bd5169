"""What the two Beam jobs share, on the real DirectRunner: options, counters, staged rejections."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

from data_prep import beam_jobs
from data_prep.rejections import Rejection


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
