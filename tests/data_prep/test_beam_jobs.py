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


def _count_and_reject(number: int):
    Metrics.counter("test_beam_jobs", "seen").inc()
    if number % 3 == 0:
        yield beam.pvalue.TaggedOutput("rejected", Rejection(number, f"t{number}", f"{number}.mp3", "silent", "quiet"))
    else:
        yield number


def test_rejections_are_staged_and_read_back_with_the_counters(tmp_path):
    options = beam_jobs.default_pipeline_options(["--direct_running_mode=in_memory"])
    pipeline = beam.Pipeline(options=options)
    outputs = (
        pipeline | beam.Create(range(1, 11)) | beam.FlatMap(_count_and_reject).with_outputs("rejected", main="kept")
    )
    _ = outputs.rejected | beam_jobs.WriteRejections(str(tmp_path / "rejected"))
    result = pipeline.run()
    result.wait_until_finish()
    staged = beam_jobs.read_rejections(str(tmp_path / "rejected"))
    assert sorted(r.row for r in staged) == [3, 6, 9]
    assert all(r.reason == "silent" and r.path == f"{r.row}.mp3" for r in staged)
    assert beam_jobs.beam_counters(result, "test_beam_jobs") == {"seen": 10}
    assert beam_jobs.read_rejections(str(tmp_path / "nothing_here")) == []
