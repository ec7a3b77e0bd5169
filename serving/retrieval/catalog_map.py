"""A map of the catalog: every track at a point of the plane, near the tracks that sound like it.

`build_index` computes it when it builds or updates an index and stores it
with the index (`catalog_map.npz`: track ids, `[n, 2]` positions in
[0, 1]^2, the method); the web app draws it. The positions come from the
vectors ranking compares (`index.embeddings`: the models' combined
embeddings, centred on the catalog), by t-SNE (scikit-learn, already
installed with librosa: no new dependency), cosine distances, PCA
initialisation, a fixed seed. On the public set t-SNE keeps same-album
tracks together on the map far better than PCA (`benchmarks/catalog_map.py`,
BENCHMARKS.md "Catalog map").

t-SNE costs grow with the catalog: above `MAX_FITTED` tracks it is fitted to
a seeded sample and every other track is placed among its nearest fitted
neighbours (`place`: the similarity-weighted mean of their positions), as an
uploaded query is.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

FILENAME = "catalog_map.npz"
TSNE, PCA = "tsne", "pca"
METHODS = (TSNE, PCA)
MAX_FITTED = 20_000  # Tracks t-SNE is fitted to; the rest are placed (`place`).
NEIGHBOURS = 5  # Fitted neighbours a placed point sits among.
SEED = 0


@dataclasses.dataclass(frozen=True)
class CatalogMap:
    """Each track's point on the map.

    Attributes:
        track_ids: The tracks, in the order of `positions`.
        positions: `[n, 2]` float32 in [0, 1]^2.
        method: `tsne` or `pca`.
    """

    track_ids: tuple[str, ...]
    positions: np.ndarray
    method: str

    def save(self, index_dir: str):
        """Writes `INDEX_DIR/catalog_map.npz` (through a temporary file renamed into place)."""
        path = os.path.join(index_dir, FILENAME)
        temporary = path + ".tmp.npz"
        np.savez(
            temporary, track_ids=np.array(self.track_ids, dtype=object), positions=self.positions, method=self.method
        )
        os.replace(temporary, path)

    @classmethod
    def load(cls, index_dir: str) -> CatalogMap | None:
        """The map stored with an index, or None (an index built before maps, or without one)."""
        path = os.path.join(index_dir, FILENAME)
        if not os.path.exists(path):
            return None
        with np.load(path, allow_pickle=True) as stored:
            return cls(
                tuple(str(i) for i in stored["track_ids"]),
                stored["positions"].astype(np.float32),
                str(stored["method"]),
            )


def project(vectors: np.ndarray, method: str = TSNE, seed: int = SEED) -> np.ndarray:
    """`[n, 2]` positions in [0, 1]^2 of the rows of `vectors` (see the module docstring).

    Raises:
        ValueError: An unknown method, naming it.
    """
    if method not in METHODS:
        raise ValueError(f"unknown map method {method!r}; choose one of {list(METHODS)}")
    vectors = np.asarray(vectors, np.float32)
    count = len(vectors)
    if count < 4 or method == PCA:
        return _unit_square(_pca(vectors))
    fitted = np.arange(count)
    if count > MAX_FITTED:
        fitted = np.sort(np.random.default_rng(seed).choice(count, MAX_FITTED, replace=False))
    positions = np.empty((count, 2), np.float32)
    positions[fitted] = _unit_square(_tsne(vectors[fitted], seed))
    rest = np.setdiff1d(np.arange(count), fitted)
    if len(rest):
        positions[rest] = place(vectors[rest], vectors[fitted], positions[fitted])
    return positions


PLACED_PER_BLOCK = 2048  # Queries compared at once: a block's similarities to 20,000 tracks take 160 MB.


def place(queries: np.ndarray, vectors: np.ndarray, positions: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """Positions for `queries` among the mapped `vectors`: the similarity-weighted mean of their `k` nearest's."""
    queries = _unit_rows(np.atleast_2d(np.asarray(queries, np.float32)))
    vectors = _unit_rows(np.asarray(vectors, np.float32))
    k = min(k, len(vectors))
    placed = np.empty((len(queries), 2), np.float32)
    for start in range(0, len(queries), PLACED_PER_BLOCK):
        similarities = queries[start : start + PLACED_PER_BLOCK] @ vectors.T
        nearest = np.argpartition(-similarities, k - 1, axis=1)[:, :k]
        weights = np.maximum(np.take_along_axis(similarities, nearest, axis=1), 0.0) + 1e-6
        weights /= weights.sum(axis=1, keepdims=True)
        placed[start : start + PLACED_PER_BLOCK] = np.einsum("qk,qkd->qd", weights, positions[nearest])
    return placed


def for_index(index, method: str = TSNE) -> CatalogMap:
    """The map of an index's tracks (one index or a sharded one), from the vectors ranking compares."""
    return CatalogMap(tuple(t.track_id for t in index.tracks), project(index.embeddings, method), method)


def top_tags(index) -> np.ndarray | None:
    """Each track's most probable tag (a row of `index.vocabulary`), or None without a tag model."""
    if index.tag_probabilities is None:
        return None
    return np.argmax(index.tag_probabilities, axis=1)


def album_neighbour_share(positions: np.ndarray, albums: list[str], k: int = NEIGHBOURS) -> np.ndarray:
    """For each point, the share of its `k` nearest other points (on the map) from its own album."""
    positions = np.asarray(positions, np.float64)
    distances = np.sum((positions[:, None, :] - positions[None, :, :]) ** 2, axis=-1)
    np.fill_diagonal(distances, np.inf)
    nearest = np.argsort(distances, axis=1, kind="stable")[:, :k]
    labels = np.asarray(albums)
    return np.mean(labels[nearest] == labels[:, None], axis=1)


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def _pca(vectors: np.ndarray) -> np.ndarray:
    centred = vectors - vectors.mean(axis=0)
    if len(vectors) < 2:
        return np.zeros((len(vectors), 2), np.float32)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ components[:2].T
    return np.pad(projected, ((0, 0), (0, 2 - projected.shape[1])))


def _tsne(vectors: np.ndarray, seed: int) -> np.ndarray:
    from sklearn import manifold  # Only when a map is made.

    perplexity = float(max(2.0, min(30.0, (len(vectors) - 1) / 3.0)))
    model = manifold.TSNE(2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed, n_jobs=1)
    return model.fit_transform(vectors.astype(np.float32))


def _unit_square(points: np.ndarray) -> np.ndarray:
    """Scaled into [0, 1]^2, the aspect kept, centred."""
    points = np.asarray(points, np.float64)
    if not len(points):
        return np.zeros((0, 2), np.float32)
    low, high = points.min(axis=0), points.max(axis=0)
    span = float(np.max(high - low)) or 1.0
    scaled = (points - low) / span
    scaled += (1.0 - (high - low) / span) / 2.0
    return scaled.astype(np.float32)
