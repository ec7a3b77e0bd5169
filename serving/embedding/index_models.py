"""The models of an index, each run once: the ranking model(s) and the tag model, if any.

One definition for both places that run them: the embedding job (every
catalog track, `serving.retrieval.embedding_job`) and the embedders (a query,
`serving.embedding.embedders`). A model that both ranks and tags runs once
and gives both outputs. Outputs are passed around by the model's position in
`IndexModels.distinct`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import numpy as np

from serving.embedding.ensemble import EmbeddingModels
from serving.export import signatures as sig
from serving.export.exported_model import ModelRef

EMBEDDING_ROLE, TAG_ROLE = "embedding", "tag"

# Each distinct model's outputs, by its position in `IndexModels.distinct`.
ModelOutputs = Mapping[int, Mapping[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class IndexModels:
    """The ranking model(s) (with their weights) and the tag model of an index.

    Attributes:
        embedding_models: The model(s) whose combined embedding ranks.
        tag_model: The model whose tags explain (and filter) answers, or None.
    """

    embedding_models: EmbeddingModels
    tag_model: ModelRef | None = None

    def __post_init__(self):
        rates = {ref.sample_rate for ref in self.distinct}
        if len(rates) != 1:
            raise ValueError(f"the models expect different sample rates: {sorted(rates)}")

    @property
    def sample_rate(self) -> int:
        return self.embedding_models.sample_rate

    @functools.cached_property
    def distinct(self) -> tuple[ModelRef, ...]:
        """The models to run, each once: the ranking models in order, then the tag model unless it is one of them."""
        refs = tuple(self.embedding_models.models)
        if self.tag_model is None or self.tag_model.identity in {ref.identity for ref in refs}:
            return refs
        return (*refs, self.tag_model)

    def roles(self, position: int) -> tuple[str, ...]:
        """What the model at `position` of `distinct` is for: `embedding`, `tag` or both."""
        ref = self.distinct[position]
        ranks = any(other.identity == ref.identity for other in self.embedding_models.models)
        tags = self.tag_model is not None and self.tag_model.identity == ref.identity
        return (EMBEDDING_ROLE,) * ranks + (TAG_ROLE,) * tags

    def describe(self, position: int) -> str:
        """`the embedding model`, `the tag model` or `the embedding and tag model`, with its name."""
        return f"the {' and '.join(self.roles(position))} model {self.distinct[position].name}"

    def signature(self, position: int) -> str:
        """The signature that gives what the model at `position` is needed for (its embedding, its tags, or both)."""
        roles = self.roles(position)
        if len(roles) == 2:
            return sig.SERVING_DEFAULT
        return sig.EMBED_SIGNATURE if roles == (EMBEDDING_ROLE,) else sig.TAGS_SIGNATURE

    @functools.cached_property
    def _positions(self) -> dict[tuple, int]:
        """Each distinct model's position, by identity."""
        return {ref.identity: position for position, ref in enumerate(self.distinct)}

    def combine(self, outputs: ModelOutputs) -> tuple[np.ndarray, np.ndarray | None]:
        """A track's combined embedding `[dim]` and tag probabilities (None without a tag model)."""
        parts = [outputs[self._positions[ref.identity]][sig.EMBEDDING_OUTPUT] for ref in self.embedding_models.models]
        tags = None
        if self.tag_model is not None:
            tags = outputs[self._positions[self.tag_model.identity]][sig.TAGS_OUTPUT]
        return self.embedding_models.combine(parts), tags

    def unusable(self, outputs: ModelOutputs) -> str | None:
        """Why a track's outputs cannot be indexed (non-finite values, a zero embedding), or None."""
        for position, values in sorted(outputs.items()):
            for name, value in sorted(values.items()):
                if not np.all(np.isfinite(value)):
                    return f"{self.describe(position)}'s {name} output is not finite"
        for position, values in sorted(outputs.items()):
            embedding = values.get(sig.EMBEDDING_OUTPUT)
            if EMBEDDING_ROLE in self.roles(position) and embedding is not None and not np.any(embedding):
                return f"{self.describe(position)}'s embedding is all zeros"
        return None
