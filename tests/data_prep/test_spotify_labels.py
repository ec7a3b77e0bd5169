"""The Spotify label derivation against a hand-computed table."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from data_prep.spotify import labels

# Twelve training tracks. With n = 12, numpy's default (linear) percentile puts
# the 75th percentile at sorted position 0.75 * 11 = 8.25, i.e.
# x[8] + 0.25 * (x[9] - x[8]), and the median at (x[5] + x[6]) / 2. A column
# binarised with `value > threshold` that has k ones has standard deviation
# sqrt(p (1 - p)) with p = k / 12: k=6 -> 0.5, k=7 -> 0.4930, k=4 -> 0.4714,
# k=3 -> 0.4330, k=2 -> 0.3727, k=1 or 11 -> 0.2764, k=0 -> 0 (constant).
TABLE = {
    # 0.05, 0.10, ..., 0.60: mean = median = 0.325 (6 ones, 0.5);
    # p75 = 0.45 + 0.25 * 0.05 = 0.4625 (0.5, 0.55, 0.6: 3 ones, 0.433). p75 wins.
    "danceability": [round(0.05 * i, 2) for i in range(1, 13)],
    # 0.10 ... 0.20 and 0.95: mean = (11 * 0.15 + 0.95) / 12 = 2.6 / 12 = 0.21667 (1 one, 0.276);
    # median = (0.15 + 0.16) / 2 = 0.155 (6 ones); p75 = 0.18 + 0.25 * 0.01 = 0.1825 (3 ones). Mean wins.
    "energy": [round(0.10 + 0.01 * i, 2) for i in range(11)] + [0.95],
    # median = (-6 + -6) / 2 = -6 and p75 = -6 + 0.25 * 0 = -6: 2 ones (-5, -4), 0.373 each, a tie that
    # goes to the median (listed first); mean = -119 / 12 = -9.9167 (7 ones, 0.493).
    "loudness": [-20.0, -18.0, -16.0, -14.0, -12.0, -6.0, -6.0, -6.0, -6.0, -6.0, -5.0, -4.0],
    # median = p75 = 0.9 make constant columns (0 ones) and are passed over;
    # mean = (0.6 + 9 * 0.9) / 12 = 8.7 / 12 = 0.725 (9 ones, 0.433) wins.
    "acousticness": [0.1, 0.2, 0.3] + [0.9] * 9,
    # mean = (0.006 + 2.2) / 12 = 0.183833 (3 ones, 0.433); median = 0.0005 (6 ones);
    # p75 = 0.003 + 0.25 * 0.497 = 0.12725 (3 ones, 0.433): a tie that goes to the mean.
    "instrumentalness": [0.0] * 6 + [0.001, 0.002, 0.003, 0.5, 0.8, 0.9],
    # mean = 1.93 / 12 = 0.160833 (4 ones, 0.471); median = 0.105 (6 ones);
    # p75 = 0.2 + 0.25 * 0.1 = 0.225 (3 ones, 0.433) wins.
    "liveness": [0.05, 0.06, 0.07, 0.08, 0.09, 0.1, 0.11, 0.12, 0.2, 0.3, 0.35, 0.4],
    # 0.05 and 0.80 ... 0.90: mean = (0.05 + 11 * 0.85) / 12 = 0.78333 (11 ones, 0.276) wins;
    # median = 0.845 (6 ones); p75 = 0.87 + 0.25 * 0.01 = 0.8725 (3 ones).
    "valence": [0.05] + [round(0.80 + 0.01 * i, 2) for i in range(11)],
    # Sum 1432, mean 119.3333; squared deviations sum to 29010.667, population
    # std = sqrt(29010.667 / 12) = 49.1686, so the inliers lie within
    # [119.3333 - 98.3373, 119.3333 + 98.3373] = [20.996, 217.671]: 250 is an outlier.
    # The 11 inliers go into 9 clusters: 2 merges of neighbours, the cheapest being
    # (60, 61) and (129, 130), each costing 1^2 / 2 = 0.5 (the next, (95, 97), costs 2).
    # Centres: 60.5, 80, 95, 97, 110, 120, 129.5, 140, 160.
    "tempo": [60.0, 61.0, 80.0, 95.0, 97.0, 110.0, 120.0, 129.0, 130.0, 140.0, 160.0, 250.0],
    "mode": [1, 0] * 6,
    "key": list(range(12)),
    "time_signature": [4, 3, 4, 5, 1, 4, 7, 4, 3, 4, 4, 0],
}
EXPECTED_THRESHOLDS = {
    "danceability": ("p75", 0.4625),
    "energy": ("mean", 2.6 / 12),
    "loudness": ("median", -6.0),
    "acousticness": ("mean", 0.725),
    "instrumentalness": ("mean", 2.206 / 12),
    "liveness": ("p75", 0.225),
    "valence": ("mean", 9.4 / 12),
}
EXPECTED_CENTRES = (60.5, 80.0, 95.0, 97.0, 110.0, 120.0, 129.5, 140.0, 160.0)


def _rows():
    return [{name: values[i] for name, values in TABLE.items()} for i in range(12)]


def test_thresholds_match_the_hand_computed_table():
    labeler = labels.derive_feature_labeler(_rows())
    chosen = {t.feature: (t.statistic, t.value) for t in labeler.thresholds}
    assert set(chosen) == set(EXPECTED_THRESHOLDS)
    for feature, (statistic, value) in EXPECTED_THRESHOLDS.items():
        assert chosen[feature][0] == statistic, feature
        assert chosen[feature][1] == pytest.approx(value, abs=1e-9), feature
    loudness = next(t for t in labeler.thresholds if t.feature == "loudness")
    assert loudness.candidates == pytest.approx({"mean": -119 / 12, "median": -6.0, "p75": -6.0})
    assert loudness.stds == pytest.approx({"mean": (35**0.5) / 12, "median": (5**0.5) / 6, "p75": (5**0.5) / 6})
    acousticness = next(t for t in labeler.thresholds if t.feature == "acousticness")
    assert acousticness.stds["median"] == acousticness.stds["p75"] == 0.0


def test_tempo_bins_match_the_hand_computed_table():
    tempo = labels.derive_tempo_bins(TABLE["tempo"])
    assert tempo.mean == pytest.approx(1432 / 12)
    assert tempo.std == pytest.approx(49.1686, abs=1e-4)
    assert tempo.inlier_range == pytest.approx((20.996, 217.671), abs=1e-3)
    assert (tempo.num_tempi, tempo.num_outliers) == (12, 1)
    assert tempo.centres == pytest.approx(EXPECTED_CENTRES)
    # tempo_k covers [c(k+1), c(k+2)): edges c2 ... c8, outer bins open-ended.
    assert tempo.edges == pytest.approx((80.0, 95.0, 97.0, 110.0, 120.0, 129.5, 140.0))
    cases = {10.0: 0, 79.99: 0, 80.0: 1, 96.0: 2, 97.0: 3, 129.49: 5, 129.5: 6, 159.0: 7, 250.0: 7, 0.0: None}
    for value, expected in cases.items():
        assert tempo.bin(value) == expected, value
    assert tempo.bin(None) is None


def test_tags_of_tracks():
    labeler = labels.derive_feature_labeler(_rows())
    assert len(labeler.tags) == 32 and len(set(labeler.tags)) == 32
    rows = _rows()
    # Row 11: danceability 0.6 > 0.4625, energy 0.95 > 0.2167, loudness -4 > -6, mode 0, acousticness
    # 0.9 > 0.725, instrumentalness 0.9 > 0.1838, liveness 0.4 > 0.225, valence 0.9 > 0.7833,
    # tempo 250 (outlier) in the top bin, key 11 = B, time signature 0: none.
    assert labeler.tags_for(rows[11]) == (
        "danceability_high",
        "energy_high",
        "loudness_high",
        "acousticness_high",
        "instrumentalness_high",
        "liveness_high",
        "valence_high",
        "tempo_7",
        "key_B",
    )
    # Row 0: everything low, mode 1, tempo 60 below c2 = 80, key 0 = C, 4/4.
    assert labeler.tags_for(rows[0]) == ("mode_major", "tempo_0", "key_C", "time_signature_4")
    # Row 6: danceability 0.35, loudness -6 (not above -6), acousticness 0.9 > 0.725, instrumentalness
    # 0.001, liveness 0.11, valence 0.85 > 0.7833, mode 1, key 6 = Gb, 7/4 has no tag; missing values
    # (energy, tempo) give no tag.
    assert labeler.tags_for({**rows[6], "energy": None, "tempo": None}) == (
        "mode_major",
        "acousticness_high",
        "valence_high",
        "key_Gb",
    )
    assert labeler.tags_for({"key": -1, "time_signature": 3}) == ("time_signature_3",)


def test_labeler_round_trips_through_json():
    labeler = labels.derive_feature_labeler(_rows())
    restored = labels.FeatureLabeler.from_dict(json.loads(json.dumps(labeler.to_dict())))
    for row in _rows():
        assert restored.tags_for(row) == labeler.tags_for(row)
    bins = labeler.to_dict()["tempo"]["bins"]
    assert bins[0] == {"tag": "tempo_0", "min": None, "max": 80.0}
    assert bins[7] == {"tag": "tempo_7", "min": 140.0, "max": None}


def test_too_few_distinct_tempi_is_a_clear_error():
    rows = [{**row, "tempo": 100.0 + (i % 8)} for i, row in enumerate(_rows())]
    with pytest.raises(labels.LabelError, match="at least 9 distinct tempi"):
        labels.derive_feature_labeler(rows)
    with pytest.raises(labels.LabelError, match="no training track has audio features"):
        labels.derive_feature_labeler([])


def _brute_force_sse(values, k):
    x = np.sort(np.asarray(values, dtype=float))
    best = np.inf
    for cuts in itertools.combinations(range(1, x.size), k - 1):
        bounds = [0, *cuts, x.size]
        runs = [x[bounds[i] : bounds[i + 1]] for i in range(k)]
        best = min(best, sum(((run - run.mean()) ** 2).sum() for run in runs))
    return best


def test_kmeans_1d_is_optimal():
    rng = np.random.default_rng(0)
    for trial in range(60):
        n = int(rng.integers(4, 10))
        k = int(rng.integers(1, min(n, 5) + 1))
        values = rng.integers(0, 20, n).astype(float) if trial % 2 else rng.normal(120, 30, n)
        if np.unique(values).size < k:
            continue
        centres = labels.kmeans_1d(values, k)
        assert np.all(np.diff(centres) > 0)
        sse = ((values[:, None] - centres[None, :]) ** 2).min(axis=1).sum()
        assert sse == pytest.approx(_brute_force_sse(values, k), abs=1e-6)


def test_genre_vocabulary_is_the_top_n_on_training_tracks():
    training = [("jazz", "bebop"), ("jazz", "swing"), ("jazz",), ("swing", "big band"), ("bebop",), ()]
    # Tracks per genre: jazz 3, bebop 2, swing 2, big band 1; ties by name.
    labeler = labels.derive_genre_labeler(training, top_n=3)
    assert labeler.tags == ("jazz", "bebop", "swing")
    assert labeler.counts == {"jazz": 3, "bebop": 2, "swing": 2}
    assert labeler.tags_for(["swing", "big band", "jazz"]) == ("jazz", "swing")
    assert labels.derive_genre_labeler([("a", "a")], top_n=50).counts == {"a": 1}
