"""Two-stage recommendations on a constructed catalog where the right answers are known.

The expected results come from a plain restatement of the rules (Python sets
and sorted lists, one track at a time), independent of the recommender's
vectorised code. The catalog's rows are deliberately not in id order, and the
tracks that pass the tag filter sit at other positions in the filtered list
than in the catalog: the research system's bug (indices of a filtered list
applied to the full catalog) would show as ids, scores and metadata that do
not belong together.
"""

from __future__ import annotations

import concurrent.futures

import numpy as np
import pytest

from serving.retrieval.catalog_index import CatalogIndex, TrackRecord
from serving.retrieval.recommender import Query, QueryExpansion, Recommender, TagFilter
from tests.serving.retrieval.synthetic_index import DIM, VOCABULARY, model_ref, unit_rows


def _catalog(num_tracks=60, seed=0, kind="brute_force", **build_kwargs):
    rng = np.random.default_rng(seed)
    order = rng.permutation(num_tracks)  # Rows not in id order.
    tracks = [
        TrackRecord(
            track_id=f"t{i:03d}",
            artist=f"artist{i % 7}",
            title=f"title {i}",
            album=f"album {i % 5}",
            path=f"audio/{i}.mp3",
            duration_s=30.0,
            content_sha256=f"hash{i}",
        )
        for i in order
    ]
    embeddings = unit_rows(rng.normal(size=(num_tracks, DIM)))
    probabilities = rng.uniform(0.0, 1.0, size=(num_tracks, len(VOCABULARY))).astype(np.float32)
    catalog = CatalogIndex.build(
        tracks, embeddings, probabilities, model_ref("ranker"), model_ref("tagger", 32), kind=kind, **build_kwargs
    )
    return catalog


def _tag_set(probabilities, threshold, top_n) -> set[str]:
    """The rule, restated: the top_n most probable tags that reach the threshold."""
    ranked = sorted(range(len(VOCABULARY)), key=lambda i: (-float(probabilities[i]), i))[:top_n]
    return {VOCABULARY[i] for i in ranked if float(probabilities[i]) >= threshold}


def _compared(catalog, query: Query) -> np.ndarray:
    """The query's embedding as the index compares it (centred on the catalog mean: `test_catalog_index`)."""
    return catalog.ranking_vectors(np.asarray(query.embedding)[np.newaxis])[0]


def _expected(catalog, query: Query, k, threshold, top_n, max_per_artist=None) -> list[str]:
    query_tags = _tag_set(query.tag_probabilities, threshold, top_n)
    others = [
        row
        for row, track in enumerate(catalog.tracks)
        if track.track_id != query.track_id and track.content_sha256 != query.content_sha256
    ]
    if not any(query_tags & _tag_set(catalog.tag_probabilities[row], threshold, top_n) for row in others):
        query_tags = set()  # No candidate shares a tag: stage 1 is skipped.
    scored = []
    for row, track in enumerate(catalog.tracks):
        if track.track_id == query.track_id or track.content_sha256 == query.content_sha256:
            continue
        if query_tags and not query_tags & _tag_set(catalog.tag_probabilities[row], threshold, top_n):
            continue
        score = float(np.dot(catalog.embeddings[row], _compared(catalog, query)))
        scored.append((-score, track.track_id, track.artist))
    results, per_artist = [], {}
    for _, track_id, artist in sorted(scored):
        if max_per_artist is not None and per_artist.get(artist, 0) >= max_per_artist:
            continue
        per_artist[artist] = per_artist.get(artist, 0) + 1
        results.append(track_id)
    return results[:k]


def _check_consistent(catalog, query: Query, result, tag_filter: TagFilter | None):
    """Every result's metadata, score and shared tags belong to its track id."""
    query_tags = _tag_set(query.tag_probabilities, tag_filter.threshold, tag_filter.top_n) if tag_filter else set()
    for rank, recommendation in enumerate(result.recommendations, start=1):
        track_id = recommendation.track.track_id
        row = [t.track_id for t in catalog.tracks].index(track_id)
        assert recommendation.rank == rank
        assert recommendation.track == catalog.tracks[row]
        assert recommendation.score == pytest.approx(
            float(catalog.embeddings[row] @ _compared(catalog, query)), abs=1e-5
        )
        track_tags = (
            _tag_set(catalog.tag_probabilities[row], tag_filter.threshold, tag_filter.top_n) if tag_filter else set()
        )
        assert {t.tag for t in recommendation.shared_tags} == (query_tags & track_tags)
        for shared in recommendation.shared_tags:
            i = VOCABULARY.index(shared.tag)
            assert shared.track_probability == pytest.approx(float(catalog.tag_probabilities[row, i]))
            assert shared.query_probability == pytest.approx(float(query.tag_probabilities[i]))
    scores = [r.score for r in result.recommendations]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize(("threshold", "top_n", "k"), [(0.5, 3, 5), (0.7, 1, 10), (0.3, 5, 3), (0.9, 2, 8)])
