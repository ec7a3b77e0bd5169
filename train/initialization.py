"""Fine-tuning: starting a training run from a model artifact's weights.

`Experiment.init_from` names a model artifact (`models.artifact`: a
converted published checkpoint such as `pretrained/mtat_crnn`, or another
run's model directory). Its weights are copied layer by layer into the new
model before the first step. When the dataset's vocabulary differs from
the artifact's, the output layer (`tags`) keeps its fresh initialisation
and everything below it starts from the artifact: the practical path for a
catalog with a few hundred tagged tracks.
"""

from __future__ import annotations

import dataclasses

import keras

import models
from models import artifact


class InitializationError(ValueError):
    """An artifact that cannot start this experiment; the message says why."""


@dataclasses.dataclass(frozen=True)
class Initialization:
    """What `initialize_from` did.

    Attributes:
        source: The artifact directory.
        copied_layers: Layers whose weights came from it.
        new_head: Whether the tag head was left freshly initialised.
    """

    source: str
    copied_layers: tuple[str, ...]
    new_head: bool

    def describe(self) -> str:
        head = "a new tag head for this vocabulary" if self.new_head else "its tag head"
        return f"started from {self.source}: {len(self.copied_layers)} layers' weights, {head}"


def initialize_from(
    model: keras.Model, path: str, model_name: str, log_mel_fingerprint: str, vocabulary
) -> Initialization:
    """Copies an artifact's weights into `model` (built by `models.get_model`).

    Args:
        model: The new model.
        path: A model artifact or a training run's model directory.
        model_name: The new model's architecture.
        log_mel_fingerprint: The training dataset's front end.
        vocabulary: The training dataset's tags.

    Raises:
        InitializationError: Another architecture or front end, or weights
            that do not fit, naming the artifact.
    """
    try:
        source, info = artifact.load(path)
    except artifact.ArtifactError as error:
        raise InitializationError(f"Experiment.init_from: {error}") from error
    if info.model_name != model_name:
        raise InitializationError(
            f"Experiment.init_from: {path} is a {info.model_name}, this experiment trains a {model_name}"
        )
    if info.log_mel.fingerprint() != log_mel_fingerprint:
        raise InitializationError(
            f"Experiment.init_from: {path} expects the log-mel {info.log_mel.to_dict()} (fingerprint "
            f"{info.log_mel.fingerprint()}), the dataset has fingerprint {log_mel_fingerprint}: preprocess it with the "
            "model's front end (e.g. `python -m data_prep --log_mel_preset=musicnn` for musicnn)"
        )
    new_head = tuple(vocabulary) != tuple(info.vocabulary)
    copied = []
    for layer in model.layers:
        if not layer.weights or (new_head and layer.name == models.TAGS):
            continue
        weights = source.get_layer(layer.name).get_weights()
        shapes = [tuple(weight.shape) for weight in layer.weights]
        if [w.shape for w in weights] != shapes:
            raise InitializationError(
                f"Experiment.init_from: layer {layer.name!r} of {path} has weights {[w.shape for w in weights]}, "
                f"the new model {shapes} (another input length or size)"
            )
        layer.set_weights(weights)
        copied.append(layer.name)
    return Initialization(source=artifact.artifact_dir(path), copied_layers=tuple(copied), new_head=new_head)
