"""Tags from Spotify metadata: the research system's 32 audio-feature tags and artist genres.

`spotify_features` (32 binary tags, derived from the training split only):

- 8 binarised audio features. `mode` is binary already (`mode_major` when
  `mode == 1`). Each of danceability, energy, loudness, acousticness,
  instrumentalness, liveness and valence becomes `<feature>_high` when the
  value is strictly greater than a threshold: the mean, the median or the
  75th percentile (linear interpolation) of the training values, whichever
  gives the binarised training column the lowest (population) standard
  deviation. Thresholds that make the column constant are passed over unless
  all three do; ties go to the first in the order mean, median, 75th
  percentile.
- 8 tempo bins `tempo_0` (slowest) ... `tempo_7`. Training tempi beyond
  2 (population) standard deviations of their mean are left out, the rest
  are clustered by an exact 1-D k-means with 9 clusters, and the 9 sorted
  centres c1 < ... < c9 bound the 8 bins: `tempo_k` covers
  [c(k+1), c(k+2)), with the outer bins open-ended (`tempo_0` is below c2,
  `tempo_7` from c8 up), so every positive tempo, outliers included, has one
  bin. A tempo of 0 (no beat found) gets none.
- 12 keys `key_C`, `key_Db`, `key_D`, `key_Eb`, `key_E`, `key_F`, `key_Gb`,
  `key_G`, `key_Ab`, `key_A`, `key_Bb`, `key_B` (Spotify's pitch classes
  0-11; -1, no key detected, gets none).
- 4 time signatures `time_signature_1`, `_3`, `_4` and `_5` (others get none).

`genres`: the `top_n` genres carried by most training tracks (a track has
the genres of all its artists), ties broken by name.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

BINARISED_FEATURES = (
    "danceability",
    "energy",
    "loudness",
    "acousticness",
    "instrumentalness",
    "liveness",
    "valence",
)
STATISTICS = ("mean", "median", "p75")
KEY_NAMES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
TIME_SIGNATURES = (1, 3, 4, 5)
NUM_TEMPO_CLUSTERS = 9
TEMPO_OUTLIER_SDS = 2.0
LABEL_CHOICES = ("spotify_features", "genres", "both")


class LabelError(ValueError):
    """Labels that cannot be derived from the training data."""


def feature_tags() -> tuple[str, ...]:
    """The 32 `spotify_features` tags in label order."""
    return (
        ("danceability_high", "energy_high", "loudness_high", "mode_major")
        + ("acousticness_high", "instrumentalness_high", "liveness_high", "valence_high")
        + tuple(f"tempo_{k}" for k in range(NUM_TEMPO_CLUSTERS - 1))
        + tuple(f"key_{name}" for name in KEY_NAMES)
        + tuple(f"time_signature_{beats}" for beats in TIME_SIGNATURES)
    )


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


@dataclasses.dataclass(frozen=True)
class Threshold:
    """The binarisation threshold of one feature.

    Attributes:
        feature: The audio feature.
        statistic: The chosen statistic (`mean`, `median` or `p75`).
        value: The threshold; `<feature>_high` when the value is above it.
        candidates: Each statistic's value on the training tracks.
        stds: The standard deviation of the binarised training column per statistic.
        num_values: Training values the statistics were computed on.
    """

    feature: str
    statistic: str
    value: float
    candidates: dict[str, float]
    stds: dict[str, float]
    num_values: int


def choose_threshold(feature: str, values: Sequence[float]) -> Threshold:
    """Picks the statistic whose binarisation has the lowest standard deviation.

    Raises:
        LabelError: Without any value.
    """
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise LabelError(f"no training track has a value for {feature}")
    candidates = {
        "mean": float(np.mean(data)),
        "median": float(np.median(data)),
        "p75": float(np.percentile(data, 75)),
    }
    stds = {name: float(np.std(data > threshold)) for name, threshold in candidates.items()}
    varying = [name for name in STATISTICS if stds[name] > 0] or list(STATISTICS)
    statistic = min(varying, key=lambda name: (stds[name], STATISTICS.index(name)))
    return Threshold(feature, statistic, candidates[statistic], candidates, stds, int(data.size))


def kmeans_1d(values: Sequence[float], k: int) -> np.ndarray:
    """Exact (globally optimal) 1-D k-means by dynamic programming.

    In one dimension the clusters of an optimal solution are runs of the
    sorted values, so the least within-cluster sum of squares over `j` runs
    ending at `i` follows from the best `j - 1` runs ending before the last
    run's start. The best start moves right with `i` (Grønlund et al. 2017),
    which divide and conquer exploits: O(k n log n). Ties go to the leftmost
    start, so the result is deterministic.

    Args:
        values: The data.
        k: The number of clusters.

    Returns:
        The `k` cluster centres (means), ascending.

    Raises:
        LabelError: With fewer than `k` distinct values.
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = x.size
    if np.unique(x).size < k:
        raise LabelError(f"k-means with {k} clusters needs at least {k} distinct values, got {np.unique(x).size}")
    # Shift for numerical stability of the prefix sums of squares.
    shifted = x - x.mean()
    s1 = np.concatenate([[0.0], np.cumsum(shifted)])
    s2 = np.concatenate([[0.0], np.cumsum(shifted * shifted)])

    def cost(starts: np.ndarray, end: int) -> np.ndarray:
        """Sum of squares of runs x[starts..end] (inclusive)."""
        count = end + 1 - starts
        total = s1[end + 1] - s1[starts]
        return np.maximum(0.0, s2[end + 1] - s2[starts] - total * total / count)

    previous = np.maximum(0.0, s2[1:] - s1[1:] * s1[1:] / np.arange(1, n + 1))  # One run x[0..i].
    starts_of = [np.zeros(n, dtype=np.int64)]
    for clusters in range(2, k + 1):
        current = np.full(n, np.inf)
        best_start = np.zeros(n, dtype=np.int64)
        # Runs ending at i, for i >= clusters - 1; the last run starts at j >= clusters - 1.
        stack = [(clusters - 1, n - 1, clusters - 1, n - 1)]
        while stack:
            low, high, opt_low, opt_high = stack.pop()
            if low > high:
                continue
            i = (low + high) // 2
            starts = np.arange(opt_low, min(i, opt_high) + 1)
            totals = previous[starts - 1] + cost(starts, i)
            best = int(np.argmin(totals))
            current[i], best_start[i] = totals[best], starts[best]
            stack.append((low, i - 1, opt_low, int(starts[best])))
            stack.append((i + 1, high, int(starts[best]), opt_high))
        previous = current
        starts_of.append(best_start)
    centres, end = [], n - 1
    for clusters in range(k, 0, -1):
        start = int(starts_of[clusters - 1][end])
        centres.append(float(x[start : end + 1].mean()))
        end = start - 1
    return np.asarray(centres[::-1])


