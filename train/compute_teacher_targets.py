r"""Precomputes a teacher's outputs for distillation (a Beam job; the teacher runs once per crop position).

Usage (the demo catalog without tags, taught by musicnn trained on the
Million Song Dataset; `make install` first):

    python -m data_prep --catalog=demo/catalog.csv --output_dir=/tmp/demo_128 \
        --split_by=track --norequire_tags
    python -m data_prep --catalog=demo/catalog.csv --output_dir=/tmp/demo_musicnn \
        --split_by=track --norequire_tags --log_mel_preset=musicnn
    python -m train.compute_teacher_targets --dataset_dir=/tmp/demo_128 \
        --teacher_dataset_dir=/tmp/demo_musicnn --teacher=pretrained/msd_musicnn \
        --output_dir=/tmp/demo_distill
    python -m train --config=distill_short_chunk_res.gin --dataset_dir=/tmp/demo_distill \
        --model_dir=/tmp/distilled_res

`--dataset_dir` is the student's dataset, `--teacher_dataset_dir` the same
catalog preprocessed with the teacher's front end (default: the same
dataset). The output is the student's dataset with the teacher's tag
probabilities and embedding at every crop position (`--crop_frames`, the
student's crop, every `--hop_frames`). Beam flags (`--runner=dask`, ...)
pass through, as for `python -m data_prep`.
"""

from __future__ import annotations

from tf_startup import load_tensorflow, run

import sys

from absl import flags, logging

from data_prep import runner_flags

_DATASET_DIR = flags.DEFINE_string("dataset_dir", None, "The student's dataset (python -m data_prep).", required=True)
_TEACHER_DATASET_DIR = flags.DEFINE_string(
    "teacher_dataset_dir", None, "The same catalog with the teacher's front end (default: --dataset_dir)."
)
_TEACHER = flags.DEFINE_string("teacher", "pretrained/msd_musicnn", "The teacher's model artifact.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where the distillation dataset is written.", required=True)
_CROP_FRAMES = flags.DEFINE_integer("crop_frames", 231, "The student's crop length in frames (Experiment.crop_frames).")
_HOP_FRAMES = flags.DEFINE_integer("hop_frames", 64, "Frames between consecutive crop positions (64 = 1.02 s).")


def main(argv):
    load_tensorflow()
    from data_prep import beam_jobs
    from tfrecords.dataset_info import IncompleteDatasetError
    from train import compute_teacher_targets_lib

    try:
        info = _run(argv[1:])
    except (
        compute_teacher_targets_lib.TeacherTargetsError,
        IncompleteDatasetError,
        beam_jobs.RunnerUnavailableError,
    ) as error:
        sys.exit(f"error: {error}")  # The user's input: the message alone, no traceback.
    except beam_jobs.JobFailedError as error:
        sys.exit(
            f"error: {error}\nnothing was published (the output folder is as it was); run the same command again to redo it"
        )
    teacher = info.teacher
    splits = ", ".join(f"{name} {split.examples}" for name, split in info.splits.items())
    print(
        f"teacher targets: {info.num_written} tracks ({splits}) from {teacher.model} ({teacher.model_name}: "
        f"{len(teacher.vocabulary)} tags, {teacher.embedding_dim}-d embedding), a position every "
        f"{teacher.hop_frames} frames for {teacher.crop_frames}-frame crops\ndataset: {_OUTPUT_DIR.value}"
    )


def _run(pipeline_args: list[str]):
    from data_prep import beam_jobs
    from train import compute_teacher_targets_lib

    logging.get_absl_handler()  # Make sure absl's handler is installed first.
    beam_jobs.quiet_runner_logs()
    job = compute_teacher_targets_lib.TeacherJob(
        dataset_dir=_DATASET_DIR.value,
        teacher_dataset_dir=_TEACHER_DATASET_DIR.value or _DATASET_DIR.value,
        teacher=_TEACHER.value,
        output_dir=_OUTPUT_DIR.value,
        crop_frames=_CROP_FRAMES.value,
        hop_frames=_HOP_FRAMES.value,
    )
    return compute_teacher_targets_lib.compute(job, pipeline_args)


if __name__ == "__main__":
    run(main, flags_parser=runner_flags.parse)
