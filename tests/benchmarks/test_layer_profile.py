"""benchmarks.layer_profile: the FLOP counts, the batch of one track and the rows, on real layers and models."""

from __future__ import annotations

import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from benchmarks import layer_profile
from features.logmel_spec import PRESETS, LogMelSpec
from models import artifact
from tfrecords import readers

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_float_ops_count_two_per_multiply_add():
    conv = keras.layers.Conv2D(4, (3, 5), padding="same", use_bias=False)
    image = np.zeros((1, 10, 12, 2), np.float32)
    conv(image)
    assert layer_profile.float_ops(lambda x: conv(x), image) == 2 * 10 * 12 * (3 * 5 * 2) * 4
    dense = keras.layers.Dense(3, use_bias=False)
    rows = np.zeros((4, 6), np.float32)
    dense(rows)
    assert layer_profile.float_ops(lambda x: dense(x), rows) == 2 * 4 * 6 * 3


@pytest.mark.parametrize(
    ("spec", "crop_frames"), [(PRESETS["musicnn"], 187), (PRESETS["won2020_96"], 1813), (LogMelSpec(), 231)]
)
def test_a_track_is_batched_as_the_exports_batch_it(spec, crop_frames):
    frames = int(30.0 * spec.sample_rate) // spec.hop_length + 1
    chunks = readers.evenly_spaced_chunks(tf.zeros([frames, spec.n_mels]), crop_frames, 16)
    assert layer_profile.track_batch_shape(spec, crop_frames) == tuple(chunks.shape)


def test_every_layer_is_profiled_and_the_layers_add_up_to_the_model():
    model = models.get_model("musicnn", 3)
    batch = np.abs(np.random.default_rng(0).normal(size=(1, 187, 96))).astype(np.float32)
    profile = layer_profile.profile_model("musicnn", model, batch, repeats=1)
    assert [cost.name for cost in profile.layers] == [
        layer.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)
    ]
    whole = layer_profile.float_ops(lambda x: model(x, training=False), batch)
    assert profile.flops == pytest.approx(whole, rel=0.01)
    convolutions = [cost for cost in profile.layers if cost.kind in ("Conv1D", "Conv2D")]
    assert len(convolutions) == 8 and all(cost.flops > 0 and cost.seconds > 0 for cost in convolutions)
    rows = layer_profile.profile_rows(profile, gemm_gflops=100.0, shown=6)
    assert len(rows) == 6 + 3 and rows[6][1] == f"{len(profile.layers) - 6} other layers"
    slowest = sorted(profile.layers, key=lambda cost: -cost.seconds)[0]
    assert rows[0][1] == slowest.name and rows[0][6] == f"{slowest.gflops_per_s / 100.0:.0%}"
    assert rows[-2][1] == "**whole model, one graph**" and rows[-2][3] == f"{profile.flops / 1e9:.3f}"
    assert rows[-1][1] == "whole model, XLA (`jit_compile`)" and profile.xla_seconds > 0


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_the_gemm_rate_is_a_rate(precision):
    assert layer_profile.gemm_rate(size=256, repeats=2, precision=precision) > 0.1  # GFLOP/s: any CPU does more.


