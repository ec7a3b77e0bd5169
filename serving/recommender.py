"""Two-stage recommendations: CRNN tags select candidates, embeddings rank them.

Stage 1 (tag filter): a track's tag set is its tags with probability ≥ the
threshold, at most the `top_n` most probable. Candidates are the catalog
tracks whose tag set shares at least one tag with the query's. Tag sets are
boolean membership, computed from probabilities with `>=`, never by
comparing floats for equality.

Stage 2 (embedding rank): the ScaNN index returns the nearest tracks by
cosine similarity; results outside the candidates are dropped, so the search
over-fetches and widens (4x at a time, up to 4096 results) until `k` results
are found; candidates it has not reached by then are scored exactly from
their stored embeddings, so every candidate can be found. When fewer than
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

import dataclasses

import numpy as np

from serving.catalog_index import CatalogIndex, TrackRecord
from serving.exported_model import describe

DEFAULT_DUPLICATE_COSINE = 0.9999
OVERFETCH = 4
MAX_SEARCH_RESULTS = 4096


@dataclasses.dataclass(frozen=True)
class TagFilter:
    """Stage 1's settings.

    Attributes:
        threshold: Minimum probability for a tag to count.
        top_n: At most this many tags per track (the most probable).
    """

    threshold: float = 0.5
    top_n: int = 3

    def __post_init__(self):
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"tag threshold must be in [0, 1], got {self.threshold}")
        if self.top_n < 1:
            raise ValueError(f"top_n must be >= 1, got {self.top_n}")

    def tag_sets(self, probabilities: np.ndarray) -> np.ndarray:
        """Boolean membership `[tracks, num_tags]` of each track's tag set."""
        probabilities = np.atleast_2d(probabilities)
        top_n = min(self.top_n, probabilities.shape[1])
        ranked = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_n]
        members = np.zeros(probabilities.shape, bool)
        np.put_along_axis(members, ranked, True, axis=1)
        return members & (probabilities >= self.threshold)


