"""What the project's two Beam jobs share: pipeline options, counters and staged rejections.

`python -m data_prep` (catalog to TFRecords) and `python -m serving.build_index`
(catalog to embeddings) both run on any Beam runner, count their work with
Beam metrics under their own namespace, and stage each row they reject as a
small JSON file that the launcher reads back to reconcile its counts.
"""

from __future__ import annotations

import collections

import apache_beam as beam
import tensorflow as tf
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from data_prep.rejections import Rejection
from data_prep.splits import stable_hash

REJECTION_SUFFIX = ".rejection.json"


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


def stage_rejection(staging_dir: str, rejection: Rejection):
    """Writes one rejection as its own small file in `staging_dir` (read back with `read_rejections`).

    A worker writes it where it rejects the track, so the pipeline needs no
    text sink (the fixed cost of Beam's `WriteToText`, with its own
    shuffle, is larger than a small catalog's work). The file is named by the
    row and track id: a bundle the runner retries rewrites the same file.
    """
    name = f"{stable_hash(f'{rejection.row}:{rejection.track_id}'):016x}{REJECTION_SUFFIX}"
    with tf.io.gfile.GFile(tf.io.gfile.join(staging_dir, name), "w") as handle:
        handle.write(rejection.to_json())


def read_rejections(staging_dir: str) -> list[Rejection]:
    """The rejections `stage_rejection` wrote into `staging_dir`, by row and track id."""
    rejections = []
    for path in tf.io.gfile.glob(tf.io.gfile.join(staging_dir, f"*{REJECTION_SUFFIX}")):
        with tf.io.gfile.GFile(path) as handle:
            rejections.append(Rejection.from_json(handle.read()))
    return sorted(rejections, key=lambda r: (r.row, r.track_id))
