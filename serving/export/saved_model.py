"""The SavedModel graph around a tagger, and its export as a TF Serving version folder.

The exported graph takes mono 16 kHz waveforms, computes the log-mel with the
pipeline's own function (`features.logmel`), cuts each track into evenly
spaced chunks of the model's input length as the evaluation does (as many
as `tfrecords.readers.chunk_count` says for the track's length, at most
`num_chunks`: one pass for a track up to two chunks long), runs the tagger
and averages over the chunks. Its signatures are
`serving.export.signatures`: `serving_default`, `tags` and `embed` take
waveforms, `log_mel` takes the pipeline's stored log-mels.

`tags` are sigmoid probabilities `[batch, num_tags]`; `embedding` is the
chunk-averaged embedding, L2-normalised, `[batch, dim]`. Waveforms must be at
least one second long; a batch shares one length (pad shorter tracks with
zeros, or send them one by one). The tag vocabulary travels as the asset
`tags.txt`, as the `vocabulary` attribute and in the model artifact's
`model_info.json` (`models.artifact.ModelInfo`, provenance included), copied
under `assets.extra/`, which also holds TF Serving warm-up requests.

The tagger runs in its inference form (`models.for_inference`: batch norms
folded, musicnn's front end fused; the same outputs up to float rounding)
unless the export asks for the layers as trained (`GRAPH_AS_TRAINED`, the
baseline the benchmarks compare with), in float32 unless it asks for
bfloat16 (`serving.export.graph_options`). The `graph` and `precision`
attributes say which.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

import models
from features.logmel import log_mel_spectrogram
from models import artifact
from serving.export import graph_options
from serving.export import signatures as sig
from tfrecords import readers

VOCABULARY_ASSET = "tags.txt"
WARMUP_FILENAME = "tf_serving_warmup_requests"
MIN_SECONDS = 1.0
DEFAULT_NUM_CHUNKS = sig.DEFAULT_NUM_CHUNKS
GRAPH_INFERENCE = graph_options.GRAPH_INFERENCE
GRAPH_AS_TRAINED = graph_options.GRAPH_AS_TRAINED


class ExportError(ValueError):
    """A model directory that cannot be exported."""


class TaggerModule(tf.Module):
    """The serving graph around a trained tagger.

    Args:
        tagger: A model from `models.get_model`, weights loaded.
        info: Its `ModelInfo` (front end, input length, vocabulary).
        num_chunks: The most evenly spaced chunks averaged per track (`readers.chunk_count`).
        graph: `GRAPH_INFERENCE` (the tagger's inference form) or `GRAPH_AS_TRAINED`.
        precision: `float32` or `bfloat16` (inference form only), after `graph_options.resolve_precision`.
    """

    def __init__(
        self,
        tagger,
        info: artifact.ModelInfo,
        num_chunks: int,
        graph: str = GRAPH_INFERENCE,
        precision: str = graph_options.FLOAT32,
    ):
        super().__init__(name="tagger")
        if graph not in graph_options.GRAPHS:
            raise ExportError(f"unknown graph {graph!r}; choose one of {list(graph_options.GRAPHS)}")
        if precision not in (graph_options.FLOAT32, graph_options.BFLOAT16):
            raise ExportError(f"unknown precision {precision!r}; choose float32 or bfloat16")
        if graph == GRAPH_AS_TRAINED and precision != graph_options.FLOAT32:
            raise ExportError(f"the layers as trained run in float32 only; {precision} needs the inference graph")
        self.tagger = tagger
        if graph == GRAPH_INFERENCE:
            self.tagger = models.for_inference(tagger, info.model_name, precision)
        self.graph = tf.Variable(graph, trainable=False, name="graph")
        self.precision = tf.Variable(precision, trainable=False, name="precision")
        self.spec = info.log_mel
        self.chunk_frames = info.crop_frames
        self.num_chunks = num_chunks
        # Variables, not constants: only trackable state is saved with the module.
        self.vocabulary = tf.Variable(list(info.vocabulary), trainable=False, dtype=tf.string, name="vocabulary")
        self.model_info = tf.Variable(info.to_json(), trainable=False, name="model_info")
        self.num_chunks_variable = tf.Variable(num_chunks, trainable=False, name="num_chunks")
        self._min_samples = int(MIN_SECONDS * self.spec.sample_rate)

    def _from_log_mel(self, log_mel):
        # Every track of a batch has the same length, so the same number of chunks (`readers.chunk_count`).
        batch = tf.shape(log_mel)[0]
        chunks = tf.map_fn(
            lambda track: readers.evenly_spaced_chunks(track, self.chunk_frames, self.num_chunks),
            log_mel,
            fn_output_signature=tf.TensorSpec([None, self.chunk_frames, self.spec.n_mels], tf.float32),
        )
        num_chunks = tf.shape(chunks)[1]
        flat = tf.reshape(chunks, [-1, self.chunk_frames, self.spec.n_mels])
        outputs = self.tagger(flat, training=False)
        tags = tf.reduce_mean(tf.reshape(outputs[models.TAGS], [batch, num_chunks, -1]), axis=1)
        embedding = tf.reduce_mean(tf.reshape(outputs[models.EMBEDDING], [batch, num_chunks, -1]), axis=1)
        return {sig.TAGS_OUTPUT: tags, sig.EMBEDDING_OUTPUT: tf.math.l2_normalize(embedding, axis=-1)}

    def _from_waveform(self, waveform):
        tf.debugging.assert_greater_equal(
            tf.shape(waveform)[1],
            self._min_samples,
            message=f"waveforms must be at least {MIN_SECONDS} s at {self.spec.sample_rate} Hz",
        )
        return self._from_log_mel(log_mel_spectrogram(waveform, self.spec))

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name=sig.WAVEFORM_INPUT)])
    def serve(self, waveform):
        return self._from_waveform(waveform)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name=sig.WAVEFORM_INPUT)])
    def tags(self, waveform):
        return {sig.TAGS_OUTPUT: self._from_waveform(waveform)[sig.TAGS_OUTPUT]}

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name=sig.WAVEFORM_INPUT)])
    def embed(self, waveform):
        return {sig.EMBEDDING_OUTPUT: self._from_waveform(waveform)[sig.EMBEDDING_OUTPUT]}

    def log_mel_signature(self):
        n_mels = self.spec.n_mels

        @tf.function(input_signature=[tf.TensorSpec([None, None, n_mels], tf.float32, name=sig.LOG_MEL_INPUT)])
        def from_log_mel(log_mel):
            return self._from_log_mel(log_mel)

        return from_log_mel


def next_version(export_base: str) -> int:
    """One more than the highest numeric version folder under `export_base`."""
    if not tf.io.gfile.isdir(export_base):
        return 1
    versions = [int(name.rstrip("/")) for name in tf.io.gfile.listdir(export_base) if name.rstrip("/").isdigit()]
    return max(versions, default=0) + 1


def warmup_requests(model_name: str, sample_rate: int, seconds=(1.0, 30.0)) -> list[bytes]:
    """TF Serving warm-up records: one Predict request per typical input length."""
    records = []
    for duration in seconds:
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name, signature_name=sig.SERVING_DEFAULT)
        )
        waveform = np.zeros((1, int(duration * sample_rate)), np.float32)
        request.inputs[sig.WAVEFORM_INPUT].CopyFrom(tf.make_tensor_proto(waveform))
        log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
        records.append(log.SerializeToString(deterministic=True))
    return records


def export(
    model_dir: str,
    export_base: str,
    version: int | None = None,
    num_chunks: int = DEFAULT_NUM_CHUNKS,
    graph: str = GRAPH_INFERENCE,
    precision: str = graph_options.FLOAT32,
) -> str:
    """Exports a model artifact as `EXPORT_BASE/<version>/`.

    Args:
        model_dir: A model artifact (`models.artifact`: a converted
            checkpoint such as `pretrained/msd_musicnn`) or a directory
            written by `python -m train` (its `best/` artifact is taken).
        export_base: The model's folder in a TF Serving model base path.
        version: The version number; default: one more than the highest.
        num_chunks: The most chunks averaged per track in the serving graph (fewer for short tracks).
        graph: `GRAPH_INFERENCE` (the tagger's inference form, the default) or
            `GRAPH_AS_TRAINED` (its layers as trained: the baseline).
        precision: `float32` (the default here, the same on every machine), `bfloat16` or `auto`
            (`graph_options.resolve_precision`: what `python -m serving.export` does by default).

    Returns:
        The version directory. It is written next to it first and renamed,
        so TF Serving never sees a half-written version.

    Raises:
        ExportError: Not an artifact, or an inconsistent one, naming it.
    """
    try:
        tagger, info = artifact.load(model_dir)
    except artifact.ArtifactError as error:
        raise ExportError(str(error)) from error
    try:
        if graph == GRAPH_AS_TRAINED and precision == graph_options.AUTO:
            precision = graph_options.FLOAT32  # The baseline's arithmetic.
        precision = graph_options.resolve_precision(precision)
    except ValueError as error:
        raise ExportError(str(error)) from error
    module = TaggerModule(tagger, info, num_chunks, graph, precision)
    version = version or next_version(export_base)
    final = os.path.join(export_base, str(version))
    if tf.io.gfile.exists(final):
        raise ExportError(f"{final} exists; versions are immutable, pick another --version")
    staging = os.path.join(export_base, f".tmp-{version}")
    if tf.io.gfile.exists(staging):
        tf.io.gfile.rmtree(staging)
    signatures = {
        sig.SERVING_DEFAULT: module.serve,
        sig.TAGS_SIGNATURE: module.tags,
        sig.EMBED_SIGNATURE: module.embed,
        sig.LOG_MEL_SIGNATURE: module.log_mel_signature(),
    }
    with tempfile.TemporaryDirectory() as local:  # The asset is copied into the SavedModel.
        vocabulary_file = os.path.join(local, VOCABULARY_ASSET)
        with open(vocabulary_file, "w", encoding="utf-8") as handle:
            handle.write("\n".join(info.vocabulary) + "\n")
        module.vocabulary_asset = tf.saved_model.Asset(vocabulary_file)
        tf.saved_model.save(module, staging, signatures=signatures)
    extra = os.path.join(staging, "assets.extra")
    tf.io.gfile.makedirs(extra)
    with tf.io.TFRecordWriter(os.path.join(extra, WARMUP_FILENAME)) as writer:
        for record in warmup_requests(os.path.basename(os.path.normpath(export_base)), info.log_mel.sample_rate):
            writer.write(record)
    with tf.io.gfile.GFile(os.path.join(extra, artifact.MODEL_INFO_FILENAME), "w") as handle:
        handle.write(info.to_json())
    tf.io.gfile.rename(staging, final)
    return final
