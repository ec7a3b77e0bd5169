"""Where the models' time goes on this CPU, layer by layer, against the CPU's own matmul rate.

For one 30 s track, as the exports batch it (`readers.evenly_spaced_chunks`:
musicnn 10 chunks of 187 frames, the CRNN one of 1813, the Short-Chunk
ResNet 16 of 231), each layer of each model is run alone on the inputs the
model gives it: its floating-point operations (TensorFlow's graph profiler,
2 per multiply-add), its median time and the rate it achieves. The limit is
measured in the same run: a 2048 x 2048 float32 matmul, the best the CPU
does with TensorFlow's kernels. A layer far below it is where a faster
formulation pays.

The models: the shipped defaults of `serving.build_index` (`pretrained/msd_musicnn`
ranks, `pretrained/mtat_crnn` tags), and the Short-Chunk ResNet at its
default width (random weights: the time does not depend on them), each as
trained and in its inference form (`models.for_inference`, what
`serving.export` writes by default).

Usage:

    python -m benchmarks --only=layer_profile
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

import models
from benchmarks import report
from features.logmel_spec import LogMelSpec
from models import artifact
from models.musicnn import FrequencyPooledConv
from serving.export.signatures import DEFAULT_NUM_CHUNKS
from tfrecords import readers

SECTION = "layer_profile"
TRACK_SECONDS = 30.0
GEMM_SIZE = 2048
REPEATS = 7
SHOWN_LAYERS = 6  # Per model, the slowest; the rest are summed in one row.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHORT_CHUNK_RES_CROP_FRAMES = 231  # configs/short_chunk_res.gin


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """One layer's work and time for one track's batch."""

    name: str
    kind: str
    flops: int
    seconds: float

    @property
    def gflops_per_s(self) -> float:
        return self.flops / self.seconds / 1e9 if self.seconds > 0 else 0.0


@dataclasses.dataclass(frozen=True)
class ModelProfile:
    """A model's layers (in the model's order) and the whole model's time as one graph, for one track."""

    model_name: str
    batch_shape: tuple[int, ...]
    layers: tuple[LayerCost, ...]
    model_seconds: float
    xla_seconds: float | None = None  # The whole model compiled with XLA (`jit_compile`); None: it does not compile.

    @property
    def flops(self) -> int:
        return sum(layer.flops for layer in self.layers)


def track_batch_shape(log_mel: LogMelSpec, crop_frames: int, seconds: float = TRACK_SECONDS) -> tuple[int, int, int]:
    """The `[chunks, frames, n_mels]` batch an export makes of a track of `seconds`."""
    frames = int(seconds * log_mel.sample_rate) // log_mel.hop_length + 1
    chunks = int(readers.chunk_count(frames, crop_frames, DEFAULT_NUM_CHUNKS))
    return chunks, crop_frames, log_mel.n_mels


def float_ops(function: Callable, *inputs) -> int:
    """Floating-point operations of one call of `function` on inputs of these shapes (TensorFlow's profiler)."""
    from tensorflow.python.profiler import model_analyzer, option_builder

    specs = tf.nest.map_structure(lambda x: tf.TensorSpec(x.shape, x.dtype), inputs)
    traced = function if hasattr(function, "get_concrete_function") else tf.function(function)
    graph = traced.get_concrete_function(*specs).graph  # A tf.function's own trace: the one that is timed.
    options = option_builder.ProfileOptionBuilder(option_builder.ProfileOptionBuilder.float_operation())
    options = options.with_empty_output().build()
    return int(model_analyzer.profile(graph, options=options).total_float_ops)


def layer_flops(layer: keras.layers.Layer, call: Callable, value) -> int:
    """A layer's floating-point operations on `value`: the profiler's count (`float_ops`), except for musicnn's
    fused branches, credited with the convolution they compute, as the layers they replace are: the profiler
    does not count inside their per-track loop, and their Toeplitz products do more multiply-adds than the
    convolution needs (the excess is not useful work)."""
    if isinstance(layer, FrequencyPooledConv):
        batch, frames, bands, _ = value.shape
        kernel_frames, kernel_bands = layer.kernel_size
        return 2 * batch * frames * (bands - kernel_bands + 1) * kernel_frames * kernel_bands * layer.filters
    return float_ops(call, value)


