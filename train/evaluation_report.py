"""Evaluation of a trained model directory: metrics, per-tag CSV, plots, robustness.

`evaluate` restores the best checkpoint of a run and scores a split at track
level (chunks averaged). `robustness` repeats that on audio that is pitch
shifted (-2 to +2 semitones) or time stretched (0.76 to 1.36), as the
research system's robustness study did: the audio is re-read from the
catalog the dataset was made from and goes through the same log-mel front
end.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os

import gin
import keras
import librosa
import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure

import models
from data_prep import mtat
from features.logmel import log_mel_spectrogram
from intake import audio as audio_lib
from intake import catalog as catalog_lib
from tfrecords import dataset_info, readers
from train import config as config_lib
from train import metrics as metrics_lib
from train.evaluate_lib import predict_tracks
from train.experiment import Experiment
from train.trainer import BEST_DIRNAME, CHECKPOINT_DIRNAME

EVALUATION_DIRNAME = "evaluation"
PITCH_SHIFTS = (-2.0, -1.0, 0.0, 1.0, 2.0)
TIME_STRETCHES = (0.76, 0.88, 1.0, 1.18, 1.36)


class NotARunError(ValueError):
    """A model dir without the configuration `python -m train` saves there."""


class NotATaggingRunError(ValueError):
    """A run trained without tags (contrastive, distillation): nothing to score tags against."""


@dataclasses.dataclass(frozen=True)
class LoadedRun:
    """A trained model with the experiment and dataset it was trained on."""

    experiment: Experiment
    model: keras.Model
    info: dataset_info.DatasetInfo
    checkpoint: str


def load_run(model_dir: str, dataset_dir: str | None = None) -> LoadedRun:
    """Rebuilds a run's model from its saved config and best checkpoint."""
    config_path = os.path.join(model_dir, config_lib.CONFIG_FILENAME)
    if not tf.io.gfile.exists(config_path):
        raise NotARunError(
            f"{model_dir}: no {config_lib.CONFIG_FILENAME}; not a directory written by `python -m train` "
            "(give the --model_dir of a training run)"
        )
    with tf.io.gfile.GFile(config_path) as handle:
        config_text = handle.read()
    gin.clear_config()
    gin.parse_config(config_text)
    if dataset_dir:
        gin.bind_parameter("Experiment.dataset_dir", dataset_dir)
    experiment = Experiment()
    if not experiment.objective.scores_tags:
        raise NotATaggingRunError(
            f"{model_dir} was trained with the {experiment.objective.name} objective: there are no tag labels to "
            "score it against; score its embedding by retrieval (export it, then `python -m serving.build_index` "
            "and `python -m serving.query`)"
        )
    info = dataset_info.load(experiment.dataset_dir)
    model = experiment.build_model(info)
    best = os.path.join(model_dir, BEST_DIRNAME, "best")
    checkpoint = best if tf.io.gfile.exists(best + ".index") else None
    if checkpoint is None:
        checkpoint = tf.train.latest_checkpoint(os.path.join(model_dir, CHECKPOINT_DIRNAME))
    if checkpoint is None:
        raise FileNotFoundError(f"{model_dir}: no checkpoint to evaluate")
    tf.train.Checkpoint(model=model).read(checkpoint).expect_partial()
    return LoadedRun(experiment, model, info, checkpoint)


