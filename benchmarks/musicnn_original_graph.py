r"""Anchor: the musicnn package's own TensorFlow 1 graph against this project's musicnn, same tracks, same run.

The original graph (`musicnn.models.define_model`, restored from the
package's `MSD_musicnn` checkpoint and run in a `tf.compat.v1.Session`) needs
the package's code, which needs tf-keras, so this benchmark runs outside the
product's environment and outside `python -m benchmarks`. With the project's
virtual environment and a throw-away folder for the two extra packages:

    .venv/bin/pip install --target /tmp/musicnn_tf1 --no-deps "tf-keras~=2.20.0" \
        pretrained/downloads/musicnn-0.1.0-py3-none-any.whl
    PYTHONPATH=/tmp/musicnn_tf1 TF_USE_LEGACY_KERAS=1 .venv/bin/python -m benchmarks.musicnn_original_graph

For each track of the catalog (`../shared/data/music/catalog.csv`, else the
bundled demo), its 10 evenly spaced 187-frame patches of the musicnn
log-mel (the batch an export makes of a 30 s track) go through the original
graph, `pretrained/msd_musicnn` as trained and in its inference form
(`models.for_inference`, what `serving.export` writes; on a CPU with
native bfloat16 also in bfloat16, what `--precision=auto` exports there),
interleaved, median over the tracks. Outputs are compared with the
original's.
"""

from __future__ import annotations

from tf_startup import run

import importlib.metadata
import os
import time

import numpy as np
import tensorflow as tf
from absl import flags

import models
from benchmarks import preprocess_throughput, report
from features.logmel import log_mel_spectrogram
from intake import audio
from intake import catalog as catalog_lib
from models import artifact
from serving.export import graph_options
from serving.export.signatures import DEFAULT_NUM_CHUNKS
from tfrecords import readers

SECTION = "musicnn_original_graph"
ORIGINAL_NAME = "MSD_musicnn"
ARTIFACT = os.path.join(report.REPO_ROOT, "pretrained", "msd_musicnn")
_TRACKS = flags.DEFINE_integer("tracks", 30, "How many tracks of the catalog to time (the first ones).")


class OriginalGraph:
    """The package's TF1 graph and checkpoint in a session of its own (eager execution stays on elsewhere)."""

    def __init__(self, name: str, patch_frames: int, n_mels: int):
        from musicnn import configuration
        from musicnn import models as original_models

        labels = configuration.MSD_LABELS if name.startswith("MSD") else configuration.MTT_LABELS
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.x = tf.compat.v1.placeholder(tf.float32, [None, patch_frames, n_mels])
            self.is_training = tf.compat.v1.placeholder(tf.bool)
            outputs = original_models.define_model(self.x, self.is_training, name, len(labels))
            self.tags = tf.nn.sigmoid(outputs[0])
            self.embedding = tf.reshape(outputs[-1], [tf.shape(self.x)[0], -1])
            self.session = tf.compat.v1.Session(graph=self.graph)
            checkpoint = os.path.join(os.path.dirname(original_models.__file__), name) + "/"
            tf.compat.v1.train.Saver().restore(self.session, checkpoint)

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.session.run([self.tags, self.embedding], {self.x: batch, self.is_training: False})


def track_batches(catalog: catalog_lib.Catalog, info: artifact.ModelInfo, limit: int) -> list[np.ndarray]:
    """Each track's evenly spaced patches, as an export cuts them."""
    batches = []
    for entry in catalog.entries:
        if len(batches) == limit:
            break
        try:
            waveform, _ = audio.load_mono(entry.uri, entry.uri, info.log_mel.sample_rate)
        except audio.AudioError:
            continue
        log_mel = log_mel_spectrogram(waveform, info.log_mel)
        batches.append(readers.evenly_spaced_chunks(log_mel, info.crop_frames, DEFAULT_NUM_CHUNKS).numpy())
    return batches


