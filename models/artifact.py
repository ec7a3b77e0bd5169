"""The trained-model artifact: one definition for everything that writes or reads a model.

A model artifact is a directory holding

- `model.keras`: the float32 Keras tagger (`models.get_model`'s outputs), and
- `model_info.json`: a `ModelInfo`: architecture, input length, tag
  vocabulary, the log-mel parameters (fingerprinted), the embedding size, and
  where the weights came from: the training run that made them
  (`TrainingRecord`) or the published checkpoint they were converted from
  (`Provenance`).

The trainer writes one at `MODEL_DIR/best/`; the checkpoint converters
(`models.convert_torch`, `models.convert_musicnn`) write the same thing;
`serving.export` and fine-tuning read either through `load`/`read_info`,
given the artifact directory itself or a training run's model directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile

import keras
import tensorflow as tf

from features.logmel import LogMelSpec
from models.taggers import EMBEDDING, TAGS

MODEL_FILENAME = "model.keras"
MODEL_INFO_FILENAME = "model_info.json"
BEST_DIRNAME = "best"  # The artifact inside a training run's model directory.
FORMAT_VERSION = 1


class ArtifactError(ValueError):
    """A directory that is not a usable model artifact; the message names it."""


@dataclasses.dataclass(frozen=True)
class TrainingRecord:
    """How a trained model was chosen (written by `train`).

    Attributes:
        dataset_dir: The dataset it was trained on.
        best_metric: The validation metric that picked the weights.
        best_value: Its value (NaN if never validated).
        best_epoch: The epoch that reached it (-1: the last weights).
        global_step: Training steps taken.
        init_from: The artifact training started from (fine-tuning), if any.
        objective: What the weights were trained for: `{"name": "tagging" |
            "contrastive" | "distillation", ...settings}` (`train.objectives`);
            a distillation also names its teacher.
    """

    dataset_dir: str
    best_metric: str
    best_value: float
    best_epoch: int
    global_step: int
    init_from: str | None = None
    objective: dict = dataclasses.field(default_factory=lambda: {"name": "tagging"})


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Where converted weights came from (written by the checkpoint converters).

    Attributes:
        source: What was converted, e.g. the publishing repository and path.
        source_sha256: SHA-256 of each source file, by file name.
        license: The weights' license and the training data's terms.
        training_data: The dataset the weights were trained on.
        published_metrics: The figures published with the weights.
        converter: The converting module and its version.
        reference: The paper.
    """

    source: str
    source_sha256: dict[str, str]
    license: str
    training_data: str
    published_metrics: dict[str, float]
    converter: str
    reference: str


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What `model_info.json` says about the model next to it.

    Attributes:
        model_name: The architecture, a key of `models.MODEL_BUILDERS`.
        crop_frames: The input length in frames the model was trained on
            (training crops, evaluation and serving chunks).
        vocabulary: The tag names in output order.
        log_mel: The front end the model expects.
        embedding_dim: Size of the `embedding` output.
        training: How the weights were trained here, or None.
        provenance: Where converted weights came from, or None.
    """

    model_name: str
    crop_frames: int
    vocabulary: tuple[str, ...]
    log_mel: LogMelSpec
    embedding_dim: int
    training: TrainingRecord | None = None
    provenance: Provenance | None = None

    def __post_init__(self):
        object.__setattr__(self, "vocabulary", tuple(self.vocabulary))

    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "model_name": self.model_name,
            "crop_frames": self.crop_frames,
            "vocabulary": list(self.vocabulary),
            "log_mel": self.log_mel.to_fingerprinted_dict(),
            "embedding_dim": self.embedding_dim,
            "training": dataclasses.asdict(self.training) if self.training else None,
            "provenance": dataclasses.asdict(self.provenance) if self.provenance else None,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict, source: str) -> ModelInfo:
        """Inverse of `to_dict`; `source` names the file in errors."""
        values = dict(values)
        version = values.pop("format_version", None)
        if version != FORMAT_VERSION:
            raise ArtifactError(
                f"{source}: model info format {version!r}, this code reads {FORMAT_VERSION}; "
                "re-export or re-convert the model with this version"
            )
        try:
            training, provenance = values.pop("training"), values.pop("provenance")
            return cls(
                log_mel=LogMelSpec.from_fingerprinted_dict(values.pop("log_mel"), source),
                training=TrainingRecord(**training) if training else None,
                provenance=Provenance(**provenance) if provenance else None,
                **values,
            )
        except (KeyError, TypeError) as error:
            raise ArtifactError(f"{source}: not a model info file ({error})") from error
        except ValueError as error:
            raise ArtifactError(str(error)) from error

    @classmethod
    def from_json(cls, text: str, source: str) -> ModelInfo:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ArtifactError(f"{source}: not valid JSON ({error})") from error
        return cls.from_dict(values, source)


def artifact_dir(path: str) -> str:
    """The artifact directory for an artifact itself or a training run's model directory."""
    if tf.io.gfile.exists(os.path.join(path, MODEL_INFO_FILENAME)):
        return path
    best = os.path.join(path, BEST_DIRNAME)
    if tf.io.gfile.exists(os.path.join(best, MODEL_INFO_FILENAME)):
        return best
    raise ArtifactError(
        f"{path}: no {MODEL_INFO_FILENAME} there or in {BEST_DIRNAME}/: not a model artifact "
        "(train the model to completion, or convert a checkpoint, first)"
    )


