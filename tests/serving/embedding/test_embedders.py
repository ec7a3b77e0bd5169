"""The embedders: in-process and through TF Serving give the same features; moved or changed exports are checked."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from serving.embedding import query_audio
from serving.embedding.embedders import LocalEmbedder, RemoteEmbedder
from serving.export import saved_model
from serving.export.exported_model import ModelMismatchError
from serving.retrieval.catalog_index import CatalogIndex
from serving.retrieval.recommender import Recommender, TagFilter
from tests.serving import tf_serving_standin


def test_rest_embedder_equals_local_embedder(demo_index, entries, standin_models):
    index = CatalogIndex.load(str(demo_index[0]))
    local = LocalEmbedder(index.embedding_models, index.tag_model)
    path = list(entries.values())[2].uri
    expected = query_audio.audio_query(path, local)
    with tf_serving_standin.rest_server(standin_models) as address:
        remote = query_audio.audio_query(path, RemoteEmbedder(address, index.embedding_models, index.tag_model, "rest"))
    np.testing.assert_allclose(remote.embedding, expected.embedding, atol=1e-5)
    np.testing.assert_allclose(remote.tag_probabilities, expected.tag_probabilities, atol=1e-5)
    assert remote.content_sha256 == expected.content_sha256
    result = Recommender(index, TagFilter(0.0, 2)).recommend(expected, 3)
    assert len(result.recommendations) == 3


def test_a_moved_or_changed_export_is_checked(tmp_path, demo_index, trained):
    index = CatalogIndex.load(str(demo_index[0]))
    with pytest.raises(FileNotFoundError, match="no exported version|not an export"):
        LocalEmbedder(index.embedding_models, None, export_base=str(tmp_path))
    # Another export under the same name and version (here: fewer chunks per track) has another checksum.
    saved_model.export(
        str(trained[0] / "run_short_chunk_res"), str(tmp_path / "short_chunk_res"), version=1, num_chunks=2
    )
    with pytest.raises(ModelMismatchError, match=r"short_chunk_res/1@\w+ .*index was built with short_chunk_res/1@"):
        LocalEmbedder(index.embedding_models, None, export_base=str(tmp_path))
    moved = tmp_path / "moved"
    shutil.copytree(os.path.dirname(index.embedding_models.models[0].path), moved / "short_chunk_res")
    embedder = LocalEmbedder(index.embedding_models, None, export_base=str(moved))
    assert embedder.features(np.zeros(16000, np.float32))[1] is None