def test_two_stage_results_match_the_rules_and_belong_together(threshold, top_n, k):
    catalog = _catalog()
    tag_filter = TagFilter(threshold, top_n)
    recommender = Recommender(catalog, tag_filter, expansion=None)  # The rules restated below rank by the query alone.
    for track in catalog.tracks[:12]:
        query = recommender.query_for_track(track.track_id)
        result = recommender.recommend(query, k)
        assert [r.track.track_id for r in result.recommendations] == _expected(catalog, query, k, threshold, top_n)
        assert track.track_id not in {r.track.track_id for r in result.recommendations}
        _check_consistent(catalog, query, result, tag_filter)


def test_filtered_positions_differ_from_catalog_rows():
    """Guards the test's own premise: filtering moves tracks to other positions."""
    catalog = _catalog()
    recommender = Recommender(
        catalog, TagFilter(0.7, 1), expansion=None
    )  # The rules restated below rank by the query alone.
    query = recommender.query_for_track(catalog.tracks[0].track_id)
    result = recommender.recommend(query, 5)
    rows = [[t.track_id for t in catalog.tracks].index(r.track.track_id) for r in result.recommendations]
    assert result.num_candidates < len(catalog) - 1
    assert any(row != position for position, row in enumerate(rows))


def test_a_new_audio_query_uses_its_own_tags_and_embedding():
    catalog = _catalog()
    recommender = Recommender(
        catalog, TagFilter(0.5, 2), expansion=None
    )  # The rules restated below rank by the query alone.
    rng = np.random.default_rng(42)
    query = Query(embedding=rng.normal(size=DIM), tag_probabilities=np.array([0.9, 0.1, 0.6, 0.2, 0.3], np.float32))
    result = recommender.recommend(query, 6)
    assert [r.track.track_id for r in result.recommendations] == _expected(catalog, query, 6, 0.5, 2)
    assert [t for t, _ in result.query_tags] == ["rock", "ambient"]
    _check_consistent(catalog, query, result, TagFilter(0.5, 2))


@pytest.mark.parametrize("num", [200, 6000])  # Found by widening the search / by the exact pass past its limit.
def test_over_fetch_finds_candidates_far_from_the_query(num):
    """The query's nearest neighbours all fail the tag filter; the few candidates are far away."""
    rng = np.random.default_rng(1)
    query_direction = unit_rows(rng.normal(size=DIM))
    embeddings = unit_rows(query_direction + 0.3 * rng.normal(size=(num, DIM)))  # All close to the query...
    far = [17, 99, 150]
    embeddings[far] = unit_rows(-query_direction + 0.3 * rng.normal(size=(3, DIM)))  # ...except three.
    probabilities = np.full((num, len(VOCABULARY)), 0.05, np.float32)
    probabilities[:, 0] = 0.9  # Everyone is rock...
    probabilities[far, 0] = 0.05
    probabilities[far, 4] = 0.95  # ...but the far three are folk, like the query.
    tracks = [TrackRecord(f"x{i}", artist=f"a{i}", content_sha256=f"h{i}") for i in range(num)]
    catalog = CatalogIndex.build(tracks, embeddings, probabilities, model_ref("ranker"), model_ref("tagger", 32))
    query = Query(query_direction, np.array([0.05, 0.05, 0.05, 0.05, 0.97], np.float32))
    result = Recommender(catalog, TagFilter(0.5, 1)).recommend(query, k=5)
    assert sorted(r.track.track_id for r in result.recommendations) == sorted(f"x{i}" for i in far)
    assert result.num_candidates == 3
    assert any("found 3 of the 5" in note for note in result.notes)