def run_benchmark(command: str) -> report.Section:
    load_at_start = report.load_average()
    path, is_fallback = preprocess_throughput.find_catalog()
    catalog = catalog_lib.read_catalog(path)
    model, info = artifact.load(ARTIFACT)
    batches = track_batches(catalog, info, _TRACKS.value)
    original = OriginalGraph(ORIGINAL_NAME, info.crop_frames, info.log_mel.n_mels)
    as_trained = tf.function(lambda x: model(x, training=False))
    inference_form = models.for_inference(model, info.model_name)
    fused = tf.function(lambda x: inference_form(x, training=False))

    def ours(function):
        def call(batch):
            outputs = function(tf.constant(batch))
            return outputs[models.TAGS].numpy(), outputs[models.EMBEDDING].numpy()

        return call

    shipped_precision = graph_options.resolve_precision(graph_options.AUTO)
    float32_default = ", shipped default" if shipped_precision == graph_options.FLOAT32 else ""
    systems = {
        "musicnn package, TF1 graph + checkpoint, `Session.run` (anchor)": original,
        "`pretrained/msd_musicnn`, layers as trained (`--graph=as_trained`)": ours(as_trained),
        f"`pretrained/msd_musicnn`, inference form (`--graph=inference --precision=float32`{float32_default})": ours(
            fused
        ),
    }
    if graph_options.native_bfloat16():  # Where `--precision=auto` may pick it: this CPU computes it natively.
        in_bfloat16 = models.for_inference(model, info.model_name, graph_options.BFLOAT16)
        default = ", shipped default" if shipped_precision == graph_options.BFLOAT16 else ""
        label = f"`pretrained/msd_musicnn`, inference form in bfloat16 (`--precision=bfloat16`{default})"
        systems[label] = ours(tf.function(lambda x: in_bfloat16(x, training=False)))
    for call in systems.values():  # Warm-up: graph building, tracing, oneDNN primitive caches.
        call(batches[0])
    seconds = {name: [] for name in systems}
    largest_tag_difference = {name: 0.0 for name in systems}
    smallest_cosine = {name: 1.0 for name in systems}
    for batch in batches:
        reference = None
        for name, call in systems.items():
            start = time.perf_counter()
            tags, embedding = call(batch)
            seconds[name].append(time.perf_counter() - start)
            if reference is None:
                reference = (tags, embedding)
                continue
            largest_tag_difference[name] = max(largest_tag_difference[name], float(np.max(np.abs(tags - reference[0]))))
            cosine = np.sum(embedding * reference[1], axis=1) / (
                np.linalg.norm(embedding, axis=1) * np.linalg.norm(reference[1], axis=1)
            )
            smallest_cosine[name] = min(smallest_cosine[name], float(np.min(cosine)))
    anchor = np.median(seconds[next(iter(systems))])
    rows = [
        [
            name,
            f"{1e3 * np.median(times):.0f}",
            f"{anchor / np.median(times):.2f}x",
            f"{largest_tag_difference[name]:.1e}",
            f"{smallest_cosine[name]:.6f}",
        ]
        for name, times in seconds.items()
    ]
    table = report.markdown_table(
        ["System", "ms per 30 s track (median)", "vs TF1 graph", "max tag difference", "min embedding cosine"], rows
    )
    versions = ", ".join(f"{package} {importlib.metadata.version(package)}" for package in ("musicnn", "tf-keras"))
    notes = [
        preprocess_throughput.fallback_note(catalog, is_fallback),
        f"{len(batches)} tracks, each as an export batches it: {batches[0].shape[0]} patches of "
        f"{info.crop_frames} frames x {info.log_mel.n_mels} bands of this project's musicnn log-mel; the "
        f"{len(systems)} systems interleaved track by track after one warm-up call each. Differences are against the TF1 graph's "
        f"outputs on the same patches. {versions}; the original graph runs in a `tf.compat.v1.Session` of its own "
        "graph in the same process (see the module docstring for the throw-away set-up).",
        report.load_note(load_at_start),
    ]
    return report.Section(
        name=SECTION,
        title="musicnn: the package's own TF1 graph against this project's, same tracks",
        command=command,
        table=table,
        notes=notes,
    )


def main(argv):
    del argv
    command = "PYTHONPATH=/tmp/musicnn_tf1 TF_USE_LEGACY_KERAS=1 " + report.invocation(
        "benchmarks.musicnn_original_graph"
    )
    print(report.update_section(run_benchmark(command)))


if __name__ == "__main__":
    run(main)
