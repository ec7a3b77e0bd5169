"""The teacher-targets Beam job on real demo audio: every track, the teacher's real outputs, refusals."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import models
from models import artifact
from tests.conftest import REPO_ROOT
from tfrecords import dataset_info, schema
from train import compute_teacher_targets_lib

TEACHER = str(REPO_ROOT / "pretrained" / "msd_musicnn")


def _examples(dataset_dir, info, teacher=False):
    examples = {}
    for split in info.splits:
        for path in dataset_info.shard_paths(dataset_dir, info, split):
            for record in tf.data.TFRecordDataset(path, compression_type=info.compression):
                parsed = schema.parse_example(
                    record,
                    info.vocabulary,
                    info.log_mel.n_mels,
                    info.log_mel_dtype,
                    teacher_sizes=info.teacher.sizes if teacher else None,
                )
                examples[parsed[schema.TRACK_ID].numpy().decode()] = parsed
    return examples


def test_every_track_gets_the_teachers_outputs_at_every_position(untagged_demo, distillation_demo):
    student_info = dataset_info.load(untagged_demo["128"])
    info = dataset_info.load(distillation_demo)
    teacher_model, teacher_info = artifact.load(TEACHER)
    assert info.teacher.vocabulary == list(teacher_info.vocabulary) and info.teacher.embedding_dim == 200
    assert info.teacher.model_name == "musicnn" and info.teacher.crop_frames == 231 and info.teacher.hop_frames == 64
    assert info.teacher.provenance["source_sha256"]  # The published checkpoint it came from.
    assert {s: i.shards for s, i in info.splits.items()} == {s: i.shards for s, i in student_info.splits.items()}
    assert os.path.exists(os.path.join(distillation_demo, "rejected.csv"))

    students = _examples(untagged_demo["128"], student_info)
    taught = _examples(distillation_demo, info, teacher=True)
    teachers = _examples(untagged_demo["musicnn"], dataset_info.load(untagged_demo["musicnn"]))
    assert sorted(taught) == sorted(students) and len(taught) == 16
    for track_id, example in taught.items():
        np.testing.assert_array_equal(example[schema.LOG_MEL], students[track_id][schema.LOG_MEL])
        frames = int(example[schema.LOG_MEL].shape[0])
        starts = example[schema.TEACHER_STARTS].numpy()
        np.testing.assert_array_equal(starts, np.arange(0, frames - 231 + 1, 64))
        assert example[schema.TEACHER_TAGS].shape == (len(starts), 50)
    # One track, recomputed by hand: the teacher's window is centred on the student's crop.
    track_id = sorted(taught)[3]
    example, teacher_log_mel = taught[track_id], teachers[track_id][schema.LOG_MEL].numpy()
    position = 2
    start = int(example[schema.TEACHER_STARTS][position]) + (231 - 187) // 2
    outputs = teacher_model(teacher_log_mel[np.newaxis, start : start + 187], training=False)
    np.testing.assert_allclose(example[schema.TEACHER_TAGS][position], outputs[models.TAGS][0], atol=1e-5)
    expected = tf.math.l2_normalize(outputs[models.EMBEDDING][0], axis=-1)
    np.testing.assert_allclose(example[schema.TEACHER_EMBEDDING][position], expected, atol=1e-5)


def test_positions_and_windows_at_the_edges():
    np.testing.assert_array_equal(compute_teacher_targets_lib.crop_starts(300, 231, 64), [0, 64])
    np.testing.assert_array_equal(
        compute_teacher_targets_lib.crop_starts(100, 231, 64), [0]
    )  # Shorter than a crop: once.
    log_mel = np.repeat(np.arange(100, dtype=np.float32)[:, None], 2, axis=1)
    windows = compute_teacher_targets_lib.teacher_windows(log_mel, np.array([0, 60]), crop_frames=40, teacher_frames=30)
    np.testing.assert_array_equal(windows[:, 0, 0], [5, 65])  # Centred: (40 - 30) // 2 frames in.
    clipped = compute_teacher_targets_lib.teacher_windows(log_mel, np.array([0]), crop_frames=20, teacher_frames=60)
    np.testing.assert_array_equal(clipped[0, :, 0], np.arange(60))  # A longer teacher input stays in the track.
    short = compute_teacher_targets_lib.teacher_windows(log_mel[:25], np.array([0]), crop_frames=20, teacher_frames=60)
    np.testing.assert_array_equal(short[0, :, 0], np.tile(np.arange(25), 3)[:60])


def test_datasets_that_do_not_match_are_refused(untagged_demo, tmp_path):
    with pytest.raises(compute_teacher_targets_lib.TeacherTargetsError, match="teacher's front end"):
        compute_teacher_targets_lib.compute(
            compute_teacher_targets_lib.TeacherJob(
                untagged_demo["128"], untagged_demo["128"], TEACHER, str(tmp_path / "a")
            )
        )
    other = tmp_path / "other"
    shutil.copytree(untagged_demo["musicnn"], other)
    info = dataset_info.load(str(other))
    info.catalog["sha256"] = "0" * 64
    (other / "dataset_info.json").write_text(info.to_json())
    with pytest.raises(compute_teacher_targets_lib.TeacherTargetsError, match="same catalog"):
        compute_teacher_targets_lib.compute(
            compute_teacher_targets_lib.TeacherJob(untagged_demo["128"], str(other), TEACHER, str(tmp_path / "b"))
        )
    assert not (tmp_path / "b" / "dataset_info.json").exists()


def test_a_failure_in_a_worker_publishes_nothing_and_leaves_the_earlier_output(
    untagged_demo, distillation_demo, tmp_path
):
    """Two records of one teacher shard swapped: a worker meets the mismatch mid-job."""
    output = tmp_path / "out"
    shutil.copytree(distillation_demo, output)
    before = {path.name: path.read_bytes() for path in output.iterdir() if path.is_file()}
    swapped = tmp_path / "swapped"
    shutil.copytree(untagged_demo["musicnn"], swapped)
    info = dataset_info.load(str(swapped))
    paths = [path for split in info.splits for path in dataset_info.shard_paths(str(swapped), info, split)]
    records = {path: list(tf.data.TFRecordDataset(path, compression_type=info.compression)) for path in paths}
    path = next(path for path in paths if len(records[path]) >= 2)
    with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression_type=info.compression)) as writer:
        for record in reversed(records[path]):
            writer.write(record.numpy())
    with pytest.raises(Exception, match="not the same catalog"):
        compute_teacher_targets_lib.compute(
            compute_teacher_targets_lib.TeacherJob(untagged_demo["128"], str(swapped), TEACHER, str(output))
        )
    assert {path.name: path.read_bytes() for path in output.iterdir() if path.is_file()} == before


def test_the_binary_names_a_bad_teacher_without_a_traceback(untagged_demo, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "train.compute_teacher_targets",
            f"--dataset_dir={untagged_demo['128']}",
            f"--teacher_dataset_dir={untagged_demo['musicnn']}",
            f"--teacher={tmp_path / 'missing'}",
            f"--output_dir={tmp_path / 'out'}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "error: --teacher:" in result.stderr and "missing" in result.stderr
    assert "Traceback" not in result.stderr
