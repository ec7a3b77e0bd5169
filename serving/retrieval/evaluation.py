"""How well an index retrieves tracks that share a ground-truth tag with the query.

Each catalog track queries the index (as `--track_id` does); a result is
relevant when its ground-truth tags (the catalog CSV's `tags` column, e.g. a
soundtrack or a genre) share at least one with the query's. Reported per
recommender configuration (`CONFIGURATIONS`: the default answer, the tag
filter before it, embeddings without query expansion, tags only):
precision@k, recall@k (relevant results over relevant tracks in the
catalog, capped at k) and mean average precision@k, next to the expected
precision of random results, the chance baseline.

`evaluate_embeddings` scores any per-track vectors the same way (cosine
nearest neighbours, leave-one-out), e.g. the MFCC baseline
(`serving.retrieval.mfcc_baseline`), so that indexes and baselines share one metric.

On a catalog of a few hundred tracks a P@5 moves by about ±0.02 from the
luck of which albums it holds, the size of most differences between
configurations. `album_interval` gives a mean's bootstrap interval
resampling whole ground-truth groups (albums: the queries of one album are
not independent), and `paired_difference` the interval of the difference
between two configurations scored on the same queries: a configuration is
better only when that interval excludes zero.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from serving.retrieval.catalog_index import CatalogIndex
from serving.retrieval.recommender import Recommender, TagFilter

CONFIGURATIONS = ("default", "two stages", "embeddings only", "tags only")
# What each configuration asks of the recommender: the default answer (no tag filter, query expansion), the
# research design's two stages (the tag filter, then the same ranking), the embeddings' plain nearest
# neighbours, and the tag probabilities' (after the tag filter).
SETTINGS = {
    "default": {},
    "two stages": {"tag_filter": "given"},
    "embeddings only": {"tag_filter": None, "expansion": None},
    "tags only": {"tag_filter": "given", "rank_by_embedding": False},
}


@dataclasses.dataclass(frozen=True)
class RetrievalScores:
    """Mean scores over the queries of one configuration.

    Attributes:
        configuration: One of `CONFIGURATIONS`, or `random (expected)`, or a caller's name.
        precision: Mean precision@k.
        recall: Mean recall@k, against min(k, relevant tracks).
        average_precision: Mean average precision@k.
        mean_found: Mean number of results returned (may be < k after filtering).
        num_queries: Queries with at least one relevant track in the catalog.
        precisions: Each query's precision@k, by query id (for intervals).
    """

    configuration: str
    precision: float
    recall: float
    average_precision: float
    mean_found: float
    num_queries: int
    precisions: dict[str, float] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def summary(self) -> dict:
        """The figures without the per-query values (what JSON outputs hold)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "precisions"}


def _average_precision(relevant_flags: list[bool], num_relevant: int, k: int) -> float:
    hits, total = 0, 0.0
    for rank, relevant in enumerate(relevant_flags, start=1):
        if relevant:
            hits += 1
            total += hits / rank
    return total / min(num_relevant, k) if num_relevant else 0.0


def configurations(catalog: CatalogIndex) -> tuple[str, ...]:
    """The configurations `evaluate` scores on this index (stage 1's only where it has a tag model)."""
    return CONFIGURATIONS if catalog.tag_model else ("default", "embeddings only")


def evaluate(
    catalog: CatalogIndex,
    truth: dict[str, set[str]],
    k: int = 5,
    tag_filter: TagFilter | None = None,
    on_query: Callable[[], None] | None = None,
) -> list[RetrievalScores]:
    """Scores the index's recommendations against ground-truth tags.

    Args:
        catalog: The index.
        truth: Ground-truth tags by track id (tracks missing here are skipped
            as queries and never relevant).
        k: Results per query.
        tag_filter: Stage 1's settings for the configurations that use it
            (default: `TagFilter()`).
        on_query: Called after each query answered (progress).

    Returns:
        One `RetrievalScores` per configuration the index supports, then the
        random baseline.
    """
    tag_filter = tag_filter or TagFilter()
    recommender = Recommender(catalog)
    scores = []
    for name in configurations(catalog):
        settings = {key: tag_filter if value == "given" else value for key, value in SETTINGS[name].items()}
        scores.append(evaluate_recommender(name, recommender, truth, k, on_query=on_query, **settings))
    ids = [t.track_id for t in catalog.tracks if truth.get(t.track_id)]
    counts = relevant_counts(ids, truth)
    scores.append(chance_scores(counts, [q for q in ids if counts[q]], len(catalog), k))
    return scores


def relevant_counts(ids: list[str], truth: dict[str, set[str]]) -> dict[str, int]:
    """For each of `ids`, how many of the others share a ground-truth tag with it."""
    return {q: sum(1 for o in ids if o != q and truth[o] & truth[q]) for q in ids}


def evaluate_recommender(
    name: str,
    recommender,
    truth: dict[str, set[str]],
    k: int = 5,
    on_query: Callable[[], None] | None = None,
    **settings,
) -> RetrievalScores:
    """Every catalog track with ground truth queries `recommender.recommend(query, k, **settings)`; scored as named.

    `on_query` is called after each query answered (progress).
    """
    ids = [t.track_id for t in recommender.catalog.tracks if truth.get(t.track_id)]
    counts = relevant_counts(ids, truth)
    rankings = {}
    for query_id in ids:
        if counts[query_id]:
            answer = recommender.recommend(recommender.query_for_track(query_id), k, **settings)
            rankings[query_id] = [r.track.track_id for r in answer.recommendations]
        if on_query is not None:
            on_query()
    return score_rankings(name, rankings, truth, counts, k)