def median_seconds(call: Callable[[], object], repeats: int = REPEATS) -> float:
    """The median wall time of `call` (after one warm-up call), its result fetched to the host."""
    _fetched(call())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _fetched(call())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _fetched(result):
    return tf.nest.map_structure(lambda x: x.numpy() if hasattr(x, "numpy") else x, result)


def gemm_rate(size: int = GEMM_SIZE, repeats: int = REPEATS) -> float:
    """This CPU's float32 matmul rate in GFLOP/s through TensorFlow (a `size` x `size` product)."""
    rng = np.random.default_rng(0)
    a = tf.constant(rng.standard_normal((size, size), dtype=np.float32))
    b = tf.constant(rng.standard_normal((size, size), dtype=np.float32))
    matmul = tf.function(lambda x, y: tf.linalg.matmul(x, y))
    return 2.0 * size**3 / median_seconds(lambda: matmul(a, b), repeats) / 1e9


def layer_inputs(model: keras.Model, batch: np.ndarray) -> dict[str, object]:
    """What each layer of a functional model receives when the model runs on `batch` (inference)."""
    probed = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    probe = keras.Model(model.inputs, [layer.input for layer in probed])  # Built on a list of inputs.
    values = probe([batch], training=False)
    return {layer.name: value for layer, value in zip(probed, values, strict=True)}


def profile_model(model_name: str, model: keras.Model, batch: np.ndarray, repeats: int = REPEATS) -> ModelProfile:
    """Every layer of `model` alone on its inputs from `batch`, and the whole model as one graph."""
    inputs = layer_inputs(model, batch)
    costs = []
    for layer in model.layers:
        if layer.name not in inputs:
            continue
        value = inputs[layer.name]
        call = tf.function(lambda x, layer=layer: layer(x, training=False))
        costs.append(
            LayerCost(
                name=layer.name,
                kind=type(layer).__name__,
                flops=layer_flops(layer, call, value),
                seconds=median_seconds(lambda call=call, value=value: call(value), repeats),
            )
        )
    whole = tf.function(lambda x: model(x, training=False))
    compiled = tf.function(lambda x: model(x, training=False), jit_compile=True)
    tensor = tf.constant(batch)
    try:
        xla_seconds = median_seconds(lambda: compiled(tensor), repeats)
    except (tf.errors.OpError, ValueError, NotImplementedError):  # An op XLA cannot compile.
        xla_seconds = None
    model_seconds = median_seconds(lambda: whole(tensor), repeats)
    return ModelProfile(model_name, tuple(batch.shape), tuple(costs), model_seconds, xla_seconds)


def shipped_models() -> list[tuple[str, keras.Model, LogMelSpec, int]]:
    """The models `build_index` runs by default (where installed) and the Short-Chunk ResNet, each as trained
    and in its inference form (what exports run, `models.for_inference`), with its front end and crop length."""
    found = []
    for name in ("msd_musicnn", "mtat_crnn"):
        path = os.path.join(REPO_ROOT, "pretrained", name)
        if os.path.exists(os.path.join(path, artifact.MODEL_INFO_FILENAME)):
            model, info = artifact.load(path)
            found.append((f"{name} ({info.model_name})", info.model_name, model, info.log_mel, info.crop_frames))
    resnet = models.get_model("short_chunk_res", 50, num_frames=SHORT_CHUNK_RES_CROP_FRAMES)
    spec = LogMelSpec(n_mels=models.DEFAULT_N_MELS["short_chunk_res"])
    found.append(("short_chunk_res (default width)", "short_chunk_res", resnet, spec, SHORT_CHUNK_RES_CROP_FRAMES))
    with_inference_forms = []
    for label, architecture, model, log_mel, crop_frames in found:
        with_inference_forms.append((f"{label}, as trained", model, log_mel, crop_frames))
        inference_form = models.for_inference(model, architecture)
        with_inference_forms.append((f"{label}, inference form", inference_form, log_mel, crop_frames))
    return with_inference_forms


