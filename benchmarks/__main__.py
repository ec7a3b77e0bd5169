r"""Runs the benchmarks and rewrites their sections of BENCHMARKS.md.

Usage:

    python -m benchmarks [--only=preprocess,reader] [--output=BENCHMARKS.md]

`preprocess` is `benchmarks.preprocess_throughput` (audio-seconds per second
of the Beam pipeline against a librosa loop; about 3 minutes on 2 cores) and
`reader` is `benchmarks.reader_throughput` (chunks per second of
`tfrecords.readers.train_dataset` against the research system's `.npy`
loader; under 2 minutes); `preprocess_on_dask` is
`benchmarks.preprocess_on_dask` (the same job on Dask worker processes against
the DirectRunner, with the crossover; about 4 minutes); `model_inference` is
`benchmarks.model_inference` (Short-Chunk ResNet tracks per second on the CPU
against the PyTorch reference architecture; about 1 minute); `layer_profile` is
`benchmarks.layer_profile` (per model and layer, the FLOPs of one 30 s track,
the time and the achieved GFLOP/s against the CPU's float32 GEMM rate measured
in the same run; about 2 minutes); `index_search` is
`benchmarks.index_search` (ScaNN against NumPy brute force and faiss HNSW on
1M clustered 512-d vectors; about 5 minutes, 8 GB of memory); `index_sizing`
is `benchmarks.index_sizing` (the catalog index's memory, disk, build and
load time at 100k and 1M tracks of 512-d and 200-d embeddings, and the
sizing plan to 100M; about 20 minutes, 12 GB of memory);
`recommend_latency` is `benchmarks.recommend_latency` (end-to-end latency of
one 30 s MP3 query on a 10,000-track index, broken down; about 5 minutes);
`app_load` is `benchmarks.app_load` (the web service under 16 concurrent
clients for 30 s against a 1-client baseline; about 1.5 minutes; needs
`make demo` first); `retrieval_quality` is `benchmarks.retrieval_quality`
(same-album precision of every pretrained and demo-trained model on the
public real-music set against MFCC statistics; about 10 minutes);
`contrastive_finetuning` is `benchmarks.contrastive_finetuning` (same-album
P@5 on unseen albums of the public set before and after contrastive
fine-tuning of `msd_musicnn` without tags; about 25 minutes);
`distillation` is `benchmarks.distillation` (a Short-Chunk ResNet distilled
from `msd_musicnn` on the same split, against its teacher; about 25
minutes). Each
writes only its own section, so one can be
rerun alone. Their flags (`--workers`, `--copies`, `--measure_s`, ...) are
accepted here too; see each module's docstring.
"""

from __future__ import annotations

from tf_startup import run

from absl import flags

from benchmarks import (
    app_load,
    catalog_embedding,
    catalog_map,
    contrastive_finetuning,
    distillation,
    index_search,
    index_sizing,
    layer_profile,
    model_inference,
    preprocess_on_dask,
    preprocess_throughput,
    reader_throughput,
    recommend_latency,
    report,
    retrieval_quality,
)

BENCHMARKS = {
    "preprocess": preprocess_throughput.run_benchmark,
    "preprocess_on_dask": preprocess_on_dask.run_benchmark,
    "reader": reader_throughput.run_benchmark,
    "model_inference": model_inference.run_benchmark,
    "layer_profile": layer_profile.run_benchmark,
    "index_search": index_search.run_benchmark,
    "index_sizing": index_sizing.run_benchmark,
    "catalog_embedding": catalog_embedding.run_benchmark,
    "recommend_latency": recommend_latency.run_benchmark,
    "app_load": app_load.run_benchmark,
    "catalog_map": catalog_map.run_benchmark,
    "retrieval_quality": retrieval_quality.run_benchmark,
    "contrastive_finetuning": contrastive_finetuning.run_benchmark,
    "distillation": distillation.run_benchmark,
}

_ONLY = flags.DEFINE_list("only", list(BENCHMARKS), f"The benchmarks to run, comma-separated: {list(BENCHMARKS)}.")
flags.register_validator(
    "only", lambda names: bool(names) and set(names) <= set(BENCHMARKS), f"--only takes names from {list(BENCHMARKS)}"
)


def main(argv):
    del argv
    command = report.invocation("benchmarks")
    for name in (name for name in BENCHMARKS if name in _ONLY.value):
        section = BENCHMARKS[name](command)
        print(report.update_section(section), flush=True)
        print(flush=True)


if __name__ == "__main__":
    run(main)
