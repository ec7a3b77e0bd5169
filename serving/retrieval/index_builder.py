"""An index's life cycle: build it from the embedding job's output, update it, delete from it, summarise it.

`build_index` runs the Beam job (`serving.retrieval.embedding_job.embed`) in
a work folder next to the index, then builds a `CatalogIndex` (ScaNN), or a
`ShardedIndex` of several, or upserts into the existing one, and writes it
with `rejected.csv`; `delete_tracks` removes tracks. One writer at a time
(`serving.retrieval.index_lock`).
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import logging
import os
import shutil
import tempfile

import numpy as np

from intake import folder_catalog
from intake.catalog import Catalog
from intake.rejections import REASONS, REJECTED_FILENAME, Rejection, rejections_to_csv
from serving.embedding.index_models import IndexModels
from serving.retrieval import catalog_map, index_layout, index_lock
from serving.retrieval.catalog_index import INFO_FILENAME, CatalogIndex
from serving.retrieval.embedding_job import DEFAULT_TRACKS_PER_BATCH, TrackFeatures, embed
from serving.retrieval.searcher import choose_kind
from serving.retrieval.sharded_index import ShardedIndex, is_sharded, load_index, shard_names

_WORK_SUFFIX = ".work-"


@dataclasses.dataclass(frozen=True)
class BuildSummary:
    """What a build or update did."""

    index_dir: str
    num_input: int
    num_indexed: int
    num_tracks: int
    rejections: list[Rejection]
    searcher_kind: str
    embedding_models: str
    tag_model: str
    num_shards: int = 1

    def render(self) -> str:
        by_reason = collections.Counter(r.reason for r in self.rejections)
        lines = [
            f"index: {self.index_dir}",
            f"  tracks in: {self.num_input}; embedded: {self.num_indexed}; rejected: {len(self.rejections)}",
            *(f"    {reason}: {count} ({REASONS[reason]})" for reason, count in sorted(by_reason.items())),
            f"  index now holds {self.num_tracks} tracks; searcher: {self.searcher_kind}"
            + (f", in {self.num_shards} shards" if self.num_shards > 1 else ""),
            f"  ranking by: {self.embedding_models}",
            f"  tag model: {self.tag_model or 'none (stage 1 unavailable)'}",
        ]
        if self.rejections:
            lines.append(f"  rejected tracks and reasons: {os.path.join(self.index_dir, REJECTED_FILENAME)}")
        suggested = choose_kind(self.num_tracks // self.num_shards)
        if suggested != self.searcher_kind:
            lines.append(
                f"  note: ScaNN's guidance for {self.num_tracks} tracks is `{suggested}`, this index is "
                f"`{self.searcher_kind}` (set by --kind, or kept through --update); rebuild without them to follow it"
            )
        return "\n".join(lines)


def _stack(features: list[TrackFeatures], with_tags: bool):
    embeddings = np.stack([f.embedding for f in features]) if features else None
    tags = np.stack([f.tag_probabilities for f in features]) if with_tags and features else None
    return [f.track for f in features], embeddings, tags


def build_index(
    index_dir: str,
    models: IndexModels,
    catalog: Catalog | None = None,
    dataset_dirs: list[str] | None = None,
    update: bool = False,
    kind: str = "auto",
    leaves_searched_fraction: float = 0.05,
    pipeline_args: list[str] | None = None,
    tracks_per_batch: int = DEFAULT_TRACKS_PER_BATCH,
    num_shards: int = 1,
) -> BuildSummary:
    """Embeds a catalog and writes (or updates) its index in `index_dir`.

    Args:
        index_dir: The index folder.
        models: The ranking model(s) (with weights) and the tag model, if any.
        catalog: A parsed catalog CSV; or
        dataset_dirs: TFRecord dataset directories.
        update: Add the tracks to the existing index (replacing known ids)
            with ScaNN upserts instead of building a new one; the models must
            be those the index was built with.
        kind: The ScaNN configuration (`auto`: by size) for a new index.
        leaves_searched_fraction: For a tree index, the share of leaves searched.
        pipeline_args: Beam pipeline flags.
        tracks_per_batch: See `embed`.
        num_shards: For a new index, split it into this many shards by track-id hash
            (`serving.retrieval.sharded_index`); an update keeps the index's own.

    One writer at a time (`serving.retrieval.index_lock`): a second build,
    update or delete of the same index waits for this one and starts from
    the index it wrote.
    """
    with index_lock.writer_lock(index_dir):
        return _build_or_update(
            index_dir,
            models,
            catalog,
            dataset_dirs,
            update,
            kind,
            leaves_searched_fraction,
            pipeline_args,
            tracks_per_batch,
            num_shards,
        )


def _build_or_update(
    index_dir: str,
    models: IndexModels,
    catalog: Catalog | None,
    dataset_dirs: list[str] | None,
    update: bool,
    kind: str,
    leaves_searched_fraction: float,
    pipeline_args: list[str] | None,
    tracks_per_batch: int,
    num_shards: int,
) -> BuildSummary:
    """`build_index`'s work, under the index's writer lock."""
    existing = None
    if update:
        existing = load_index(index_dir, models.embedding_models, models.tag_model)
        if (existing.tag_model is None) != (models.tag_model is None):
            raise ValueError(f"{index_dir} was built {'with' if existing.tag_model else 'without'} a tag model")
    else:
        _check_layout(index_dir, num_shards)
    audio_root = _audio_root(index_dir, catalog, update)
    work_dir = _new_work_dir(index_dir)
    try:
        run = embed(models, work_dir, catalog, dataset_dirs, pipeline_args, tracks_per_batch)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    tracks, embeddings, tags = _stack(run.features, models.tag_model is not None)
    if existing is not None:
        if tracks:
            existing.upsert(tracks, embeddings, tags)
        index = existing
    else:
        if not tracks:
            raise ValueError(_nothing_embedded(run.rejections))
        if num_shards > 1:
            index = ShardedIndex.build(
                tracks,
                embeddings,
                tags,
                models.embedding_models,
                models.tag_model,
                num_shards,
                kind,
                leaves_searched_fraction,
            )
        else:
            index = CatalogIndex.build(
                tracks, embeddings, tags, models.embedding_models, models.tag_model, kind, leaves_searched_fraction
            )
    index.save(index_dir)
    with open(os.path.join(index_dir, REJECTED_FILENAME), "w", encoding="utf-8") as handle:
        handle.write(rejections_to_csv(run.rejections))
    catalog_map.for_index(index).save(index_dir)  # The map of every track, new or kept.
    if audio_root is not None:
        index_layout.write_audio_root(index_dir, audio_root)
    if catalog is not None and catalog.format == folder_catalog.FORMAT:
        folder_catalog.write_catalog_csv(catalog, index_dir)
    logging.info("Index %s: %d tracks", index_dir, len(index))
    return BuildSummary(
        index_dir=index_dir,
        num_input=run.num_input,
        num_indexed=len(tracks),
        num_tracks=len(index),
        rejections=run.rejections,
        searcher_kind=index.searcher.info.kind,
        embedding_models=models.embedding_models.key,
        tag_model=models.tag_model.key if models.tag_model else "",
        num_shards=index.num_shards,
    )


def _audio_root(index_dir: str, catalog: Catalog | None, update: bool) -> str | None:
    """The folder the index's track paths will be relative to: a folder of music's, or the one an updated index
    recorded (None for an index of catalog CSVs or datasets, whose audio root the web app is given).

    Raises:
        ValueError: An update from a folder of music other than the one the index was built from.
    """
    recorded = index_layout.recorded_audio_root(index_dir) if update else None
    if catalog is None or catalog.format != folder_catalog.FORMAT:
        return recorded
    if recorded is not None and os.path.abspath(recorded) != os.path.abspath(catalog.audio_root):
        raise ValueError(
            f"{index_dir} holds the music of {recorded}; update it from that folder (or a catalog CSV), "
            f"not from {catalog.audio_root}"
        )
    return catalog.audio_root


def _check_layout(index_dir: str, num_shards: int):
    """Refuses to write an index over one of another layout (a sharded one, or another number of shards)."""
    if num_shards < 1:
        raise ValueError(f"--num_shards must be at least 1, got {num_shards}")
    if not os.path.isdir(index_dir) or not os.listdir(index_dir):
        return
    found = len(shard_names(index_dir)) if is_sharded(index_dir) else 1  # The listing only: no shard loaded.
    if found != num_shards and (is_sharded(index_dir) or os.path.exists(os.path.join(index_dir, INFO_FILENAME))):
        raise ValueError(
            f"{index_dir} holds an index of {found} shard(s); building {num_shards} there would mix layouts: "
            "write to another --index_dir, or remove the old index first"
        )


def _nothing_embedded(rejections) -> str:
    """Why a new index would be empty: no input rows at all, or each row's rejection reason, counted."""
    if not rejections:
        return "nothing to index: the input holds no track (a catalog with a header and no rows?)"
    reasons = collections.Counter(rejection.reason for rejection in rejections)
    counted = ", ".join(f"{reason} {count}" for reason, count in sorted(reasons.items()))
    return f"no track could be embedded: {len(rejections)} rejected ({counted})"


def _new_work_dir(index_dir: str) -> str:
    """A work folder of this run's own next to the index (`INDEX_DIR.work-XXXXXXXX`).

    Called under the writer lock: any other work folder of the index was left
    by a run that was killed, and is removed.
    """
    index_dir = os.path.normpath(index_dir)
    for stale in glob.glob(glob.escape(index_dir) + _WORK_SUFFIX + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    parent = os.path.dirname(index_dir) or "."
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=os.path.basename(index_dir) + _WORK_SUFFIX, dir=parent)


def delete_tracks(index_dir: str, track_ids: list[str]) -> int:
    """Removes tracks from an index (under its writer lock); returns the tracks left."""
    with index_lock.writer_lock(index_dir):
        index = load_index(index_dir)
        index.delete(track_ids)
        index.save(index_dir)
        catalog_map.for_index(index).save(index_dir)
        return len(index)
