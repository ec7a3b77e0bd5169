"""The catalog map (`serving.retrieval.catalog_map`): positions, placing, storage, the album-neighbour share."""

from __future__ import annotations

import numpy as np
import pytest

from serving.retrieval import catalog_map


def _clusters(per_cluster: int = 20, clusters: int = 4, dim: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)) * 3.0
    vectors = np.repeat(centres, per_cluster, axis=0) + rng.normal(size=(clusters * per_cluster, dim))
    return vectors.astype(np.float32), [f"album{i // per_cluster}" for i in range(clusters * per_cluster)]


@pytest.mark.parametrize("method", catalog_map.METHODS)
def test_points_lie_in_the_unit_square_and_the_same_vectors_give_the_same_map(method):
    vectors, albums = _clusters()
    first, again = catalog_map.project(vectors, method), catalog_map.project(vectors, method)
    assert first.shape == (80, 2) and first.dtype == np.float32
    assert first.min() >= 0.0 and first.max() <= 1.0 and np.isclose(np.ptp(first, axis=0).max(), 1.0)
    np.testing.assert_array_equal(first, again)
    assert catalog_map.album_neighbour_share(first, albums).mean() > 0.9  # Clusters this clear stay together.


def test_a_large_catalog_is_fitted_on_a_sample_and_the_rest_placed_among_their_neighbours(monkeypatch):
    monkeypatch.setattr(catalog_map, "MAX_FITTED", 40)
    vectors, albums = _clusters(per_cluster=30)
    positions = catalog_map.project(vectors)
    assert positions.shape == (120, 2) and positions.min() >= 0.0 and positions.max() <= 1.0
    assert catalog_map.album_neighbour_share(positions, albums).mean() > 0.8


def test_a_query_is_placed_among_its_nearest_mapped_tracks():
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    positions = np.array([[0.1, 0.1], [0.2, 0.1], [0.9, 0.9], [0.8, 0.9]], np.float32)
    placed = catalog_map.place(np.array([[1.0, 0.05]]), vectors, positions, k=2)
    assert placed.shape == (1, 2) and 0.1 <= placed[0, 0] <= 0.2 and placed[0, 1] == pytest.approx(0.1)


def test_the_album_neighbour_share_counts_same_album_neighbours():
    positions = np.array([[0, 0], [0, 0.1], [1, 1], [1, 0.9], [0.2, 0.2]], np.float32)
    shares = catalog_map.album_neighbour_share(positions, ["a", "a", "b", "b", "a"], k=1)
    np.testing.assert_array_equal(shares, [1, 1, 1, 1, 1])
    shares = catalog_map.album_neighbour_share(positions, ["a", "b", "a", "b", "c"], k=1)
    np.testing.assert_array_equal(shares, [0, 0, 0, 0, 0])


def test_a_map_saves_and_loads_with_its_index_and_an_unknown_method_is_named(tmp_path):
    stored = catalog_map.CatalogMap(("b", "a"), np.array([[0.1, 0.2], [0.3, 0.4]], np.float32), catalog_map.TSNE)
    stored.save(str(tmp_path))
    loaded = catalog_map.CatalogMap.load(str(tmp_path))
    assert loaded.track_ids == ("b", "a") and loaded.method == "tsne"
    np.testing.assert_array_equal(loaded.positions, stored.positions)
    assert catalog_map.CatalogMap.load(str(tmp_path / "elsewhere")) is None
    with pytest.raises(ValueError, match="unknown map method 'umap'"):
        catalog_map.project(np.eye(5), "umap")
