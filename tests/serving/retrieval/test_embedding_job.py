"""The catalog embedding job (real Beam runner, real exported models, real audio), through the index it feeds."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from intake import audio, catalog
from intake.rejections import rejections_from_csv
from serving.embedding.ensemble import EmbeddingModels
from serving.embedding.index_models import IndexModels
from serving.export.exported_model import LoadedModel
from serving.retrieval import embedding_job, index_builder
from serving.retrieval.catalog_index import CatalogIndex
from serving.retrieval.recommender import Query, Recommender
from tests.binaries import run_binary
from tests.conftest import REPO_ROOT, tone

IN_MEMORY = ["--direct_running_mode=in_memory"]


def test_every_catalog_track_is_indexed_with_its_metadata_and_model_outputs(demo_index, demo_catalog, model_refs):
    """The job sends the demo's tracks (16 of one length) through the models 8 at a time (the default):
    each track still gets exactly what the model gives it alone."""
    index_dir, summary = demo_index
    parsed = catalog.read_catalog(str(demo_catalog))
    assert summary.num_input == summary.num_indexed == summary.num_tracks == len(parsed.entries) == 16
    assert summary.rejections == []
    index = CatalogIndex.load(str(index_dir), EmbeddingModels((model_refs["embedding"],)), model_refs["tag"])
    assert {t.track_id: (t.artist, t.title, t.album, t.path) for t in index.tracks} == {
        e.track_id: (e.artist, e.title, e.album, e.path) for e in parsed.entries
    }
    embedding_model = LoadedModel(model_refs["embedding"])
    tag_model = LoadedModel(model_refs["tag"])
    for entry in parsed.entries[::5]:
        track = index.track(entry.track_id)
        assert track.content_sha256 == audio.content_sha256(entry.uri)
        waveform, _ = audio.load_mono(entry.uri, entry.uri, 16000)
        assert track.duration_s == pytest.approx(waveform.size / 16000, abs=1e-3)
        row = index.row(entry.track_id)
        np.testing.assert_allclose(
            index.model_embeddings[row], embedding_model.from_waveform(waveform)["embedding"], atol=1e-5
        )
        np.testing.assert_allclose(index.tag_probabilities[row], tag_model.from_waveform(waveform)["tags"], atol=1e-5)
    assert index.vocabulary == model_refs["tag"].vocabulary
    assert (index_dir / index_builder.REJECTED_FILENAME).read_text().splitlines() == ["row,track_id,path,reason,detail"]


def test_bad_rows_are_rejected_with_reasons_and_counts_reconcile(tmp_path, demo_catalog, job_models):
    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    demo = catalog.read_catalog(str(demo_catalog))
    good = demo.entries[:2]
    for entry in good:
        shutil.copy(entry.uri, audio_dir / os.path.basename(entry.uri))
    (audio_dir / "notes.mp3").write_text("this is not audio")
    soundfile.write(audio_dir / "blip.wav", tone(0.5, 16000), 16000)
    rows = [{"track_id": e.track_id, "path": f"audio/{os.path.basename(e.uri)}", "artist": e.artist} for e in good]
    rows += [
        {"track_id": "missing", "path": "audio/nowhere.mp3", "artist": "x"},
        {"track_id": "not-audio", "path": "audio/notes.mp3", "artist": "x"},
        {"track_id": "blip", "path": "audio/blip.wav", "artist": "x"},
        {"track_id": good[0].track_id, "path": "audio/blip.wav", "artist": "x"},  # Duplicate id.
    ]
    with open(tmp_path / "catalog.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["track_id", "path", "artist"])
        writer.writeheader()
        writer.writerows(rows)
    index_dir = tmp_path / "index"
    summary = index_builder.build_index(
        str(index_dir), job_models, catalog=catalog.read_catalog(str(tmp_path / "catalog.csv")), pipeline_args=IN_MEMORY
    )
    assert summary.num_input == 6 and summary.num_indexed == 2
    reasons = {r.track_id: r.reason for r in summary.rejections if r.track_id != good[0].track_id}
    assert reasons == {"missing": "missing_file", "not-audio": "decode_error", "blip": "too_short"}
    assert [r.reason for r in summary.rejections if r.track_id == good[0].track_id] == ["duplicate_track_id"]
    written = rejections_from_csv((index_dir / index_builder.REJECTED_FILENAME).read_text())
    assert sorted(written, key=lambda r: r.row) == sorted(summary.rejections, key=lambda r: r.row)
    assert all(r.path and r.detail for r in written)
    assert "rejected: 4" in summary.render() and "too_short: 1" in summary.render()
    assert sorted(t.track_id for t in CatalogIndex.load(str(index_dir)).tracks) == sorted(e.track_id for e in good)


def test_tfrecord_datasets_via_the_binary_match_the_audio_path(tmp_path, trained, trained_crnn, demo_index):
    root = trained[0]
    data_128, data_96 = root / "data_128", trained_crnn[0]
    index_dir = tmp_path / "from_tfrecords"
    done = run_binary(
        "serving.build_index",
        f"--export_base={root / 'export'}",
        "--embedding_models=short_chunk_res",
        "--tag_model=crnn",
        f"--data={data_128},{data_96}",
        f"--index_dir={index_dir}",
        *IN_MEMORY,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tracks in: 3; embedded: 3; rejected: 0" in done.stdout
    from_records = CatalogIndex.load(str(index_dir))
    from_audio = CatalogIndex.load(str(demo_index[0]))
    for track in from_records.tracks:
        reference = from_audio.track(track.track_id)
        assert (track.artist, track.title, track.album) == (reference.artist, reference.title, reference.album)
        # One meaning of the hash: the audio file's bytes, so an upload of this very file is a duplicate.
        assert track.content_sha256 == reference.content_sha256 and len(track.content_sha256) == 64
        upload = Query(
            embedding=from_records.embeddings[from_records.row(track.track_id)],
            content_sha256=track.content_sha256,
        )
        answers = Recommender(from_records).recommend(upload, k=len(from_records.tracks)).recommendations
        assert answers and track.track_id not in [answer.track.track_id for answer in answers]
        # Stored float32 log-mel vs the serving graph's own log-mel from the waveform.
        np.testing.assert_allclose(
            from_records.model_embeddings[from_records.row(track.track_id)],
            from_audio.model_embeddings[from_audio.row(track.track_id)],
            atol=1e-4,
        )
        np.testing.assert_allclose(
            from_records.tag_probabilities[from_records.row(track.track_id)],
            from_audio.tag_probabilities[from_audio.row(track.track_id)],
            atol=1e-4,
        )


def test_a_dataset_with_other_log_mel_parameters_is_refused(tmp_path, trained_crnn, job_models):
    with pytest.raises(ValueError, match=r"no dataset has the log-mel parameters of the embedding model"):
        index_builder.build_index(str(tmp_path / "index"), job_models, dataset_dirs=[str(trained_crnn[0])])


def test_datasets_must_map_one_to_one_onto_the_models(tmp_path, trained, trained_crnn, model_refs):
    data_128, data_96 = trained[0] / "data_128", trained_crnn[0]
    copy = tmp_path / "another_128"
    shutil.copytree(data_128, copy)
    models = IndexModels(EmbeddingModels((model_refs["embedding"],)), model_refs["tag"])
    with pytest.raises(ValueError, match=r"2 datasets .* have the log-mel parameters of the embedding model"):
        embedding_job.match_datasets([str(data_128), str(copy), str(data_96)], models)
    only_embedding = IndexModels(models.embedding_models)
    with pytest.raises(ValueError, match=rf"no model reads {data_96}"):
        embedding_job.match_datasets([str(data_128), str(data_96)], only_embedding)
    # By the models' positions in `IndexModels.distinct`: the ranking model, then the tag model.
    assert embedding_job.match_datasets([str(data_96), str(data_128)], models) == {0: str(data_128), 1: str(data_96)}


def test_staging_records_are_the_same_bytes_in_every_process():
    """The index's staging records are serialised deterministically, like the datasets."""
    script = (
        "import sys, numpy as np\n"
        "from serving.retrieval.catalog_index import TrackRecord\n"
        "from serving.retrieval.embedding_job import TrackFeatures, encode_features\n"
        "features = TrackFeatures(TrackRecord('t1', artist='a', title='b', album='c', path='p'),"
        " np.arange(8, dtype=np.float32), np.ones(3, np.float32))\n"
        "sys.stdout.write(encode_features(features).hex())\n"
    )
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONHASHSEED": seed, "TF_CPP_MIN_LOG_LEVEL": "3"}
        done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.add(done.stdout)
    assert len(outputs) == 1