def read_info(path: str) -> ModelInfo:
    """The `ModelInfo` of an artifact (or of a training run's best model)."""
    info_path = os.path.join(artifact_dir(path), MODEL_INFO_FILENAME)
    with tf.io.gfile.GFile(info_path) as handle:
        return ModelInfo.from_json(handle.read(), info_path)


def load(path: str) -> tuple[keras.Model, ModelInfo]:
    """The Keras model and its `ModelInfo`, checked against each other.

    Raises:
        ArtifactError: Missing files, or a model that disagrees with its info
            (vocabulary, embedding size, mel bands), naming the directory.
    """
    directory = artifact_dir(path)
    info = read_info(directory)
    model_path = os.path.join(directory, MODEL_FILENAME)
    if not tf.io.gfile.exists(model_path):
        raise ArtifactError(f"{directory}: no {MODEL_FILENAME}")
    from models import registry  # noqa: F401 - every architecture's custom layers, registered for deserialising.

    with tempfile.TemporaryDirectory() as local:  # Keras reads local files only.
        local_model = os.path.join(local, MODEL_FILENAME)
        tf.io.gfile.copy(model_path, local_model, overwrite=True)
        model = keras.saving.load_model(local_model)
    _check_consistent(model, info, directory)
    return model, info


def _check_consistent(model: keras.Model, info: ModelInfo, directory: str):
    vocabulary = model.get_layer(TAGS).vocabulary
    if vocabulary is not None and tuple(vocabulary) != info.vocabulary:
        raise ArtifactError(f"{directory}: the model's vocabulary differs from {MODEL_INFO_FILENAME}")
    if model.input_shape[-1] != info.log_mel.n_mels:
        raise ArtifactError(
            f"{directory}: the model takes {model.input_shape[-1]} mel bands, {MODEL_INFO_FILENAME} says {info.log_mel.n_mels}"
        )
    dim = embedding_dim(model)
    if dim != info.embedding_dim:
        raise ArtifactError(
            f"{directory}: the model's embedding has {dim} dimensions, {MODEL_INFO_FILENAME} says {info.embedding_dim}"
        )


def embedding_dim(model: keras.Model) -> int:
    """The size of a tagger's `embedding` output."""
    return int(model.get_layer(EMBEDDING).output.shape[-1])


def save(model: keras.Model, info: ModelInfo, directory: str) -> str:
    """Writes `model.keras` and `model_info.json` into `directory` (the info last).

    Returns:
        `directory`.
    """
    _check_consistent(model, info, directory)
    tf.io.gfile.makedirs(directory)
    with tempfile.TemporaryDirectory() as local:
        local_model = os.path.join(local, MODEL_FILENAME)
        model.save(local_model)
        tf.io.gfile.copy(local_model, os.path.join(directory, MODEL_FILENAME), overwrite=True)
    with tf.io.gfile.GFile(os.path.join(directory, MODEL_INFO_FILENAME), "w") as handle:
        handle.write(info.to_json())
    return directory
