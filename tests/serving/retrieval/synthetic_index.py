"""What the index and recommender tests build synthetic indexes from: a tag vocabulary, model identities, unit rows."""

from __future__ import annotations

import numpy as np

from serving.export.exported_model import ModelRef

VOCABULARY = ("rock", "jazz", "ambient", "metal", "folk")
DIM = 16


def model_ref(name: str, dim: int = DIM, vocabulary=VOCABULARY) -> ModelRef:
    """The identity of an exported model that does not exist on disk (the index only records it)."""
    return ModelRef(name, 1, f"/exports/{name}/1", f"{name}-checksum", name, tuple(vocabulary), dim, "fp", 16000)


def unit_rows(rows) -> np.ndarray:
    """`rows` as float32, each scaled to unit length."""
    rows = np.asarray(rows, np.float32)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)
