"""Stage 2's embedding: one exported model, or several whose embeddings are combined into one vector.

Models trained on different data make different mistakes: on real music none
of them saw, MSD-musicnn and MTT-musicnn together retrieve better than either
alone. The combined vector of a track is

    normalise(concat(w_1 · normalise(e_1), ..., w_n · normalise(e_n)))

so its cosine with another combined vector is the weighted mean of the
models' own cosines (weights w_i² / Σ w_j²). An index records every model's
identity (name, version, checksum) and the weights; a query embedded by
other models or versions, or with other weights, is refused.

    models = EmbeddingModels((msd_ref, mtt_ref))          # equal weights
    combined = models.combine([msd_embeddings, mtt_embeddings])   # [n, 200 + 200]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from serving.export.exported_model import ModelMismatchError, ModelRef, describe


@dataclasses.dataclass(frozen=True)
class EmbeddingModels:
    """The models whose embeddings rank, in order, with their weights.

    Attributes:
        models: One or more exported models (distinct names).
        weights: One positive weight per model (default: all 1).
    """

    models: tuple[ModelRef, ...]
    weights: tuple[float, ...] = ()

    def __post_init__(self):
        models = tuple(self.models)
        weights = tuple(float(w) for w in self.weights) or (1.0,) * len(models)
        object.__setattr__(self, "models", models)
        object.__setattr__(self, "weights", weights)
        if not models:
            raise ValueError("at least one embedding model is needed")
        if len(weights) != len(models):
            raise ValueError(f"{len(weights)} weights for {len(models)} embedding models")
        if not all(np.isfinite(w) and w > 0 for w in weights):
            raise ValueError(f"embedding weights must be positive, got {list(weights)}")
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise ValueError(f"an embedding model is named twice: {names}")
        rates = {m.sample_rate for m in models}
        if len(rates) != 1:
            raise ValueError(f"the embedding models expect different sample rates: {sorted(rates)}")

    @property
    def embedding_dim(self) -> int:
        return sum(m.embedding_dim for m in self.models)

    @property
    def sample_rate(self) -> int:
        return self.models[0].sample_rate

    @property
    def key(self) -> str:
        """`name/version@checksum[*weight]+...`: what an index records and checks."""
        single = len(self.models) == 1
        return "+".join(m.key + ("" if single else f"*{w:g}") for m, w in zip(self.models, self.weights, strict=True))

    @property
    def label(self) -> str:
        """The models' names joined by `+` (weights shown when they differ): how tables name the ranking."""
        equal = len(set(self.weights)) == 1
        return "+".join(m.name + ("" if equal else f"*{w:g}") for m, w in zip(self.models, self.weights, strict=True))

    def describe(self) -> str:
        """How outputs name the ranking: each model's `describe`, with weights when several."""
        if len(self.models) == 1:
            return describe(self.models[0])
        equal = len(set(self.weights)) == 1
        parts = [describe(m) + ("" if equal else f" ×{w:g}") for m, w in zip(self.models, self.weights, strict=True)]
        return "ensemble of " + " + ".join(parts)

    def combine(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        """The combined, L2-normalised embedding of each row (`[n, dim]`, or `[dim]` for one track).

        Args:
            parts: Each model's embeddings, in `models` order: `[n, dim_i]` or `[dim_i]`.

        Raises:
            ValueError: A part of the wrong size, or a zero or non-finite one.
        """
        if len(parts) != len(self.models):
            raise ValueError(f"{len(parts)} embeddings for {len(self.models)} embedding models")
        single = np.ndim(parts[0]) == 1
        scaled = []
        for model, weight, part in zip(self.models, self.weights, parts, strict=True):
            part = np.atleast_2d(np.asarray(part, np.float32))
            if part.shape[1] != model.embedding_dim:
                raise ValueError(f"{model.key} makes {model.embedding_dim}-d embeddings, got {part.shape[1]}-d")
            norms = np.linalg.norm(part, axis=1, keepdims=True)
            if not np.all(np.isfinite(norms)) or not np.all(norms > 0):
                raise ValueError(f"a zero or non-finite embedding from {model.key}")
            scaled.append(weight * part / norms)
        combined = np.concatenate(scaled, axis=1)
        combined /= np.linalg.norm(combined, axis=1, keepdims=True)
        return combined[0] if single else combined

    def check_same(self, other: EmbeddingModels, what: str = "the query's embedding"):
        """Raises `ModelMismatchError` naming both unless `other` is exactly these models, versions and weights."""
        ours, theirs = [m.identity for m in self.models], [m.identity for m in other.models]
        if ours != theirs or self.weights != other.weights:
            raise ModelMismatchError(
                f"{what} uses {other.key} but the index was built with {self.key}: "
                "embed with exactly those model versions and weights, or rebuild the index"
            )

    def to_dict(self) -> dict:
        return {"models": [m.to_dict() for m in self.models], "weights": list(self.weights)}

    @classmethod
    def from_dict(cls, values: dict) -> EmbeddingModels:
        return cls(tuple(ModelRef.from_dict(m) for m in values["models"]), tuple(values["weights"]))
