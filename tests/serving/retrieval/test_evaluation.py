"""Retrieval scores against ground-truth tags, on a catalog where they can be computed by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from serving.export.exported_model import ModelRef
from serving.retrieval import evaluation
from serving.retrieval.catalog_index import CatalogIndex, TrackRecord
from serving.retrieval.recommender import TagFilter
from tests.binaries import run_binary


def _ref(name, dim, vocabulary=("x", "y")):
    return ModelRef(name, 1, f"/e/{name}/1", "c", name, vocabulary, dim, "fp", 16000)


def test_scores_on_a_hand_computed_catalog():
    # Two soundtracks of three tracks: a1..a3 point one way, b1..b3 the other, except that b3 sits among
    # the a's. Tag model: a's say x, b's say y, b3 says y.
    ids = ["a1", "a2", "a3", "b1", "b2", "b3"]
    embeddings = np.array(
        [[1, 0.1, 0], [1, 0, 0.1], [1, 0.05, 0.05], [0, 1, 0.1], [0, 1, -0.1], [1, 0.02, -0.02]], np.float32
    )
    probabilities = np.array([[0.9, 0.1]] * 3 + [[0.1, 0.9]] * 3, np.float32)
    tracks = [TrackRecord(i, artist=i) for i in ids]
    catalog = CatalogIndex.build(tracks, embeddings, probabilities, _ref("e", 3), _ref("t", 3))
    truth = {i: {i[0]} for i in ids}
    scores = {s.configuration: s for s in evaluation.evaluate(catalog, truth, k=2, tag_filter=TagFilter(0.5, 1))}
    # Two stages: the tag filter keeps each track's own soundtrack (b3 says y like b1, b2), so every
    # query finds its 2 mates: P@2 = R@2 = MAP@2 = 1.
    assert scores["two stages"].precision == pytest.approx(1.0)
    assert scores["two stages"].average_precision == pytest.approx(1.0)
    # Embeddings only: b3 sits among the a's, so it takes a place in their top 2 and finds no mate
    # itself. The expected precision is recomputed here by brute force, one query at a time, on the
    # vectors as the index compares them: unit, minus the catalog's mean unit vector.
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    centred = unit - unit.mean(axis=0)
    expected_precision = []
    for q in range(6):
        others = [o for o in range(6) if o != q]
        cosines = [
            float(centred[q] @ centred[o] / np.linalg.norm(centred[q]) / np.linalg.norm(centred[o])) for o in others
        ]
        top = [others[i] for i in np.argsort(cosines)[::-1][:2]]
        expected_precision.append(sum(ids[o][0] == ids[q][0] for o in top) / 2)
    assert scores["embeddings only"].precision == pytest.approx(np.mean(expected_precision))
    assert scores["embeddings only"].precision < 1.0
    # Chance: each query has 2 relevant tracks among 5 others.
    assert scores["random (expected)"].precision == pytest.approx(2 / 5)
    assert scores["random (expected)"].num_queries == 6
    # The same vectors scored without an index (as the MFCC baseline is) give the same figures.
    direct = evaluation.evaluate_embeddings("direct", ids, centred, truth, k=2)
    assert direct.precision == pytest.approx(scores["embeddings only"].precision)
    assert direct.average_precision == pytest.approx(scores["embeddings only"].average_precision)
    assert direct.num_queries == 6


def test_embedding_scores_skip_tracks_without_truth_and_count_duplicated_tags():
    ids = ["a1", "a2", "b1", "x"]
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1], [1, 0.01]], np.float32)
    truth = {"a1": {"a", "both"}, "a2": {"a"}, "b1": {"both"}}  # x has no ground truth: never queried nor relevant.
    score = evaluation.evaluate_embeddings("v", ids, vectors, truth, k=1)
    # a1 -> a2 (relevant), a2 -> a1 (relevant), b1 -> nearest of a1/a2 is a2 ([0.9, 0.1]) which shares nothing.
    assert score.num_queries == 3
    assert score.precision == pytest.approx(2 / 3)


def test_binary_prints_and_writes_the_scores(tmp_path, demo_index, demo_catalog):
    output = tmp_path / "scores.json"
    done = run_binary(
        "serving.evaluate_retrieval",
        f"--index_dir={demo_index[0]}",
        f"--catalog={demo_catalog}",
        "--k=3",
        "--tag_threshold=0.0",
        "--mfcc_baseline",
        f"--output_json={output}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "16 indexed tracks; 0 without ground-truth tags" in done.stdout
    scores = {s["configuration"]: s for s in json.loads(output.read_text())["scores"]}
    assert set(scores) == {
        "short_chunk_res (+ crnn tags to explain): default",
        "crnn tags + short_chunk_res: two stages",
        "short_chunk_res: embeddings only",
        "crnn tags: tags only",
        "MFCC-20+delta mean/std: embeddings only",
        "random (expected)",
    }
    mfcc = scores["MFCC-20+delta mean/std: embeddings only"]
    assert mfcc["num_queries"] == 16 and mfcc["precision"] > 3 / 15  # Same-soundtrack MFCCs beat chance.
    ratio = scores["short_chunk_res: embeddings only"]["precision"] / mfcc["precision"]
    assert f"{ratio:.2f}x" in done.stdout
    # The demo has 4 soundtracks of 4 tracks: 3 relevant among 15 others for every query.
    assert scores["random (expected)"]["precision"] == pytest.approx(3 / 15)
    assert all(0.0 <= s["precision"] <= 1.0 and s["num_queries"] == 16 for s in scores.values())


def test_album_intervals_resample_whole_albums():
    group_of = {f"{album}{i}": album for album in "abcd" for i in range(5)}
    values = {query: float(query[0] in "ab") for query in group_of}  # Albums a and b always right, c and d never.
    low, high = evaluation.album_interval(values, group_of)
    assert low < 0.5 < high and 0.0 <= low and high <= 1.0
    assert evaluation.album_interval(values, group_of) == (low, high)  # Seeded.
    # Within one album the queries vary, but an album is one draw: resampling albums cannot move the mean.
    one_album = {query: float(query[-1] in "01") for query in group_of if query[0] == "a"}
    assert evaluation.album_interval(one_album, group_of) == pytest.approx((0.4, 0.4))


def test_a_paired_difference_is_taken_query_by_query():
    group_of = {f"{album}{i}": album for album in "abcdef" for i in range(4)}
    base = {query: 0.2 * (i % 5) for i, query in enumerate(sorted(group_of))}
    better = {query: value + 0.2 for query, value in base.items()}

    def scores(name, precisions):
        return evaluation.RetrievalScores(name, float(np.mean(list(precisions.values()))), 0, 0, 5, 24, precisions)

    mean, low, high = evaluation.paired_difference(scores("better", better), scores("base", base), group_of)
    assert mean == pytest.approx(0.2) and low == pytest.approx(0.2) and high == pytest.approx(0.2)
    mean, low, high = evaluation.paired_difference(scores("same", base), scores("base", base), group_of)
    assert (mean, low, high) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="different queries"):
        evaluation.paired_difference(scores("fewer", dict(list(base.items())[:5])), scores("base", base), group_of)


def test_a_catalog_without_truth_for_the_index_is_named(tmp_path, demo_index):
    other = tmp_path / "other.csv"
    other.write_text("track_id,path,tags\nnot-indexed-1,a.mp3,x\nnot-indexed-2,b.mp3,x\n")
    done = run_binary("serving.evaluate_retrieval", f"--index_dir={demo_index[0]}", f"--catalog={other}")
    assert done.returncode == 1 and "nan" not in done.stdout.lower()
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: {demo_index[0]}: none of its 16 tracks has ground-truth tags in {other} (no track id in common, "
        "or no tags): nothing to score"
    )


def test_an_output_json_that_cannot_be_written_is_named(demo_index, demo_catalog):
    done = run_binary(
        "serving.evaluate_retrieval",
        f"--index_dir={demo_index[0]}",
        f"--catalog={demo_catalog}",
        "--output_json=/nonexistent/scores.json",
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "error: --output_json=/nonexistent/scores.json: no folder /nonexistent to write it in"
    )