def score_rankings(
    name: str, rankings: dict[str, list[str]], truth: dict[str, set[str]], relevant_counts: dict[str, int], k: int
) -> RetrievalScores:
    """Mean P@k, R@k and MAP@k of each query's ranked result ids."""
    precision, recall, average_precision, found = {}, [], [], []
    for query_id, results in rankings.items():
        flags = [bool(truth.get(result, set()) & truth[query_id]) for result in results[:k]]
        precision[query_id] = sum(flags) / k
        recall.append(sum(flags) / min(k, relevant_counts[query_id]))
        average_precision.append(_average_precision(flags, relevant_counts[query_id], k))
        found.append(len(flags))
    return RetrievalScores(
        name,
        float(np.mean(list(precision.values()))),
        float(np.mean(recall)),
        float(np.mean(average_precision)),
        float(np.mean(found)),
        len(rankings),
        precision,
    )


def chance_scores(relevant_counts: dict[str, int], queries: list[str], catalog_size: int, k: int) -> RetrievalScores:
    """Random results: each is relevant with probability relevant / (catalog - 1)."""
    chance = [relevant_counts[q] / (catalog_size - 1) for q in queries]
    chance_recall = [relevant_counts[q] * k / (catalog_size - 1) / min(k, relevant_counts[q]) for q in queries]
    return RetrievalScores(
        "random (expected)",
        float(np.mean(chance)),
        float(np.mean(np.minimum(chance_recall, 1.0))),
        float("nan"),
        float(k),
        len(queries),
    )


def evaluate_embeddings(
    name: str, track_ids: list[str], vectors: np.ndarray, truth: dict[str, set[str]], k: int = 5
) -> RetrievalScores:
    """Scores cosine nearest neighbours of per-track vectors (each track queries all the others).

    Args:
        name: The configuration's name in the report.
        track_ids: One id per row of `vectors`.
        vectors: `[tracks, dim]`.
        truth: Ground-truth tags by track id.
        k: Results per query.
    """
    rows = np.array([row for row, track_id in enumerate(track_ids) if truth.get(track_id)], dtype=int)
    ids = [track_ids[row] for row in rows]
    unit = vectors[rows] / np.maximum(np.linalg.norm(vectors[rows], axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    counts = relevant_counts(ids, truth)
    rankings = {
        ids[i]: [ids[j] for j in np.argsort(-similarity[i], kind="stable")[:k]]
        for i in range(len(ids))
        if counts[ids[i]]
    }
    return score_rankings(name, rankings, truth, counts, k)


def render(scores: list[RetrievalScores], k: int, baseline: RetrievalScores | None = None) -> str:
    """A plain-text table of the scores; with a baseline, each P@k as a ratio to its P@k too."""
    width = max([20, *(len(s.configuration) for s in scores)])
    ratio_header = f"  {'P@' + str(k) + ' / ' + baseline.configuration}" if baseline else ""
    lines = [
        f"{'configuration':<{width}}  {'P@' + str(k):>6}  {'R@' + str(k):>6}  {'MAP@' + str(k):>7}  {'found':>5}  "
        f"queries{ratio_header}"
    ]
    for s in scores:
        average_precision = "-" if np.isnan(s.average_precision) else f"{s.average_precision:.3f}"
        ratio = f"  {s.precision / baseline.precision:.2f}x" if baseline and baseline.precision else ""
        lines.append(
            f"{s.configuration:<{width}}  {s.precision:6.3f}  {s.recall:6.3f}  {average_precision:>7}  "
            f"{s.mean_found:5.1f}  {s.num_queries:>7}{ratio}"
        )
    return "\n".join(lines)


BOOTSTRAP_RESAMPLES = 2000


def album_of(truth: dict[str, set[str]]) -> dict[str, str]:
    """Each track's ground-truth group for resampling: its tags, joined (one album per track: the album)."""
    return {track_id: "|".join(sorted(tags)) for track_id, tags in truth.items()}


def album_interval(
    values: dict[str, float], group_of: dict[str, str], level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of per-query `values`, resampling whole groups.

    Each resample draws as many groups as there are, with replacement, and
    takes the mean over all their queries (a cluster bootstrap). The draws
    are seeded: the same values always give the same interval.
    """
    ids = sorted(values)
    groups = sorted({group_of[i] for i in ids})
    position = {group: n for n, group in enumerate(groups)}
    members = np.array([position[group_of[i]] for i in ids])
    sums = np.bincount(members, weights=[values[i] for i in ids], minlength=len(groups))
    counts = np.bincount(members, minlength=len(groups)).astype(np.float64)
    draws = np.random.default_rng(0).integers(0, len(groups), size=(resamples, len(groups)))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def paired_difference(
    scores: RetrievalScores, baseline: RetrievalScores, group_of: dict[str, str], level: float = 0.95
) -> tuple[float, float, float]:
    """`scores`' P@k minus `baseline`'s on the same queries, with its album-bootstrap interval: (mean, low, high)."""
    if set(scores.precisions) != set(baseline.precisions):
        raise ValueError(f"{scores.configuration} and {baseline.configuration} were scored on different queries")
    differences = {q: scores.precisions[q] - baseline.precisions[q] for q in scores.precisions}
    low, high = album_interval(differences, group_of, level)
    return float(np.mean(list(differences.values()))), low, high
