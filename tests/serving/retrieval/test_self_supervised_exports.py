"""Models trained without tags (contrastive, distilled) export for TF Serving and index like any other."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from intake import audio
from intake import catalog as catalog_lib
from models import artifact
from serving.embedding.ensemble import EmbeddingModels
from serving.embedding.index_models import IndexModels
from serving.export import exported_model, saved_model
from serving.retrieval import index_builder
from serving.retrieval.catalog_index import CatalogIndex


@pytest.mark.parametrize("run", ["contrastive_run", "distilled_run"])
def test_a_model_trained_without_tags_exports_and_indexes(request, run, untagged_demo, tmp_path):
    model_dir = request.getfixturevalue(run)["model_dir"]
    _, info = artifact.load(model_dir)
    path = saved_model.export(model_dir, str(tmp_path / "export" / run), num_chunks=4)
    ref = exported_model.resolve(path)
    with open(os.path.join(path, "assets.extra", artifact.MODEL_INFO_FILENAME)) as handle:
        exported_info = artifact.ModelInfo.from_json(handle.read(), "the export")
    assert exported_info.training.objective == info.training.objective  # Provenance travels with the export.
    assert ref.vocabulary == info.vocabulary
    whole = catalog_lib.read_catalog(untagged_demo["catalog"])
    catalog = dataclasses.replace(whole, entries=whole.entries[::4], num_rows=4)  # One track of each soundtrack.
    index_builder.build_index(
        str(tmp_path / "index"),
        IndexModels(EmbeddingModels((ref,)), None),
        catalog=catalog,
        pipeline_args=["--direct_running_mode=in_memory"],
    )
    index = CatalogIndex.load(str(tmp_path / "index"))
    assert len(index.tracks) == len(catalog.entries) == 4
    assert index.embedding_models.models[0].checksum == ref.checksum
    # A catalog track, embedded again through the export, finds itself first.
    entry = catalog.entries[2]
    waveform, _ = audio.load_mono(entry.uri, entry.uri, ref.sample_rate)
    embedding = exported_model.LoadedModel(ref).from_waveform(waveform)["embedding"]
    np.testing.assert_allclose(embedding, index.model_embeddings[index.row(entry.track_id)], atol=1e-4)
    assert index.searcher.search(index.ranking_vectors(embedding[np.newaxis]), k=3)[0][0][0] == entry.track_id
