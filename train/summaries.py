"""TensorBoard summaries of a training run."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from tensorboard.plugins import projector as projector_plugin
from tensorboard.plugins.pr_curve import summary as pr_curve_summary

PROJECTOR_DIRNAME = "projector"


class Writers:
    """Summary writers for `train/` and `valid/` under the model dir.

    Args:
        model_dir: The run's directory.
        enabled: False on non-chief workers: every call is then a no-op.
    """

    def __init__(self, model_dir: str, enabled: bool = True):
        self.model_dir = model_dir
        self.enabled = enabled
        if enabled:
            self.train = tf.summary.create_file_writer(os.path.join(model_dir, "train"))
            self.valid = tf.summary.create_file_writer(os.path.join(model_dir, "valid"))

    def config(self, config_text: str, operative_text: str):
        """The gin configs as text summaries."""
        if not self.enabled:
            return
        with self.train.as_default():
            for name, text in (("gin/config", config_text), ("gin/operative_config", operative_text)):
                tf.summary.text(name, "```\n" + text + "\n```", step=0)

    def training(self, step: int, loss: float, learning_rate: float, steps_per_second: float, batch_size: int):
        if not self.enabled:
            return
        with self.train.as_default(step=step):
            tf.summary.scalar("loss", loss)
            tf.summary.scalar("learning_rate", learning_rate)
            tf.summary.scalar("steps_per_second", steps_per_second)
            tf.summary.scalar("examples_per_second", steps_per_second * batch_size)

    def scalars(self, run: str, step: int, values: dict[str, float], strip_prefix: str = ""):
        """Named scalars (an objective's statistics) under `run` (`train` or `valid`)."""
        if not self.enabled:
            return
        with getattr(self, run).as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name.removeprefix(strip_prefix), value)

    def spectrograms(self, log_mel, info):
        """Training inputs `[n, frames, mels]` as images (frequency upwards, time rightwards)."""
        if not self.enabled:
            return
        low, high = info.log_mel.silence_value, float(tf.reduce_max(log_mel))
        images = (tf.transpose(log_mel, [0, 2, 1])[:, ::-1, :, tf.newaxis] - low) / max(high - low, 1e-6)
        with self.train.as_default(step=0):
            tf.summary.image("input_log_mel", images, max_outputs=int(images.shape[0]))

    def validation(self, step: int, validation, vocabulary: list[str]):
        """A validation pass (`train.objectives.Validation`): its scalars; per-tag AUCs and PR curves when scored
        against tags."""
        if not self.enabled:
            return
        if validation.tag_metrics is None:
            self.scalars("valid", step, validation.results, strip_prefix="val_")
            return
        results, tag_metrics, predictions = validation.results, validation.tag_metrics, validation.predictions
        with self.valid.as_default(step=step):
            tf.summary.scalar("loss", results["val_loss"])
            tf.summary.scalar("roc_auc_macro", results["val_roc_auc"])
            tf.summary.scalar("pr_auc_macro", results["val_pr_auc"])
            for index, tag in enumerate(vocabulary):
                if not np.isnan(tag_metrics.roc_auc[index]):
                    tf.summary.scalar(f"roc_auc_per_tag/{tag}", tag_metrics.roc_auc[index])
                    tf.summary.scalar(f"pr_auc_per_tag/{tag}", tag_metrics.pr_auc[index])
                    curve = pr_curve_summary.pb(
                        f"pr_curve/{tag}",
                        labels=predictions.labels[:, index].astype(bool),
                        predictions=predictions.scores[:, index].astype(np.float32),
                        num_thresholds=51,
                    )
                    tf.summary.experimental.write_raw_pb(curve.SerializeToString(), step=step)
            tf.summary.scalar("tags_without_positives_or_negatives", len(tag_metrics.undefined_tags))

    def projector(self, predictions, vocabulary: list[str]):
        """Validation-track embeddings for TensorBoard's embedding projector."""
        if not self.enabled or predictions is None:
            return
        directory = os.path.join(self.model_dir, PROJECTOR_DIRNAME)
        tf.io.gfile.makedirs(directory)
        with tf.io.gfile.GFile(os.path.join(directory, "metadata.tsv"), "w") as handle:
            handle.write("track_id\tartist\ttitle\ttags\n")
            for track_id, artist, title, labels in zip(
                predictions.track_ids, predictions.artists, predictions.titles, predictions.labels, strict=True
            ):
                tags = "|".join(t for t, on in zip(vocabulary, labels, strict=True) if on)
                handle.write(f"{_clean(track_id)}\t{_clean(artist)}\t{_clean(title)}\t{_clean(tags)}\n")
        embedding = tf.Variable(predictions.embeddings.astype(np.float32), name="embedding")
        checkpoint = tf.train.Checkpoint(embedding=embedding)
        checkpoint.save(os.path.join(directory, "embedding.ckpt"))
        config = projector_plugin.ProjectorConfig()
        entry = config.embeddings.add()
        entry.tensor_name = "embedding/.ATTRIBUTES/VARIABLE_VALUE"
        entry.metadata_path = "metadata.tsv"
        projector_plugin.visualize_embeddings(directory, config)

    def flush(self):
        if self.enabled:
            self.train.flush()
            self.valid.flush()


def _clean(text: str) -> str:
    return text.replace("\t", " ").replace("\n", " ")