def test_an_approximate_index_still_returns_every_candidate():
    """A tree index searching one leaf misses far tracks; the exact fallback finds them."""
    num = 3000
    rng = np.random.default_rng(2)
    embeddings = unit_rows(rng.normal(size=(num, DIM)))
    probabilities = np.full((num, len(VOCABULARY)), 0.05, np.float32)
    probabilities[:, 1] = 0.9
    candidates = rng.choice(num, 8, replace=False)
    probabilities[candidates, 1] = 0.05
    probabilities[candidates, 3] = 0.9
    tracks = [TrackRecord(f"y{i}", content_sha256=f"h{i}") for i in range(num)]
    catalog = CatalogIndex.build(
        tracks,
        embeddings,
        probabilities,
        model_ref("ranker"),
        model_ref("tagger", 32),
        kind="tree_ah",
        leaves_searched_fraction=0.0,
    )
    assert catalog.searcher.info.kind == "tree_ah" and catalog.searcher.info.leaves_to_search == 1
    query = Query(embeddings[0], np.array([0.0, 0.0, 0.0, 0.99, 0.0], np.float32))
    result = Recommender(catalog, TagFilter(0.5, 1), expansion=None).recommend(query, k=5)
    scores = catalog.embeddings[candidates] @ catalog.embeddings[0]  # As the index compares them (centred).
    expected = [f"y{i}" for i in candidates[np.argsort(-scores)][:5]]
    assert [r.track.track_id for r in result.recommendations] == expected


def test_the_query_and_exact_duplicates_are_excluded():
    catalog = _catalog(num_tracks=30)
    base = catalog.tracks[0]
    row = catalog.row(base.track_id)
    # A re-upload of the same file: same content hash, other id.
    same_file = TrackRecord("dup-file", artist="someone", content_sha256=base.content_sha256)
    # The same audio under another hash: identical embedding.
    same_audio = TrackRecord("dup-audio", artist="someone else", content_sha256="other")
    # Two copies of another track, both close to the query: only one may appear.
    close = unit_rows(catalog.model_embeddings[row] + 0.05 * np.random.default_rng(3).normal(size=DIM))
    twins = [
        TrackRecord("twin-a", artist="x", content_sha256="twin"),
        TrackRecord("twin-b", artist="y", content_sha256="twin"),
    ]
    # The same audio under two more hashes (e.g. two encodings), a little further away: only one may appear.
    further = unit_rows(catalog.model_embeddings[row] + 0.2 * np.random.default_rng(4).normal(size=DIM))
    encodings = [
        TrackRecord("enc-a", artist="p", content_sha256="e1"),
        TrackRecord("enc-b", artist="q", content_sha256="e2"),
    ]
    extra = [same_file, same_audio, *twins, *encodings]
    embeddings = np.stack(
        [catalog.model_embeddings[row], catalog.model_embeddings[row], close, close, further, further]
    )
    probabilities = np.repeat(catalog.tag_probabilities[row][np.newaxis], 6, axis=0)
    catalog.upsert(extra, embeddings, probabilities)
    recommender = Recommender(catalog, None)
    result = recommender.recommend(recommender.query_for_track(base.track_id), k=10)
    ids = [r.track.track_id for r in result.recommendations]
    assert base.track_id not in ids and "dup-file" not in ids and "dup-audio" not in ids
    assert ids[0] in ("twin-a", "twin-b") and len({"twin-a", "twin-b"} & set(ids)) == 1
    assert len({"enc-a", "enc-b"} & set(ids)) == 1
    # A query from audio (no track id) with the same bytes as a catalog track.
    from_audio = Query(catalog.model_embeddings[row] * 2.0, content_sha256=base.content_sha256)
    ids = [r.track.track_id for r in recommender.recommend(from_audio, k=10).recommendations]
    assert base.track_id not in ids and "dup-file" not in ids and "dup-audio" not in ids
    # The content hash alone excludes: the same bytes embedded otherwise (another model version, TF Serving's
    # numerics) are still the query's file.
    elsewhere = Query(further * 2.0, content_sha256=base.content_sha256)
    result = recommender.recommend(elsewhere, k=10)
    ids = [r.track.track_id for r in result.recommendations]
    assert base.track_id not in ids and "dup-file" not in ids
    # Both files with the query's bytes leave the candidates, whichever copy of that audio the ranking meets first.
    assert result.num_candidates == len(catalog) - 2


