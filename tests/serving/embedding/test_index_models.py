"""The models of an index: each distinct model once, with the signature its roles need; combined outputs; checks."""

from __future__ import annotations

import numpy as np
import pytest

from serving.embedding.embedders import LocalEmbedder
from serving.embedding.ensemble import EmbeddingModels
from serving.embedding.index_models import IndexModels
from serving.export import signatures as sig
from serving.export.exported_model import LoadedModel, ModelRef
from tests.conftest import tone


def _ref(name: str, dim: int = 4, sample_rate: int = 16000) -> ModelRef:
    return ModelRef(name, 1, f"/x/{name}/1", f"{name}-checksum", name, ("a", "b", "c"), dim, "fp", sample_rate)


RANKER, TAGGER = _ref("ranker"), _ref("tagger", 3)


@pytest.mark.parametrize(
    ("embedding_models", "tag_model", "expected"),
    [
        # (distinct models, their roles, their signatures)
        ((RANKER,), TAGGER, (("ranker", "tagger"), (("embedding",), ("tag",)), ("embed", "tags"))),
        ((RANKER,), None, (("ranker",), (("embedding",),), ("embed",))),
        ((TAGGER,), TAGGER, (("tagger",), (("embedding", "tag"),), ("serving_default",))),
        (
            (RANKER, TAGGER),
            TAGGER,
            (("ranker", "tagger"), (("embedding",), ("embedding", "tag")), ("embed", "serving_default")),
        ),
    ],
)
def test_each_model_runs_once_with_the_signature_its_roles_need(embedding_models, tag_model, expected):
    models = IndexModels(EmbeddingModels(embedding_models), tag_model)
    positions = range(len(models.distinct))
    assert (
        tuple(ref.name for ref in models.distinct),
        tuple(models.roles(p) for p in positions),
        tuple(models.signature(p) for p in positions),
    ) == expected


def test_outputs_combine_by_model_position():
    models = IndexModels(EmbeddingModels((RANKER, TAGGER), (2.0, 1.0)), TAGGER)
    ranker_embedding, tagger_embedding = np.array([1.0, 2.0, 0.0, 1.0]), np.array([0.5, 0.5, 1.0])
    tags = np.array([0.1, 0.9, 0.3], np.float32)
    outputs = {
        0: {sig.EMBEDDING_OUTPUT: ranker_embedding},
        1: {sig.EMBEDDING_OUTPUT: tagger_embedding, sig.TAGS_OUTPUT: tags},
    }
    embedding, tag_probabilities = models.combine(outputs)
    np.testing.assert_allclose(embedding, models.embedding_models.combine([ranker_embedding, tagger_embedding]))
    np.testing.assert_array_equal(tag_probabilities, tags)
    assert IndexModels(EmbeddingModels((RANKER,))).combine({0: {sig.EMBEDDING_OUTPUT: ranker_embedding}})[1] is None


def test_unusable_outputs_are_named_by_role_and_model():
    models = IndexModels(EmbeddingModels((RANKER,)), TAGGER)
    good = {0: {sig.EMBEDDING_OUTPUT: np.ones(4, np.float32)}, 1: {sig.TAGS_OUTPUT: np.full(3, 0.5, np.float32)}}
    assert models.unusable(good) is None
    zero = {**good, 0: {sig.EMBEDDING_OUTPUT: np.zeros(4, np.float32)}}
    assert models.unusable(zero) == "the embedding model ranker's embedding is all zeros"
    nan = {**good, 1: {sig.TAGS_OUTPUT: np.array([0.5, np.nan, 0.1], np.float32)}}
    assert models.unusable(nan) == "the tag model tagger's tags output is not finite"
    # A tag model's embedding is not what ranks: all zeros is no reason to refuse the track.
    assert models.unusable({**good, 1: {**good[1], sig.EMBEDDING_OUTPUT: np.zeros(3, np.float32)}}) is None


def test_models_of_different_sample_rates_are_refused():
    with pytest.raises(ValueError, match=r"different sample rates: \[16000, 22050\]"):
        IndexModels(EmbeddingModels((RANKER,)), _ref("tagger", 3, sample_rate=22050))


def test_a_model_that_ranks_and_tags_gives_both_from_one_pass(model_refs):
    """The demo CRNN as ranking and tag model: one model in `distinct`, its own outputs as the query's features."""
    crnn = model_refs["tag"]
    embedder = LocalEmbedder(EmbeddingModels((crnn,)), crnn)
    assert [ref.name for ref in embedder.models.distinct] == [crnn.name]
    waveform = tone(6.0, crnn.sample_rate)[:, 0]
    embedding, tags = embedder.features(waveform)
    expected = LoadedModel(crnn).from_waveform(waveform)
    np.testing.assert_allclose(embedding, EmbeddingModels((crnn,)).combine([expected[sig.EMBEDDING_OUTPUT]]), atol=1e-6)
    np.testing.assert_allclose(tags, expected[sig.TAGS_OUTPUT], atol=1e-6)
    embedder.close()
