"""A catalog index in shards: the same top-k as one index (brute force), the same recommendations, saved and loaded."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from serving.retrieval import index_builder, sharded_index
from serving.retrieval.catalog_index import CatalogIndex, IndexMismatchError, TrackRecord
from serving.retrieval.recommender import Query, Recommender, TagFilter
from serving.retrieval.sharded_index import ShardedIndex
from tests.binaries import run_binary
from tests.serving.retrieval.synthetic_index import VOCABULARY, model_ref, unit_rows

NUM_TRACKS = 400


def _catalog_arrays(seed=0):
    """Tracks with few artists (the per-artist cap binds) and copies of one file under several ids (duplicates)."""
    rng = np.random.default_rng(seed)
    tracks = [
        TrackRecord(
            track_id=f"t{i:04d}",
            artist=f"artist{i % 9}",
            title=f"title {i}",
            content_sha256=f"hash{i % 380}",  # Tracks 380-399 repeat the audio of 0-19.
        )
        for i in range(NUM_TRACKS)
    ]
    embeddings = unit_rows(rng.normal(size=(NUM_TRACKS, 16)))
    embeddings[380:] = embeddings[:20]
    probabilities = rng.uniform(0.0, 1.0, size=(NUM_TRACKS, len(VOCABULARY))).astype(np.float32)
    return tracks, embeddings, probabilities


def _build_one_and_sharded():
    """The catalog as one brute-force index and as 4 brute-force shards."""
    tracks, embeddings, probabilities = _catalog_arrays()
    models = (model_ref("ranker"), model_ref("tagger", 32))
    one = CatalogIndex.build(tracks, embeddings, probabilities, *models, kind="brute_force")
    sharded = ShardedIndex.build(
        tracks, embeddings, probabilities, one.embedding_models, models[1], num_shards=4, kind="brute_force"
    )
    return one, sharded


@pytest.fixture(scope="module")
def one_and_sharded():
    return _build_one_and_sharded()


def test_tracks_are_split_by_id_hash_into_complete_shards(one_and_sharded):
    one, sharded = one_and_sharded
    assert len(sharded.shards) == 4 and len(sharded) == len(one) == NUM_TRACKS
    for number, shard in enumerate(sharded.shards):
        assert 60 < len(shard) < 140  # A hash spreads the ids.
        assert all(sharded_index.shard_of(t.track_id, 4) == number for t in shard.tracks)
        for track in shard.tracks[:5]:
            np.testing.assert_array_equal(
                shard.embeddings[shard.row(track.track_id)], one.embeddings[one.row(track.track_id)]
            )
    assert "t0007" in sharded and "nope" not in sharded


def test_shards_searched_for_k_and_merged_give_the_one_index_top_k(one_and_sharded):
    one, sharded = one_and_sharded
    queries = unit_rows(np.random.default_rng(5).normal(size=(25, 16)))
    for k in (1, 10, 50):
        merged, single = sharded.search(queries, k), one.searcher.search(queries, k)
        assert [[i for i, _ in row] for row in merged] == [[i for i, _ in row] for row in single]
        np.testing.assert_allclose(
            [[s for _, s in row] for row in merged], [[s for _, s in row] for row in single], atol=1e-6
        )


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"max_per_artist": 1},
        {"max_per_artist": 2, "tag_filter": TagFilter(threshold=0.9, top_n=1)},
        {"rank_by_embedding": False},
        {"tag_filter": None},
    ],
)
def test_the_sharded_recommender_returns_the_one_index_recommendations(one_and_sharded, settings):
    """Both stages, exclusions that span shards (duplicated audio under other ids, the per-artist cap)."""
    one, sharded = one_and_sharded
    single, merged = Recommender(one), Recommender(sharded)
    for track_id in ("t0003", "t0101", "t0385", "t0250"):
        for k in (5, 30):
            expected = single.recommend(single.query_for_track(track_id), k, **settings)
            got = merged.recommend(merged.query_for_track(track_id), k, **settings)
            assert [(r.rank, r.track.track_id) for r in got.recommendations] == [
                (r.rank, r.track.track_id) for r in expected.recommendations
            ], (track_id, k)
            np.testing.assert_allclose(
                [r.score for r in got.recommendations], [r.score for r in expected.recommendations], atol=1e-6
            )
            assert got.num_candidates == expected.num_candidates and got.query_tags == expected.query_tags
            assert [r.shared_tags for r in got.recommendations] == [r.shared_tags for r in expected.recommendations]


def test_save_load_update_and_delete_keep_each_track_in_its_shard(one_and_sharded, tmp_path):
    _, sharded = one_and_sharded
    directory = tmp_path / "index"
    sharded.save(str(directory))
    listing = json.loads((directory / sharded_index.SHARDS_FILENAME).read_text())
    assert listing["shards"] == [f"shard-{n:05d}-of-00004" for n in range(4)] and listing["num_tracks"] == NUM_TRACKS
    assert len(CatalogIndex.load(str(directory / listing["shards"][2]))) == len(sharded.shards[2])  # A plain index.
    with pytest.raises(IndexMismatchError, match="holds a sharded index"):
        CatalogIndex.load(str(directory))
    loaded = sharded_index.load_index(str(directory))
    assert isinstance(loaded, ShardedIndex) and len(loaded) == NUM_TRACKS

    new = [TrackRecord(f"new{i}", artist="someone") for i in range(12)]
    vectors = unit_rows(np.random.default_rng(9).normal(size=(12, 16)))
    loaded.upsert(new, vectors, np.full((12, len(VOCABULARY)), 0.5, np.float32))
    loaded.delete(["t0001", "t0002"])
    with pytest.raises(KeyError, match="not in the index: \\['ghost'\\]"):
        loaded.delete(["t0003", "ghost"])
    assert "t0003" in loaded  # Nothing was removed by the refused delete.
    loaded.save(str(directory))
    again = ShardedIndex.load(str(directory))
    assert len(again) == NUM_TRACKS + 12 - 2 and "new5" in again and "t0001" not in again
    assert all(sharded_index.shard_of(t.track_id, 4) == n for n, s in enumerate(again.shards) for t in s.tracks)
    assert again.search(again.ranking_vectors(vectors[3:4]), 1)[0][0][0] == "new3"


def test_one_catalog_mean_for_every_shard_through_updates_and_deletes():
    """Sharded equals unsharded: the whole catalog's mean in every shard, the same recommendations."""
    one, sharded = _build_one_and_sharded()  # Changed below: not the module's shared pair.
    new = [TrackRecord(f"new{i}", artist="someone") for i in range(9)]
    vectors = unit_rows(np.random.default_rng(10).normal(size=(9, 16)) + 2.0)  # Moves the mean.
    for index in (one, sharded):
        index.upsert(new, vectors, np.full((9, len(VOCABULARY)), 0.5, np.float32))
        index.delete(["t0010", "t0200", "new4"])
    expected_mean = one.model_embeddings.mean(axis=0)
    np.testing.assert_allclose(one.catalog_mean, expected_mean, atol=1e-6)
    for shard in sharded.shards:
        np.testing.assert_allclose(shard.catalog_mean, one.catalog_mean, atol=1e-9)
    single, merged = Recommender(one, None), Recommender(sharded, None)
    for track_id in ("t0003", "new2", "t0250"):
        expected = single.recommend(single.query_for_track(track_id), 10)
        got = merged.recommend(merged.query_for_track(track_id), 10)
        assert [r.track.track_id for r in got.recommendations] == [r.track.track_id for r in expected.recommendations]
        np.testing.assert_allclose(
            [r.score for r in got.recommendations], [r.score for r in expected.recommendations], atol=1e-5
        )