def test_at_most_m_results_per_artist():
    catalog = _catalog()
    recommender = Recommender(catalog, TagFilter(0.3, 5), expansion=None)  # As `_expected` ranks.
    query = recommender.query_for_track(catalog.tracks[5].track_id)
    result = recommender.recommend(query, k=10, max_per_artist=1)
    artists = [r.track.artist for r in result.recommendations]
    assert len(artists) == len(set(artists))
    assert [r.track.track_id for r in result.recommendations] == _expected(catalog, query, 10, 0.3, 5, max_per_artist=1)


def test_stages_can_be_switched_off():
    catalog = _catalog()
    recommender = Recommender(catalog, TagFilter(0.5, 3), expansion=None)
    query = recommender.query_for_track(catalog.tracks[3].track_id)
    # Stage 1 off: exactly the nearest tracks by cosine (as the index compares them).
    unfiltered = recommender.recommend(query, 8, tag_filter=None)
    scores = catalog.embeddings @ _compared(catalog, query)
    nearest = [catalog.tracks[i].track_id for i in np.argsort(-scores) if catalog.tracks[i].track_id != query.track_id]
    assert [r.track.track_id for r in unfiltered.recommendations] == nearest[:8]
    # The tags still explain each answer: those it shares with the query, under the default tag sets (0.5, 3).
    assert unfiltered.query_tags and all(p >= 0.5 for _, p in unfiltered.query_tags)
    for r in unfiltered.recommendations:
        row = catalog.row(r.track.track_id)
        shared = _tag_set(query.tag_probabilities, 0.5, 3) & _tag_set(catalog.tag_probabilities[row], 0.5, 3)
        assert {t.tag for t in r.shared_tags} == shared
    # Stage 2 off: candidates ranked by the cosine of their tag probabilities.
    by_tags = recommender.recommend(query, 8, rank_by_embedding=False)
    query_tags = _tag_set(query.tag_probabilities, 0.5, 3)
    expected = []
    for row, track in enumerate(catalog.tracks):
        if track.track_id == query.track_id or not query_tags & _tag_set(catalog.tag_probabilities[row], 0.5, 3):
            continue
        p, q = catalog.tag_probabilities[row], query.tag_probabilities
        expected.append((-float(p @ q / np.linalg.norm(p) / np.linalg.norm(q)), track.track_id))
    assert [r.track.track_id for r in by_tags.recommendations] == [t for _, t in sorted(expected)[:8]]
    # Both off: every track ranked by its tag probabilities.
    everyone = recommender.recommend(query, len(catalog), tag_filter=None, rank_by_embedding=False)
    assert len(everyone.recommendations) == len(catalog) - 1


def test_a_query_without_confident_tags_skips_stage_one_and_says_so():
    catalog = _catalog()
    recommender = Recommender(catalog, TagFilter(0.8, 3))
    query = Query(catalog.embeddings[0], np.full(len(VOCABULARY), 0.2, np.float32))
    result = recommender.recommend(query, 5)
    assert result.query_tags == () and len(result.recommendations) == 5
    assert any("stage 1 skipped" in note and "0.8" in note for note in result.notes)


def test_a_tag_set_no_catalog_track_shares_skips_stage_one_and_says_so():
    catalog = _catalog()
    probabilities = catalog.tag_probabilities.copy()
    probabilities[:, VOCABULARY.index("folk")] = 0.1  # Nobody in the catalog is folk...
    catalog = CatalogIndex.build(
        catalog.tracks, catalog.embeddings, probabilities, model_ref("ranker"), model_ref("tagger", 32)
    )
    recommender = Recommender(catalog, TagFilter(0.5, 1), expansion=None)  # As `_expected` ranks.
    query = Query(unit_rows(np.ones(DIM)), np.array([0.1, 0.1, 0.1, 0.1, 0.9], np.float32))  # ...but the query is.
    result = recommender.recommend(query, 5)
    assert result.query_tags == (("folk", pytest.approx(0.9)),) and result.num_candidates == len(catalog)
    assert [r.track.track_id for r in result.recommendations] == _expected(catalog, query, 5, 0.5, 1)
    assert any("no catalog track shares the query's tag set (folk 0.90)" in note for note in result.notes)
    assert all(r.shared_tags == () for r in result.recommendations)


