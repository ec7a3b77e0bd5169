"""Recommendations: embeddings rank the catalog, CRNN tags explain the answers (and filter it on request).

The default answer ranks by embeddings alone, centred on the catalog
(`CatalogIndex.ranking_vectors`) and with query expansion (`QueryExpansion`),
and shows each answer's tags shared with the query. The research design's
stage 1, CRNN tags filtering the catalog, is there when asked for
(`tag_filter`): on real music none of the models saw, it was skipped for
most queries and lowered precision where it acted (same-album P@5 on the
public set: 0.342 with it, 0.378 without, 0.402 with centring and query
expansion; BENCHMARKS.md, `retrieval_quality`, with intervals), so it is
not the default.

Tag sets: a track's tag set is its tags with probability ≥ the
threshold, at most the `top_n` most probable (`TagFilter`). They explain
every answer (the tags it shares with the query). Tag sets are
boolean membership, computed from probabilities with `>=`, never by
comparing floats for equality.

Stage 1 (tag filter, on request): candidates are the catalog
tracks whose tag set shares at least one tag with the query's.

Query expansion: the query's vector is averaged with its nearest catalog
tracks' (the query itself and copies of its audio left out), each weighted
by its cosine to the query cubed (Radenović et al.'s α-QE), so a query ranks
by what its closest neighbours agree on.

Stage 2 (embedding rank): the ScaNN index returns the nearest tracks by
cosine similarity; results outside the candidates are dropped, so the search
over-fetches and widens (4x at a time, up to max(4096, 16·(k+1)) results)
until `k` results are found; candidates it has not reached by then are scored exactly from
their stored embeddings, so every candidate can be found. A stage 1 that
leaves no more candidates than that cap skips the search: all of them are
scored exactly (as cheap, and an approximate index could miss one). When fewer than
`k` exist, the result says how many it found. Without stage 2,
candidates are ranked by the cosine similarity of their tag probabilities.

Excluded from results: the query track itself, exact duplicates of the query
and of results already returned (same content hash, or embedding cosine ≥
`duplicate_cosine`); optionally more than `max_per_artist` tracks per artist.

Every result is looked up by its track id in the catalog, and its score is
recomputed from the stored embedding of that id, so ids, scores and metadata
cannot drift apart.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable

import numpy as np

from serving.embedding.ensemble import EmbeddingModels
from serving.export.exported_model import describe
from serving.retrieval.catalog_index import CatalogIndex, TrackRecord
from serving.retrieval.recommend_settings import DEFAULT_EXPANSION, QueryExpansion, TagFilter

__all__ = [
    "DEFAULT_EXPANSION",
    "QueryExpansion",
    "Query",
    "Recommendation",
    "RecommendationResult",
    "Recommender",
    "TagFilter",
]

DEFAULT_DUPLICATE_COSINE = 0.9999
OVERFETCH = 4
MAX_SEARCH_RESULTS = 4096


class _RecommenderDefault:
    """The type of `RECOMMENDER_DEFAULT`: "use the recommender's own tag filter" (None means stage 1 off)."""

    def __repr__(self) -> str:
        return "RECOMMENDER_DEFAULT"


RECOMMENDER_DEFAULT = _RecommenderDefault()


@dataclasses.dataclass(frozen=True)
class Query:
    """What to recommend for.

    Attributes:
        embedding: The ranking model's embedding `[dim]`.
        tag_probabilities: The tag model's probabilities `[num_tags]` (None
            without a tag model).
        track_id: The catalog track this is, if any (excluded from results).
        content_sha256: Hash of the query audio (its duplicates are excluded).
        embedded_by: The ranking model(s) that made `embedding`, when known
            (an embedder's query): other models, versions or weights than the
            index's are refused.
    """

    embedding: np.ndarray
    tag_probabilities: np.ndarray | None = None
    track_id: str | None = None
    content_sha256: str = ""
    embedded_by: EmbeddingModels | None = None


@dataclasses.dataclass(frozen=True)
class SharedTag:
    """A tag in both the query's and a result's tag set, with both probabilities."""

    tag: str
    query_probability: float
    track_probability: float


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """One result.

    Attributes:
        rank: 1-based.
        track: The catalog track.
        score: Cosine similarity of the track's embedding with the query's, as
            ranked (centred on the catalog, the query expanded); of the tag
            probabilities when stage 2 is off.
        shared_tags: Tags the track shares with the query (its tag sets: `TagFilter`).
    """

    rank: int
    track: TrackRecord
    score: float
    shared_tags: tuple[SharedTag, ...]

    @property
    def explanation(self) -> str:
        """Why this track: the shared tags and the similarity."""
        tags = ", ".join(f"{t.tag} ({t.query_probability:.2f}/{t.track_probability:.2f})" for t in self.shared_tags)
        return f"similarity {self.score:.3f}" + (f"; shares {tags}" if tags else "")

    def to_dict(self, track_view: Callable[[TrackRecord], dict] = dataclasses.asdict) -> dict:
        """The result as JSON-ready data: `track_view(track)`'s fields, then rank, score and why."""
        return {
            **track_view(self.track),
            "rank": self.rank,
            "score": self.score,
            "shared_tags": [dataclasses.asdict(t) for t in self.shared_tags],
            "explanation": self.explanation,
        }


@dataclasses.dataclass(frozen=True)
class RecommendationResult:
    """The results and how they were found.

    Attributes:
        recommendations: Best first.
        k: How many were asked for.
        query_tags: The query's tag set with probabilities (empty without a tag model).
        num_candidates: Tracks that passed stage 1 (when on) and the exclusions.
        notes: Plain-language remarks (stage skipped, fewer than k found, ...).
        models: Which exported models made the query's `tags` and the
            `ranking` (`serving.export.exported_model.describe`; None: no tags).
    """

    recommendations: tuple[Recommendation, ...]
    k: int
    query_tags: tuple[tuple[str, float], ...]
    num_candidates: int
    notes: tuple[str, ...]
    models: dict[str, str | None] = dataclasses.field(default_factory=dict)

    def to_dict(self, track_view: Callable[[TrackRecord], dict] = dataclasses.asdict) -> dict:
        """The one serialisation of a result (the query CLI's JSON, the web API's body).

        Args:
            track_view: What of each result's track is shown (default: every
                `TrackRecord` field; the web API shows no paths or hashes).
        """
        return {
            "models": dict(self.models),
            "k": self.k,
            "found": len(self.recommendations),
            "query_tags": [{"tag": t, "probability": p} for t, p in self.query_tags],
            "num_candidates": self.num_candidates,
            "notes": list(self.notes),
            "recommendations": [r.to_dict(track_view) for r in self.recommendations],
        }


class Recommender:
    """Recommends catalog tracks for a query.

    Args:
        catalog: The catalog index: a `CatalogIndex`, or a
            `sharded_index.ShardedIndex`, which reads as one.
        tag_filter: Stage 1 by default with these settings (None, the
            default: stage 1 off unless a call asks for it).
        duplicate_cosine: Embedding cosine from which a track counts as an
            exact duplicate of the query.
        expansion: Query expansion by default (None: off).
        tag_sets: The tag sets that explain answers when stage 1 is off
            (when on, its own settings make them).

    A recommender reads the catalog as it was when created: make a new one
    after `CatalogIndex.upsert` or `delete`. `recommend` may be called from
    several threads at once.
    """

    def __init__(
        self,
        catalog: CatalogIndex,
        tag_filter: TagFilter | None = None,
        duplicate_cosine: float = DEFAULT_DUPLICATE_COSINE,
        expansion: QueryExpansion | None = DEFAULT_EXPANSION,
        tag_sets: TagFilter = TagFilter(),
    ):
        self.catalog = catalog
        self.tag_filter = tag_filter if catalog.tag_model else None
        self.duplicate_cosine = duplicate_cosine
        self.expansion = expansion
        self.tag_sets = tag_sets
        self._tag_sets = {}
        self._id_ranks = _id_ranks(catalog.tracks)
        self._rows_by_hash: dict[str, list[int]] = {}
        for row, track in enumerate(catalog.tracks):
            if track.content_sha256:
                self._rows_by_hash.setdefault(track.content_sha256, []).append(row)

    def query_for_track(self, track_id: str) -> Query:
        """The query of a catalog track: its stored embedding and tag probabilities."""
        row = self.catalog.row(track_id)
        probabilities = self.catalog.tag_probabilities
        return Query(
            embedding=self.catalog.model_embeddings[row],
            tag_probabilities=None if probabilities is None else probabilities[row],
            track_id=track_id,
            content_sha256=self.catalog.tracks[row].content_sha256,
        )

    def _catalog_tag_sets(self, tag_filter: TagFilter) -> np.ndarray:
        """The catalog's tag sets under `tag_filter`, cached for the last filter used.

        Safe to call from several threads: the cache is read once and replaced
        whole, never mutated, so a caller always gets the sets of its filter.
        """
        cached = self._tag_sets
        if tag_filter in cached:
            return cached[tag_filter]
        members = tag_filter.tag_sets(self.catalog.tag_probabilities)
        self._tag_sets = {tag_filter: members}
        return members

    def recommend(
        self,
        query: Query,
        k: int = 10,
        tag_filter: TagFilter | None | _RecommenderDefault = RECOMMENDER_DEFAULT,
        rank_by_embedding: bool = True,
        max_per_artist: int | None = None,
        expansion: QueryExpansion | None | _RecommenderDefault = RECOMMENDER_DEFAULT,
    ) -> RecommendationResult:
        """The `k` best catalog tracks for `query`.

        Args:
            query: The query.
            k: Number of results wanted.
            tag_filter: Stage 1's settings; `RECOMMENDER_DEFAULT` (the
                default) for the recommender's own, None to switch stage 1 off.
            rank_by_embedding: Stage 2 on (embedding cosine through ScaNN) or
                off (tag-probability cosine).
            expansion: Query expansion; `RECOMMENDER_DEFAULT` for the
                recommender's own, None for none.
            max_per_artist: At most this many results per artist (None: no
                limit; tracks with no artist are not limited).

        Raises:
            ValueError: Settings that cannot work together, or a query that
                cannot be ranked (zero or non-finite embedding, missing or
                non-finite tag probabilities where they are needed).
        """
        tag_filter = self.tag_filter if isinstance(tag_filter, _RecommenderDefault) else tag_filter
        expansion = self.expansion if isinstance(expansion, _RecommenderDefault) else expansion
        self._check_settings(k, tag_filter, rank_by_embedding, max_per_artist)
        if query.embedded_by is not None:
            self.catalog.embedding_models.check_same(query.embedded_by)
        query_vector = self._ranking_vector(query)
        candidates = self._candidates(query, tag_filter)
        selection = _Selection(self.catalog.embeddings, self.duplicate_cosine, max_per_artist, k)
        if rank_by_embedding:
            ranking_vector = self._expanded(query, query_vector, expansion)
            ranked = self._rank_by_embedding(ranking_vector, query_vector, candidates.allowed, selection)
        else:
            if query.tag_probabilities is None:
                raise ValueError("the query has no tag probabilities to rank by")
            probabilities = np.asarray(query.tag_probabilities, np.float32)
            ranked = self._rank_by_tags(probabilities, query_vector, candidates.allowed, selection)
        recommendations = tuple(
            Recommendation(rank, self.catalog.tracks[row], score, self._shared_tags(query, candidates, row))
            for rank, (row, score) in enumerate(ranked, start=1)
        )
        notes = [*self.catalog.notes, *candidates.notes]
        if len(recommendations) < k:
            notes.append(f"found {len(recommendations)} of the {k} results asked for ({candidates.count} candidates)")
        return RecommendationResult(
            recommendations, k, candidates.query_tags, candidates.count, tuple(notes), self._models(rank_by_embedding)
        )

    def _ranking_vector(self, query: Query) -> np.ndarray:
        """The query's embedding as the catalog's are compared: unit length, centred on the catalog mean."""
        embedding = np.asarray(query.embedding, np.float32)
        dim = self.catalog.embedding_models.embedding_dim
        if embedding.shape != (dim,):
            raise ValueError(f"the query embedding has shape {embedding.shape}; this index ranks {dim}-d embeddings")
        if not np.all(np.isfinite(embedding)) or not np.any(embedding):
            raise ValueError("the query embedding is zero or not finite")
        return self.catalog.ranking_vectors(embedding[np.newaxis])[0]

    def _expanded(self, query: Query, query_vector: np.ndarray, expansion: QueryExpansion | None) -> np.ndarray:
        """The vector that ranks: the query's, expanded with its nearest catalog tracks (not itself or its copies)."""
        if expansion is None:
            return query_vector

        def is_the_query(track_id: str) -> bool:
            if track_id == query.track_id:
                return True
            return bool(query.content_sha256) and self.catalog.track(track_id).content_sha256 == query.content_sha256

        return expansion.expand(self.catalog, query_vector, is_the_query)

    def _check_settings(self, k: int, tag_filter: TagFilter | None, rank_by_embedding: bool, max_per_artist):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if max_per_artist is not None and max_per_artist < 1:
            raise ValueError(f"max_per_artist must be >= 1, got {max_per_artist}")
        if tag_filter is not None and self.catalog.tag_model is None:
            raise ValueError("this index has no tag model: switch the tag filter off")
        if not rank_by_embedding and self.catalog.tag_model is None:
            raise ValueError("this index has no tag model: rank by embedding")

    def _candidates(self, query: Query, tag_filter: TagFilter | None) -> _Candidates:
        """Stage 1: the tracks that may be returned, and the query's tag set (that chose them, when stage 1 is on)."""
        allowed = self._excluded_mask(query)
        if query.tag_probabilities is not None and not np.all(np.isfinite(query.tag_probabilities)):
            raise ValueError("the query's tag probabilities are not finite")
        if tag_filter is None:
            if query.tag_probabilities is None or self.catalog.tag_model is None:
                return _Candidates(allowed)
            return _Candidates(allowed, *self._tag_sets_of(query, self.tag_sets))  # To explain, not to filter.
        if query.tag_probabilities is None:
            raise ValueError("the query has no tag probabilities for the tag filter")
        query_tags, query_members, catalog_members = self._tag_sets_of(query, tag_filter)
        if not query_tags:
            top_tag = self._top_tag(query.tag_probabilities)
            note = (
                f"stage 1 skipped: no tag of the query reaches probability {tag_filter.threshold} (top tag: {top_tag})"
            )
            return _Candidates(allowed, notes=(note,))
        sharing = allowed & (catalog_members & query_members).any(axis=1)
        if not sharing.any():  # An empty answer helps no one: rank all, say why.
            shown = ", ".join(f"{tag} {p:.2f}" for tag, p in query_tags)
            note = f"stage 1 skipped: no catalog track shares the query's tag set ({shown})"
            return _Candidates(allowed, query_tags, query_members, catalog_members, notes=(note,))
        return _Candidates(sharing, query_tags, query_members, catalog_members)

    def _tag_sets_of(self, query: Query, settings: TagFilter):
        """The query's tag set as (tag, probability) pairs and membership, and the catalog's tag sets."""
        query_members = settings.tag_sets(np.asarray(query.tag_probabilities, np.float32))[0]
        query_tags = tuple(
            (self.catalog.vocabulary[i], float(query.tag_probabilities[i])) for i in np.flatnonzero(query_members)
        )
        return query_tags, query_members, self._catalog_tag_sets(settings)

    def _models(self, rank_by_embedding: bool) -> dict[str, str | None]:
        tags = describe(self.catalog.tag_model) if self.catalog.tag_model else None
        ranking = self.catalog.embedding_models.describe() if rank_by_embedding else f"tag probabilities of {tags}"
        return {"tags": tags, "ranking": ranking}

    def _top_tag(self, probabilities) -> str:
        best = int(np.argmax(probabilities))
        return f"{self.catalog.vocabulary[best]} {float(probabilities[best]):.2f}"

    def _excluded_mask(self, query: Query) -> np.ndarray:
        """True for tracks that may be returned: not the query, not its exact duplicates."""
        allowed = np.ones(len(self.catalog), bool)
        if query.track_id is not None and query.track_id in self.catalog:
            allowed[self.catalog.row(query.track_id)] = False
        allowed[self._rows_by_hash.get(query.content_sha256, [])] = False
        return allowed

    def _rank_by_embedding(
        self, ranking_vector, query_vector, allowed, selection: _Selection
    ) -> list[tuple[int, float]]:
        """The best allowed rows by cosine to `ranking_vector`; `query_vector` (unexpanded) finds duplicates of the query."""
        seen = np.zeros(len(self.catalog), bool)
        # Widening stops at `limit` results: past that, a selective tag filter is
        # cheaper (and exact) to finish by scoring the remaining candidates directly.
        limit = min(len(self.catalog), max(MAX_SEARCH_RESULTS, OVERFETCH * OVERFETCH * (selection.k + 1)))
        if np.count_nonzero(allowed) > limit:  # Else as few candidates as the search could return: all scored.
            fetch = min(limit, OVERFETCH * (selection.k + 1))
            while not selection.full:
                results = self.catalog.search(ranking_vector, fetch)[0]
                found = np.array([self.catalog.row(track_id) for track_id, _ in results], np.int64)
                new = found[~seen[found]]
                seen[new] = True
                # The search's new results offered best first by their exact score.
                self._score_exactly(new[allowed[new]], ranking_vector, query_vector, selection)
                if fetch >= limit:
                    break
                fetch = min(limit, fetch * OVERFETCH)
        if not selection.full:
            # Candidates the search did not reach (or that an approximate searcher
            # never returns): scored exactly from their stored embeddings.
            self._score_exactly(np.flatnonzero(allowed & ~seen), ranking_vector, query_vector, selection)
        return self._best_first(selection.taken)

    def _score_exactly(self, rows: np.ndarray, ranking_vector, query_vector, selection: _Selection):
        """Offers `rows` best first by their exact cosine to `ranking_vector`, until the selection is full."""
        self._offer_best_first(rows, self.catalog.embeddings[rows] @ ranking_vector, query_vector, selection)

    def _rank_by_tags(self, query_probabilities, query_embedding, allowed, selection: _Selection):
        rows = np.flatnonzero(allowed)
        probabilities = self.catalog.tag_probabilities[rows]
        norms = np.linalg.norm(probabilities, axis=1) * np.linalg.norm(query_probabilities)
        scores = (probabilities @ query_probabilities) / np.maximum(norms, 1e-12)
        self._offer_best_first(rows, scores, query_embedding, selection)
        return selection.taken

    def _offer_best_first(self, rows: np.ndarray, scores: np.ndarray, query_vector, selection: _Selection):
        """Offers `rows` in the order of their `scores` until the selection is full (`query_vector`, the query's
        unexpanded ranking vector, finds its duplicates)."""
        for i in self._best_first_order(rows, scores):
            row = int(rows[i])
            query_cosine = float(self.catalog.embeddings[row] @ query_vector)
            selection.offer(row, float(scores[i]), query_cosine, self.catalog.tracks[row])
            if selection.full:
                break

    def _best_first_order(self, rows: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """The order of `rows` by score, ties by track id (not by row: the same order in every index layout)."""
        return np.lexsort((self._id_ranks[rows], -scores))

    def _best_first(self, taken: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """Orders by exact score (the approximate search's order can differ slightly), ties by track id."""
        return sorted(taken, key=lambda item: (-item[1], self._id_ranks[item[0]]))

    def _shared_tags(self, query: Query, candidates: _Candidates, row: int) -> tuple[SharedTag, ...]:
        if candidates.query_members is None:
            return ()
        track_members = candidates.catalog_members[row]
        probabilities = self.catalog.tag_probabilities[row]
        return tuple(
            SharedTag(self.catalog.vocabulary[i], float(query.tag_probabilities[i]), float(probabilities[i]))
            for i in np.flatnonzero(candidates.query_members & track_members)
        )


@dataclasses.dataclass(frozen=True)
class _Candidates:
    """Stage 1's outcome.

    Attributes:
        allowed: `[catalog size]` True for tracks that may be returned.
        query_tags: The query's tag set with probabilities (empty: no tags to show).
        query_members: Its boolean membership `[num_tags]` (None: no tags to show).
        catalog_members: The catalog's tag sets `[tracks, num_tags]` under the same settings.
        notes: Why stage 1 was skipped, if it was.
    """

    allowed: np.ndarray
    query_tags: tuple[tuple[str, float], ...] = ()
    query_members: np.ndarray | None = None
    catalog_members: np.ndarray | None = None
    notes: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        return int(self.allowed.sum())


class _Selection:
    """The results taken so far, in rank order, with the per-result exclusions.

    A track is refused when it is (nearly) the query's audio (`query_cosine`
    ≥ `duplicate_cosine`), has the content hash of a result already taken, is
    the same audio as one (embedding cosine ≥ `duplicate_cosine`), or its
    artist already has `max_per_artist` results.
    """

    def __init__(self, embeddings: np.ndarray, duplicate_cosine: float, max_per_artist: int | None, k: int):
        self._embeddings = embeddings
        self._duplicate_cosine = duplicate_cosine
        self._max_per_artist = max_per_artist
        self.k = k
        self._hashes: set[str] = set()
        self._per_artist: collections.Counter[str] = collections.Counter()
        self.taken: list[tuple[int, float]] = []

    @property
    def full(self) -> bool:
        return len(self.taken) >= self.k

    def offer(self, row: int, score: float, query_cosine: float, track: TrackRecord) -> bool:
        """Takes the track at `row` unless an exclusion applies; returns whether it was taken."""
        if query_cosine >= self._duplicate_cosine:
            return False
        if track.content_sha256 and track.content_sha256 in self._hashes:
            return False
        if self.taken and self._duplicates_a_result(row):
            return False  # The same audio as a result already taken (another file or encoding).
        if self._max_per_artist is not None and track.artist and self._per_artist[track.artist] >= self._max_per_artist:
            return False
        self._hashes.add(track.content_sha256)
        self._per_artist[track.artist] += 1
        self.taken.append((row, score))
        return True

    def _duplicates_a_result(self, row: int) -> bool:
        taken_rows = [taken_row for taken_row, _ in self.taken]
        return bool(np.max(self._embeddings[taken_rows] @ self._embeddings[row]) >= self._duplicate_cosine)


def _id_ranks(tracks: list[TrackRecord]) -> np.ndarray:
    """Each row's place in track-id order: what breaks ties between equal scores."""
    ranks = np.empty(len(tracks), np.int64)
    ranks[sorted(range(len(tracks)), key=lambda row: tracks[row].track_id)] = np.arange(len(tracks))
    return ranks
