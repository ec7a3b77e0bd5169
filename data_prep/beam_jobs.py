"""What the project's two Beam jobs share: pipeline options, counters and staged rejections.

`python -m data_prep` (catalog to TFRecords) and `python -m serving.build_index`
(catalog to embeddings) both run on any Beam runner, count their work with
Beam metrics under their own namespace, and stage the rows they reject as
JSON lines that the launcher reads back to reconcile its counts.
"""

from __future__ import annotations

import collections

import apache_beam as beam
import tensorflow as tf
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from data_prep.rejections import Rejection

REJECTIONS_SUFFIX = ".jsonl"


def default_pipeline_options(pipeline_args: list[str]) -> PipelineOptions:
    """Pipeline options with this project's DirectRunner defaults.

    Without any runner flags the pipeline runs on the DirectRunner with one
    worker thread per core: decoding, resampling, the log-mel, inference and
    file writes release the GIL, and threads spare the worker processes'
    start-up (each would import TensorFlow). Flags in `pipeline_args` win.
    """
    options = PipelineOptions(pipeline_args)
    standard = options.view_as(StandardOptions)
    if standard.runner is None:
        standard.runner = "DirectRunner"
    if standard.runner in ("DirectRunner", "direct", "PrismRunner") or standard.runner.endswith("DirectRunner"):
        direct = options.view_as(DirectOptions)
        if "--direct_num_workers" not in " ".join(pipeline_args):
            direct.direct_num_workers = 0  # One worker per core.
        if "--direct_running_mode" not in " ".join(pipeline_args):
            direct.direct_running_mode = "multi_threading"
    return options


def beam_counters(result, namespace: str) -> dict[str, int]:
    """The committed Beam counters of a finished pipeline in `namespace` ({} where the runner has none)."""
    try:
        query = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(namespace))
    except Exception:  # noqa: BLE001 - not every runner reports metrics.
        return {}
    counters = collections.Counter()
    for counter in query["counters"]:
        counters[counter.key.metric.name] += counter.committed or 0
    return dict(counters)


class WriteRejections(beam.PTransform):
    """Stages a PCollection of `Rejection`s as JSON-lines files `PATH_PREFIX*.jsonl` (read with `read_rejections`)."""

    def __init__(self, path_prefix: str):
        super().__init__()
        self._path_prefix = path_prefix

    def expand(self, rejections):
        return (
            rejections
            | "RejectionsToJson" >> beam.Map(Rejection.to_json)
            | "WriteRejections" >> beam.io.WriteToText(self._path_prefix, file_name_suffix=REJECTIONS_SUFFIX)
        )


def read_rejections(path_prefix: str) -> list[Rejection]:
    """The rejections `WriteRejections(path_prefix)` staged, in file order."""
    rejections = []
    for path in sorted(tf.io.gfile.glob(f"{path_prefix}*{REJECTIONS_SUFFIX}")):
        with tf.io.gfile.GFile(path) as handle:
            rejections += [Rejection.from_json(line) for line in handle if line.strip()]
    return rejections
