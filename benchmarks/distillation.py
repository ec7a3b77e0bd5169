r"""A Short-Chunk ResNet distilled from a pretrained teacher without tags: retrieval against its teacher.

Usage (after `make install`; needs `../shared/data/music/`):

    python -m benchmarks --only=distillation [--distillation_epochs=12]

The public set split by album (`benchmarks.album_split`) is preprocessed
twice from a catalog without tags (the reference front end for the student,
musicnn's for the teacher); `train.compute_teacher_targets_lib` (the Beam job) runs the
teacher `pretrained/msd_musicnn` once over every crop position; then `python
-m train`'s library runs `configs/distill_short_chunk_res.gin` from scratch
on the 10 training albums for `--distillation_epochs` epochs (on two CPU
cores that is the longest run that fits a benchmark; the full recipe runs
200 epochs with early stopping). Reported: same-album P@5 of the student's
embedding on the unseen and the training albums, against its teacher
(**baseline**, measured in the same run) and MFCC statistics, with steps,
wall time and the teacher job's time.
"""

from __future__ import annotations

import os
import tempfile
import time

from absl import flags

from benchmarks import album_split, report
from features.logmel import PRESETS, LogMelSpec
from intake import catalog as catalog_lib
from models import artifact
from serving.retrieval import evaluation, mfcc_baseline
from train import compute_teacher_targets_lib

_EPOCHS = flags.DEFINE_integer("distillation_epochs", 12, "Epochs of the distillation benchmark's student run.")

CONFIG = "distill_short_chunk_res.gin"
TEACHER = report.REPO_ROOT / "pretrained" / "msd_musicnn"


def _mfcc_scores(catalog_path: str, albums: dict[str, str], written: set[str]) -> dict[str, float]:
    """MFCC statistics' P@5 over the same tracks as the models (those the preprocessing wrote)."""
    ids, vectors, _ = mfcc_baseline.catalog_statistics(catalog_lib.read_catalog(catalog_path))
    groups = {"unseen": set(), "training": set()}
    for track_id in (t for t in ids if t in written):
        groups["unseen" if albums[track_id] in album_split.UNSEEN_ALBUMS else "training"].add(track_id)
    scores = {}
    for group, members in groups.items():
        rows = [i for i, track_id in enumerate(ids) if track_id in members]
        truth = {ids[i]: {albums[ids[i]]} for i in rows}
        scores[group] = evaluation.evaluate_embeddings(group, [ids[i] for i in rows], vectors[rows], truth, 5).precision
    return scores


def run_benchmark(command: str) -> report.Section:
    load_at_start = report.load_average()
    if not album_split.PUBLIC_SET.exists():
        raise FileNotFoundError(f"the distillation benchmark needs {album_split.PUBLIC_SET}")
    with tempfile.TemporaryDirectory() as work:
        catalog_path = os.path.join(work, "album_split.csv")
        albums = album_split.write_catalog(catalog_path)
        student_data, teacher_data = os.path.join(work, "student"), os.path.join(work, "teacher")
        info = album_split.preprocess(catalog_path, student_data, LogMelSpec())
        album_split.preprocess(catalog_path, teacher_data, PRESETS["musicnn"])
        teacher_model, teacher_info = artifact.load(str(TEACHER))
        teacher = album_split.precision_at_k(teacher_model, teacher_data, teacher_info.crop_frames, albums)
        written = album_split.written_tracks(student_data)
        mfcc = _mfcc_scores(catalog_path, albums, written)
        distill_data = os.path.join(work, "distill")
        started = time.perf_counter()
        job = compute_teacher_targets_lib.TeacherJob(student_data, teacher_data, str(TEACHER), distill_data)
        compute_teacher_targets_lib.compute(job)
        targets_s = time.perf_counter() - started
        bindings = [f"Experiment.dataset_dir = '{distill_data}'", f"Experiment.epochs = {_EPOCHS.value}"]
        run = album_split.train_and_score(CONFIG, bindings, os.path.join(work, "run"), student_data, albums)
        student = run.scores
    table = report.markdown_table(
        ["model", "unseen albums P@5", "vs teacher", "training albums P@5", "vs teacher", "training"],
        [
            album_split.table_row("teacher `msd_musicnn` (**baseline**)", teacher, teacher),
            album_split.table_row(
                "student `short_chunk_res`, distilled from scratch",
                student,
                teacher,
                run.describe(),
            ),
            album_split.table_row("MFCC-20 + delta mean/std", mfcc, teacher),
        ],
    )
    steps_per_second = run.result.global_step / run.seconds
    notes = [
        f"Data: the album split of the public set (`benchmarks/album_split.py`; unseen albums "
        f"{', '.join(album_split.UNSEEN_ALBUMS)}: {info.splits['test'].examples} tracks; training albums: "
        f"{info.splits['train'].examples} train + {info.splits['valid'].examples} valid tracks), no tags. The teacher "
        f"targets (`python -m train.compute_teacher_targets`: msd_musicnn's 50 tag probabilities and 200-d embedding "
        f"every 64 frames, {info.num_written} tracks) took {targets_s:.0f} s.",
        album_split.rejections_note(info) + ".",
        f"Student: `configs/{CONFIG}` (BCE against the teacher's tags + 1 - cosine to its embedding through a linear "
        f"map, Adam 1e-3, batch {run.experiment.batch_size} tracks x 2 crops), from random weights, "
        f"{_EPOCHS.value} epochs ({steps_per_second:.2f} steps/s on this CPU). The student's embedding is its own "
        "512-d layer (the linear map to the teacher's space is dropped at export).",
        "Baseline: the teacher, measured in the same run on the same tracks (its own front end). The full recipe "
        "(200 epochs, early stopping) on a few thousand untagged tracks is a GPU job: see docs/training.md, 'What was measured'.",
        report.load_note(load_at_start),
    ]
    return report.Section(
        "distillation",
        "Short-Chunk ResNet distilled from msd_musicnn (same-album P@5, album split)",
        command,
        table,
        notes,
    )
