"""CPU inference throughput of the Short-Chunk ResNet against the PyTorch reference.

One track's evaluation is a batch of 16 chunks of 128 mel bands x 231 frames
(Won et al.); throughput is tracks (batches) per second. The baseline is the
reference architecture in PyTorch (`tests/models/torch_reference.py`, the same
layer plan and weights converted through `models.convert_torch_lib`) on the
same CPU in the same run, in eval mode under `torch.inference_mode()`.

Usage:

    python -m benchmarks --only=model_inference
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import time

import numpy as np
import tensorflow as tf

import models
from benchmarks import report
from models import convert_torch_lib

SECTION = "model_inference"
CHUNKS_PER_TRACK = 16
MEASURE_SECONDS = 8.0


def _throughput(step, measure_seconds: float = MEASURE_SECONDS, warmup: int = 3) -> float:
    """Calls `step` repeatedly and returns calls per second."""
    for _ in range(warmup):
        step()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < measure_seconds:
        step()
        calls += 1
    return calls / (time.perf_counter() - start)


def _torch_reference():
    import torch

    from tests.models import torch_reference

    module = torch_reference.randomize(torch_reference.build("short_chunk_res"), seed=0)
    return torch, module


def _measure_torch(log_mel: np.ndarray, threads: int) -> tuple[float, str]:
    """PyTorch throughput, in a process of its own (no TensorFlow thread pools)."""
    torch, reference = _torch_reference()
    torch.set_num_threads(threads)
    batch = torch.from_numpy(log_mel).permute(0, 2, 1).contiguous()

    def step():
        with torch.inference_mode():
            reference(batch)

    return _throughput(step), torch.__version__


def run_benchmark(command: str) -> report.Section:
    """Runs the benchmark and returns its section of BENCHMARKS.md."""
    load_at_start = report.load_average()
    threads = report.num_cpus()
    log_mel = np.random.default_rng(0).normal(-30.0, 20.0, size=(CHUNKS_PER_TRACK, 231, 128)).astype(np.float32)
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        baseline, torch_version = pool.submit(_measure_torch, log_mel, threads).result()
    _, reference = _torch_reference()  # The same seed: the same weights as measured.
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    keras_model = convert_torch_lib.convert(state, "short_chunk_res")
    batch = tf.constant(log_mel)
    graph_call = tf.function(lambda x: keras_model(x, training=False)[models.EMBEDDING], jit_compile=False)
    xla_call = tf.function(lambda x: keras_model(x, training=False)[models.EMBEDDING], jit_compile=True)
    rows = [
        ("PyTorch reference, eager, `inference_mode` (baseline)", baseline),
        ("Keras, `tf.function`", _throughput(lambda: graph_call(batch).numpy())),
        ("Keras, `tf.function(jit_compile=True)` (XLA)", _throughput(lambda: xla_call(batch).numpy())),
        ("Keras, `model.predict_on_batch`", _throughput(lambda: keras_model.predict_on_batch(log_mel))),
    ]
    best = max(value for _, value in rows[1:])
    table = report.markdown_table(
        ["implementation", "tracks/s (16 chunks each)", "ratio vs PyTorch"],
        [(name, f"{value:.2f}", f"{value / baseline:.2f}x") for name, value in rows],
    )
    notes = [
        f"Baseline: the reference architecture in PyTorch {torch_version} ({threads} threads), measured in the "
        "same run, in a process of its own with identical weights (converted by `models.convert_torch_lib`). One track = 16 chunks of "
        "128 mel bands x 231 frames, the Won et al. evaluation batch.",
        f"Target: >= 1.0x the PyTorch reference. Best Keras path: {best / baseline:.2f}x -> "
        f"**{'met' if best >= baseline else 'not met'}**.",
        report.load_note(load_at_start),
    ]
    return report.Section(
        name=SECTION, title="CPU inference: Short-Chunk ResNet vs PyTorch", command=command, table=table, notes=notes
    )
