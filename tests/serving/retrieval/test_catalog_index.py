"""The catalog index on disk: round trip, relocation, in-place updates and model checks."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import shutil

import numpy as np
import pytest

from serving.embedding.ensemble import EmbeddingModels
from serving.export.exported_model import ModelRef
from serving.retrieval import catalog_index
from serving.retrieval.catalog_index import CatalogIndex, DamagedIndexError, IndexMismatchError, TrackRecord
from serving.retrieval.recommender import Recommender
from serving.retrieval.searcher import TrackIndex

VOCABULARY = ("a", "b", "c")


def _ref(name="ranker", dim=8, checksum="c1", vocabulary=VOCABULARY) -> ModelRef:
    return ModelRef(name, 1, f"/x/{name}/1", checksum, name, tuple(vocabulary), dim, "fp", 16000)


def _data(num, seed=0, prefix="t"):
    rng = np.random.default_rng(seed)
    tracks = [
        TrackRecord(f"{prefix}{i}", artist=f"artist {i}", title=f"tïtle {i}", content_sha256=f"{prefix}{i}")
        for i in range(num)
    ]
    return tracks, rng.normal(size=(num, 8)).astype(np.float32), rng.uniform(size=(num, 3)).astype(np.float32)


def _build(num=50):
    tracks, embeddings, probabilities = _data(num)
    return CatalogIndex.build(tracks, embeddings, probabilities, _ref(), _ref("tagger", dim=4))


def _results(index, queries, k=5):
    return index.searcher.search(queries, k)


def test_round_trip_and_relocation(tmp_path):
    index = _build()
    queries = np.random.default_rng(9).normal(size=(6, 8)).astype(np.float32)
    index.save(str(tmp_path / "index"))
    shutil.move(str(tmp_path / "index"), str(tmp_path / "moved"))
    loaded = CatalogIndex.load(str(tmp_path / "moved"))
    assert loaded.tracks == index.tracks
    np.testing.assert_array_equal(loaded.embeddings, index.embeddings)
    np.testing.assert_array_equal(loaded.tag_probabilities, index.tag_probabilities)
    assert loaded.embedding_models == index.embedding_models and loaded.tag_model == index.tag_model
    assert _results(loaded, queries) == _results(index, queries)
    assert loaded.info()["num_tracks"] == 50 and loaded.info()["searcher"]["kind"] == "brute_force"


def test_upsert_and_delete_without_rebuild_survive_a_save(tmp_path):
    index = _build()
    new_tracks, new_embeddings, new_probabilities = _data(5, seed=1, prefix="new")
    replaced = dataclasses.replace(index.tracks[3], title="retitled")
    replaced_embedding = -index.model_embeddings[3]
    index.upsert(
        [*new_tracks, replaced],
        np.concatenate([new_embeddings, replaced_embedding[np.newaxis]]),
        np.concatenate([new_probabilities, np.zeros((1, 3), np.float32)]),
    )
    assert len(index) == len(index.searcher) == 55
    assert index.track("t3").title == "retitled"
    np.testing.assert_allclose(index.tag_probabilities[index.row("t3")], 0.0)
    for track, embedding in zip(new_tracks, new_embeddings, strict=True):
        assert index.searcher.search(index.ranking_vectors(embedding[np.newaxis]), 1)[0][0][0] == track.track_id
    assert index.searcher.search(index.ranking_vectors(replaced_embedding[np.newaxis]), 1)[0][0][0] == "t3"
    index.delete(["t0", "new2"])
    assert "t0" not in index and "new2" not in index and len(index) == len(index.searcher) == 53
    index.save(str(tmp_path / "index"))
    loaded = CatalogIndex.load(str(tmp_path / "index"))
    assert [t.track_id for t in loaded.tracks] == [t.track_id for t in index.tracks]
    for row, track in enumerate(loaded.tracks):  # Every row still belongs to its track.
        assert loaded.searcher.search(loaded.embeddings[row], 1)[0][0][0] == track.track_id
    with pytest.raises(KeyError, match="nope"):
        loaded.delete(["nope"])


def test_save_replaces_the_index_and_keeps_other_files(tmp_path):
    directory = tmp_path / "index"
    _build(20).save(str(directory))
    (directory / "rejected.csv").write_text("row,track_id,path,reason,detail\n")
    _build(30).save(str(directory))
    assert len(CatalogIndex.load(str(directory))) == 30
    assert (directory / "rejected.csv").exists()
    assert sorted(os.listdir(tmp_path)) == ["index"]  # No staging or old copy left behind.


def test_loading_for_other_models_fails_naming_both(tmp_path):
    _build().save(str(tmp_path / "index"))
    other = _ref(checksum="c2")
    with pytest.raises(IndexMismatchError, match=r"uses ranker/1@c2 but the index was built with ranker/1@c1"):
        CatalogIndex.load(str(tmp_path / "index"), expected_embedding_models=EmbeddingModels((other,)))
    with pytest.raises(IndexMismatchError, match=r"tagger/1@c1.*tagger/2@c1"):
        CatalogIndex.load(str(tmp_path / "index"), expected_tag_model=dataclasses.replace(_ref("tagger", 4), version=2))
    with pytest.raises(FileNotFoundError, match="build_index"):
        CatalogIndex.load(str(tmp_path / "nothing"))


def test_rows_must_fit_the_models():
    tracks, embeddings, probabilities = _data(4)
    with pytest.raises(IndexMismatchError, match="16-d"):
        CatalogIndex.build(tracks, embeddings, probabilities, _ref(dim=16), _ref("tagger"))
    with pytest.raises(IndexMismatchError, match="2 tags"):
        CatalogIndex.build(tracks, embeddings, probabilities, _ref(), _ref("tagger", vocabulary=("a", "b")))
    with pytest.raises(ValueError, match="tag probabilities go with a tag model"):
        CatalogIndex.build(tracks, embeddings, probabilities, _ref(), None)
    with pytest.raises(ValueError, match="unique"):
        CatalogIndex.build(tracks + tracks[:1], np.concatenate([embeddings, embeddings[:1]]), None, _ref(), None)
    index = CatalogIndex.build(tracks, embeddings, None, _ref(), None)
    with pytest.raises(IndexMismatchError, match="embeddings"):
        index.upsert(tracks[:1], np.zeros((1, 3), np.float32) + 1, None)


def test_a_delete_with_repeated_ids_changes_nothing():
    index = _build(10)
    with pytest.raises(ValueError, match=r"repeated.*t3"):
        index.delete(["t3", "t3"])
    assert len(index) == len(index.searcher) == 10 and "t3" in index
    for row, track in enumerate(index.tracks):  # ScaNN's ids and vectors still agree.
        assert index.searcher.search(index.embeddings[row], 1)[0][0][0] == track.track_id


def test_an_interrupted_swap_is_recovered(tmp_path):
    directory = tmp_path / "index"
    _build(20).save(str(directory))
    os.rename(directory, str(directory) + ".old")  # A crash between the two renames of a later save.
    assert len(CatalogIndex.load(str(directory))) == 20
    assert sorted(os.listdir(tmp_path)) == ["index"]
    os.rename(directory, str(directory) + ".old")
    _build(30).save(str(directory))  # The next save restores, then replaces.
    assert len(CatalogIndex.load(str(directory))) == 30 and sorted(os.listdir(tmp_path)) == ["index"]


def test_a_searcher_that_disagrees_with_the_tracks_is_refused(tmp_path):
    _build(20).save(str(tmp_path / "a"))
    _build(20).save(str(tmp_path / "b"))
    # Same count, other ids: the searcher of an index of other tracks.
    other = CatalogIndex.build(*_data(20, prefix="u"), _ref(), _ref("tagger", dim=4))
    other.save(str(tmp_path / "c"))
    shutil.rmtree(tmp_path / "a" / "searcher")
    shutil.copytree(tmp_path / "c" / "searcher", tmp_path / "a" / "searcher")
    with pytest.raises(IndexMismatchError, match="damaged"):
        CatalogIndex.load(str(tmp_path / "a"))


INDEX_FILES = [
    "catalog_index.json",
    "tracks.jsonl",
    "embeddings.npy",
    "tag_probabilities.npy",
    "searcher/index.json",
    "searcher/track_ids.json",
    "searcher/scann/dataset.npy",
    "searcher/scann/scann_config.pb",
    "searcher/scann/scann_assets.pbtxt",
]


@pytest.mark.parametrize("damage", ["truncated", "altered"])
@pytest.mark.parametrize("name", INDEX_FILES)
def test_a_damaged_file_is_refused_before_it_is_parsed_naming_it(tmp_path, name, damage):
    directory = tmp_path / "index"
    _build(20).save(str(directory))
    assert len(CatalogIndex.load(str(directory))) == 20  # Loads while intact.
    path = directory / name
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:  # Same size, one byte changed.
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    with pytest.raises(DamagedIndexError, match=rf"{re.escape(str(path))}: .*rebuild it"):
        CatalogIndex.load(str(directory))


def test_ids_are_not_pickled_and_a_planted_pickle_is_never_loaded(tmp_path):
    directory = tmp_path / "index"
    index = _build(20)
    index.save(str(directory))
    written = sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())
    assert not [name for name in written if name.endswith(".pkl")]
    assert json.loads((directory / "searcher" / "track_ids.json").read_text()) == index.searcher.track_ids
    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    (directory / "searcher" / "scann" / "scann_docids.pkl").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(DamagedIndexError, match="scann_docids.pkl: not written by this index"):
        CatalogIndex.load(str(directory))
    assert not marker.exists()
    (directory / "searcher" / "scann" / "scann_docids.pkl").unlink()
    (directory / "manifest.json").write_text("{")
    with pytest.raises(DamagedIndexError, match="manifest.json: unreadable"):
        CatalogIndex.load(str(directory))
    (directory / "manifest.json").unlink()
    with pytest.raises(DamagedIndexError, match="manifest.json: missing"):
        CatalogIndex.load(str(directory))


def _centred_by_hand(mean: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """One ranking model: each vector made unit, minus the catalog mean, made unit again."""
    unit = vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)
    centred = unit - mean
    return centred / np.linalg.norm(centred, axis=-1, keepdims=True)


def _check_centred_on_its_own_tracks(index: CatalogIndex):
    unit = index.model_embeddings / np.linalg.norm(index.model_embeddings, axis=1, keepdims=True)
    np.testing.assert_allclose(index.catalog_mean, unit.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(index.embeddings, _centred_by_hand(index.catalog_mean, unit), atol=1e-5)
    query = np.random.default_rng(11).normal(size=8).astype(np.float32)
    expected = np.argsort(-(index.embeddings @ _centred_by_hand(index.catalog_mean, query)))[:5]
    found = index.searcher.search(index.ranking_vectors(query[np.newaxis]), 5)[0]
    assert [track_id for track_id, _ in found] == [index.tracks[row].track_id for row in expected]


def test_tracks_and_queries_are_centred_on_the_mean_the_index_stores(tmp_path):
    tracks, embeddings, probabilities = _data(50)
    embeddings += 3.0  # A direction every track shares: raw cosines are all close to 1.
    index = CatalogIndex.build(tracks, embeddings, probabilities, _ref(), _ref("tagger", dim=4))
    _check_centred_on_its_own_tracks(index)
    assert index.notes == ()
    index.upsert(*_data(7, seed=4, prefix="new"))
    _check_centred_on_its_own_tracks(index)
    index.delete(["t1", "t2", "new3"])
    _check_centred_on_its_own_tracks(index)
    index.save(str(tmp_path / "index"))
    loaded = CatalogIndex.load(str(tmp_path / "index"))
    np.testing.assert_array_equal(loaded.catalog_mean, index.catalog_mean)
    _check_centred_on_its_own_tracks(loaded)


def test_an_index_written_before_the_catalog_mean_loads_uncentred_and_says_so(tmp_path):
    directory = tmp_path / "index"
    tracks, embeddings, probabilities = _data(50)
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    # What format 3 wrote: the same files but catalog_mean.npy, a searcher over the uncentred vectors.
    searcher = TrackIndex.build([t.track_id for t in tracks], unit)
    CatalogIndex(tracks, unit, probabilities, EmbeddingModels((_ref(),)), _ref("tagger", dim=4), searcher, None).save(
        str(directory)
    )
    info = json.loads((directory / catalog_index.INFO_FILENAME).read_text())
    (directory / catalog_index.INFO_FILENAME).write_text(json.dumps({**info, "format_version": 3}))
    catalog_index._write_manifest(str(directory))  # As that version wrote it.
    loaded = CatalogIndex.load(str(directory))
    assert loaded.catalog_mean is None
    np.testing.assert_allclose(loaded.embeddings, unit, atol=1e-6)
    (note,) = loaded.notes
    assert "stores no catalog mean" in note and "python -m serving.build_index" in note
    recommender = Recommender(loaded, None)
    assert note in recommender.recommend(recommender.query_for_track("t4"), 3).notes
    loaded.upsert(*_data(2, seed=5, prefix="new"))  # An update centres it from then on.
    assert loaded.notes == ()
    _check_centred_on_its_own_tracks(loaded)
