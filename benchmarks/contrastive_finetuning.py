r"""Contrastive fine-tuning on a catalog without tags: same-album retrieval on unseen albums, before and after.

Usage (after `make install`; needs `../shared/data/music/`):

    python -m benchmarks --only=contrastive_finetuning [--contrastive_epochs=8] \
        [--contrastive_gin_param='contrastive/Phase.learning_rate=3e-5']

The public set split by album (`benchmarks.album_split`: 10 training albums,
5 unseen albums, fixed) is preprocessed with musicnn's front end from a
catalog without tags. The pretrained start (`pretrained/msd_musicnn`) is the
baseline, measured in the same run: same-album P@5 of its chunk-averaged
embedding on the unseen albums and on the training albums. Then `python -m
train`'s library runs `configs/contrastive_msd_musicnn.gin` on the training
albums (best weights by the validation split's contrastive loss) and the
same P@5 is measured with the fine-tuned model. Target (issue 16): >= 1.10x
the start's P@5 on the unseen albums, no loss on the training albums.
About 10 minutes per epoch-budget of 8 on 2 cores.
"""

from __future__ import annotations

import os
import tempfile

from absl import flags

from benchmarks import album_split, report
from features.logmel import PRESETS
from models import artifact

_EPOCHS = flags.DEFINE_integer("contrastive_epochs", 8, "Epochs of contrastive fine-tuning in the benchmark.")
_GIN_PARAMS = flags.DEFINE_multi_string(
    "contrastive_gin_param", [], "Extra gin bindings for the contrastive_finetuning benchmark's training run."
)

CONFIG = "contrastive_msd_musicnn.gin"
START = report.REPO_ROOT / "pretrained" / "msd_musicnn"
TARGET_RATIO = 1.10


def run_benchmark(command: str) -> report.Section:
    load_at_start = report.load_average()
    if not album_split.PUBLIC_SET.exists():
        raise FileNotFoundError(f"the contrastive_finetuning benchmark needs {album_split.PUBLIC_SET}")
    with tempfile.TemporaryDirectory() as work:
        catalog_path = os.path.join(work, "album_split.csv")
        albums = album_split.write_catalog(catalog_path)
        dataset_dir = os.path.join(work, "musicnn")
        info = album_split.preprocess(catalog_path, dataset_dir, PRESETS["musicnn"])
        start_model, start_info = artifact.load(str(START))
        baseline = album_split.precision_at_k(start_model, dataset_dir, start_info.crop_frames, albums)
        bindings = [
            f"Experiment.dataset_dir = '{dataset_dir}'",
            f"Experiment.init_from = '{START}'",
            f"Experiment.epochs = {_EPOCHS.value}",
            *_GIN_PARAMS.value,
        ]
        run = album_split.train_and_score(CONFIG, bindings, os.path.join(work, "run"), dataset_dir, albums)
        tuned = run.scores
    ratio = tuned["unseen"] / baseline["unseen"]
    kept = tuned["training"] >= baseline["training"]
    table = report.markdown_table(
        ["model", "unseen albums P@5", "vs start", "training albums P@5", "vs start", "training"],
        [
            album_split.table_row("`msd_musicnn` (pretrained start, **baseline**)", baseline, baseline),
            album_split.table_row(
                "after contrastive fine-tuning",
                tuned,
                baseline,
                run.describe(),
            ),
        ],
    )
    split = info.splits
    notes = [
        f"Data: the public set split by album (`benchmarks/album_split.py`): unseen albums "
        f"{', '.join(album_split.UNSEEN_ALBUMS)} ({split['test'].examples} tracks, never trained on); 10 training "
        f"albums ({split['train'].examples} train + {split['valid'].examples} valid tracks). The catalog has no "
        "tags; the dataset is preprocessed with musicnn's front end (`--log_mel_preset=musicnn --norequire_tags`). "
        "Each track queries the others of its group; relevant = same album; embeddings chunk-averaged over up to 16 "
        "evenly spaced 3 s chunks, cosine.",
        album_split.rejections_note(info) + ".",
        f"Training: `configs/{CONFIG}` from `pretrained/msd_musicnn`, bindings {bindings[2:]} (NT-Xent, temperature "
        f"{run.experiment.objective.temperature}, learning rate {run.experiment.phases[0].learning_rate}, batch "
        f"{run.experiment.batch_size} tracks = {2 * run.experiment.batch_size} views, gain/tempo/"
        "band-shift/mask augmentations, best weights by the valid split's contrastive loss).",
        f"Baseline: the pretrained start, measured in the same run. Target: >= {TARGET_RATIO:.2f}x its P@5 on the "
        f"unseen albums with no loss on the training albums: {ratio:.2f}x, training albums "
        f"{'kept' if kept else 'lost'}: **{'met' if ratio >= TARGET_RATIO and kept else 'not met'}**.",
        report.load_note(load_at_start),
    ]
    return report.Section(
        "contrastive_finetuning",
        "Contrastive fine-tuning without tags (same-album P@5, album split)",
        command,
        table,
        notes,
    )
