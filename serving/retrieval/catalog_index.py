"""The recommender's catalog: track metadata, embeddings, tag probabilities and the ScaNN index.

Row `i` of every array belongs to `tracks[i]`; the ScaNN searcher returns
track ids, which are mapped back to rows, never positions in a filtered
list. On disk (`INDEX_DIR/`):

- `catalog_index.json`: format version, the models (name, version, SavedModel
  checksum, vocabulary, embedding size; several ranking models with their
  weights for an ensemble, `serving.embedding.ensemble`), the track count;
- `tracks.jsonl`: one track's metadata per line, in row order;
- `embeddings.npy` `[tracks, dim]` float32 (L2-normalised; the ranking models' combined vector, as
  the models made it);
- `catalog_mean.npy` `[dim]` float64: each ranking model's mean unit embedding over the catalog
  (`EmbeddingModels.part_means`); every comparison centres on it (`EmbeddingModels.centre`), queries and
  catalog tracks alike, and the ScaNN searcher holds the centred vectors. An update or delete recomputes
  it and re-centres every track. An index written before format 4 has none: it loads, compares the
  embeddings uncentred and says so (`CatalogIndex.notes`);
- `tag_probabilities.npy` `[tracks, num_tags]` float32 (tag model), when
  there is a tag model;
- `searcher/`: the `serving.retrieval.searcher.TrackIndex` (ScaNN, relative paths; its
  track ids in `track_ids.json`, never a pickle);
- `manifest.json`: the size and SHA-256 of every file above.

`save` writes a complete new folder next to the old one and swaps it in, so a
reader never sees a half-written index. `load` checks the manifest before it
parses anything: a damaged or altered file, or a file in `searcher/` that
the index did not write, is refused with one error naming it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np

from models.pretrained import sha256_of
from serving.embedding.ensemble import EmbeddingModels
from serving.export.exported_model import ModelMismatchError, ModelRef
from serving.retrieval.index_layout import INFO_FILENAME, PREVIOUS_SUFFIX, SHARDS_FILENAME, no_index_error
from serving.retrieval.searcher import TrackIndex, normalise


class IndexMismatchError(ValueError):
    """An index of another format, or built with other models than expected; the message says which."""


FORMAT_VERSION = 4  # 2: manifest.json, pickle-free searcher ids; 3: several ranking models; 4: catalog mean.
READABLE_FORMATS = (2, 3, 4)
CENTRED_FROM_FORMAT = 4
MANIFEST_FILENAME = "manifest.json"
TRACKS_FILENAME = "tracks.jsonl"
EMBEDDINGS_FILENAME = "embeddings.npy"
CATALOG_MEAN_FILENAME = "catalog_mean.npy"
TAG_PROBABILITIES_FILENAME = "tag_probabilities.npy"
SEARCHER_DIRNAME = "searcher"


@dataclasses.dataclass(frozen=True)
class TrackRecord:
    """A catalog track's metadata.

    Attributes:
        track_id: Unique id.
        artist: Artist name ('' when unknown).
        title: Title ('' when unknown).
        album: Album ('' when unknown).
        path: The audio location as the catalog gives it ('' when built from
            TFRecords).
        duration_s: Duration of the audio in seconds.
        content_sha256: SHA-256 of the audio file's bytes, from the catalog's
            file or, when built from TFRecords, as `data_prep` recorded it
            ('' for datasets written before it did): equal hashes are exact
            duplicates.
    """

    track_id: str
    artist: str = ""
    title: str = ""
    album: str = ""
    path: str = ""
    duration_s: float = 0.0
    content_sha256: str = ""


class TrackRows:
    """Reading an index by track id: what `CatalogIndex` and `sharded_index.ShardedIndex` share.

    A subclass sets `tracks` (a track's row is its place there), `_rows`
    (track id -> row), `embeddings` (the ranking vectors, by row) and
    `searcher` (anything with `search(vectors, k)`).
    """

    tracks: list[TrackRecord]
    embeddings: np.ndarray
    _rows: dict[str, int]

    def __len__(self) -> int:
        return len(self.tracks)

    def __contains__(self, track_id: str) -> bool:
        return track_id in self._rows

    def row(self, track_id: str) -> int:
        """The row of a track; an unknown id is a `KeyError` naming it."""
        try:
            return self._rows[track_id]
        except KeyError:
            raise KeyError(f"unknown track id {track_id!r}") from None

    def track(self, track_id: str) -> TrackRecord:
        return self.tracks[self.row(track_id)]

    def ranking_vector_of(self, track_id: str) -> np.ndarray:
        return self.embeddings[self.row(track_id)]

    def search(self, vectors: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """Each ranking vector's `k` nearest tracks, as (id, cosine) (the searcher)."""
        return self.searcher.search(vectors, k)


class CatalogIndex(TrackRows):
    """Tracks with their embeddings and tag probabilities, searchable by embedding.

    Build with `CatalogIndex.build`, load with `CatalogIndex.load`.

    Attributes:
        tracks: The tracks, in row order.
        model_embeddings: `[tracks, dim]`, L2-normalised: the ranking models' combined
            vectors as they made them (what a query's embedder makes too).
        catalog_mean: `EmbeddingModels.part_means` of `model_embeddings`, `[dim]`, or
            None for an index written before format 4 (compared uncentred).
        embeddings: `[tracks, dim]`, L2-normalised: what every comparison uses,
            `ranking_vectors(model_embeddings)`.
        tag_probabilities: `[tracks, num_tags]`, or None without a tag model.
        embedding_models: The model(s) that made the embeddings, with their weights.
        tag_model: The model that made the tag probabilities, or None.
        searcher: The ScaNN index over `embeddings`.
    """

    def __init__(
        self,
        tracks: list[TrackRecord],
        model_embeddings: np.ndarray,
        tag_probabilities: np.ndarray | None,
        embedding_models: EmbeddingModels,
        tag_model: ModelRef | None,
        searcher: TrackIndex,
        catalog_mean: np.ndarray | None,
        embeddings: np.ndarray | None = None,
    ):
        _check_rows(tracks, model_embeddings, tag_probabilities, embedding_models, tag_model)
        self.tracks = list(tracks)
        self.model_embeddings = model_embeddings
        self.tag_probabilities = tag_probabilities
        self.embedding_models = embedding_models
        self.tag_model = tag_model
        self.searcher = searcher
        self.catalog_mean = catalog_mean
        # `build` passes the vectors it gave the searcher; `load` derives them from the stored ones.
        self.embeddings = self.ranking_vectors(model_embeddings) if embeddings is None else embeddings
        self._rows = {track.track_id: row for row, track in enumerate(self.tracks)}

    @classmethod
    def build(
        cls,
        tracks: list[TrackRecord],
        embeddings: np.ndarray,
        tag_probabilities: np.ndarray | None,
        embedding_models: EmbeddingModels | ModelRef,
        tag_model: ModelRef | None,
        kind: str = "auto",
        leaves_searched_fraction: float = 0.05,
        catalog_mean: np.ndarray | None = None,
    ) -> CatalogIndex:
        """Builds the catalog and its ScaNN index (configured by size unless `kind` says otherwise).

        Args:
            tracks: The tracks, one per row.
            embeddings: `[tracks, dim]`: the ranking models' combined embeddings.
            tag_probabilities: `[tracks, num_tags]`, or None without a tag model.
            embedding_models: The ranking models (a single `ModelRef`: that model alone).
            tag_model: The tag model, or None.
            kind: `auto` or one of `serving.retrieval.searcher.KINDS`.
            leaves_searched_fraction: For a tree searcher, the share of leaves searched.
            catalog_mean: The mean to centre on (default: these tracks' own;
                a shard of a sharded index is given the whole catalog's).
        """
        if isinstance(embedding_models, ModelRef):
            embedding_models = EmbeddingModels((embedding_models,))
        embeddings = normalise(embeddings)
        _check_rows(tracks, embeddings, tag_probabilities, embedding_models, tag_model)
        if catalog_mean is None:
            catalog_mean = embedding_models.part_means(embeddings)
        centred = embedding_models.centre(embeddings, catalog_mean)
        searcher = TrackIndex.build(
            [t.track_id for t in tracks], centred, kind=kind, leaves_searched_fraction=leaves_searched_fraction
        )
        probabilities = None if tag_probabilities is None else np.asarray(tag_probabilities, np.float32)
        return cls(tracks, embeddings, probabilities, embedding_models, tag_model, searcher, catalog_mean, centred)

    @property
    def num_shards(self) -> int:
        """1: one index (a `sharded_index.ShardedIndex` reads as one index of several)."""
        return 1

    @property
    def vocabulary(self) -> tuple[str, ...]:
        """The tag model's tag names ('()' without a tag model)."""
        return self.tag_model.vocabulary if self.tag_model else ()

    @property
    def notes(self) -> tuple[str, ...]:
        """What a user should know about every answer of this index (an older format's limits)."""
        if self.catalog_mean is None:
            return (
                "this index was written before format 4 and stores no catalog mean: embeddings are compared "
                "uncentred, which retrieves worse; rebuild it with `python -m serving.build_index` to centre them",
            )
        return ()

    def ranking_vectors(self, model_embeddings: np.ndarray) -> np.ndarray:
        """What comparisons use for the models' combined vectors `[n, dim]`: centred on the catalog mean (when stored)."""
        if self.catalog_mean is None:
            return normalise(model_embeddings)
        return self.embedding_models.centre(model_embeddings, self.catalog_mean)

    def own_mean(self) -> np.ndarray:
        """The mean this index's own tracks give (`EmbeddingModels.part_means`)."""
        return self.embedding_models.part_means(self.model_embeddings)

    def recentre(self, catalog_mean: np.ndarray | None = None):
        """Centres every track on `catalog_mean` (default: the tracks' own mean) and moves the searcher's vectors.

        The searcher keeps its configuration (kind, tree, quantisation): its
        vectors are replaced in place (ScaNN upsert).
        """
        self.catalog_mean = self.own_mean() if catalog_mean is None else np.asarray(catalog_mean, np.float64)
        self.embeddings = self.ranking_vectors(self.model_embeddings)
        self.searcher.upsert([t.track_id for t in self.tracks], self.embeddings)

    def upsert(
        self,
        tracks: list[TrackRecord],
        embeddings: np.ndarray,
        tag_probabilities: np.ndarray | None,
        recentre: bool = True,
    ):
        """Adds tracks and replaces known ones, updating the ScaNN index in place (no rebuild).

        The catalog mean is recomputed and every track re-centred on it
        (`recentre`); a sharded index passes `recentre=False` and re-centres
        every shard on the whole catalog's mean itself. An index written
        before format 4 is centred from then on.
        """
        embeddings = normalise(embeddings)
        _check_rows(tracks, embeddings, tag_probabilities, self.embedding_models, self.tag_model)
        new_tracks, new_rows = [], []
        for i, track in enumerate(tracks):
            row = self._rows.get(track.track_id)
            if row is None:
                new_rows.append(i)
                new_tracks.append(track)
            else:
                self.tracks[row] = track
                self.model_embeddings[row] = embeddings[i]
                if self.tag_probabilities is not None:
                    self.tag_probabilities[row] = tag_probabilities[i]
        self.model_embeddings = np.concatenate([self.model_embeddings, embeddings[new_rows]])
        if self.tag_probabilities is not None:
            self.tag_probabilities = np.concatenate([self.tag_probabilities, tag_probabilities[new_rows]])
        for track in new_tracks:
            self._rows[track.track_id] = len(self.tracks)
            self.tracks.append(track)
        if recentre:
            self.recentre()  # Moves every track's vector, the new ones' included.
            return
        self.embeddings = self.ranking_vectors(self.model_embeddings)
        self.searcher.upsert([t.track_id for t in tracks], self.embeddings[[self._rows[t.track_id] for t in tracks]])

    def delete(self, track_ids: list[str], recentre: bool = True):
        """Removes tracks from the catalog and the ScaNN index, and re-centres the rest (see `upsert`).

        Unknown ids are a `KeyError` and repeated ids a `ValueError`, naming
        them; nothing is removed then.
        """
        unknown = [t for t in track_ids if t not in self._rows]
        if unknown:
            raise KeyError(f"unknown track ids {unknown[:5]}")
        self.searcher.delete(list(track_ids))  # Checks repeats before changing anything.
        gone = {self._rows[t] for t in track_ids}
        keep = [row for row in range(len(self.tracks)) if row not in gone]
        self.tracks = [self.tracks[row] for row in keep]
        self.model_embeddings = self.model_embeddings[keep]
        self.embeddings = self.embeddings[keep]
        if self.tag_probabilities is not None:
            self.tag_probabilities = self.tag_probabilities[keep]
        self._rows = {track.track_id: row for row, track in enumerate(self.tracks)}
        if recentre and self.tracks:
            self.recentre()

    def info(self) -> dict:
        """What `catalog_index.json` holds."""
        return {
            "format_version": FORMAT_VERSION,
            "num_tracks": len(self),
            "embedding_dim": int(self.embeddings.shape[1]),
            "embedding_models": self.embedding_models.to_dict(),
            "tag_model": self.tag_model.to_dict() if self.tag_model else None,
            "searcher": dataclasses.asdict(self.searcher.info),
        }

    def save(self, directory: str):
        """Writes the index into `directory`, replacing what is there only once complete.

        The new index is written next to the old one (`DIR.tmp`), then the old
        one is moved aside (`DIR.old`) and the new one into place; if that
        swap fails, the old one is moved back. A swap interrupted by a crash
        leaves `DIR.old`, which the next `save` or `load` restores first.
        """
        directory = os.path.normpath(directory)
        staging, previous = f"{directory}.tmp", directory + PREVIOUS_SUFFIX
        _recover(directory)
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
        with open(os.path.join(staging, TRACKS_FILENAME), "w", encoding="utf-8") as handle:
            for track in self.tracks:
                handle.write(json.dumps(dataclasses.asdict(track), ensure_ascii=False) + "\n")
        np.save(os.path.join(staging, EMBEDDINGS_FILENAME), self.model_embeddings)
        if self.catalog_mean is not None:
            np.save(os.path.join(staging, CATALOG_MEAN_FILENAME), self.catalog_mean)
        if self.tag_probabilities is not None:
            np.save(os.path.join(staging, TAG_PROBABILITIES_FILENAME), self.tag_probabilities)
        self.searcher.save(os.path.join(staging, SEARCHER_DIRNAME))
        with open(os.path.join(staging, INFO_FILENAME), "w", encoding="utf-8") as handle:
            json.dump(self.info(), handle, indent=2, sort_keys=True)
        _write_manifest(staging)
        if not os.path.isdir(directory):
            os.rename(staging, directory)
            return
        # Keep files that are not ours (e.g. the build's rejected.csv) when replacing.
        for name in os.listdir(directory):
            source = os.path.join(directory, name)
            if os.path.isfile(source) and not os.path.exists(os.path.join(staging, name)):
                shutil.copy2(source, staging)
        shutil.rmtree(previous, ignore_errors=True)  # Only a completed swap's leftover: _recover ran.
        os.rename(directory, previous)
        try:
            os.rename(staging, directory)
        except BaseException:
            os.rename(previous, directory)
            raise
        shutil.rmtree(previous, ignore_errors=True)

    @classmethod
    def load(
        cls,
        directory: str,
        expected_embedding_models: EmbeddingModels | None = None,
        expected_tag_model: ModelRef | None = None,
    ) -> CatalogIndex:
        """Loads an index, refusing one made with other models than those expected.

        Raises:
            FileNotFoundError: No index in `directory`.
            IndexMismatchError: Another format, model or embedding size; the
                message names what the index holds and what was expected.
        """
        _recover(directory)
        info_path = os.path.join(directory, INFO_FILENAME)
        if os.path.exists(os.path.join(directory, SHARDS_FILENAME)):
            raise IndexMismatchError(
                f"{directory} holds a sharded index (serving.retrieval.sharded_index): load one of its shard "
                "folders, or the whole with `sharded_index.load_index` (serving.query does)"
            )
        if not os.path.exists(info_path):
            raise no_index_error(directory)
        _check_manifest(directory)
        with open(info_path, encoding="utf-8") as handle:
            info = json.load(handle)
        if info["format_version"] not in READABLE_FORMATS:
            raise IndexMismatchError(
                f"{directory}: index format {info['format_version']}, this version reads {list(READABLE_FORMATS)}: "
                "rebuild it with serving.build_index"
            )
        embedding_models = _embedding_models(info)
        tag_model = ModelRef.from_dict(info["tag_model"]) if info["tag_model"] else None
        if expected_embedding_models is not None:
            try:
                embedding_models.check_same(expected_embedding_models, "the ranking given")
            except ModelMismatchError as error:
                raise IndexMismatchError(f"{directory}: {error}") from None
        if expected_tag_model is not None:
            _check_model(directory, "tag", tag_model, expected_tag_model)
        with open(os.path.join(directory, TRACKS_FILENAME), encoding="utf-8") as handle:
            tracks = [TrackRecord(**json.loads(line)) for line in handle]
        embeddings = np.load(os.path.join(directory, EMBEDDINGS_FILENAME))
        probabilities_path = os.path.join(directory, TAG_PROBABILITIES_FILENAME)
        probabilities = np.load(probabilities_path) if tag_model else None
        catalog_mean = _load_catalog_mean(directory, info["format_version"], embedding_models)
        searcher = _load_searcher(directory, embedding_models)
        if len(searcher) != len(tracks) or set(searcher.track_ids) != {t.track_id for t in tracks}:
            raise IndexMismatchError(
                f"{directory}: the searcher's {len(searcher)} track ids do not match the {len(tracks)} of "
                f"{TRACKS_FILENAME}: the index is damaged, rebuild it"
            )
        return cls(tracks, embeddings, probabilities, embedding_models, tag_model, searcher, catalog_mean)


def _load_catalog_mean(directory: str, format_version: int, embedding_models: EmbeddingModels) -> np.ndarray | None:
    """The stored catalog mean; None for an index written before format 4 (`CatalogIndex.notes` says so)."""
    if format_version < CENTRED_FROM_FORMAT:
        return None
    path = os.path.join(directory, CATALOG_MEAN_FILENAME)
    if not os.path.exists(path):
        raise _damaged(path, f"missing (a format {format_version} index stores it)")
    mean = np.load(path)
    if mean.shape != (embedding_models.embedding_dim,) or not np.all(np.isfinite(mean)):
        raise _damaged(
            path, f"a mean of shape {mean.shape}, the index ranks {embedding_models.embedding_dim}-d embeddings"
        )
    return mean


def _embedding_models(info: dict) -> EmbeddingModels:
    if "embedding_model" in info:  # Format 2: one ranking model.
        return EmbeddingModels((ModelRef.from_dict(info["embedding_model"]),))
    return EmbeddingModels.from_dict(info["embedding_models"])


def _load_searcher(directory: str, embedding_models: EmbeddingModels) -> TrackIndex:
    try:
        searcher = TrackIndex.load(os.path.join(directory, SEARCHER_DIRNAME))
    except ValueError as error:
        raise DamagedIndexError(str(error)) from error
    if searcher.info.embedding_dim != embedding_models.embedding_dim:
        raise IndexMismatchError(
            f"{directory}: the searcher holds {searcher.info.embedding_dim}-d embeddings, {embedding_models.key} "
            f"makes {embedding_models.embedding_dim}-d ones: rebuild the index"
        )
    return searcher


class DamagedIndexError(IndexMismatchError):
    """An index file that is not what the index wrote; the message names it."""


def _index_files(directory: str) -> list[str]:
    """The index's own files, relative: everything in `searcher/` and the top-level files it writes."""
    own = [INFO_FILENAME, TRACKS_FILENAME, EMBEDDINGS_FILENAME, CATALOG_MEAN_FILENAME, TAG_PROBABILITIES_FILENAME]
    files = [name for name in own if os.path.exists(os.path.join(directory, name))]
    for root, _, names in os.walk(os.path.join(directory, SEARCHER_DIRNAME)):
        files += [os.path.relpath(os.path.join(root, name), directory) for name in names]
    return sorted(files)


def _write_manifest(directory: str):
    manifest = {
        name: {
            "size": os.path.getsize(os.path.join(directory, name)),
            "sha256": sha256_of(os.path.join(directory, name)),
        }
        for name in _index_files(directory)
    }
    with open(os.path.join(directory, MANIFEST_FILENAME), "w", encoding="utf-8") as handle:
        json.dump({"format_version": FORMAT_VERSION, "files": manifest}, handle, indent=2, sort_keys=True)


def _damaged(path: str, what: str) -> DamagedIndexError:
    return DamagedIndexError(
        f"{path}: {what}; the index is damaged or was altered: rebuild it with serving.build_index"
    )


def _check_manifest(directory: str):
    """Every file the index wrote is there, unchanged, and nothing was added to it."""
    path = os.path.join(directory, MANIFEST_FILENAME)
    if not os.path.exists(path):
        raise _damaged(path, "missing (an index written by an older version has none)")
    try:
        with open(path, encoding="utf-8") as handle:
            files = json.load(handle)["files"]
        expected = {name: (int(entry["size"]), str(entry["sha256"])) for name, entry in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise _damaged(path, f"unreadable ({error})") from None
    for name in _index_files(directory):
        if name not in expected:
            raise _damaged(os.path.join(directory, name), "not written by this index")
    for name, (size, sha256) in sorted(expected.items()):
        file_path = os.path.join(directory, name)
        if not os.path.isfile(file_path):
            raise _damaged(file_path, "missing")
        if os.path.getsize(file_path) != size:
            raise _damaged(file_path, f"{os.path.getsize(file_path)} bytes, the index wrote {size}")
        if sha256_of(file_path) != sha256:
            raise _damaged(file_path, "its SHA-256 is not the one the index wrote")


def _recover(directory: str):
    """Puts back an index that a crash left moved aside (`DIR.old`) during a save."""
    directory = os.path.normpath(directory)
    previous = directory + PREVIOUS_SUFFIX
    if not os.path.isdir(directory) and os.path.isdir(previous):
        os.rename(previous, directory)


def _check_model(directory: str, role: str, built: ModelRef | None, expected: ModelRef):
    if built is None:
        raise IndexMismatchError(f"{directory} was built without a {role} model; {expected.key} was expected")
    if built.identity != expected.identity:
        raise IndexMismatchError(
            f"{directory} was built with the {role} model {built.key} ({built.embedding_dim}-d embeddings), "
            f"not {expected.key} ({expected.embedding_dim}-d): rebuild the index or use that model"
        )


def _check_rows(tracks, embeddings, tag_probabilities, embedding_models: EmbeddingModels, tag_model: ModelRef | None):
    ids = [t.track_id for t in tracks]
    if len(set(ids)) != len(ids):
        raise ValueError("track ids must be unique")
    if embeddings.shape != (len(tracks), embedding_models.embedding_dim):
        raise IndexMismatchError(
            f"embeddings {embeddings.shape} for {len(tracks)} tracks and the {embedding_models.embedding_dim}-d "
            f"ranking of {embedding_models.key}"
        )
    if (tag_model is None) != (tag_probabilities is None):
        raise ValueError("tag probabilities go with a tag model, and a tag model with tag probabilities")
    if tag_model is not None and np.shape(tag_probabilities) != (len(tracks), len(tag_model.vocabulary)):
        raise IndexMismatchError(
            f"tag probabilities {np.shape(tag_probabilities)} for {len(tracks)} tracks and the "
            f"{len(tag_model.vocabulary)} tags of {tag_model.key}"
        )