def _musicnn_convolution_flops(model: keras.Model, chunks: int, frames: int, bands: int) -> int:
    """2 x multiply-adds of musicnn's convolutions on `chunks` patches, from their kernels and output sizes."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):  # Front end: timbral valid over frequency, temporal 'same'.
            kernel_frames, kernel_bands, channels, filters = layer.kernel.shape
            outputs = frames * (bands - kernel_bands + 1 if layer.padding == "valid" else bands) * filters
            total += 2 * outputs * kernel_frames * kernel_bands * channels
        elif isinstance(layer, keras.layers.Conv1D):  # Mid-end, 'same' over time.
            width, channels, filters = layer.kernel.shape
            total += 2 * frames * filters * width * channels
    return chunks * total


def test_a_pretrained_models_operations_per_track_are_its_convolutions_on_the_exports_batch():
    name = "msd_musicnn"
    model, info = artifact.load(str(REPO_ROOT / "pretrained" / name))
    chunks, frames, bands = layer_profile.track_batch_shape(info.log_mel, info.crop_frames)
    convolutions = _musicnn_convolution_flops(model, chunks, frames, bands)
    # The rest (batch norms, biases, pooling, the dense layers) adds under 1 %.
    assert convolutions <= layer_profile.track_flops(name) <= 1.01 * convolutions


def test_the_arithmetic_floor_is_the_operations_at_the_matmul_rate():
    floor = layer_profile.ArithmeticFloor({"ranking": 30 * 10**9, "tags": 6 * 10**9}, "bfloat16", 360.0)
    assert floor.flops == 36 * 10**9 and floor.seconds_per_track == pytest.approx(0.1)
    assert floor.share_needed(0.2) == pytest.approx(0.5)  # Twice the floor's time: half the rate will do.
    assert floor.share_needed(0.05) == pytest.approx(2.0)  # Half of it: twice the CPU's best rate.
    assert floor.share_needed(0.0) == float("inf")
    described = floor.describe()
    assert "36.0 GFLOP per 30 s track (ranking 30.0, tags 6.0" in described
    assert "bfloat16 matrix product" in described and "at least 100 ms" in described


def test_bfloat16_inference_forms_are_profiled_only_where_the_cpu_has_it():
    native = layer_profile.shipped_models(native_bfloat16=True)
    in_bfloat16 = [entry for entry in native if entry.precision == "bfloat16"]
    assert [entry.label for entry in in_bfloat16] == [
        entry.label + ", bfloat16" for entry in native if entry.label.endswith("inference form")
    ]
    for entry in in_bfloat16:
        weighted = [layer for layer in entry.model.layers if layer.weights and layer.name not in ("tags", "embedding")]
        assert weighted and all(layer.compute_dtype == "bfloat16" for layer in weighted)
    emulated = layer_profile.shipped_models(native_bfloat16=False)
    assert {entry.precision for entry in emulated} == {"float32"}
    assert [entry.label for entry in emulated] == [entry.label for entry in native if entry.precision == "float32"]


def test_the_inference_form_is_profiled_layer_by_layer_too():
    trained = models.get_model("musicnn", 3, frontend_filters=0.4)
    model = models.for_inference(trained, "musicnn")
    batch = np.abs(np.random.default_rng(0).normal(size=(1, 187, 96))).astype(np.float32)
    profile = layer_profile.profile_model("musicnn, inference form", model, batch, repeats=1)
    as_trained = layer_profile.profile_model("musicnn, as trained", trained, batch, repeats=1)
    fused = {cost.name: cost for cost in profile.layers if cost.kind == "FrequencyPooledConv"}
    assert len(fused) == 5 and all(cost.seconds > 0 for cost in fused.values())
    for cost in as_trained.layers:  # Each fused branch is credited with the convolution it replaces.
        if cost.name in fused:
            # Less the bias adds (one per output value, under 2 % for a 32-frame kernel).
            assert cost.flops * 0.98 < fused[cost.name].flops < cost.flops
    assert profile.xla_seconds > 0


def test_the_timbral_convolution_is_timed_in_every_regrouping_at_the_same_useful_work():
    rates = layer_profile.regrouped_timbral_rates("float32", repeats=1)
    assert list(rates) == list(layer_profile.TIMBRAL_REGROUPINGS) and all(rate > 0.1 for rate in rates.values())
    note = layer_profile.regrouping_note("float32", {"float32": max(rates.values())})
    assert "as shipped (one input channel)" in note and "2 frame(s) x 1 band(s) per channel" in note
    assert ("the one-channel convolution is the fastest" in note) != ("a formulation worth building" in note)
