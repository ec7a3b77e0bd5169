r"""Exports a trained model as a TF Serving SavedModel.

Usage:

    python -m serving.export --model_dir=demo_output/short_chunk_res \
        --export_dir=demo_output/export/short_chunk_res

writes `demo_output/export/short_chunk_res/<version>/` (the next free
version number unless --version is given), ready for
`tensorflow_model_server --model_base_path=.../short_chunk_res`. Inspect it
with `saved_model_cli show --dir=.../1 --all`. `--model_dir` takes any model
artifact, e.g. a converted pretrained model:

    python -m serving.export --model_dir=pretrained/msd_musicnn --export_dir=/tmp/export/msd_musicnn
"""

from __future__ import annotations

from tf_startup import load_tensorflow, run

import sys

from absl import flags

from intake import catalog
from serving.export import graph_options, signatures

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A directory written by `python -m train`.", required=True)
_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "The model's folder in the serving base path.", required=True)
_VERSION = flags.DEFINE_integer(
    "version", None, "Version number (TF Serving's folder name: 0 or more); default: the next free one.", lower_bound=0
)
_NUM_CHUNKS = flags.DEFINE_integer(
    "num_chunks", signatures.DEFAULT_NUM_CHUNKS, "The most evenly spaced chunks per track (fewer for short tracks)."
)
_GRAPH = flags.DEFINE_enum(
    "graph",
    graph_options.GRAPH_INFERENCE,
    graph_options.GRAPHS,
    "How the graph computes the model: 'inference' (batch norms folded, musicnn's front end fused: the same outputs, "
    "about twice as fast on a CPU) or 'as_trained' (the layers as trained: the baseline).",
)
_PRECISION = flags.DEFINE_enum(
    "precision",
    graph_options.AUTO,
    graph_options.PRECISIONS,
    "The inference graph's arithmetic: 'float32', 'bfloat16' (fast only on CPUs with AVX-512 BF16 or AMX; outputs "
    "differ in the third digit) or 'auto' (bfloat16 where the CPU has it natively and BENCHMARKS.md's retrieval "
    "check holds for it, else float32).",
)


def main(argv):
    del argv
    if catalog.is_local_file(_EXPORT_DIR.value):
        sys.exit(f"error: --export_dir={_EXPORT_DIR.value} is a file; give the model's folder in the serving base path")
    load_tensorflow()
    import tensorflow as tf

    from serving.export import saved_model

    try:
        path = saved_model.export(
            _MODEL_DIR.value, _EXPORT_DIR.value, _VERSION.value, _NUM_CHUNKS.value, _GRAPH.value, _PRECISION.value
        )
    except saved_model.ExportError as error:
        sys.exit(f"error: {error}")
    except (OSError, tf.errors.OpError) as error:  # A folder it may not write in, a full disk.
        sys.exit(f"error: --export_dir={_EXPORT_DIR.value}: cannot write the export ({error})")
    print(f"exported {_MODEL_DIR.value} -> {path}")


if __name__ == "__main__":
    run(main)