def test_tag_sets_use_threshold_and_top_n_not_float_equality():
    probabilities = np.array(
        [
            [0.5, 0.49999, 0.9, 0.1, 0.7],  # Threshold 0.5 is inclusive; top 3 of those above it.
            [0.1, 0.2, 0.3, 0.4, 0.45],  # None reaches 0.5.
            [0.6, 0.6, 0.6, 0.6, 0.6],  # Ties: the first top_n in vocabulary order.
        ],
        np.float32,
    )
    members = TagFilter(0.5, 3).tag_sets(probabilities)
    assert members.tolist() == [
        [True, False, True, False, True],
        [False, False, False, False, False],
        [True, True, True, False, False],
    ]
    assert TagFilter(0.5, 1).tag_sets(probabilities)[0].tolist() == [False, False, True, False, False]
    with pytest.raises(ValueError, match="threshold"):
        TagFilter(1.5, 3)
    with pytest.raises(ValueError, match="top_n"):
        TagFilter(0.5, 0)


def test_bad_requests_are_refused():
    catalog = _catalog(num_tracks=10)
    recommender = Recommender(catalog)
    query = recommender.query_for_track(catalog.tracks[0].track_id)
    with pytest.raises(ValueError, match="k must be"):
        recommender.recommend(query, 0)
    with pytest.raises(ValueError, match="max_per_artist"):
        recommender.recommend(query, 3, max_per_artist=0)
    with pytest.raises(KeyError, match="unknown track id 'nope'"):
        recommender.query_for_track("nope")


def test_concurrent_calls_with_different_filters_agree_with_sequential_ones():
    catalog = _catalog()
    recommender = Recommender(catalog)
    filters = [TagFilter(0.3, 5), TagFilter(0.5, 3), TagFilter(0.7, 1), TagFilter(0.9, 2)]
    queries = [recommender.query_for_track(t.track_id) for t in catalog.tracks[:10]]
    jobs = [(q, f) for q in queries for f in filters] * 5

    def run(job):
        query, tag_filter = job
        return [
            (r.track.track_id, r.shared_tags)
            for r in recommender.recommend(query, 5, tag_filter=tag_filter).recommendations
        ]

    expected = [run(job) for job in jobs]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert list(pool.map(run, jobs)) == expected


def test_a_query_that_is_not_finite_is_refused():
    catalog = _catalog(num_tracks=10)
    recommender = Recommender(catalog)
    with pytest.raises(ValueError, match="embedding is zero or not finite"):
        recommender.recommend(Query(np.zeros(DIM), np.full(len(VOCABULARY), 0.5)), 3)
    with pytest.raises(ValueError, match="embedding is zero or not finite"):
        recommender.recommend(Query(np.full(DIM, np.nan), np.full(len(VOCABULARY), 0.5)), 3)
    with pytest.raises(ValueError, match="tag probabilities are not finite"):
        recommender.recommend(Query(np.ones(DIM), np.array([0.5, np.nan, 0.1, 0.1, 0.1])), 3)


def test_the_default_answer_ranks_the_whole_catalog_by_the_expanded_query_and_explains_with_tags():
    """Stage 1 off, the query expanded with its 3 nearest tracks weighted by cosine cubed, tags shown."""
    catalog = _catalog()
    recommender = Recommender(catalog)
    track = catalog.tracks[7]
    query = recommender.query_for_track(track.track_id)
    result = recommender.recommend(query, 6)
    query_vector = _compared(catalog, query)
    cosines = catalog.embeddings @ query_vector
    others = [row for row in np.argsort(-cosines, kind="stable") if catalog.tracks[row].track_id != track.track_id]
    expanded = query_vector + sum(max(cosines[row], 0.0) ** 3 * catalog.embeddings[row] for row in others[:3])
    scores = catalog.embeddings @ (expanded / np.linalg.norm(expanded))
    expected = [row for row in np.argsort(-scores, kind="stable") if row != catalog.row(track.track_id)][:6]
    assert [r.track.track_id for r in result.recommendations] == [catalog.tracks[row].track_id for row in expected]
    np.testing.assert_allclose([r.score for r in result.recommendations], scores[expected], atol=1e-5)
    assert result.num_candidates == len(catalog) - 1  # No tag filter.
    assert result.query_tags == tuple(
        (tag, pytest.approx(float(query.tag_probabilities[VOCABULARY.index(tag)])))
        for tag in VOCABULARY
        if tag in _tag_set(query.tag_probabilities, 0.5, 3)
    )
    plain = recommender.recommend(query, 6, expansion=None)
    assert [r.track.track_id for r in plain.recommendations] == [catalog.tracks[row].track_id for row in others[:6]]
    with pytest.raises(ValueError, match="neighbours must be >= 0"):
        QueryExpansion(neighbours=-1)
