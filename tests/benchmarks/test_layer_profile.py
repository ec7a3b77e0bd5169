"""benchmarks.layer_profile: the FLOP counts, the batch of one track and the rows, on real layers and models."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from benchmarks import layer_profile
from features.logmel_spec import PRESETS, LogMelSpec
from tfrecords import readers


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


def test_the_gemm_rate_is_a_rate():
    assert layer_profile.gemm_rate(size=256, repeats=2) > 0.1  # GFLOP/s: any CPU does more than this.


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