def test_a_damaged_listing_or_mixed_models_are_refused(one_and_sharded, tmp_path):
    one, sharded = one_and_sharded
    directory = tmp_path / "index"
    sharded.save(str(directory))
    (directory / sharded_index.SHARDS_FILENAME).write_text('{"format": "something else"}')
    with pytest.raises(IndexMismatchError, match="shards.json: not a sharded-catalog-index-1 listing"):
        ShardedIndex.load(str(directory))
    other = CatalogIndex.build(one.tracks[:10], one.embeddings[:10], None, model_ref("other"), None, kind="brute_force")
    with pytest.raises(ValueError, match="shard 1"):
        ShardedIndex([sharded.shards[0], other])
    tracks, embeddings, probabilities = _catalog_arrays()
    with pytest.raises(ValueError, match="leave shards .* empty: use fewer shards"):
        ShardedIndex.build(tracks[:3], embeddings[:3], probabilities[:3], one.embedding_models, None, num_shards=8)


def test_the_query_and_scoring_binaries_read_a_sharded_demo_index_like_the_whole_one(
    demo_index, demo_catalog, tmp_path
):
    index_dir = demo_index[0]
    whole = CatalogIndex.load(str(index_dir))
    sharded = ShardedIndex.build(
        whole.tracks,
        whole.model_embeddings,
        whole.tag_probabilities,
        whole.embedding_models,
        whole.tag_model,
        num_shards=2,
    )
    sharded.save(str(tmp_path / "sharded"))
    outputs = []
    for directory in (index_dir, tmp_path / "sharded"):
        done = run_binary(
            "serving.query", f"--index_dir={directory}", "--track_id=hyperrogue--hr3-caves", "--k=5", "--format=json"
        )
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.append(json.loads(done.stdout))
    assert [r["track_id"] for r in outputs[1]["recommendations"]] == [
        r["track_id"] for r in outputs[0]["recommendations"]
    ]
    assert [r["score"] for r in outputs[1]["recommendations"]] == pytest.approx(
        [r["score"] for r in outputs[0]["recommendations"]], abs=1e-6
    )
    assert len(outputs[0]["recommendations"]) >= 3
    for field in ("num_candidates", "notes", "query_tags"):
        assert outputs[1][field] == outputs[0][field], field
    # Scored against the soundtracks, the shards score as the whole index.
    scores = []
    for directory in (index_dir, tmp_path / "sharded"):
        done = run_binary(
            "serving.evaluate_retrieval",
            f"--index_dir={directory}",
            f"--catalog={demo_catalog}",
            f"--output_json={tmp_path / 'scores.json'}",
        )
        assert done.returncode == 0, done.stderr[-3000:]
        scores.append(json.loads((tmp_path / "scores.json").read_text())["scores"])
    assert len(scores[1]) == len(scores[0]) > 2
    for got, expected in zip(*scores, strict=True):  # Means over the queries, summed in each layout's row order.
        assert got.keys() == expected.keys() and got["configuration"] == expected["configuration"]
        figures = {k: v for k, v in expected.items() if isinstance(v, int | float)}
        assert {k: got[k] for k in figures} == pytest.approx(figures, rel=1e-9, nan_ok=True)


