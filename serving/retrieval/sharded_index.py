"""A catalog index split into shards by track-id hash, and recommendations merged across them.

A catalog past what one machine holds comfortably (README, "Index sizing")
is split into N shards: track `t` lives in shard `stable_hash(t) mod N`, the
hash `data_prep` splits by. Each shard is a complete `CatalogIndex` in its own
folder (`shard-00000-of-00004/`, ...), so any tool that reads an index reads
one shard, and a serving replica can hold one shard; `shards.json` lists them
and is written last.

A query goes to every shard; each runs both stages over its own tracks and
returns its best `k`, and the merge takes the best `k` across shards,
re-applying the exclusions that span shards (content-hash and embedding
duplicates of results already taken, `max_per_artist`). Each shard's best
`k` suffice: a result is only ever excluded because of a better one, which
the merge sees too. As a safeguard (embedding near-duplicates are not
transitive) a shard whose results all made it into the merged top `k` is
asked again for twice as many. With exact (brute-force) shards the merged
top `k` is the one index's top `k` (tested).
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from data_prep.splits import stable_hash
from serving.embedding.ensemble import EmbeddingModels
from serving.export.exported_model import ModelRef
from serving.retrieval.catalog_index import SHARDS_FILENAME, CatalogIndex, IndexMismatchError, TrackRecord
from serving.retrieval.recommender import (
    DEFAULT_DUPLICATE_COSINE,
    DEFAULT_EXPANSION,
    RECOMMENDER_DEFAULT,
    Query,
    QueryExpansion,
    Recommendation,
    RecommendationResult,
    Recommender,
    TagFilter,
    select_best,
)
from serving.retrieval.searcher import normalise

FORMAT = "sharded-catalog-index-1"


def shard_of(track_id: str, num_shards: int) -> int:
    """The shard that holds `track_id`."""
    return stable_hash(track_id) % num_shards


def shard_name(shard: int, num_shards: int) -> str:
    return f"shard-{shard:05d}-of-{num_shards:05d}"


def is_sharded(directory: str) -> bool:
    return os.path.exists(os.path.join(directory, SHARDS_FILENAME))


def split_rows(track_ids: list[str], num_shards: int) -> list[list[int]]:
    """The rows of each shard, in input order."""
    if num_shards < 1:
        raise ValueError(f"the number of shards must be at least 1, got {num_shards}")
    rows = [[] for _ in range(num_shards)]
    for row, track_id in enumerate(track_ids):
        rows[shard_of(track_id, num_shards)].append(row)
    return rows


def shard_names(directory: str) -> list[str]:
    """The shard folders `shards.json` lists, checked (without loading any shard)."""
    path = os.path.join(directory, SHARDS_FILENAME)
    try:
        with open(path, encoding="utf-8") as handle:
            listing = json.load(handle)
        names = listing["shards"]
        if listing["format"] != FORMAT or len(names) != listing["num_shards"]:
            raise ValueError
    except FileNotFoundError:
        raise FileNotFoundError(f"{directory}: no {SHARDS_FILENAME}: not a sharded index") from None
    except (ValueError, KeyError, TypeError):
        raise IndexMismatchError(f"{path}: not a {FORMAT} listing; rebuild the index") from None
    for number, name in enumerate(names):
        if name != shard_name(number, len(names)):
            raise IndexMismatchError(f"{path}: shard {number} is {name!r}, expected {shard_name(number, len(names))}")
    return names


class ShardedIndex:
    """The shards of a catalog index, in shard order.

    Build with `ShardedIndex.build`, load with `ShardedIndex.load`.
    """

    def __init__(self, shards: list[CatalogIndex]):
        first = shards[0]
        for number, shard in enumerate(shards[1:], start=1):
            first.embedding_models.check_same(shard.embedding_models, f"shard {number}")
            if (shard.tag_model and shard.tag_model.identity) != (first.tag_model and first.tag_model.identity):
                raise IndexMismatchError(f"shard {number} was tagged by another model than shard 0")
        self.shards = shards

    @classmethod
    def build(
        cls,
        tracks,
        embeddings: np.ndarray,
        tag_probabilities: np.ndarray | None,
        embedding_models: EmbeddingModels,
        tag_model: ModelRef | None,
        num_shards: int,
        kind: str = "auto",
        leaves_searched_fraction: float = 0.05,
    ) -> ShardedIndex:
        """Splits the tracks by id hash and builds one `CatalogIndex` per shard (each configured by its size)."""
        rows = split_rows([t.track_id for t in tracks], num_shards)
        empty = [number for number, shard_rows in enumerate(rows) if not shard_rows]
        if empty:
            raise ValueError(f"{len(tracks)} tracks leave shards {empty[:5]} of {num_shards} empty: use fewer shards")
        catalog_mean = embedding_models.part_means(normalise(embeddings))  # One mean for the whole catalog.
        return cls(
            [
                CatalogIndex.build(
                    [tracks[row] for row in shard_rows],
                    embeddings[shard_rows],
                    None if tag_probabilities is None else tag_probabilities[shard_rows],
                    embedding_models,
                    tag_model,
                    kind,
                    leaves_searched_fraction,
                    catalog_mean,
                )
                for shard_rows in rows
            ]
        )

    def __len__(self) -> int:
        return sum(len(shard) for shard in self.shards)

    def __contains__(self, track_id: str) -> bool:
        return track_id in self.shard_for(track_id)

    def shard_for(self, track_id: str) -> CatalogIndex:
        return self.shards[shard_of(track_id, len(self.shards))]

    def track(self, track_id: str) -> TrackRecord:
        return self.shard_for(track_id).track(track_id)

    def ranking_vector_of(self, track_id: str) -> np.ndarray:
        return self.shard_for(track_id).ranking_vector_of(track_id)

    @property
    def embedding_models(self) -> EmbeddingModels:
        return self.shards[0].embedding_models

    @property
    def tag_model(self) -> ModelRef | None:
        return self.shards[0].tag_model

    @property
    def vocabulary(self) -> tuple[str, ...]:
        return self.shards[0].vocabulary

    @property
    def catalog_mean(self) -> np.ndarray | None:
        """The whole catalog's mean, which every shard stores and centres on."""
        return self.shards[0].catalog_mean

    @property
    def notes(self) -> tuple[str, ...]:
        return self.shards[0].notes

    def ranking_vectors(self, model_embeddings: np.ndarray) -> np.ndarray:
        """As `CatalogIndex.ranking_vectors`: every shard centres on the same mean."""
        return self.shards[0].ranking_vectors(model_embeddings)

    def _recentre(self):
        """Centres every shard on the whole catalog's mean: the shards' own means weighted by their sizes."""
        sizes = np.array([len(shard) for shard in self.shards], np.float64)
        dim = self.embedding_models.embedding_dim
        means = np.stack([shard.own_mean() if len(shard) else np.zeros(dim) for shard in self.shards])
        catalog_mean = (sizes[:, np.newaxis] * means).sum(axis=0) / sizes.sum()
        for shard in self.shards:
            shard.recentre(catalog_mean)

    def search(self, queries: np.ndarray, k: int = 10) -> list[list[tuple[str, float]]]:
        """Each query's `k` best tracks across the shards (each shard searched for `k`), as (id, cosine)."""
        per_shard = [shard.searcher.search(queries, k) for shard in self.shards]
        merged = []
        for number in range(len(per_shard[0])):
            found = [item for results in per_shard for item in results[number]]
            merged.append(sorted(found, key=lambda item: (-item[1], item[0]))[:k])
        return merged

    def upsert(self, tracks, embeddings: np.ndarray, tag_probabilities: np.ndarray | None):
        """Adds or replaces tracks, each in its shard, and centres every shard on the new catalog mean."""
        for number, shard_rows in enumerate(split_rows([t.track_id for t in tracks], len(self.shards))):
            if shard_rows:
                self.shards[number].upsert(
                    [tracks[row] for row in shard_rows],
                    embeddings[shard_rows],
                    None if tag_probabilities is None else tag_probabilities[shard_rows],
                    recentre=False,
                )
        self._recentre()

    def delete(self, track_ids: list[str]):
        """Removes tracks from their shards; unknown ids are an error naming them (and nothing is removed)."""
        unknown = [t for t in track_ids if t not in self]
        if unknown:
            raise KeyError(f"not in the index: {unknown[:5]}")
        for number, shard_rows in enumerate(split_rows(track_ids, len(self.shards))):
            if shard_rows:
                self.shards[number].delete([track_ids[row] for row in shard_rows], recentre=False)
        if len(self):
            self._recentre()

    def save(self, directory: str):
        """Writes every shard into its folder, then `shards.json`."""
        os.makedirs(directory, exist_ok=True)
        names = [shard_name(number, len(self.shards)) for number in range(len(self.shards))]
        for name, shard in zip(names, self.shards, strict=True):
            shard.save(os.path.join(directory, name))
        listing = {"format": FORMAT, "num_shards": len(names), "shards": names, "num_tracks": len(self)}
        temporary = os.path.join(directory, SHARDS_FILENAME + ".tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(listing, handle, indent=2)
        os.replace(temporary, os.path.join(directory, SHARDS_FILENAME))

    @classmethod
    def load(
        cls,
        directory: str,
        expected_embedding_models: EmbeddingModels | None = None,
        expected_tag_model: ModelRef | None = None,
    ) -> ShardedIndex:
        """Loads every shard listed in `shards.json` (each checked as `CatalogIndex.load` does)."""
        names = shard_names(directory)
        return cls(
            [
                CatalogIndex.load(os.path.join(directory, name), expected_embedding_models, expected_tag_model)
                for name in names
            ]
        )


def load_index(directory: str, *expected) -> CatalogIndex | ShardedIndex:
    """The index in `directory`, sharded or not."""
    return ShardedIndex.load(directory, *expected) if is_sharded(directory) else CatalogIndex.load(directory, *expected)


def recommender_for(
    index: CatalogIndex | ShardedIndex,
    tag_filter: TagFilter | None = None,
    expansion: QueryExpansion | None = DEFAULT_EXPANSION,
    tag_sets: TagFilter = TagFilter(),
) -> Recommender | ShardedRecommender:
    """The recommender of an index, sharded or not (arguments as for `Recommender`)."""
    if isinstance(index, ShardedIndex):
        return ShardedRecommender(index, tag_filter, expansion=expansion, tag_sets=tag_sets)
    return Recommender(index, tag_filter, expansion=expansion, tag_sets=tag_sets)


class ShardedRecommender:
    """`Recommender.recommend` over a `ShardedIndex`: every shard recommends, the results are merged.

    Args:
        index: The shards.
        tag_filter: Stage 1's default settings (None: off).
        duplicate_cosine: As for `Recommender`.
        expansion: As for `Recommender`: every shard expands the query with
            the nearest tracks of the whole catalog, so all rank by one vector.
    """

    def __init__(
        self,
        index: ShardedIndex,
        tag_filter: TagFilter | None = None,
        duplicate_cosine: float = DEFAULT_DUPLICATE_COSINE,
        expansion: QueryExpansion | None = DEFAULT_EXPANSION,
        tag_sets: TagFilter = TagFilter(),
    ):
        self.catalog = index
        self.duplicate_cosine = duplicate_cosine
        self._shards = [
            Recommender(shard, tag_filter, duplicate_cosine, expansion, tag_sets, neighbours=index)
            for shard in index.shards
        ]

    def query_for_track(self, track_id: str) -> Query:
        return self._shards[shard_of(track_id, len(self._shards))].query_for_track(track_id)

    def recommend(
        self,
        query: Query,
        k: int = 10,
        tag_filter=RECOMMENDER_DEFAULT,
        rank_by_embedding: bool = True,
        max_per_artist: int | None = None,
        expansion=RECOMMENDER_DEFAULT,
    ) -> RecommendationResult:
        """As `Recommender.recommend`, over every shard."""
        # Stage 1 is skipped only when no track of any shard shares the query's tag set, as for one index.
        rank_all = False
        fetch = [k] * len(self._shards)
        results: list[RecommendationResult | None] = [None] * len(self._shards)
        while True:
            for number, recommender in enumerate(self._shards):
                if results[number] is None:
                    results[number] = recommender.recommend(
                        query, fetch[number], tag_filter, rank_by_embedding, max_per_artist, rank_all, expansion
                    )
            if not rank_all and results[0].query_tags and not any(r.num_candidates for r in results):
                rank_all, results = True, [None] * len(self._shards)
                continue
            merged = self._merge(results, k, max_per_artist)
            short = len(merged) < k
            again = [
                number
                for number, result in enumerate(results)
                if len(result.recommendations) == fetch[number]
                and (short or result.recommendations[-1].score >= merged[-1].score)
            ]
            if not again:
                break
            for number in again:
                fetch[number] *= 2
                results[number] = None
        first = results[0]
        notes = [note for note in first.notes if not note.startswith("found ")]
        count = sum(result.num_candidates for result in results)
        if len(merged) < k:
            notes.append(f"found {len(merged)} of the {k} results asked for ({count} candidates)")
        return dataclasses.replace(first, recommendations=tuple(merged), k=k, num_candidates=count, notes=tuple(notes))

    def _embedding(self, track_id: str) -> np.ndarray:
        shard = self.catalog.shard_for(track_id)
        return shard.embeddings[shard.row(track_id)]

    def _merge(self, results, k: int, max_per_artist: int | None) -> list[Recommendation]:
        offered = [item for result in results for item in result.recommendations]
        embeddings = np.stack([self._embedding(item.track.track_id) for item in offered]) if offered else None
        order = sorted(range(len(offered)), key=lambda i: (-offered[i].score, offered[i].track.track_id))
        taken = select_best(
            [(i, offered[i].score, offered[i].track) for i in order],
            embeddings,
            self.duplicate_cosine,
            max_per_artist,
            k,
        )
        return [dataclasses.replace(offered[i], rank=rank) for rank, i in enumerate(taken, start=1)]
