r"""Evaluates a trained model at track level, optionally under audio transforms.

Usage:

    python -m train.evaluate --model_dir=/tmp/demo_short_chunk_res --split=test
    python -m train.evaluate --model_dir=/tmp/demo_short_chunk_res --split=test --robustness

Writes `evaluation/{split}_metrics.json`, `{split}_per_tag.csv` and
`{split}_per_tag_auc.png` (and `{split}_robustness.csv/.png`) under the model
dir, and prints the macro ROC-AUC and PR-AUC.
"""

from __future__ import annotations

from tf_startup import load_tensorflow, run

import os
import sys

from absl import flags

from tfrecords.splits import SPLITS

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A directory written by `python -m train`.", required=True)
_SPLIT = flags.DEFINE_enum("split", "test", SPLITS, "The split to evaluate.")
_DATASET_DIR = flags.DEFINE_string("dataset_dir", None, "Overrides the dataset the run was trained on.")
_NUM_CHUNKS = flags.DEFINE_integer(
    "num_chunks", 16, "The most evenly spaced chunks per track (fewer for short tracks)."
)
_ROBUSTNESS = flags.DEFINE_boolean("robustness", False, "Also evaluate under pitch shift and time stretch.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where reports go; default MODEL_DIR/evaluation.")


def main(argv):
    del argv
    load_tensorflow()
    from train import evaluation_report

    try:
        run = evaluation_report.load_run(_MODEL_DIR.value, _DATASET_DIR.value)
    except (evaluation_report.NotATaggingRunError, evaluation_report.NotARunError) as error:
        sys.exit(f"error: {error}")
    output_dir = _OUTPUT_DIR.value or os.path.join(_MODEL_DIR.value, evaluation_report.EVALUATION_DIRNAME)
    summary = evaluation_report.evaluate(run, _SPLIT.value, output_dir, _NUM_CHUNKS.value)
    print(
        f"{run.experiment.model_name} on {summary['split']} ({summary['tracks']} tracks, up to "
        f"{summary['max_chunks_per_track']} chunks each): ROC-AUC {summary['roc_auc_macro']:.4f}, PR-AUC {summary['pr_auc_macro']:.4f}, "
        f"loss {summary['loss']:.4f}"
    )
    if summary["tags_left_out"]:
        print(
            f"tags without positives or negatives in {summary['split']} (left out of the macro averages): "
            f"{summary['tags_left_out']}"
        )
    if _ROBUSTNESS.value:
        for row in evaluation_report.robustness(run, _SPLIT.value, output_dir, _NUM_CHUNKS.value):
            print(
                f"{row['transform']:>12} {row['amount']:+5.2f}: ROC-AUC {row['roc_auc_macro']:.4f}, "
                f"PR-AUC {row['pr_auc_macro']:.4f}"
            )
    print(f"reports: {output_dir}")


if __name__ == "__main__":
    run(main)
