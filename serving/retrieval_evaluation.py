"""How well an index retrieves tracks that share a ground-truth tag with the query.

Each catalog track queries the index (as `--track_id` does); a result is
relevant when its ground-truth tags (the catalog CSV's `tags` column, e.g. a
soundtrack or a genre) share at least one with the query's. Reported per
recommender configuration (two stages, embeddings only, tags only):
precision@k, recall@k (relevant results over relevant tracks in the
catalog, capped at k) and mean average precision@k, next to the expected
precision of random results, the chance baseline.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from serving.catalog_index import CatalogIndex
from serving.recommender import Recommender, TagFilter

CONFIGURATIONS = ("two stages", "embeddings only", "tags only")


@dataclasses.dataclass(frozen=True)
class RetrievalScores:
    """Mean scores over the queries of one configuration.

    Attributes:
        configuration: One of `CONFIGURATIONS`, or `random (expected)`.
        precision: Mean precision@k.
        recall: Mean recall@k, against min(k, relevant tracks).
        average_precision: Mean average precision@k.
        mean_found: Mean number of results returned (may be < k after filtering).
        num_queries: Queries with at least one relevant track in the catalog.
    """

    configuration: str
    precision: float
    recall: float
    average_precision: float
    mean_found: float
    num_queries: int


def _average_precision(relevant_flags: list[bool], num_relevant: int, k: int) -> float:
    hits, total = 0, 0.0
    for rank, relevant in enumerate(relevant_flags, start=1):
        if relevant:
            hits += 1
            total += hits / rank
    return total / min(num_relevant, k) if num_relevant else 0.0


def evaluate(
    catalog: CatalogIndex, truth: dict[str, set[str]], k: int = 5, tag_filter: TagFilter | None = None
) -> list[RetrievalScores]:
    """Scores the index's recommendations against ground-truth tags.

    Args:
        catalog: The index.
        truth: Ground-truth tags by track id (tracks missing here are skipped
            as queries and never relevant).
        k: Results per query.
        tag_filter: Stage 1's settings for the configurations that use it
            (default: `TagFilter()`).

    Returns:
        One `RetrievalScores` per configuration the index supports, then the
        random baseline.
    """
    tag_filter = tag_filter or TagFilter()
    recommender = Recommender(catalog, tag_filter)
    ids = [t.track_id for t in catalog.tracks if truth.get(t.track_id)]
    relevant_counts = {q: sum(1 for o in ids if o != q and truth[o] & truth[q]) for q in ids}
    queries = [q for q in ids if relevant_counts[q]]
    settings = {
        "two stages": {"tag_filter": tag_filter, "rank_by_embedding": True},
        "embeddings only": {"tag_filter": None, "rank_by_embedding": True},
        "tags only": {"tag_filter": tag_filter, "rank_by_embedding": False},
    }
    if catalog.tag_model is None:
        settings = {"embeddings only": settings["embeddings only"]}
    scores = []
    for name, kwargs in settings.items():
        precision, recall, average_precision, found = [], [], [], []
        for query_id in queries:
            result = recommender.recommend(recommender.query_for_track(query_id), k, **kwargs)
            flags = [bool(truth.get(r.track.track_id, set()) & truth[query_id]) for r in result.recommendations]
            precision.append(sum(flags) / k)
            recall.append(sum(flags) / min(k, relevant_counts[query_id]))
            average_precision.append(_average_precision(flags, relevant_counts[query_id], k))
            found.append(len(flags))
        scores.append(
            RetrievalScores(
                name,
                float(np.mean(precision)),
                float(np.mean(recall)),
                float(np.mean(average_precision)),
                float(np.mean(found)),
                len(queries),
            )
        )
    # Random results: each is relevant with probability relevant / (catalog - 1).
    chance = [relevant_counts[q] / (len(catalog) - 1) for q in queries]
    chance_recall = [relevant_counts[q] * k / (len(catalog) - 1) / min(k, relevant_counts[q]) for q in queries]
    scores.append(
        RetrievalScores(
            "random (expected)",
            float(np.mean(chance)),
            float(np.mean(np.minimum(chance_recall, 1.0))),
            float("nan"),
            float(k),
            len(queries),
        )
    )
    return scores


def render(scores: list[RetrievalScores], k: int) -> str:
    """A plain-text table of the scores."""
    lines = [
        f"{'configuration':<20}  {'P@' + str(k):>6}  {'R@' + str(k):>6}  {'MAP@' + str(k):>7}  {'found':>5}  queries"
    ]
    for s in scores:
        average_precision = "-" if np.isnan(s.average_precision) else f"{s.average_precision:.3f}"
        lines.append(
            f"{s.configuration:<20}  {s.precision:6.3f}  {s.recall:6.3f}  {average_precision:>7}  "
            f"{s.mean_found:5.1f}  {s.num_queries}"
        )
    return "\n".join(lines)
