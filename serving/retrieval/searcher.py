"""The ScaNN index of track embeddings: build, search, update, save and load.

Embeddings are L2-normalised and scored by dot product (cosine similarity).
The configuration follows ScaNN's rules of thumb (docs/algorithms.md):
brute force below 20k tracks, asymmetric hashing (AH, 2 dimensions per
block) + exact re-scoring below 100k, and a tree partition (about sqrt(n)
leaves) + AH + re-scoring above.

`TrackIndex` is as thin as ScaNN's own wrapper: it maps track ids to rows,
keeps the ids out of pickles and saves its configuration. Which model made
the embeddings, and the index's format version, are `CatalogIndex`'s
(`serving.retrieval.catalog_index`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
from scann.scann_ops.py import scann_ops_pybind

from serving.retrieval.index_layout import SEARCHER_KINDS

CONFIG_FILENAME = "index.json"
SEARCHER_DIRNAME = "scann"
TRACK_IDS_FILENAME = "track_ids.json"
_SCANN_PICKLE = "scann_docids.pkl"  # ScaNN's own id list: never written or read here.
KINDS = SEARCHER_KINDS
BRUTE_FORCE_BELOW = 20_000
AH_BELOW = 100_000


def choose_kind(num_items: int) -> str:
    """ScaNN's rule of thumb for the searcher configuration by size."""
    if num_items < BRUTE_FORCE_BELOW:
        return "brute_force"
    return "ah" if num_items < AH_BELOW else "tree_ah"


