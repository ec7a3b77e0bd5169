"""Ensemble embeddings: the combined vector, its identity checks, and indexes ranked by several real models."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import tensorflow as tf

from intake import audio, catalog
from serving.embedding import query_audio
from serving.embedding.embedders import LocalEmbedder, RemoteEmbedder
from serving.embedding.ensemble import EmbeddingModels
from serving.embedding.index_models import IndexModels
from serving.export import exported_model, saved_model
from serving.export.exported_model import LoadedModel, ModelMismatchError, ModelRef
from serving.retrieval import index_builder
from serving.retrieval.catalog_index import CatalogIndex, IndexMismatchError
from serving.retrieval.recommender import Recommender
from tests.binaries import run_binary
from tests.serving import tf_serving_standin

IN_MEMORY = ["--direct_running_mode=in_memory"]


def _ref(name: str, dim: int, version: int = 1, checksum: str = "c1", sample_rate: int = 16000) -> ModelRef:
    return ModelRef(name, version, f"/x/{name}/{version}", checksum, name, (), dim, "fp", sample_rate)


def _independently_combined(parts, weights):
    """The definition, written out again: normalise each part, weight, concatenate, normalise."""
    scaled = [w * p / np.linalg.norm(p, axis=-1, keepdims=True) for p, w in zip(parts, weights, strict=True)]
    combined = np.concatenate(scaled, axis=-1)
    return combined / np.linalg.norm(combined, axis=-1, keepdims=True)


def test_the_combined_vector_is_the_normalised_weighted_concatenation():
    rng = np.random.default_rng(0)
    models = EmbeddingModels((_ref("a", 5), _ref("b", 3)), (2.0, 0.5))
    parts = [rng.normal(size=(7, 5)) * 10, rng.normal(size=(7, 3)) * 0.01]
    combined = models.combine(parts)
    np.testing.assert_allclose(combined, _independently_combined(parts, (2.0, 0.5)), rtol=1e-5)
    assert combined.shape == (7, 8) and combined.dtype == np.float32 and models.embedding_dim == 8
    np.testing.assert_allclose(models.combine([parts[0][2], parts[1][2]]), combined[2], rtol=1e-6)
    # The cosine of combined vectors is the weighted mean of the models' own cosines.
    unit = [p / np.linalg.norm(p, axis=1, keepdims=True) for p in parts]
    cosines = [u[0] @ u[1] for u in unit]
    assert combined[0] @ combined[1] == pytest.approx((4 * cosines[0] + 0.25 * cosines[1]) / 4.25, rel=1e-5)
    single = EmbeddingModels((_ref("a", 5),))
    np.testing.assert_allclose(single.combine([parts[0]]), unit[0], rtol=1e-5)


def test_each_model_part_is_centred_on_its_own_catalog_mean():
    rng = np.random.default_rng(1)
    models = EmbeddingModels((_ref("a", 5), _ref("b", 3)), (2.0, 0.5))
    parts = [rng.normal(size=(20, 5)) + 4.0, rng.normal(size=(20, 3)) - 1.0]
    combined = models.combine(parts)
    unit = [p / np.linalg.norm(p, axis=1, keepdims=True) for p in parts]
    for recovered, expected in zip(models.unit_parts(combined), unit, strict=True):
        np.testing.assert_allclose(recovered, expected, atol=1e-5)
    means = models.part_means(combined)
    np.testing.assert_allclose(means, np.concatenate([u.mean(axis=0) for u in unit]), atol=1e-6)
    by_hand = _independently_combined([u - u.mean(axis=0) for u in unit], (2.0, 0.5))
    np.testing.assert_allclose(models.centre(combined, means), by_hand, atol=1e-5)
    query = [rng.normal(size=5) + 4.0, rng.normal(size=3) - 1.0]
    np.testing.assert_allclose(
        models.centre(models.combine(query)[np.newaxis], means)[0],
        _independently_combined(
            [q / np.linalg.norm(q) - u.mean(axis=0) for q, u in zip(query, unit, strict=True)], (2.0, 0.5)
        ),
        atol=1e-5,
    )
    # A part at its mean (a one-track catalog) keeps its own direction: still a unit vector.
    lonely = models.centre(combined[:1], models.part_means(combined[:1]))
    np.testing.assert_allclose(lonely, combined[:1], atol=1e-5)
    with pytest.raises(ValueError, match="catalog means of shape"):
        models.centre(combined, means[:4])


def test_identity_weights_and_serialisation():
    models = EmbeddingModels((_ref("msd", 4), _ref("mtt", 4)), (1, 0.5))
    assert models.key == "msd/1@c1*1+mtt/1@c1*0.5" and models.label == "msd*1+mtt*0.5"
    assert EmbeddingModels((_ref("msd", 4), _ref("mtt", 4))).label == "msd+mtt"
    assert EmbeddingModels.from_dict(json.loads(json.dumps(models.to_dict()))) == models
    models.check_same(EmbeddingModels((_ref("msd", 4), _ref("mtt", 4)), (1.0, 0.5)))
    for other in (
        EmbeddingModels((_ref("msd", 4),)),
        EmbeddingModels((_ref("msd", 4), _ref("mtt", 4, version=2)), (1, 0.5)),
        EmbeddingModels((_ref("msd", 4), _ref("mtt", 4, checksum="c2")), (1, 0.5)),
        EmbeddingModels((_ref("msd", 4), _ref("mtt", 4))),
        EmbeddingModels((_ref("mtt", 4), _ref("msd", 4)), (0.5, 1)),
    ):
        with pytest.raises(ModelMismatchError, match=r"the index was built with msd/1@c1\*1\+mtt/1@c1\*0.5"):
            models.check_same(other)


@pytest.mark.parametrize(
    ("models", "weights", "message"),
    [
        ((), (), "at least one"),
        ((_ref("a", 2), _ref("b", 2)), (1.0,), "1 weights for 2"),
        ((_ref("a", 2),), (0.0,), "positive"),
        ((_ref("a", 2),), (float("nan"),), "positive"),
        ((_ref("a", 2), _ref("a", 2, version=2)), (), "named twice"),
        ((_ref("a", 2), _ref("b", 2, sample_rate=22050)), (), "different sample rates"),
    ],
)
def test_bad_ensembles_are_refused(models, weights, message):
    with pytest.raises(ValueError, match=message):
        EmbeddingModels(models, weights)


def test_parts_must_fit_their_models():
    models = EmbeddingModels((_ref("a", 2), _ref("b", 3)))
    with pytest.raises(ValueError, match="1 embeddings for 2"):
        models.combine([np.ones(2)])
    with pytest.raises(ValueError, match="b/1@c1 makes 3-d embeddings, got 2-d"):
        models.combine([np.ones(2), np.ones(2)])
    with pytest.raises(ValueError, match="zero or non-finite embedding from a/1@c1"):
        models.combine([np.zeros(2), np.ones(3)])


@pytest.fixture(scope="module")
def ensemble_index(tmp_path_factory, demo_catalog, model_refs):
    """Four demo tracks ranked by the demo-trained ResNet and CRNN together (weights 1 and 0.5), CRNN tags."""
    index_dir = tmp_path_factory.mktemp("ensemble") / "index"
    export_base = tmp_path_factory.mktemp("ensemble_exports")
    subset_csv = index_dir.parent / "catalog.csv"
    subset_csv.write_text("".join(demo_catalog.read_text().splitlines(keepends=True)[:5]))
    for ref in model_refs.values():
        shutil.copytree(ref.path, export_base / ref.name / "1")
    done = run_binary(
        "serving.build_index",
        f"--export_base={export_base}",
        "--embedding_models=short_chunk_res,crnn/1",
        "--embedding_weights=1,0.5",
        "--tag_model=crnn",
        f"--data={subset_csv}",
        f"--audio_root={demo_catalog.parent}",
        f"--index_dir={index_dir}",
        *IN_MEMORY,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ranking by: short_chunk_res/1@" in done.stdout and "*0.5" in done.stdout
    return index_dir, export_base


def test_an_ensemble_index_stores_the_combined_vectors_of_its_models(ensemble_index, demo_catalog):
    index = CatalogIndex.load(str(ensemble_index[0]))
    assert [m.name for m in index.embedding_models.models] == ["short_chunk_res", "crnn"]
    assert index.embedding_models.weights == (1.0, 0.5) and index.tag_model.name == "crnn"
    assert index.embeddings.shape[1] == sum(m.embedding_dim for m in index.embedding_models.models)
    loaded = [LoadedModel(ref) for ref in index.embedding_models.models]
    entries = catalog.read_catalog(str(demo_catalog)).entries
    for track in index.tracks[:2]:
        entry = next(e for e in entries if e.track_id == track.track_id)
        waveform, _ = audio.load_mono(entry.uri, entry.uri, 16000)
        parts = [model.from_waveform(waveform)["embedding"] for model in loaded]
        expected = _independently_combined(parts, (1.0, 0.5))
        np.testing.assert_allclose(index.model_embeddings[index.row(track.track_id)], expected, atol=1e-5)


def test_a_query_must_be_embedded_by_exactly_the_index_models(ensemble_index, demo_catalog, trained):
    index_dir, export_base = ensemble_index
    index = CatalogIndex.load(str(index_dir))
    recommender = Recommender(index, None)
    path = catalog.read_catalog(str(demo_catalog)).entries[9].uri  # Not in the index.
    both = LocalEmbedder(index.embedding_models, index.tag_model, str(export_base))
    result = recommender.recommend(query_audio.audio_query(path, both), k=2)
    assert len(result.recommendations) == 2 and result.models["ranking"].startswith("ensemble of short_chunk_res v1")

    resnet, crnn = index.embedding_models.models
    alone = LocalEmbedder(EmbeddingModels((resnet,)), None)
    with pytest.raises(ModelMismatchError, match="uses short_chunk_res/1@.* but the index was built with"):
        recommender.recommend(query_audio.audio_query(path, alone), k=2)
    # Another version of the CRNN (another export: other chunks per track) is another model.
    other = exported_model.resolve(
        saved_model.export(str(trained[0] / "run_crnn"), str(export_base / "crnn"), version=2, num_chunks=2)
    )
    assert other.checksum != crnn.checksum
    swapped = LocalEmbedder(EmbeddingModels((resnet, other), (1.0, 0.5)), None)
    with pytest.raises(ModelMismatchError, match=r"crnn/2@.* but the index was built with .*crnn/1@"):
        recommender.recommend(query_audio.audio_query(path, swapped), k=2)
    unweighted = dataclasses.replace(index.embedding_models, weights=(1.0, 1.0))
    with pytest.raises(IndexMismatchError, match="ranking given uses"):
        CatalogIndex.load(str(index_dir), expected_embedding_models=unweighted)


def test_tf_serving_embeds_an_ensemble_as_in_process(ensemble_index, demo_catalog):
    index = CatalogIndex.load(str(ensemble_index[0]))
    path = catalog.read_catalog(str(demo_catalog)).entries[3].uri
    local = query_audio.audio_query(path, LocalEmbedder(index.embedding_models, index.tag_model))
    models = {ref.name: {1: tf.saved_model.load(ref.path)} for ref in index.embedding_models.models}
    with tf_serving_standin.grpc_server(models) as (address, service):
        remote_embedder = RemoteEmbedder(address, index.embedding_models, index.tag_model)
        remote = query_audio.audio_query(path, remote_embedder)
        requested = {(r.model_spec.name, r.model_spec.signature_name) for r in service.requests}
    # The CRNN ranks and tags: one request gives both.
    assert requested == {("short_chunk_res", "embed"), ("crnn", "serving_default")}
    np.testing.assert_allclose(remote.embedding, local.embedding, atol=1e-5)
    np.testing.assert_allclose(remote.tag_probabilities, local.tag_probabilities, atol=1e-5)


def test_update_and_delete_keep_an_ensemble_index_working(ensemble_index, tmp_path, demo_catalog):
    index_dir = tmp_path / "index"
    shutil.copytree(ensemble_index[0], index_dir)
    index = CatalogIndex.load(str(index_dir))
    removed = index.tracks[-1].track_id
    assert index_builder.delete_tracks(str(index_dir), [removed]) == len(index) - 1
    parsed = catalog.read_catalog(str(demo_catalog))
    entry = next(e for e in parsed.entries if e.track_id == removed)
    subset = catalog.Catalog(parsed.source, parsed.sha256, 1, (entry,), (), parsed.audio_root)
    models = IndexModels(index.embedding_models, index.tag_model)
    summary = index_builder.build_index(str(index_dir), models, catalog=subset, update=True, pipeline_args=IN_MEMORY)
    assert summary.num_indexed == 1 and summary.num_tracks == len(index)
    updated = CatalogIndex.load(str(index_dir))
    np.testing.assert_allclose(
        updated.model_embeddings[updated.row(removed)], index.model_embeddings[index.row(removed)], atol=1e-6
    )
    assert updated.searcher.search(index.embeddings[index.row(removed)], 1)[0][0][0] == removed
    single = IndexModels(EmbeddingModels(index.embedding_models.models[:1]), index.tag_model)
    with pytest.raises(IndexMismatchError, match="ranking given uses short_chunk_res/1@[0-9a-f]+ but"):
        index_builder.build_index(str(index_dir), single, catalog=subset, update=True, pipeline_args=IN_MEMORY)
