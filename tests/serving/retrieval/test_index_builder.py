"""An index's life cycle (`serving.retrieval.index_builder`): nothing to index, update, delete, concurrent writers."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys

import httpx
import numpy as np
import pytest

from intake import catalog
from serving.app.child_process import app_process
from serving.embedding.ensemble import EmbeddingModels
from serving.embedding.index_models import IndexModels
from serving.retrieval import catalog_map, index_builder
from serving.retrieval.catalog_index import CatalogIndex, IndexMismatchError
from tests.binaries import run_binary
from tests.conftest import REPO_ROOT
from tests.intake.music_folder import make_music_folder

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
    assert len(catalog_map.CatalogMap.load(str(index_dir)).track_ids) == 13  # The map follows every change.
    subset = catalog.Catalog(parsed.source, parsed.sha256, 3, parsed.entries[-3:], (), parsed.audio_root)
    summary = index_builder.build_index(
        str(index_dir), job_models, catalog=subset, update=True, pipeline_args=IN_MEMORY
    )
    assert summary.num_indexed == 3 and summary.num_tracks == 16
    updated, full = CatalogIndex.load(str(index_dir)), CatalogIndex.load(str(full_dir))
    assert sorted(t.track_id for t in updated.tracks) == sorted(t.track_id for t in full.tracks)
    assert sorted(catalog_map.CatalogMap.load(str(index_dir)).track_ids) == sorted(t.track_id for t in full.tracks)
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


def test_a_folder_of_music_is_indexed_and_the_web_app_plays_it_without_an_audio_root(tmp_path, trained, trained_crnn):
    music = make_music_folder(tmp_path / "My Music")
    index_dir = tmp_path / "my_index"
    flags = [
        f"--export_base={trained[0] / 'export'}",
        "--embedding_models=short_chunk_res",
        "--tag_model=crnn",
        f"--index_dir={index_dir}",
        *IN_MEMORY,
    ]
    done = run_binary("serving.build_index", f"--data={music.root}", *flags)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"folder {music.root}: 9 audio files; skipped 5 other files" in done.stdout
    assert "tracks in: 9; embedded: 8; rejected: 1" in done.stdout
    index = CatalogIndex.load(str(index_dir))
    scanned = catalog.read_catalog(str(music.root))
    assert sorted(t.track_id for t in index.tracks) == sorted(
        e.track_id for e in scanned.entries if e.path != "broken.mp3"
    )
    assert catalog.read_catalog(str(index_dir / "catalog.csv")).num_rows == 9
    song = next(t for t in index.tracks if t.path == "Artist A/Album X/01 Song.mp3")
    assert (song.artist, song.title) == ("The Tagged Artist", "Tagged Song")

    with app_process(str(index_dir), None, str(tmp_path / "app.log"), ["--noaccess_log"]) as url:
        with httpx.Client(base_url=url, timeout=60.0) as client:
            assert client.get("/healthz").json()["audio_served"] is True
            answer = client.get(f"/tracks/{song.track_id}/audio")
            assert answer.status_code == 200 and answer.content == (music.root / song.path).read_bytes()

    other = make_music_folder(tmp_path / "Other Music")
    refused = run_binary("serving.build_index", f"--data={other.root}", "--update", *flags)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: {index_dir} holds the music of {music.root}; update it from that folder (or a catalog CSV), "
        f"not from {other.root}"
    )