def track_batch(log_mel: LogMelSpec, crop_frames: int) -> np.ndarray:
    """Log-mel values of the front end's range (dB are negative, `log10_1p` is not) in one track's batch shape."""
    batch = np.random.default_rng(0).normal(-30.0, 20.0, size=track_batch_shape(log_mel, crop_frames))
    if log_mel.compression == "log10_1p":
        batch = np.abs(batch) / 10.0
    return batch.astype(np.float32)


def profile_rows(profile: ModelProfile, gemm_gflops: float, shown: int = SHOWN_LAYERS) -> list[Sequence[object]]:
    """The table rows of one model: its slowest layers, the rest summed, and the whole model."""
    layer_seconds = sum(layer.seconds for layer in profile.layers)
    slowest = sorted(profile.layers, key=lambda layer: -layer.seconds)
    rest = slowest[shown:]

    def row(name, kind, flops, seconds):
        rate = flops / seconds / 1e9 if seconds > 0 else 0.0
        return (
            profile.model_name,
            name,
            kind,
            f"{flops / 1e9:.3f}",
            f"{seconds * 1e3:.1f}",
            f"{rate:.1f}",
            f"{rate / gemm_gflops:.0%}",
            f"{seconds / layer_seconds:.0%}" if layer_seconds else "-",
        )

    rows = [row(layer.name, layer.kind, layer.flops, layer.seconds) for layer in slowest[:shown]]
    if rest:
        rows.append(row(f"{len(rest)} other layers", "", sum(x.flops for x in rest), sum(x.seconds for x in rest)))
    rows.append(row("**whole model, one graph**", "", profile.flops, profile.model_seconds))
    if profile.xla_seconds is None:
        rows.append((profile.model_name, "whole model, XLA (`jit_compile`)", "", "", "does not compile", "", "", ""))
    else:
        rows.append(row("whole model, XLA (`jit_compile`)", "", profile.flops, profile.xla_seconds))
    return rows


def run_benchmark(command: str) -> report.Section:
    """Runs the benchmark and returns its section of BENCHMARKS.md."""
    load_at_start = report.load_average()
    gemm = gemm_rate()
    profiles = []
    for name, model, log_mel, crop_frames in shipped_models():
        profiles.append(profile_model(name, model, track_batch(log_mel, crop_frames)))
    rows = [row for profile in profiles for row in profile_rows(profile, gemm)]
    table = report.markdown_table(
        ["model", "layer", "kind", "GFLOP / track", "ms / track", "GFLOP/s", "of GEMM rate", "of layers' time"],
        rows,
    )
    notes = [
        f"Limit, measured in the same run: a {GEMM_SIZE} x {GEMM_SIZE} float32 matmul through TensorFlow at "
        f"**{gemm:.1f} GFLOP/s** on {report.num_cpus()} cores ({report.cpu_vector_extensions()}). "
        '"of GEMM rate" is each row\'s achieved rate against it.',
        "One track = the batch an export makes of a 30 s track: "
        + "; ".join(f"{p.model_name} {list(p.batch_shape)}" for p in profiles)
        + ". Each layer runs alone (a `tf.function` of the layer on the inputs the model gives it), median of "
        f"{REPEATS} after a warm-up; FLOPs are TensorFlow's graph profiler's (2 per multiply-add; GRU loops and "
        "pooling count little or nothing), except musicnn's fused branches (`FrequencyPooledConv`), credited with "
        "the convolution they compute, as the as-trained rows are. The whole model's row is one graph of all layers: below the layers' "
        "sum where TensorFlow fuses or overlaps them. The XLA row is the same graph compiled with `jit_compile`; "
        "its speed-up over the one graph (above 1.00x: XLA is faster): "
        + "; ".join(
            f"{p.model_name} {p.model_seconds / p.xla_seconds:.2f}x" if p.xla_seconds else f"{p.model_name} -"
            for p in profiles
        )
        + ".",
        report.load_note(load_at_start),
    ]
    return report.Section(
        name=SECTION,
        title="Per-layer time and arithmetic rate against the CPU's GEMM rate",
        command=command,
        table=table,
        notes=notes,
    )
