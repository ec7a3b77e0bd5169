"""An index's life cycle (`serving.retrieval.index_builder`): nothing to index, update, delete, concurrent writers."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys

import numpy as np
import pytest

from intake import catalog
from serving.embedding.ensemble import EmbeddingModels
from serving.embedding.index_models import IndexModels
from serving.retrieval import index_builder
from serving.retrieval.catalog_index import CatalogIndex, IndexMismatchError
from tests.binaries import run_binary
from tests.conftest import REPO_ROOT

IN_MEMORY = ["--direct_running_mode=in_memory"]


def test_a_catalog_without_rows_is_named(tmp_path, trained, trained_crnn):
    header_only = tmp_path / "catalog.csv"
    header_only.write_text("track_id,path\n")
    done = run_binary(
        "serving.build_index",
        f"--export_base={trained[0] / 'export'}",
        "--embedding_models=short_chunk_res",
        "--tag_model=crnn",
        f"--data={header_only}",
        f"--index_dir={tmp_path / 'index'}",
        *IN_MEMORY,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "error: nothing to index: the input holds no track (a catalog with a header and no rows?)"
    )
    assert not (tmp_path / "index").exists()


def test_update_adds_tracks_to_an_existing_index_without_a_rebuild(
    tmp_path, demo_index, demo_catalog, model_refs, job_models
):
    full_dir = demo_index[0]
    index_dir = tmp_path / "index"
    shutil.copytree(full_dir, index_dir)
    parsed = catalog.read_catalog(str(demo_catalog))
    removed = [e.track_id for e in parsed.entries[-3:]]
    assert index_builder.delete_tracks(str(index_dir), removed) == 13
    assert all(t not in CatalogIndex.load(str(index_dir)) for t in removed)
    subset = catalog.Catalog(parsed.source, parsed.sha256, 3, parsed.entries[-3:], (), parsed.audio_root)
    summary = index_builder.build_index(
        str(index_dir), job_models, catalog=subset, update=True, pipeline_args=IN_MEMORY
    )
    assert summary.num_indexed == 3 and summary.num_tracks == 16
    updated, full = CatalogIndex.load(str(index_dir)), CatalogIndex.load(str(full_dir))
    assert sorted(t.track_id for t in updated.tracks) == sorted(t.track_id for t in full.tracks)
    for track_id in removed:
        np.testing.assert_allclose(
            updated.model_embeddings[updated.row(track_id)], full.model_embeddings[full.row(track_id)], atol=1e-6
        )
    np.testing.assert_allclose(updated.catalog_mean, full.catalog_mean, atol=1e-6)  # The same tracks again.
    queries = full.embeddings[:4]
    assert [[i for i, _ in row] for row in updated.searcher.search(queries, 5)] == [
        [i for i, _ in row] for row in full.searcher.search(queries, 5)
    ]
    swapped = IndexModels(EmbeddingModels((model_refs["tag"],)), model_refs["tag"])
    with pytest.raises(IndexMismatchError, match="ranking given uses crnn/1@.*built with short_chunk_res/1@"):
        index_builder.build_index(str(index_dir), swapped, catalog=subset, update=True)


def test_two_updates_at_once_both_land(tmp_path, trained, demo_index, demo_catalog):
    index_dir = tmp_path / "index"
    shutil.copytree(demo_index[0], index_dir)
    parsed = catalog.read_catalog(str(demo_catalog))
    commands, added = [], []
    for name, entries in (("a", parsed.entries[:2]), ("b", parsed.entries[2:4])):
        catalog_path = tmp_path / f"{name}.csv"
        with open(catalog_path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["track_id", "path"])
            for entry in entries:
                writer.writerow([f"{name}-{entry.track_id}", entry.uri])
                added.append(f"{name}-{entry.track_id}")
        commands.append(
            [
                sys.executable,
                "-m",
                "serving.build_index",
                f"--export_base={trained[0] / 'export'}",
                "--embedding_models=short_chunk_res",
                "--tag_model=crnn",
                f"--data={catalog_path}",
                f"--index_dir={index_dir}",
                "--update",
                *IN_MEMORY,
            ]
        )
    runs = [
        subprocess.Popen(c, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands
    ]
    outputs = [run.communicate(timeout=600) for run in runs]
    for run, (_, stderr) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, stderr[-3000:]
    assert sum("waiting for the other writer" in stderr for _, stderr in outputs) == 1
    updated = CatalogIndex.load(str(index_dir))
    assert len(updated) == len(parsed.entries) + 4
    assert all(track_id in updated for track_id in added)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.csv", "index", "index.lock"]  # No work folders.