def test_a_new_index_is_not_written_over_one_of_another_layout(demo_index, tmp_path, job_models):
    copy = tmp_path / "index"
    shutil.copytree(demo_index[0], copy)
    with pytest.raises(ValueError, match="holds an index of 1 shard\\(s\\); building 2 there would mix layouts"):
        index_builder.build_index(str(copy), job_models, dataset_dirs=[], num_shards=2)


def test_audio_indexed_twice_in_different_shards_is_returned_once(one_and_sharded):
    """A query among tracks whose audio exists twice (t0000-t0009 and t0380-t0389, in various shards)."""
    one, sharded = one_and_sharded
    embedding = one.model_embeddings[[one.row(f"t{i:04d}") for i in range(10)]].sum(axis=0)
    query = Query(embedding=embedding, tag_probabilities=np.full(len(VOCABULARY), 0.99, np.float32))
    expected = Recommender(one).recommend(query, 10)
    got = Recommender(sharded).recommend(query, 10)
    assert len({r.track.content_sha256 for r in expected.recommendations}) == 10
    assert [r.track.track_id for r in got.recommendations] == [r.track.track_id for r in expected.recommendations]


def test_stage_1_is_skipped_only_when_no_track_of_any_shard_shares_the_query_tags():
    """Three tracks carry a rare tag: the shards without them find nothing (not the whole shard), as one index
    would; a tag no track carries skips stage 1 everywhere, saying so."""
    tracks, embeddings, probabilities = _catalog_arrays(seed=3)
    probabilities = np.minimum(probabilities, 0.9)
    rare = [5, 120, 333]
    probabilities[rare, 4] = 0.99
    models = (model_ref("ranker"), model_ref("tagger", 32))
    one = CatalogIndex.build(tracks, embeddings, probabilities, *models, kind="brute_force")
    sharded = ShardedIndex.build(
        tracks, embeddings, probabilities, one.embedding_models, models[1], num_shards=4, kind="brute_force"
    )
    assert len({sharded_index.shard_of(tracks[i].track_id, 4) for i in rare}) < 4
    query_probabilities = np.full(len(VOCABULARY), 0.1, np.float32)
    query_probabilities[4] = 0.999
    query = Query(embedding=embeddings[7], tag_probabilities=query_probabilities)
    for threshold, found in ((0.95, 3), (0.995, 5)):
        tag_filter = TagFilter(threshold=threshold, top_n=1)
        expected = Recommender(one, tag_filter).recommend(query, 5)
        got = Recommender(sharded, tag_filter).recommend(query, 5)
        assert len(expected.recommendations) == found
        assert [r.track.track_id for r in got.recommendations] == [r.track.track_id for r in expected.recommendations]
        assert got.notes == expected.notes and got.num_candidates == expected.num_candidates