def test_inputs_are_batched_by_shape_up_to_the_batch_size():
    batches = embedding_job.BatchesByShape(batch_size=3)
    ready = []
    for number, length in enumerate([100, 200, 100, 100, 200, 100]):
        ready += batches.add(np.zeros(length), number)
    assert ready == [[0, 2, 3]]  # Three of length 100 filled a batch.
    assert sorted(batches.flush()) == [[1, 4], [5]]
    assert batches.flush() == []


def test_batches_wait_in_bounded_memory_when_every_length_differs():
    batches = embedding_job.BatchesByShape(batch_size=8, max_pending_values=1000)
    ready = []
    for length in range(300, 310):
        ready += batches.add(np.zeros(length), length)
    # Past 1000 pending values the largest pending batch leaves early: never more than 1000 + one input wait.
    assert [len(batch) for batch in ready] == [1] * 7
    left = batches.flush()
    assert sorted(item for batch in ready + left for item in batch) == list(range(300, 310))
    assert sum(length for batch in left for length in batch) <= 1000


@pytest.fixture(scope="module")
def dask_scheduler():
    """A Dask `LocalCluster` of two single-threaded worker processes, shared by the module's Dask runs."""
    distributed = pytest.importorskip("distributed", reason="the dask extra is part of the dev install")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    yield cluster.scheduler_address
    cluster.close()