def evaluate(run: LoadedRun, split: str, output_dir: str, num_chunks: int = 16) -> dict:
    """Scores `split`; writes `{split}_metrics.json`, `_per_tag.csv` and `_per_tag_auc.png`."""
    predictions = predict_tracks(
        run.model, run.experiment.dataset_dir, split, run.experiment.crop_frames, num_chunks, info=run.info
    )
    vocabulary = list(run.info.vocabulary)
    result = metrics_lib.tag_metrics(predictions.labels, predictions.scores, vocabulary)
    tf.io.gfile.makedirs(output_dir)
    summary = {
        "split": split,
        "tracks": len(predictions.track_ids),
        "max_chunks_per_track": num_chunks,
        "checkpoint": run.checkpoint,
        "roc_auc_macro": result.macro_roc_auc,
        "pr_auc_macro": result.macro_pr_auc,
        "loss": predictions.chunk_loss,
        "tags_left_out": result.undefined_tags,
    }
    with tf.io.gfile.GFile(os.path.join(output_dir, f"{split}_metrics.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
    with tf.io.gfile.GFile(os.path.join(output_dir, f"{split}_per_tag.csv"), "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tag", "positives", "roc_auc", "pr_auc"])
        for index, tag in enumerate(vocabulary):
            writer.writerow(
                [
                    tag,
                    int(predictions.labels[:, index].sum()),
                    _cell(result.roc_auc[index]),
                    _cell(result.pr_auc[index]),
                ]
            )
    _plot_per_tag(vocabulary, result, os.path.join(output_dir, f"{split}_per_tag_auc.png"), split)
    return summary


def _cell(value: float) -> str:
    return "" if np.isnan(value) else f"{value:.6f}"


def _plot_per_tag(vocabulary, result, path: str, split: str):
    order = [i for i in np.argsort(np.nan_to_num(result.roc_auc, nan=-1.0)) if not np.isnan(result.roc_auc[i])]
    figure = Figure(figsize=(8, max(2.5, 0.22 * len(order) + 1)))
    axis = figure.subplots()
    axis.barh([vocabulary[i] for i in order], [result.roc_auc[i] for i in order], color="#4477aa")
    axis.set_xlim(0.0, 1.0)
    axis.set_xlabel("ROC-AUC")
    axis.set_title(f"Per-tag ROC-AUC, {split} (macro {result.macro_roc_auc:.3f})")
    figure.tight_layout()
    with tf.io.gfile.GFile(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=100)


def _track_uris(info: dataset_info.DatasetInfo) -> dict[str, str]:
    source, audio_root = info.catalog["source"], info.catalog.get("audio_root") or None
    if info.catalog.get("format") == "mtat":
        catalog, _ = mtat.read_mtat(source, audio_root or "")
    else:
        catalog = catalog_lib.read_catalog(source, audio_root)
    return {entry.track_id: entry.uri for entry in catalog.entries}


def robustness(run: LoadedRun, split: str, output_dir: str, num_chunks: int = 16) -> list[dict]:
    """Macro AUCs under pitch shifts and time stretches of the audio.

    Writes `{split}_robustness.csv` and `{split}_robustness.png`.
    """
    spec = run.info.log_mel
    uris = _track_uris(run.info)
    tracks = [
        (item["track_id"].numpy().decode(), item["labels"].numpy())
        for item in readers.eval_dataset(
            run.experiment.dataset_dir, split=split, chunk_frames=1, num_chunks=1, info=run.info
        )
    ]
    waveforms = {}
    for track_id, _ in tracks:
        if track_id not in uris:
            raise KeyError(f"track {track_id!r} is not in the catalog {run.info.catalog['source']}")
        uri = uris[track_id]
        waveforms[track_id], _ = audio_lib.load_mono(audio_lib.open_source(uri), uri, spec.sample_rate)
    labels = np.stack([label for _, label in tracks])
    conditions = [("pitch_shift", s) for s in PITCH_SHIFTS] + [("time_stretch", r) for r in TIME_STRETCHES]
    rows = []
    for kind, amount in conditions:
        scores = []
        for track_id, _ in tracks:
            waveform = waveforms[track_id]
            if kind == "pitch_shift" and amount != 0:
                waveform = librosa.effects.pitch_shift(waveform, sr=spec.sample_rate, n_steps=amount)
            elif kind == "time_stretch" and amount != 1:
                waveform = librosa.effects.time_stretch(waveform, rate=amount)
            log_mel = log_mel_spectrogram(waveform.astype(np.float32), spec)
            chunks = readers.evenly_spaced_chunks(log_mel, run.experiment.crop_frames, num_chunks)
            scores.append(run.model(chunks, training=False)[models.TAGS].numpy().mean(axis=0))
        result = metrics_lib.tag_metrics(labels, np.stack(scores), list(run.info.vocabulary))
        rows.append(
            {
                "transform": kind,
                "amount": amount,
                "roc_auc_macro": result.macro_roc_auc,
                "pr_auc_macro": result.macro_pr_auc,
            }
        )
    tf.io.gfile.makedirs(output_dir)
    with tf.io.gfile.GFile(os.path.join(output_dir, f"{split}_robustness.csv"), "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _plot_robustness(rows, os.path.join(output_dir, f"{split}_robustness.png"))
    return rows


def _plot_robustness(rows: list[dict], path: str):
    figure = Figure(figsize=(9, 3.2))
    axes = figure.subplots(1, 2, sharey=True)
    for axis, kind, label in (
        (axes[0], "pitch_shift", "pitch shift (semitones)"),
        (axes[1], "time_stretch", "time stretch (rate)"),
    ):
        selected = [r for r in rows if r["transform"] == kind]
        amounts = [r["amount"] for r in selected]
        axis.plot(amounts, [r["roc_auc_macro"] for r in selected], "o-", label="ROC-AUC")
        axis.plot(amounts, [r["pr_auc_macro"] for r in selected], "s--", label="PR-AUC")
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("macro AUC")
    axes[0].legend()
    figure.tight_layout()
    with tf.io.gfile.GFile(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=100)
