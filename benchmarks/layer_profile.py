"""Where the models' time goes on this CPU, layer by layer, against the CPU's own matmul rate.

For one 30 s track, as the exports batch it (`readers.evenly_spaced_chunks`:
musicnn 10 chunks of 187 frames, the CRNN one of 1813, the Short-Chunk
ResNet 16 of 231), each layer of each model is run alone on the inputs the
model gives it: its floating-point operations (TensorFlow's graph profiler,
2 per multiply-add), its median time and the rate it achieves. The limit is
measured in the same run: a 2048 x 2048 matmul in the row's precision, the
best the CPU does with TensorFlow's kernels. A layer far below it is where a
faster formulation pays.

The models: the shipped defaults of `serving.build_index` (`pretrained/msd_musicnn`
ranks, `pretrained/mtat_crnn` tags), and the Short-Chunk ResNet at its
default width (random weights: the time does not depend on them), each as
trained and in its inference form (`models.for_inference`, what
`serving.export` writes by default), and on a CPU with native bfloat16 the
inference form in bfloat16 too (what `--precision=auto` exports there).

`ArithmeticFloor` turns the same two measurements into a bound for the
other benchmarks: the models' operations per track at the matmul rate are
the least time any formulation of the same arithmetic takes
(`catalog_embedding` and `recommend_latency` judge their targets by it).

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
from serving.export import graph_options
from serving.export.graph_options import BFLOAT16, FLOAT32
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
    fused branches, credited with the convolution they compute, as the layers they replace are: their
    polyphase convolutions multiply-add the zeros of their kernels too (not useful work)."""
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


def gemm_rate(size: int = GEMM_SIZE, repeats: int = REPEATS, precision: str = FLOAT32) -> float:
    """This CPU's matmul rate in GFLOP/s through TensorFlow (a `size` x `size` product in `precision`)."""
    rng = np.random.default_rng(0)
    a = tf.cast(rng.standard_normal((size, size), dtype=np.float32), tf.as_dtype(precision))
    b = tf.cast(rng.standard_normal((size, size), dtype=np.float32), tf.as_dtype(precision))
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


@dataclasses.dataclass(frozen=True)
class ProfiledModel:
    """A model the benchmark profiles: its label, the model, its front end, crop length and arithmetic."""

    label: str
    model: keras.Model
    log_mel: LogMelSpec
    crop_frames: int
    precision: str = FLOAT32


def shipped_models(native_bfloat16: bool | None = None) -> list[ProfiledModel]:
    """The models `build_index` runs by default (where installed) and the Short-Chunk ResNet, each as trained
    and in its inference form (what exports run, `models.for_inference`), with its front end and crop length;
    on a CPU with native bfloat16 (default: this one) also the inference form in bfloat16, which
    `--precision=auto` exports there."""
    native = graph_options.native_bfloat16() if native_bfloat16 is None else native_bfloat16
    found = []
    for name in ("msd_musicnn", "mtat_crnn"):
        path = os.path.join(REPO_ROOT, "pretrained", name)
        if os.path.exists(os.path.join(path, artifact.MODEL_INFO_FILENAME)):
            model, info = artifact.load(path)
            found.append((f"{name} ({info.model_name})", info.model_name, model, info.log_mel, info.crop_frames))
    resnet = models.get_model("short_chunk_res", 50, num_frames=SHORT_CHUNK_RES_CROP_FRAMES)
    spec = LogMelSpec(n_mels=models.DEFAULT_N_MELS["short_chunk_res"])
    found.append(("short_chunk_res (default width)", "short_chunk_res", resnet, spec, SHORT_CHUNK_RES_CROP_FRAMES))
    profiled = []
    for label, architecture, model, log_mel, crop_frames in found:
        profiled.append(ProfiledModel(f"{label}, as trained", model, log_mel, crop_frames))
        inference_form = models.for_inference(model, architecture)
        profiled.append(ProfiledModel(f"{label}, inference form", inference_form, log_mel, crop_frames))
        if native:
            in_bfloat16 = models.for_inference(model, architecture, BFLOAT16)
            profiled.append(
                ProfiledModel(f"{label}, inference form, bfloat16", in_bfloat16, log_mel, crop_frames, BFLOAT16)
            )
    return profiled