def _small_catalog(directory, demo_catalog):
    """Three demo tracks (absolute paths, as a cluster's workers need) and a row whose file is missing."""
    rows = list(csv.DictReader(open(demo_catalog, encoding="utf-8")))[::6][:3]
    rows = [{**row, "path": str(demo_catalog.parent / row["path"])} for row in rows]
    rows.append({**rows[0], "track_id": "gone", "path": str(directory / "gone.mp3")})
    path = directory / "catalog.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return catalog.read_catalog(str(path))


def test_on_a_dask_cluster_both_inputs_build_the_direct_runners_index(
    tmp_path, dask_scheduler, demo_catalog, trained, trained_crnn, job_models
):
    """From a catalog CSV (with a bad row) and from TFRecord datasets (the join of two datasets by track)."""
    inputs = {
        "catalog": {"catalog": _small_catalog(tmp_path, demo_catalog)},
        "tfrecords": {"dataset_dirs": [str(trained[0] / "data_128"), str(trained_crnn[0])]},
    }
    for name, data in inputs.items():
        direct_dir, dask_dir = tmp_path / f"{name}_direct", tmp_path / f"{name}_dask"
        index_builder.build_index(str(direct_dir), job_models, pipeline_args=IN_MEMORY, **data)
        # Workers stage under --temp_location (on a cluster: storage every worker reaches), removed afterwards.
        temp = tmp_path / f"{name}_temp"
        temp.mkdir()
        args = ["--runner=dask", f"--dask_client_address={dask_scheduler}", f"--temp_location={temp}"]
        summary = index_builder.build_index(str(dask_dir), job_models, pipeline_args=args, **data)
        assert list(temp.iterdir()) == []
        direct, dask = CatalogIndex.load(str(direct_dir)), CatalogIndex.load(str(dask_dir))
        assert summary.num_indexed == len(dask) == len(direct) == 3, name
        assert dask.tracks == direct.tracks, name  # Same ids in the same order, same metadata and content hashes.
        np.testing.assert_allclose(dask.embeddings, direct.embeddings, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(dask.tag_probabilities, direct.tag_probabilities, atol=1e-6, err_msg=name)
        rejected = (dask_dir / index_builder.REJECTED_FILENAME).read_text()
        assert rejected == (direct_dir / index_builder.REJECTED_FILENAME).read_text(), name
    rejected = rejections_from_csv((tmp_path / "catalog_dask" / index_builder.REJECTED_FILENAME).read_text())
    assert [(r.track_id, r.reason) for r in rejected] == [("gone", "missing_file")]
