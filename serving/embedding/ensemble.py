"""Stage 2's embedding: one exported model, or several whose embeddings are combined into one vector.

Models trained on different data make different mistakes: on real music none
of them saw, MSD-musicnn and MTT-musicnn together retrieve better than either
alone. The combined vector of a track is

    normalise(concat(w_1 · normalise(e_1), ..., w_n · normalise(e_n)))

so its cosine with another combined vector is the weighted mean of the
models' own cosines (weights w_i² / Σ w_j²). An index records every model's
identity (name, version, checksum) and the weights; a query embedded by
other models or versions, or with other weights, is refused.

Centring on a catalog: every model's unit embeddings share a common
direction (what all music has in common for that model), which inflates
every cosine alike and drowns the differences between tracks. An index
stores each model's mean unit embedding over its catalog (`part_means`) and
compares `centre(x, means)`: each model's part minus its catalog mean,
normalised, then weighted and concatenated as above (on real music none of
the models saw, same-album P@5 rose from 0.534 to 0.552-0.560; BENCHMARKS.md,
`retrieval_quality`, measures it on the public set).

    models = EmbeddingModels((msd_ref, mtt_ref))          # equal weights
    combined = models.combine([msd_embeddings, mtt_embeddings])   # [n, 200 + 200]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from serving.export.exported_model import ModelMismatchError, ModelRef, describe

_TINY = 1e-6  # Below this norm a centred unit part has no direction left.


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

    def unit_parts(self, combined: np.ndarray) -> list[np.ndarray]:
        """Each model's unit embedding `[n, dim_i]`, recovered from combined vectors `[n, dim]` (`combine`'s inverse).

        The combined vector is `concat(w_i · u_i) / sqrt(Σ w_j²)`: part i, normalised, is `u_i`, whatever
        the combined vector's own length (a query's embedding need not be normalised).
        """
        parts = self._split(np.atleast_2d(np.asarray(combined, np.float32)))
        return [part / np.maximum(np.linalg.norm(part, axis=1, keepdims=True), _TINY) for part in parts]

    def _split(self, vectors: np.ndarray) -> list[np.ndarray]:
        """The columns of each model, in `models` order."""
        bounds = np.cumsum([0, *(m.embedding_dim for m in self.models)])
        return [vectors[..., start:end] for start, end in zip(bounds[:-1], bounds[1:], strict=True)]

    def part_means(self, combined: np.ndarray) -> np.ndarray:
        """Each model's mean unit embedding over the rows of `combined`, concatenated `[dim]` (float64)."""
        return np.concatenate([part.astype(np.float64).mean(axis=0) for part in self.unit_parts(combined)])

    def centre(self, combined: np.ndarray, means: np.ndarray) -> np.ndarray:
        """Combined vectors `[n, dim]` compared on a catalog: each model's part minus its mean, normalised, combined.

        Args:
            combined: Combined vectors (`combine`'s output), `[n, dim]`.
            means: `part_means` of the catalog, `[dim]`.

        A part equal to its mean (the only track of a one-track catalog, or
        of a catalog of copies) has no direction left: it keeps its own,
        uncentred, so every vector stays a unit vector.
        """
        means = np.asarray(means, np.float64)
        if means.shape != (self.embedding_dim,):
            raise ValueError(f"catalog means of shape {means.shape} for {self.embedding_dim}-d embeddings")
        scaled = []
        for weight, part, mean in zip(self.weights, self.unit_parts(combined), self._split(means), strict=True):
            centred = part.astype(np.float64) - mean
            norms = np.linalg.norm(centred, axis=1, keepdims=True)
            centred = np.where(norms > _TINY, centred / np.maximum(norms, _TINY), part)
            scaled.append(weight * centred)
        joined = np.concatenate(scaled, axis=1)
        return (joined / np.linalg.norm(joined, axis=1, keepdims=True)).astype(np.float32)

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