# musicnn's first timbral convolution, on one track's 10 patches: (frames + 6 padding, bands), kernel, filters.
TIMBRAL_SHAPE = ((10, 193, 96), (7, 38), 204)
# (frames, bands) grouped into the input channels, (1, 1) as shipped.
TIMBRAL_REGROUPINGS = ((1, 1), (2, 1), (1, 2), (2, 2), (1, 4))


def regrouped_timbral_rates(precision: str = FLOAT32, repeats: int = REPEATS) -> dict[tuple[int, int], float]:
    """The rate (useful GFLOP/s) of musicnn's timbral convolution with its input regrouped into channels.

    One input channel is what keeps the timbral convolutions below the
    matrix-product rate; regrouping `(frames, bands)` neighbours into
    channels (space to depth) gives the convolution more input channels at
    the cost of zero taps in its regrouped kernel (`filters x frames x bands`
    outputs, one per phase). Each variant runs the shapes such a formulation
    runs, convolution and max pool over frequency, on random values (the
    time does not depend on them); the rate counts only the shipped
    convolution's multiply-adds, so the variants compare directly.
    """
    (patches, frames, bands), (kernel_frames, kernel_bands), filters = TIMBRAL_SHAPE
    useful = 2 * patches * (frames - kernel_frames + 1) * (bands - kernel_bands + 1) * kernel_frames * kernel_bands
    useful *= filters
    dtype = tf.as_dtype(precision)
    rng = np.random.default_rng(0)
    rates = {}
    for frame_group, band_group in TIMBRAL_REGROUPINGS:
        channels = frame_group * band_group
        image_shape = (patches, -(-frames // frame_group), bands // band_group, channels)
        kernel_shape = (
            (kernel_frames + 2 * (frame_group - 1)) // frame_group,
            (kernel_bands + 2 * (band_group - 1)) // band_group,
            channels,
            filters * channels,
        )
        image = tf.cast(rng.standard_normal(image_shape, dtype=np.float32), dtype)
        kernel = tf.cast(rng.standard_normal(kernel_shape, dtype=np.float32), dtype)
        positions = image_shape[2] - kernel_shape[1] + 1

        @tf.function
        def pooled_convolution(x, w, positions=positions):
            return tf.nn.max_pool2d(tf.nn.conv2d(x, w, 1, "VALID"), (1, positions), (1, positions), "VALID")

        seconds = median_seconds(lambda image=image, kernel=kernel: pooled_convolution(image, kernel), repeats)
        rates[(frame_group, band_group)] = useful / seconds / 1e9
    return rates


def track_flops(name: str) -> int:
    """Floating-point operations of the pretrained model `name` (`pretrained/`), as trained, on one 30 s track's
    batch: the profiler's count, 2 per multiply-add."""
    model, info = artifact.load(os.path.join(REPO_ROOT, "pretrained", name))
    return float_ops(lambda x: model(x, training=False), track_batch(info.log_mel, info.crop_frames))


@dataclasses.dataclass(frozen=True)
class ArithmeticFloor:
    """The least time models' arithmetic can take per 30 s track on this CPU.

    Their floating-point operations as trained, at the CPU's matrix-product
    rate through TensorFlow in the precision they run in (both measured in the
    same run). A formulation doing the same arithmetic does not run faster
    than the CPU's best kernel: a target needing more than that rate cannot be
    met without changing the models.

    Attributes:
        flops_per_track: Each model's operations for one track (`track_flops`).
        precision: The arithmetic they run in (`float32` or `bfloat16`).
        gemm_gflops: A `GEMM_SIZE` square matmul's rate in that precision (`gemm_rate`).
    """

    flops_per_track: dict[str, int]
    precision: str
    gemm_gflops: float

    @property
    def flops(self) -> int:
        return sum(self.flops_per_track.values())

    @property
    def seconds_per_track(self) -> float:
        return self.flops / (self.gemm_gflops * 1e9)

    def share_needed(self, seconds_per_track: float) -> float:
        """The share of the matrix-product rate the models must run at to take `seconds_per_track` (above 1: no
        formulation of this arithmetic can)."""
        return self.seconds_per_track / seconds_per_track if seconds_per_track > 0 else float("inf")

    def describe(self) -> str:
        per_model = ", ".join(f"{name} {flops / 1e9:.1f}" for name, flops in self.flops_per_track.items())
        return (
            f"the models do {self.flops / 1e9:.1f} GFLOP per 30 s track ({per_model}; TensorFlow's profiler, as "
            f"trained), and this CPU's {self.precision} matrix product through TensorFlow runs at "
            f"{self.gemm_gflops:.0f} GFLOP/s (a {GEMM_SIZE} x {GEMM_SIZE} matmul, same run): at least "
            f"{self.seconds_per_track * 1e3:.0f} ms of arithmetic per track"
        )


def arithmetic_floor(names: Sequence[str], precision: str) -> ArithmeticFloor:
    """The `ArithmeticFloor` of the pretrained models `names` running in `precision`, measured now."""
    return ArithmeticFloor({name: track_flops(name) for name in names}, precision, gemm_rate(precision=precision))


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


def regrouping_note(precision: str, gemm: dict[str, float]) -> str:
    """musicnn's timbral convolution regrouped into more input channels (`regrouped_timbral_rates`), measured now."""
    rates = regrouped_timbral_rates(precision)
    (kernel_frames, kernel_bands), filters = TIMBRAL_SHAPE[1:]

    def label(frame_group, band_group):
        if (frame_group, band_group) == (1, 1):
            return "as shipped (one input channel)"
        return f"{frame_group} frame(s) x {band_group} band(s) per channel"

    fastest = max(rates, key=rates.get)
    verdict = (
        "More input channels do not pay for the zero taps they bring: the one-channel convolution is the fastest "
        "of these formulations."
        if fastest == (1, 1)
        else f"{label(*fastest)} is faster than the shipped layout here: a formulation worth building."
    )
    return (
        f"What stops musicnn's timbral convolutions ({kernel_frames} x {kernel_bands} and 7 x 67, {filters} filters, "
        f"one input channel), measured now in {precision} with the max over frequency, useful GFLOP/s and share of "
        f"the {precision} matmul rate, their input regrouped into channels (space to depth, zero taps in the "
        "regrouped kernel): "
        + "; ".join(f"{label(*grouping)} {rate:.0f} ({rate / gemm[precision]:.0%})" for grouping, rate in rates.items())
        + f". {verdict}"
    )


def run_benchmark(command: str) -> report.Section:
    """Runs the benchmark and returns its section of BENCHMARKS.md."""
    load_at_start = report.load_average()
    profiled = shipped_models()
    gemm = {precision: gemm_rate(precision=precision) for precision in sorted({p.precision for p in profiled})}
    profiles = []
    for entry in profiled:
        profile = profile_model(entry.label, entry.model, track_batch(entry.log_mel, entry.crop_frames))
        profiles.append((profile, entry.precision))
    rows = [row for profile, precision in profiles for row in profile_rows(profile, gemm[precision])]
    table = report.markdown_table(
        ["model", "layer", "kind", "GFLOP / track", "ms / track", "GFLOP/s", "of GEMM rate", "of layers' time"],
        rows,
    )
    rates = " and ".join(
        f"a {GEMM_SIZE} x {GEMM_SIZE} {precision} matmul at **{rate:.1f} GFLOP/s**" for precision, rate in gemm.items()
    )
    notes = [
        f"Limit, measured in the same run through TensorFlow on {report.num_cpus()} cores "
        f'({report.cpu_vector_extensions()}): {rates}. "of GEMM rate" is each row\'s achieved rate against the '
        "matmul in the row's own precision.",
        "One track = the batch an export makes of a 30 s track: "
        + "; ".join(f"{p.model_name} {list(p.batch_shape)}" for p, _ in profiles)
        + ". Each layer runs alone (a `tf.function` of the layer on the inputs the model gives it), median of "
        f"{REPEATS} after a warm-up; FLOPs are TensorFlow's graph profiler's (2 per multiply-add; GRU loops and "
        "pooling count little or nothing), except musicnn's fused branches (`FrequencyPooledConv`), credited with "
        "the convolution they compute, as the as-trained rows are. The whole model's row is one graph of all layers: below the layers' "
        "sum where TensorFlow fuses or overlaps them. The XLA row is the same graph compiled with `jit_compile`; "
        "its speed-up over the one graph (above 1.00x: XLA is faster): "
        + "; ".join(
            f"{p.model_name} {p.model_seconds / p.xla_seconds:.2f}x" if p.xla_seconds else f"{p.model_name} -"
            for p, _ in profiles
        )
        + ".",
        regrouping_note(BFLOAT16 if BFLOAT16 in gemm else FLOAT32, gemm),
        report.load_note(load_at_start),
    ]
    return report.Section(
        name=SECTION,
        title="Per-layer time and arithmetic rate against the CPU's GEMM rate",
        command=command,
        table=table,
        notes=notes,
    )