@dataclasses.dataclass(frozen=True)
class TempoBins:
    """Tempo bins from k-means over the training tempi.

    Attributes:
        mean: Mean of the training tempi (outliers included).
        std: Their population standard deviation.
        inlier_range: Tempi inside this closed range went into the k-means.
        num_tempi: Training tempi.
        num_outliers: Training tempi left out of the k-means.
        centres: The 9 cluster centres, ascending.
    """

    mean: float
    std: float
    inlier_range: tuple[float, float]
    num_tempi: int
    num_outliers: int
    centres: tuple[float, ...]

    @property
    def edges(self) -> tuple[float, ...]:
        """The inner bin edges c2 ... c8: `tempo_k` is [edges[k-1], edges[k])."""
        return self.centres[1:-1]

    def bin(self, tempo: float | None) -> int | None:
        """The bin of a tempo, or None for a missing or non-positive tempo."""
        if tempo is None or not tempo > 0:
            return None
        return int(np.searchsorted(np.asarray(self.edges), tempo, side="right"))


def derive_tempo_bins(tempi: Sequence[float]) -> TempoBins:
    """Clusters the training tempi without their outliers.

    Raises:
        LabelError: With fewer than 9 distinct tempi left.
    """
    data = np.asarray([t for t in tempi if t is not None and t > 0], dtype=np.float64)
    if data.size == 0:
        raise LabelError("no training track has a positive tempo")
    mean, std = float(data.mean()), float(data.std())
    low, high = mean - TEMPO_OUTLIER_SDS * std, mean + TEMPO_OUTLIER_SDS * std
    inliers = data[(data >= low) & (data <= high)]
    try:
        centres = kmeans_1d(inliers, NUM_TEMPO_CLUSTERS)
    except LabelError as error:
        raise LabelError(
            f"the tempo bins need at least {NUM_TEMPO_CLUSTERS} distinct tempi among the training tracks' "
            f"{inliers.size} non-outlier tempi ({error}); collect more tracks or use --labels=genres"
        ) from None
    return TempoBins(
        mean=mean,
        std=std,
        inlier_range=(low, high),
        num_tempi=int(data.size),
        num_outliers=int(data.size - inliers.size),
        centres=tuple(float(c) for c in centres),
    )