def normalise(embeddings: np.ndarray, what: str = "embeddings") -> np.ndarray:
    """L2-normalised float32 rows; zero or non-finite rows are an error."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2:
        raise ValueError(f"{what} must be [items, dim], got shape {embeddings.shape}")
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    bad = ~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0)
    if bad.any():
        raise ValueError(f"{what}: rows {np.flatnonzero(bad)[:5].tolist()} are zero or not finite")
    return embeddings / norms


@dataclasses.dataclass(frozen=True)
class SearcherConfig:
    """How a searcher was configured.

    Attributes:
        embedding_dim: Size of the embeddings.
        kind: `brute_force`, `ah` or `tree_ah`.
        num_leaves: Tree leaves (`tree_ah` only).
        leaves_to_search: Leaves searched per query (`tree_ah` only).
        reorder: Candidates re-scored exactly (`ah` and `tree_ah`).
    """

    embedding_dim: int
    kind: str
    num_leaves: int = 0
    leaves_to_search: int = 0
    reorder: int = 0

    @classmethod
    def from_dict(cls, fields: dict) -> SearcherConfig:
        """Reads `index.json`; indexes written before the model moved to `CatalogIndex` also name it: ignored."""
        return cls(**{name: fields[name] for name in (f.name for f in dataclasses.fields(cls)) if name in fields})


def _builder(embeddings: np.ndarray, info: SearcherConfig, num_neighbors: int):
    builder = scann_ops_pybind.builder(embeddings, num_neighbors, "dot_product")
    sample = min(len(embeddings), 100_000)
    if info.kind == "brute_force":
        return builder.score_brute_force()
    if info.kind == "tree_ah":
        builder = builder.tree(
            num_leaves=info.num_leaves, num_leaves_to_search=info.leaves_to_search, training_sample_size=sample
        )
    return builder.score_ah(2, anisotropic_quantization_threshold=0.2, training_sample_size=sample).reorder(
        info.reorder
    )


class TrackIndex:
    """A ScaNN searcher over track ids.

    Build with `TrackIndex.build`, load with `TrackIndex.load`.
    """

    def __init__(self, searcher, info: SearcherConfig):
        self._searcher = searcher
        self.info = info

    @classmethod
    def build(
        cls,
        track_ids: list[str],
        embeddings: np.ndarray,
        kind: str = "auto",
        num_neighbors: int = 10,
        leaves_searched_fraction: float = 0.05,
    ) -> TrackIndex:
        """Builds an index.

        Args:
            track_ids: Unique ids, one per embedding row.
            embeddings: `[items, dim]`; normalised here.
            kind: `auto` (by size, ScaNN's guidance) or one of `KINDS`.
            num_neighbors: Default number of results per query.
            leaves_searched_fraction: Share of the tree's leaves searched per
                query (`tree_ah`): the recall/speed trade-off. The default,
                5 %, gave recall@10 0.999 at 134x brute-force speed on 1M
                clustered 512-d vectors (BENCHMARKS.md, `index_search`).
        """
        track_ids = [str(t) for t in track_ids]
        embeddings = normalise(embeddings)
        if len(track_ids) != len(embeddings):
            raise ValueError(f"{len(track_ids)} ids for {len(embeddings)} embeddings")
        if len(set(track_ids)) != len(track_ids):
            raise ValueError("track ids must be unique")
        if not track_ids:
            raise ValueError("cannot build an index of no tracks")
        kind = choose_kind(len(track_ids)) if kind == "auto" else kind
        if kind not in KINDS:
            raise ValueError(f"kind must be auto or one of {KINDS}, got {kind!r}")
        num_leaves = max(2, int(math.sqrt(len(track_ids)))) if kind == "tree_ah" else 0
        info = SearcherConfig(
            embedding_dim=int(embeddings.shape[1]),
            kind=kind,
            num_leaves=min(num_leaves, len(track_ids)),
            leaves_to_search=max(1, round(num_leaves * leaves_searched_fraction)) if kind == "tree_ah" else 0,
            reorder=max(100, 10 * num_neighbors) if kind != "brute_force" else 0,
        )
        searcher = _builder(embeddings, info, num_neighbors).build(docids=list(track_ids))
        return cls(searcher, info)

    def __len__(self) -> int:
        return self._searcher.size()

    def __contains__(self, track_id: str) -> bool:
        return track_id in self._searcher.docids

    def search(
        self, queries: np.ndarray, k: int = 10, leaves_to_search: int | None = None
    ) -> list[list[tuple[str, float]]]:
        """The `k` most similar tracks of each query, best first, as (id, cosine).

        Args:
            queries: `[num_queries, dim]` or `[dim]`; normalised here.
            k: Results per query (at most the index size).
            leaves_to_search: Overrides the tree's leaves searched per query
                (`tree_ah` only): more is slower and recalls more.
        """
        queries = normalise(np.atleast_2d(queries), "queries")
        self._check_dim(queries.shape[1])
        k = min(k, len(self))
        if k == 0:
            return [[] for _ in queries]
        reorder = max(self.info.reorder, k) if self.info.reorder else None
        leaves = leaves_to_search if self.info.kind == "tree_ah" else None
        # The parallel variant splits large batches over ScaNN's thread pool.
        search = self._searcher.search_batched_parallel if len(queries) > 1 else self._searcher.search_batched
        ids, scores = search(queries, final_num_neighbors=k, pre_reorder_num_neighbors=reorder, leaves_to_search=leaves)
        return [
            [(str(i), float(s)) for i, s in zip(row_ids, row_scores, strict=True)]
            for row_ids, row_scores in zip(ids, scores, strict=True)
        ]

    def upsert(self, track_ids: list[str], embeddings: np.ndarray):
        """Adds new tracks and replaces the embeddings of known ones."""
        track_ids = [str(t) for t in track_ids]
        embeddings = normalise(embeddings)
        self._check_dim(embeddings.shape[1])
        if len(set(track_ids)) != len(track_ids) or len(track_ids) != len(embeddings):
            raise ValueError("upsert needs unique ids, one per embedding")
        self._searcher.upsert(track_ids, embeddings)

    def delete(self, track_ids: list[str]):
        """Removes tracks; unknown or repeated ids are an error naming them (and nothing is removed)."""
        track_ids = [str(t) for t in track_ids]
        repeated = sorted({t for t in track_ids if track_ids.count(t) > 1})
        if repeated:
            # ScaNN's wrapper would drop the first copy from its id list, fail on the second and leave its
            # vectors and ids misaligned.
            raise ValueError(f"track ids repeated in one delete: {repeated[:5]}")
        known = set(self._searcher.docids)
        unknown = [t for t in track_ids if t not in known]
        if unknown:
            raise KeyError(f"not in the index: {unknown[:5]}")
        self._searcher.delete(track_ids)

    @property
    def track_ids(self) -> list[str]:
        """The ids the searcher returns, in its internal order."""
        return [str(t) for t in self._searcher.docids]

    def _check_dim(self, dim: int):
        if dim != self.info.embedding_dim:
            raise ValueError(f"embeddings of size {dim} for a searcher of {self.info.embedding_dim}-d embeddings")

    def save(self, directory: str):
        """Writes the searcher (with relative paths, so the folder can move), its track ids and its info.

        The ids go to `track_ids.json`: ScaNN's wrapper would pickle them,
        and loading a pickle runs whatever code it holds.
        """
        searcher_dir = os.path.join(directory, SEARCHER_DIRNAME)
        os.makedirs(searcher_dir, exist_ok=True)
        self._searcher.serialize(searcher_dir, relative_path=True)
        os.remove(os.path.join(searcher_dir, _SCANN_PICKLE))
        with open(os.path.join(directory, TRACK_IDS_FILENAME), "w", encoding="utf-8") as handle:
            json.dump(self.track_ids, handle, ensure_ascii=False)
        with open(os.path.join(directory, CONFIG_FILENAME), "w", encoding="utf-8") as handle:
            json.dump({**dataclasses.asdict(self.info), "num_items": len(self)}, handle, indent=2, sort_keys=True)

    @classmethod
    def load(cls, directory: str) -> TrackIndex:
        """Loads a saved searcher.

        Raises:
            ValueError: A pickle in its folder (never loaded), or a track-id
                list that does not match the searcher; the message names the file.
        """
        with open(os.path.join(directory, CONFIG_FILENAME), encoding="utf-8") as handle:
            info = SearcherConfig.from_dict(json.load(handle))
        searcher_dir = os.path.join(directory, SEARCHER_DIRNAME)
        if os.path.exists(os.path.join(searcher_dir, _SCANN_PICKLE)):  # load_searcher would unpickle it.
            raise ValueError(
                f"{os.path.join(searcher_dir, _SCANN_PICKLE)}: a pickle is never loaded; rebuild the index"
            )
        with open(os.path.join(directory, TRACK_IDS_FILENAME), encoding="utf-8") as handle:
            track_ids = json.load(handle)
        raw = scann_ops_pybind.load_searcher(searcher_dir)  # Without the pickle: no ids.
        if not isinstance(track_ids, list) or len(track_ids) != raw.size():
            raise ValueError(
                f"{os.path.join(directory, TRACK_IDS_FILENAME)} does not list the searcher's "
                f"{raw.size()} items; rebuild the index"
            )
        return cls(scann_ops_pybind.ScannSearcher(raw.searcher, [str(t) for t in track_ids]), info)
