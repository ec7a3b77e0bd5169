"""Exported taggers as the recommender uses them: identified, loaded and called.

A `ModelRef` pins one version of one exported model (name, version and the
SavedModel's checksum), so that an index records exactly which models made
its embeddings and tag probabilities, and a query can check it uses the same.

    ref = resolve("demo_output/export/short_chunk_res")   # the latest version
    model = LoadedModel(ref)
    model.from_waveform(waveform)  # {"tags": [num_tags], "embedding": [dim]}
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np
import tensorflow as tf

from models import artifact
from serving.export import saved_model
from serving.export import signatures as sig


class ModelMismatchError(ValueError):
    """A model other than the one an index was built with."""


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """One version of an exported model.

    Attributes:
        name: The model's name (its folder in the serving base path, and its
            name in TF Serving's model config).
        version: The numeric version folder.
        path: The version folder, as found when resolved.
        checksum: Identifies the program and weights (`fingerprint_checksum`).
        model_name: The architecture (`crnn`, `short_chunk_res`, ...).
        vocabulary: The tag names, in output order.
        embedding_dim: Size of the embedding output.
        log_mel_fingerprint: Fingerprint of the log-mel parameters it expects.
        sample_rate: The waveform sample rate it expects.
        trained_on: What its weights were trained on (the published
            checkpoint's dataset, or the training run's dataset directory).
    """

    name: str
    version: int
    path: str
    checksum: str
    model_name: str
    vocabulary: tuple[str, ...]
    embedding_dim: int
    log_mel_fingerprint: str
    sample_rate: int
    trained_on: str = ""

    @property
    def key(self) -> str:
        """`name/version@checksum`: what an index records and checks."""
        return f"{self.name}/{self.version}@{self.checksum}"

    @property
    def identity(self) -> tuple[str, int, str]:
        """(name, version, checksum): what makes two references the same exported model."""
        return (self.name, self.version, self.checksum)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "vocabulary": list(self.vocabulary)}

    @classmethod
    def from_dict(cls, values: dict) -> ModelRef:
        return cls(**{**values, "vocabulary": tuple(values["vocabulary"])})

    def check_same(self, other: ModelRef, role: str):
        """Raises `ModelMismatchError` naming both when `other` is another model."""
        if self.identity != other.identity:
            raise ModelMismatchError(
                f"the {role} model is {other.key} ({other.path}) but the index was built with {self.key} "
                f"({self.path}): use that version or rebuild the index"
            )


def _versions(export_base: str) -> list[int]:
    if not tf.io.gfile.isdir(export_base):
        return []
    return sorted(int(name.rstrip("/")) for name in tf.io.gfile.listdir(export_base) if name.rstrip("/").isdigit())


def resolve(path: str, version: int | None = None) -> ModelRef:
    """Identifies an exported model.

    Args:
        path: A model's folder in a serving base path (`EXPORT/<name>`, the
            latest version is taken, as TF Serving does) or a version folder
            (`EXPORT/<name>/<version>`).
        version: A version to take from `EXPORT/<name>` instead of the latest.

    Raises:
        FileNotFoundError: No exported version there, naming the path.
    """
    path = os.path.normpath(path)
    if os.path.basename(path).isdigit() and tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        export_base, version = os.path.dirname(path), int(os.path.basename(path))
    else:
        export_base = path
        versions = _versions(export_base)
        if not versions:
            raise FileNotFoundError(
                f"{export_base}: no exported version (expected numeric folders from serving.export)"
            )
        if version is None:
            version = versions[-1]
        elif version not in versions:
            raise FileNotFoundError(f"{export_base}: no version {version} (found {versions})")
    version_dir = os.path.join(export_base, str(version))
    info_path = os.path.join(version_dir, "assets.extra", artifact.MODEL_INFO_FILENAME)
    if not tf.io.gfile.exists(info_path):
        raise FileNotFoundError(f"{version_dir}: no assets.extra/{artifact.MODEL_INFO_FILENAME}; not an export")
    with tf.io.gfile.GFile(info_path) as handle:
        info = artifact.ModelInfo.from_json(handle.read(), info_path)
    fingerprint = tf.saved_model.experimental.read_fingerprint(version_dir)
    return ModelRef(
        name=os.path.basename(export_base),
        version=version,
        path=os.path.abspath(version_dir),
        checksum=fingerprint_checksum(fingerprint),
        model_name=info.model_name,
        vocabulary=info.vocabulary,
        embedding_dim=info.embedding_dim,
        log_mel_fingerprint=info.log_mel.fingerprint(),
        sample_rate=info.log_mel.sample_rate,
        trained_on=_trained_on(info),
    )


def resolve_named(export_base: str, spec: str) -> ModelRef:
    """The model `NAME` (its latest version) or `NAME/VERSION` under a serving base path.

    Raises:
        ValueError: A spec that is not `NAME` or `NAME/VERSION`, naming it.
        FileNotFoundError: No such export, naming the path.
    """
    name, _, version = spec.strip().partition("/")
    if not name or name in (".", "..") or (version and not version.isdigit()) or "/" in version:
        raise ValueError(f"{spec!r}: expected a model's folder name under the serving base path, NAME or NAME/VERSION")
    return resolve(os.path.join(export_base, name), int(version) if version else None)


def _trained_on(info: artifact.ModelInfo) -> str:
    if info.provenance:
        return info.provenance.training_data
    return info.training.dataset_dir if info.training else ""


def describe(ref: ModelRef) -> str:
    """`name vVERSION (architecture, trained on ...)`: how outputs name the models that made them."""
    trained_on = f", trained on {ref.trained_on}" if ref.trained_on else ""
    return f"{ref.name} v{ref.version} ({ref.model_name}{trained_on})"


def fingerprint_checksum(fingerprint) -> str:
    """A model's identity from its SavedModel fingerprint: program, signatures, object graph and weights.

    Not `saved_model_checksum`: it hashes the serialized file, whose function
    names differ between two exports of the same model from one process, and
    it does not cover the weights (`checkpoint_hash` does).
    """
    parts = (
        fingerprint.graph_def_program_hash,
        fingerprint.signature_def_hash,
        fingerprint.saved_object_graph_hash,
        fingerprint.checkpoint_hash,
    )
    return hashlib.sha256(":".join(str(part) for part in parts).encode()).hexdigest()[:16]


class LoadedModel:
    """An exported model loaded in this process: one track per call, or a batch of tracks of one length.

    Args:
        ref: The model to load (from `resolve`).
    """

    def __init__(self, ref: ModelRef):
        self.ref = ref
        self._loaded = tf.saved_model.load(ref.path)
        self._waveform = self._loaded.signatures[sig.SERVING_DEFAULT]
        self._log_mel = self._loaded.signatures[sig.LOG_MEL_SIGNATURE]
        self.min_samples = int(saved_model.MIN_SECONDS * ref.sample_rate)

    def from_waveform(self, waveform: np.ndarray) -> dict[str, np.ndarray]:
        """Tags `[num_tags]` and embedding `[dim]` of a mono waveform at the model's rate."""
        waveform = np.asarray(waveform, np.float32)
        if waveform.ndim != 1:
            raise ValueError(f"expected a mono waveform, got shape {waveform.shape}")
        return self.from_waveforms(waveform[np.newaxis])[0]

    def from_waveforms(self, waveforms: np.ndarray) -> list[dict[str, np.ndarray]]:
        """One pass over a batch `[tracks, samples]` of waveforms of one length: each track's tags and embedding.

        Each track's outputs are those `from_waveform` gives it alone (the
        graph chunks every track the same way); a batch only spreads the
        model's fixed costs and fills the CPU's vector units better.
        """
        waveforms = np.asarray(waveforms, np.float32)
        if waveforms.ndim != 2 or waveforms.shape[1] < self.min_samples:
            raise ValueError(
                f"expected mono waveforms of at least {saved_model.MIN_SECONDS} s ({self.min_samples} samples), "
                f"got shape {waveforms.shape[1:] if waveforms.ndim == 2 else waveforms.shape}"
            )
        return _per_track(self._waveform(**{sig.WAVEFORM_INPUT: tf.constant(waveforms)}))

    def from_log_mel(self, log_mel: np.ndarray) -> dict[str, np.ndarray]:
        """Tags and embedding of one track's log-mel `[frames, n_mels]` (as the pipeline stores it)."""
        return self.from_log_mels(np.asarray(log_mel, np.float32)[np.newaxis])[0]

    def from_log_mels(self, log_mels: np.ndarray) -> list[dict[str, np.ndarray]]:
        """`from_log_mel` for a batch `[tracks, frames, n_mels]` of log-mels of one length, in one pass."""
        return _per_track(self._log_mel(**{sig.LOG_MEL_INPUT: tf.constant(np.asarray(log_mels, np.float32))}))


def _per_track(outputs: dict[str, tf.Tensor]) -> list[dict[str, np.ndarray]]:
    values = {name: value.numpy() for name, value in outputs.items()}
    size = len(next(iter(values.values())))
    return [{name: value[index] for name, value in values.items()} for index in range(size)]