@dataclasses.dataclass(frozen=True)
class FeatureLabeler:
    """Turns audio features into the 32 `spotify_features` tags."""

    thresholds: tuple[Threshold, ...]
    tempo: TempoBins

    @property
    def tags(self) -> tuple[str, ...]:
        return feature_tags()

    def tags_for(self, features: Mapping) -> tuple[str, ...]:
        """The tags of one track's audio-features object, in label order."""
        on = set()
        for threshold in self.thresholds:
            value = _number(features.get(threshold.feature))
            if value is not None and value > threshold.value:
                on.add(f"{threshold.feature}_high")
        if _number(features.get("mode")) == 1:
            on.add("mode_major")
        tempo_bin = self.tempo.bin(_number(features.get("tempo")))
        if tempo_bin is not None:
            on.add(f"tempo_{tempo_bin}")
        key = _number(features.get("key"))
        if key is not None and key in range(len(KEY_NAMES)):
            on.add(f"key_{KEY_NAMES[int(key)]}")
        beats = _number(features.get("time_signature"))
        if beats is not None and beats in TIME_SIGNATURES:
            on.add(f"time_signature_{int(beats)}")
        return tuple(tag for tag in self.tags if tag in on)

    def to_dict(self) -> dict:
        return {
            "thresholds": {
                t.feature: {
                    "statistic": t.statistic,
                    "value": t.value,
                    "candidates": t.candidates,
                    "binarised_std": t.stds,
                    "num_values": t.num_values,
                }
                for t in self.thresholds
            },
            "mode": {"tag": "mode_major", "rule": "mode == 1"},
            "tempo": {
                "mean": self.tempo.mean,
                "std": self.tempo.std,
                "inlier_range": list(self.tempo.inlier_range),
                "num_tempi": self.tempo.num_tempi,
                "num_outliers": self.tempo.num_outliers,
                "centres": list(self.tempo.centres),
                "bins": [
                    {
                        "tag": f"tempo_{k}",
                        "min": None if k == 0 else self.tempo.edges[k - 1],
                        "max": None if k == len(self.tempo.edges) else self.tempo.edges[k],
                    }
                    for k in range(len(self.tempo.edges) + 1)
                ],
            },
            "keys": {f"key_{name}": pitch for pitch, name in enumerate(KEY_NAMES)},
            "time_signatures": {f"time_signature_{beats}": beats for beats in TIME_SIGNATURES},
            "tags": list(self.tags),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> FeatureLabeler:
        """The inverse of `to_dict` (e.g. to label new tracks like the training set)."""
        thresholds = tuple(
            Threshold(
                feature,
                t["statistic"],
                float(t["value"]),
                dict(t["candidates"]),
                dict(t["binarised_std"]),
                int(t["num_values"]),
            )
            for feature, t in data["thresholds"].items()
        )
        tempo = data["tempo"]
        return cls(
            thresholds=thresholds,
            tempo=TempoBins(
                mean=float(tempo["mean"]),
                std=float(tempo["std"]),
                inlier_range=tuple(tempo["inlier_range"]),
                num_tempi=int(tempo["num_tempi"]),
                num_outliers=int(tempo["num_outliers"]),
                centres=tuple(float(c) for c in tempo["centres"]),
            ),
        )


def derive_feature_labeler(training_features: Sequence[Mapping]) -> FeatureLabeler:
    """Derives thresholds and tempo bins from the training tracks' audio features.

    Args:
        training_features: The audio-features objects of the training tracks.

    Raises:
        LabelError: Without training features, or with too few distinct tempi.
    """
    if not training_features:
        raise LabelError("no training track has audio features")
    thresholds = []
    for feature in BINARISED_FEATURES:
        values = [v for v in (_number(f.get(feature)) for f in training_features) if v is not None]
        thresholds.append(choose_threshold(feature, values))
    tempo = derive_tempo_bins([_number(f.get("tempo")) for f in training_features])
    return FeatureLabeler(tuple(thresholds), tempo)


@dataclasses.dataclass(frozen=True)
class GenreLabeler:
    """Keeps the most frequent artist genres as tags.

    Attributes:
        tags: The genre vocabulary, most frequent first.
        counts: Training tracks per vocabulary genre.
        top_n: The vocabulary size asked for.
    """

    tags: tuple[str, ...]
    counts: dict[str, int]
    top_n: int

    def tags_for(self, genres: Sequence[str]) -> tuple[str, ...]:
        present = set(genres)
        return tuple(tag for tag in self.tags if tag in present)

    def to_dict(self) -> dict:
        return {"top_n": self.top_n, "vocabulary": list(self.tags), "training_track_counts": self.counts}


def derive_genre_labeler(training_genres: Sequence[Sequence[str]], top_n: int = 50) -> GenreLabeler:
    """The `top_n` genres on most training tracks (ties by name)."""
    if top_n < 1:
        raise ValueError("top_n must be at least 1")
    counts = collections.Counter(genre for genres in training_genres for genre in set(genres))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top_n]
    return GenreLabeler(tuple(genre for genre, _ in ranked), dict(ranked), top_n)
