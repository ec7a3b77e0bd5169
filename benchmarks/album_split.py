"""The album split of the public real-music set, for measuring what training on a catalog generalises to.

The public set (`../shared/data/music/`: 199 30 s game-soundtrack excerpts
of 15 albums) is split by album, once and for all:

* 5 **unseen** albums, never trained on (the `test` split): Ardentryst,
  Neverball, Pekka Kana 2, Pingus, Starfighter (66 tracks), chosen as the
  mid-sized albums of different styles;
* the 10 **training** albums (133 tracks): every seventh track of each
  album, in track-id order, is `valid` (early stopping, best weights), the
  rest `train`.

The derived catalog has no `tags` column: training on it needs audio only.
Retrieval is scored per group of albums: each track queries the other
tracks of its group (unseen: the 66 unseen tracks; training: the 133
training-album tracks), and a result is relevant when it comes from the
same album (same-album P@5, as in `retrieval_quality`).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import time

import numpy as np
import tensorflow as tf

from benchmarks import report
from data_prep import pipeline
from intake import catalog as catalog_lib
from models import artifact
from serving.retrieval import evaluation
from tfrecords import dataset_info, schema
from train import config as config_lib
from train.evaluate_lib import predict_tracks
from train.experiment import Experiment
from train.trainer import Trainer

PUBLIC_SET = report.REPO_ROOT.parent / "shared" / "data" / "music" / "catalog.csv"
UNSEEN_ALBUMS = ("Ardentryst", "Neverball", "Pekka Kana 2", "Pingus", "Starfighter")
VALID_EVERY = 7
K = 5


def split_of(album: str, position_in_album: int) -> str:
    """`test` for an unseen album; else every seventh track of the album is `valid`, the rest `train`."""
    if album in UNSEEN_ALBUMS:
        return "test"
    return "valid" if position_in_album % VALID_EVERY == VALID_EVERY // 2 else "train"


def write_catalog(output_path: str, source: str | os.PathLike = PUBLIC_SET) -> dict[str, str]:
    """Writes the untagged, album-split catalog; returns each track's album."""
    entries = catalog_lib.read_catalog(str(source)).entries
    by_album: dict[str, list] = {}
    for entry in sorted(entries, key=lambda e: e.track_id):
        by_album.setdefault(entry.album, []).append(entry)
    albums = {}
    with open(output_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["track_id", "path", "artist", "album", "title", "split"])
        for album, tracks in sorted(by_album.items()):
            for position, entry in enumerate(tracks):
                writer.writerow(
                    [entry.track_id, entry.uri, entry.artist, album, entry.title, split_of(album, position)]
                )
                albums[entry.track_id] = album
    return albums


def preprocess(catalog_path: str, output_dir: str, log_mel) -> dataset_info.DatasetInfo:
    """The catalog as a dataset with the given front end (splits as written, no tags required)."""
    config = pipeline.PreprocessConfig(output_dir=output_dir, split_by="given", require_tags=False, log_mel=log_mel)
    summary = pipeline.run(catalog_lib.read_catalog(catalog_path), config, [])
    return summary.info


def written_tracks(dataset_dir: str) -> set[str]:
    """The ids of the tracks a dataset holds (the catalog minus its rejected rows)."""
    info = dataset_info.load(dataset_dir)
    ids = set()
    for split in info.splits:
        for path in dataset_info.shard_paths(dataset_dir, info, split):
            for record in tf.data.TFRecordDataset(path, compression_type=info.compression):
                ids.add(schema.decode_example(record.numpy(), info.log_mel_dtype)[schema.TRACK_ID])
    return ids


def rejections_note(info: dataset_info.DatasetInfo) -> str:
    """`N catalog rows rejected by the preprocessing (reason: count, ...)`."""
    reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(info.rejected["by_reason"].items()))
    return f"{info.rejected['count']} catalog rows rejected by the preprocessing ({reasons or 'none'})"


def track_embeddings(model, dataset_dir: str, crop_frames: int, splits) -> tuple[list[str], np.ndarray]:
    """Per-track embeddings (chunk-averaged, as the export computes them) of the given splits."""
    ids, vectors = [], []
    for split in splits:
        predictions = predict_tracks(model, dataset_dir, split, crop_frames)
        ids += predictions.track_ids
        vectors.append(predictions.embeddings)
    return ids, np.concatenate(vectors)


def precision_at_k(model, dataset_dir: str, crop_frames: int, albums: dict[str, str]) -> dict[str, float]:
    """Same-album P@5 on the unseen albums and on the training albums."""
    scores = {}
    for group, splits in (("unseen", ("test",)), ("training", ("train", "valid"))):
        ids, vectors = track_embeddings(model, dataset_dir, crop_frames, splits)
        truth = {track_id: {albums[track_id]} for track_id in ids}
        scores[group] = evaluation.evaluate_embeddings(group, ids, vectors, truth, K).precision
    return scores


def table_row(label: str, scores: dict[str, float], baseline: dict[str, float], extra: str = "") -> list[str]:
    """A report row: P@5 on the unseen and the training albums, each with its ratio to the baseline's."""
    return [
        label,
        f"{scores['unseen']:.3f}",
        f"{scores['unseen'] / baseline['unseen']:.2f}x",
        f"{scores['training']:.3f}",
        f"{scores['training'] / baseline['training']:.2f}x",
        extra,
    ]


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A benchmark's training run: what it reached, how long it took, and its retrieval scores."""

    experiment: object
    result: object
    seconds: float
    scores: dict[str, float]

    def describe(self) -> str:
        return (
            f"{self.result.global_step} steps, {self.result.epochs_completed} epochs, {self.seconds:.0f} s; best "
            f"epoch {self.result.best_epoch}"
        )


def train_and_score(config: str, bindings: list[str], model_dir: str, dataset_dir: str, albums) -> TrainedRun:
    """Trains `config` with `bindings` (`python -m train`'s library), then scores the best model on `dataset_dir`."""
    config_lib.check_or_save(model_dir, config_lib.parse([config], bindings))
    trainer = Trainer(Experiment(), model_dir, tf.distribute.get_strategy())
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    model, info = artifact.load(model_dir)
    return TrainedRun(trainer.experiment, result, seconds, precision_at_k(model, dataset_dir, info.crop_frames, albums))
