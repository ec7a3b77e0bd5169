"""A catalog index split into shards by track-id hash, read as one index.

A catalog past what one machine holds comfortably (docs/recommending.md, "Index sizing")
is split into N shards: track `t` lives in shard `stable_hash(t) mod N`, the
hash `data_prep` splits by. Each shard is a complete `CatalogIndex` in its own
folder (`shard-00000-of-00004/`, ...), so any tool that reads an index reads
one shard, and a serving replica can hold one shard; `shards.json` lists them
and is written last.

Loaded, a sharded index is one index to everything that reads it: its
tracks, arrays and rows run across the shards in shard order (each shard's
arrays are views of them, so nothing is held twice), and its searcher asks
every shard for the `k` best and merges them by score. The recommender, the
query binary and the web app read it exactly as they read one index; with
exact (brute-force) shards every answer is the one index's (tested).
"""

from __future__ import annotations

import json
import os

import numpy as np

from data_prep.splits import stable_hash
from serving.embedding.ensemble import EmbeddingModels
from serving.export.exported_model import ModelRef
from serving.retrieval.catalog_index import SHARDS_FILENAME, CatalogIndex, IndexMismatchError, TrackRows
from serving.retrieval.searcher import SearcherConfig, normalise

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


class ShardedSearcher:
    """The shards' searchers as one: each is asked for the `k` best, the merge keeps the `k` best by score.

    With exact (brute-force) shards the merged `k` are the one index's (ties
    broken by track id).
    """

    def __init__(self, searchers: list):
        self.searchers = searchers

    @property
    def info(self) -> SearcherConfig:
        """The shards' kinds (`brute_force`, or `ah,tree_ah` for shards of different sizes) and embedding size."""
        kinds = sorted({searcher.info.kind for searcher in self.searchers})
        return SearcherConfig(embedding_dim=self.searchers[0].info.embedding_dim, kind=",".join(kinds))

    def search(self, queries: np.ndarray, k: int = 10) -> list[list[tuple[str, float]]]:
        """Each query's `k` best tracks across the shards, as (id, cosine), best first."""
        per_shard = [searcher.search(queries, k) for searcher in self.searchers]
        merged = []
        for number in range(len(per_shard[0])):
            found = [item for results in per_shard for item in results[number]]
            merged.append(sorted(found, key=lambda item: (-item[1], item[0]))[:k])
        return merged


class ShardedIndex(TrackRows):
    """The shards of a catalog index, read as one index (`TrackRows`, as a `CatalogIndex` is read).

    Build with `ShardedIndex.build`, load with `ShardedIndex.load`.

    Attributes:
        shards: The shards, in shard order.
        tracks: Every shard's tracks, in shard order: a track's row is its
            place here.
        model_embeddings, embeddings, tag_probabilities: As `CatalogIndex`'s,
            by these rows.
        searcher: Searches every shard (`ShardedSearcher`).
    """

    def __init__(self, shards: list[CatalogIndex]):
        first = shards[0]
        for number, shard in enumerate(shards[1:], start=1):
            first.embedding_models.check_same(shard.embedding_models, f"shard {number}")
            if (shard.tag_model and shard.tag_model.identity) != (first.tag_model and first.tag_model.identity):
                raise IndexMismatchError(f"shard {number} was tagged by another model than shard 0")
        self.shards = shards
        self._assemble()

    def _assemble(self):
        """The shards' tracks and arrays as one index's rows; each shard's arrays become views of these."""
        self.tracks = [track for shard in self.shards for track in shard.tracks]
        self._rows = {track.track_id: row for row, track in enumerate(self.tracks)}
        self.model_embeddings = self._joined("model_embeddings")
        self.embeddings = self._joined("embeddings")
        self.tag_probabilities = None if self.shards[0].tag_probabilities is None else self._joined("tag_probabilities")
        self.searcher = ShardedSearcher([shard.searcher for shard in self.shards])

    def _joined(self, name: str) -> np.ndarray:
        joined = np.concatenate([getattr(shard, name) for shard in self.shards])
        start = 0
        for shard in self.shards:
            setattr(shard, name, joined[start : start + len(shard)])
            start += len(shard)
        return joined

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

    @property
    def num_shards(self) -> int:
        return len(self.shards)

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
        self._assemble()

    def delete(self, track_ids: list[str]):
        """Removes tracks from their shards; unknown ids are an error naming them (and nothing is removed)."""
        unknown = [t for t in track_ids if t not in self]
        if unknown:
            raise KeyError(f"not in the index: {unknown[:5]}")
        for number, shard_rows in enumerate(split_rows(track_ids, len(self.shards))):
            if shard_rows:
                self.shards[number].delete([track_ids[row] for row in shard_rows], recentre=False)
        if any(len(shard) for shard in self.shards):
            self._recentre()
        self._assemble()

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
