"""Track-level predictions: each track's chunks averaged, as Won et al. evaluate."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

import models
from tfrecords import dataset_info, readers, schema


@dataclasses.dataclass(frozen=True)
class TrackPredictions:
    """Predictions for every track of a split.

    Attributes:
        track_ids: Track ids in dataset order.
        labels: `[tracks, tags]` ground truth.
        scores: `[tracks, tags]` sigmoid outputs averaged over each track's chunks.
        embeddings: `[tracks, dim]` embeddings averaged over each track's chunks.
        chunk_loss: Binary cross-entropy over all chunks against their track's
            labels (the reference's validation loss).
        artists: Artist of each track.
        titles: Title of each track.
    """

    track_ids: list[str]
    labels: np.ndarray
    scores: np.ndarray
    embeddings: np.ndarray
    chunk_loss: float
    artists: list[str]
    titles: list[str]


@tf.function(reduce_retracing=True)
def _predict_chunks(model: keras.Model, chunks: tf.Tensor):
    """Tags and embeddings `[tracks, chunks, ...]` of `[tracks, chunks, frames, n_mels]` (padding chunks included).

    One function for the process, so that validating every epoch (or
    evaluating several splits) reuses its trace for the same model instead of
    tracing a new function each time.
    """
    shape = tf.shape(chunks)
    flat = tf.reshape(chunks, tf.concat([[-1], shape[2:]], axis=0))
    outputs = model(flat, training=False)
    tags = tf.reshape(outputs[models.TAGS], [shape[0], shape[1], -1])
    embedding = tf.reshape(outputs[models.EMBEDDING], [shape[0], shape[1], -1])
    return tags, embedding


def predict_tracks(
    model: keras.Model,
    dataset_dir: str,
    split: str,
    chunk_frames: int,
    num_chunks: int = 16,
    tracks_per_batch: int = 4,
    info: dataset_info.DatasetInfo | None = None,
) -> TrackPredictions:
    """Runs `model` over every track of `split` as evenly spaced chunks."""
    info = info or dataset_info.load(dataset_dir)
    dataset = readers.eval_dataset(
        dataset_dir, split=split, chunk_frames=chunk_frames, num_chunks=num_chunks, info=info
    ).padded_batch(tracks_per_batch)  # Tracks of other lengths get other chunk counts: padded, then masked.

    ids, labels, scores, embeddings, artists, titles, losses = [], [], [], [], [], [], []
    for batch in dataset:
        tags, embedding = _predict_chunks(model, batch[schema.LOG_MEL])
        tags = tags.numpy().astype(np.float64)
        real = (np.arange(tags.shape[1])[np.newaxis, :] < batch[readers.NUM_CHUNKS].numpy()[:, np.newaxis])[..., None]
        batch_labels = batch[schema.LABELS].numpy()
        if batch_labels.shape[1] == tags.shape[2] > 0:
            clipped = np.clip(tags, 1e-7, 1 - 1e-7)
            repeated = batch_labels[:, np.newaxis, :]
            chunk_losses = -(repeated * np.log(clipped) + (1 - repeated) * np.log(1 - clipped))
            losses.append((chunk_losses * real).sum(axis=(1, 2)) / (real.sum(axis=(1, 2)) * tags.shape[2]))
        else:  # The model's tags are not the dataset's (an untagged catalog, or a model with other tags).
            losses.append(np.full(len(batch_labels), np.nan))
        scores.append((tags * real).sum(axis=1) / real.sum(axis=1))
        embeddings.append((embedding.numpy() * real).sum(axis=1) / real.sum(axis=1))
        labels.append(batch_labels)
        ids += [t.decode() for t in batch[schema.TRACK_ID].numpy()]
        artists += [a.decode() for a in batch[schema.ARTIST].numpy()]
        titles += [t.decode() for t in batch[schema.TITLE].numpy()]
    if not ids:
        raise ValueError(f"{dataset_dir}: split {split!r} has no tracks")
    return TrackPredictions(
        track_ids=ids,
        labels=np.concatenate(labels),
        scores=np.concatenate(scores),
        embeddings=np.concatenate(embeddings),
        chunk_loss=float(np.concatenate(losses).mean()),
        artists=artists,
        titles=titles,
    )