@dataclasses.dataclass(frozen=True)
class Query:
    """What to recommend for.

    Attributes:
        embedding: The ranking model's embedding `[dim]`.
        tag_probabilities: The tag model's probabilities `[num_tags]` (None
            without a tag model).
        track_id: The catalog track this is, if any (excluded from results).
        content_sha256: Hash of the query audio (its duplicates are excluded).
    """

    embedding: np.ndarray
    tag_probabilities: np.ndarray | None = None
    track_id: str | None = None
    content_sha256: str = ""


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
        score: Cosine similarity of the embeddings (of the tag probabilities
            when stage 2 is off).
        shared_tags: Tags the track shares with the query (stage 1).
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

    def to_dict(self) -> dict:
        return {
            "rank": self.rank,
            **dataclasses.asdict(self.track),
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
        query_tags: The query's tag set with probabilities (stage 1).
        num_candidates: Tracks that passed stage 1 and the exclusions.
        notes: Plain-language remarks (stage skipped, fewer than k found, ...).
        models: Which exported models made the query's `tags` and the
            `ranking` (`serving.exported_model.describe`; None: no tags).
    """

    recommendations: tuple[Recommendation, ...]
    k: int
    query_tags: tuple[tuple[str, float], ...]
    num_candidates: int
    notes: tuple[str, ...]
    models: dict[str, str | None] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "models": dict(self.models),
            "k": self.k,
            "found": len(self.recommendations),
            "query_tags": [{"tag": t, "probability": p} for t, p in self.query_tags],
            "num_candidates": self.num_candidates,
            "notes": list(self.notes),
            "recommendations": [r.to_dict() for r in self.recommendations],
        }


class Recommender:
    """Recommends catalog tracks for a query.

    Args:
        catalog: The catalog index.
        tag_filter: Stage 1's default settings (None: stage 1 off by default).
        duplicate_cosine: Embedding cosine from which a track counts as an
            exact duplicate of the query.

    A recommender reads the catalog as it was when created: make a new one
    after `CatalogIndex.upsert` or `delete`. `recommend` may be called from
    several threads at once.
    """

    def __init__(
        self,
        catalog: CatalogIndex,
        tag_filter: TagFilter | None = TagFilter(),
        duplicate_cosine: float = DEFAULT_DUPLICATE_COSINE,
    ):
        self.catalog = catalog
        self.tag_filter = tag_filter if catalog.tag_model else None
        self.duplicate_cosine = duplicate_cosine
        self._tag_sets = {}
        self._rows_by_hash: dict[str, list[int]] = {}
        for row, track in enumerate(catalog.tracks):
            if track.content_sha256:
                self._rows_by_hash.setdefault(track.content_sha256, []).append(row)

    def query_for_track(self, track_id: str) -> Query:
        """The query of a catalog track: its stored embedding and tag probabilities."""
        row = self.catalog.row(track_id)
        probabilities = self.catalog.tag_probabilities
        return Query(
            embedding=self.catalog.embeddings[row],
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
        tag_filter: TagFilter | None | str = "default",
        rank_by_embedding: bool = True,
        max_per_artist: int | None = None,
    ) -> RecommendationResult:
        """The `k` best catalog tracks for `query`.

        Args:
            query: The query.
            k: Number of results wanted.
            tag_filter: Stage 1's settings; `"default"` for the recommender's,
                None to switch stage 1 off.
            rank_by_embedding: Stage 2 on (embedding cosine through ScaNN) or
                off (tag-probability cosine).
            max_per_artist: At most this many results per artist (None: no
                limit; tracks with no artist are not limited).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if max_per_artist is not None and max_per_artist < 1:
            raise ValueError(f"max_per_artist must be >= 1, got {max_per_artist}")
        tag_filter = self.tag_filter if tag_filter == "default" else tag_filter
        if tag_filter is not None and self.catalog.tag_model is None:
            raise ValueError("this index has no tag model: switch the tag filter off")
        if tag_filter is None and not rank_by_embedding:
            raise ValueError("both stages are off: nothing to rank by")
        notes = []
        query_embedding = np.asarray(query.embedding, np.float32)
        if not np.all(np.isfinite(query_embedding)) or not np.any(query_embedding):
            raise ValueError("the query embedding is zero or not finite")
        if query.tag_probabilities is not None and not np.all(np.isfinite(query.tag_probabilities)):
            raise ValueError("the query's tag probabilities are not finite")
        query_embedding = query_embedding / np.linalg.norm(query_embedding)
        allowed = self._excluded_mask(query)
        query_tags: tuple[tuple[str, float], ...] = ()
        query_members = catalog_members = None
        if tag_filter is not None:
            if query.tag_probabilities is None:
                raise ValueError("the query has no tag probabilities for the tag filter")
            query_members = tag_filter.tag_sets(np.asarray(query.tag_probabilities, np.float32))[0]
            query_tags = tuple(
                (self.catalog.vocabulary[i], float(query.tag_probabilities[i])) for i in np.flatnonzero(query_members)
            )
            if not query_tags:
                notes.append(
                    f"stage 1 skipped: no tag of the query reaches probability {tag_filter.threshold} "
                    f"(top tag: {self._top_tag(query.tag_probabilities)})"
                )
                query_members = None
            else:
                catalog_members = self._catalog_tag_sets(tag_filter)
                sharing = allowed & (catalog_members & query_members).any(axis=1)
                if sharing.any():
                    allowed = sharing
                else:  # An empty answer helps no one: rank the whole catalog, and say why.
                    notes.append(
                        "stage 1 skipped: no catalog track shares the query's tag set "
                        f"({', '.join(f'{tag} {p:.2f}' for tag, p in query_tags)})"
                    )
                    query_tags, query_members = (), None
        num_candidates = int(allowed.sum())
        if rank_by_embedding:
            ranked = self._rank_by_embedding(query_embedding, allowed, k, max_per_artist)
        else:
            probabilities = np.asarray(query.tag_probabilities, np.float32)
            ranked = self._rank_by_tags(probabilities, query_embedding, allowed, k, max_per_artist)
        recommendations = tuple(
            Recommendation(
                rank, self.catalog.tracks[row], score, self._shared_tags(query, query_members, catalog_members, row)
            )
            for rank, (row, score) in enumerate(ranked, start=1)
        )
        if len(recommendations) < k:
            notes.append(f"found {len(recommendations)} of the {k} results asked for ({num_candidates} candidates)")
        return RecommendationResult(
            recommendations, k, query_tags, num_candidates, tuple(notes), self._models(rank_by_embedding)
        )

    def _models(self, rank_by_embedding: bool) -> dict[str, str | None]:
        tags = describe(self.catalog.tag_model) if self.catalog.tag_model else None
        ranking = describe(self.catalog.embedding_model) if rank_by_embedding else f"tag probabilities of {tags}"
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

    def _accept(self, row: int, score: float, query_cosine: float, state: dict, max_per_artist: int | None) -> bool:
        """Applies the per-result exclusions in rank order; records what was taken."""
        track = self.catalog.tracks[row]
        if query_cosine >= self.duplicate_cosine:
            return False
        if track.content_sha256 and track.content_sha256 in state["hashes"]:
            return False
        taken_rows = [taken_row for taken_row, _ in state["taken"]]
        if (
            taken_rows
            and np.max(self.catalog.embeddings[taken_rows] @ self.catalog.embeddings[row]) >= self.duplicate_cosine
        ):
            return False  # The same audio as a result already taken (another file or encoding).
        if max_per_artist is not None and track.artist and state["artists"].get(track.artist, 0) >= max_per_artist:
            return False
        state["hashes"].add(track.content_sha256)
        state["artists"][track.artist] = state["artists"].get(track.artist, 0) + 1
        state["taken"].append((row, score))
        return True

    def _rank_by_embedding(self, query_embedding, allowed, k, max_per_artist) -> list[tuple[int, float]]:
        state = {"hashes": set(), "artists": {}, "taken": []}
        seen = np.zeros(len(self.catalog), bool)
        # Widening stops at `limit` results: past that, a selective tag filter is
        # cheaper (and exact) to finish by scoring the remaining candidates directly.
        limit = min(len(self.catalog), max(MAX_SEARCH_RESULTS, OVERFETCH * OVERFETCH * (k + 1)))
        fetch = min(limit, OVERFETCH * (k + 1))
        while True:
            for track_id, _ in self.catalog.searcher.search(query_embedding, fetch)[0]:
                row = self.catalog.row(track_id)
                if seen[row]:
                    continue
                seen[row] = True
                if allowed[row]:
                    score = float(self.catalog.embeddings[row] @ query_embedding)
                    self._accept(row, score, score, state, max_per_artist)
                    if len(state["taken"]) == k:
                        return _best_first(state["taken"])
            if fetch >= limit:
                break
            fetch = min(limit, fetch * OVERFETCH)
        # Candidates the search did not reach (or that an approximate searcher
        # never returns): scored exactly from their stored embeddings.
        rest = np.flatnonzero(allowed & ~seen)
        if rest.size:
            scores = self.catalog.embeddings[rest] @ query_embedding
            for i in np.argsort(-scores, kind="stable"):
                self._accept(int(rest[i]), float(scores[i]), float(scores[i]), state, max_per_artist)
                if len(state["taken"]) == k:
                    break
        return _best_first(state["taken"])

    def _rank_by_tags(
        self, query_probabilities, query_embedding, allowed, k, max_per_artist
    ) -> list[tuple[int, float]]:
        state = {"hashes": set(), "artists": {}, "taken": []}
        rows = np.flatnonzero(allowed)
        probabilities = self.catalog.tag_probabilities[rows]
        norms = np.linalg.norm(probabilities, axis=1) * np.linalg.norm(query_probabilities)
        scores = (probabilities @ query_probabilities) / np.maximum(norms, 1e-12)
        for i in np.argsort(-scores, kind="stable"):
            row = int(rows[i])
            query_cosine = float(self.catalog.embeddings[row] @ query_embedding)
            self._accept(row, float(scores[i]), query_cosine, state, max_per_artist)
            if len(state["taken"]) == k:
                break
        return state["taken"]

    def _shared_tags(self, query: Query, query_members, catalog_members, row: int) -> tuple[SharedTag, ...]:
        if query_members is None:
            return ()
        track_members = catalog_members[row]
        probabilities = self.catalog.tag_probabilities[row]
        return tuple(
            SharedTag(self.catalog.vocabulary[i], float(query.tag_probabilities[i]), float(probabilities[i]))
            for i in np.flatnonzero(query_members & track_members)
        )


def _best_first(taken: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Orders by exact score (the approximate search's order can differ slightly), ties by row."""
    return sorted(taken, key=lambda item: (-item[1], item[0]))
