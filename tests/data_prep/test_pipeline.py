"""The Beam pipeline end to end: real audio, crafted bad files, real TFRecords."""

from __future__ import annotations

import dataclasses
import filecmp
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from data_prep import beam_jobs, pipeline
from features.logmel import PRESETS, LogMelSpec, log_mel_spectrogram
from intake import audio, catalog
from intake.rejections import rejections_from_csv
from tests.binaries import run_binary
from tests.conftest import REPO_ROOT
from tests.data_prep.messy_catalog import write_messy_catalog
from tests.features.reference_logmel import reference_log_mel
from tests.intake.music_folder import make_music_folder
from tfrecords import dataset_info, readers, schema

# Crafted rows: (track_id, file name or None, expected rejection reason or None).
CRAFTED = {
    "missing": "missing_file",
    "ghost_only": "missing_file",  # The only row tagged "ghost": the tag ends with no example.
    "junk": "decode_error",
    "empty": "empty",
    "short": "too_short",
    "silent": "silent",
    "nan": "non_finite",
    "truncated_mp3": "truncated",
    "longer_in_catalog": "truncated",
    "untagged": "no_usable_tag",
    "bad_split": "invalid_row",
    "stereo_48k_flac": None,
    "mono_8k_wav": None,
    "aac_m4a": None,
}


@pytest.fixture(scope="module")
def messy_run(tmp_path_factory, demo_catalog):
    directory = tmp_path_factory.mktemp("messy")
    catalog_path = write_messy_catalog(directory, demo_catalog)
    parsed = catalog.read_catalog(str(catalog_path))
    config = pipeline.PreprocessConfig(output_dir=str(directory / "out"), split_by="artist")
    summary = pipeline.run(parsed, config, ["--direct_num_workers=2"])
    return directory, parsed, config, summary


def _read_all(output_dir, info):
    examples = {}
    for split in info.splits:
        for path in dataset_info.shard_paths(str(output_dir), info, split):
            for record in _records(path):
                decoded = schema.decode_example(record, info.log_mel_dtype)
                # The labels a reader derives from the tags and the dataset's vocabulary.
                parsed = readers.example_parser(info)(record)
                decoded[schema.LABELS] = parsed[schema.LABELS].numpy()
                examples[decoded[schema.TRACK_ID]] = (split, decoded)
    return examples


def _records(path):
    import tensorflow as tf

    return [r.numpy() for r in tf.data.TFRecordDataset(path)]


def test_counts_reconcile_and_every_bad_row_has_its_reason(messy_run):
    directory, parsed, _, summary = messy_run
    info = dataset_info.load(str(directory / "out"))
    assert info.catalog["rows"] == parsed.num_rows == 16 + 15
    assert info.num_written + info.rejected["count"] == info.catalog["rows"]
    rejected = rejections_from_csv((directory / "out" / "rejected.csv").read_text())
    assert len(rejected) == info.rejected["count"]
    reasons = {(r.track_id, r.reason) for r in rejected}
    for track_id, reason in CRAFTED.items():
        if reason is not None:
            assert (track_id, reason) in reasons, track_id
    assert ("stereo_48k_flac", "duplicate_track_id") in reasons
    assert any(r.reason == "missing_file" and r.path == "audio/missing.mp3" for r in rejected)
    assert info.num_written == 16 + 3
    assert summary.counters.get("decoded") == info.num_written
    assert summary.counters.get("rejected") == sum(
        1 for r in rejected if r.reason not in ("duplicate_track_id", "invalid_row", "no_usable_tag")
    )
    assert summary.counters.get("decoded_with_ffmpeg") == 1
    assert "catalog rows:  31" in summary.render()


def test_every_field_round_trips(messy_run):
    directory, parsed, config, _ = messy_run
    info = dataset_info.load(str(directory / "out"))
    examples = _read_all(directory / "out", info)
    assert len(examples) == info.num_written
    entries = {e.track_id: e for e in parsed.entries}
    worst = 0.0
    for track_id, (_, example) in examples.items():
        entry = entries[track_id]
        assert example[schema.ARTIST] == entry.artist and example[schema.TITLE] == entry.title
        assert example[schema.ALBUM] == entry.album
        vocabulary_tags = [t for t in entry.tags if t in info.vocabulary]
        assert example[schema.TAGS] == vocabulary_tags
        np.testing.assert_array_equal(example[schema.LABELS], [int(t in vocabulary_tags) for t in info.vocabulary])
        waveform, _ = audio.load_mono(entry.uri, entry.uri, 16000)
        assert example[schema.NUM_SAMPLES] == waveform.size
        assert example[schema.AUDIO_SHA256] == audio.content_sha256(entry.uri)  # The file's bytes, as the index's.
        assert example[schema.DURATION_S] == pytest.approx(waveform.size / 16000, rel=1e-6)
        log_mel = example[schema.LOG_MEL]
        assert log_mel.shape == (1 + waveform.size // 256, 128)
        worst = max(worst, float(np.abs(log_mel - reference_log_mel(waveform, config.log_mel)).max()))
    assert worst <= 0.05, worst
    assert "unseen" in info.vocabulary  # min_tag_count=1 keeps it.


def test_a_tag_only_rejected_rows_carried_leaves_the_vocabulary(messy_run, tmp_path):
    directory, parsed, config, summary = messy_run
    info = dataset_info.load(str(directory / "out"))
    assert "ghost" not in info.vocabulary and set(info.dropped_tags) == {"ghost"}
    assert "rejected" in info.dropped_tags["ghost"]
    assert "tags dropped (every row carrying them was rejected): ['ghost']" in summary.render()
    assert all(count > 0 for count in _tag_totals(info).values())
    for _, example in _read_all(directory / "out", info).values():
        assert len(example[schema.LABELS]) == info.num_tags
    # A vocabulary the user gave is not changed behind their back: the run fails, naming the tag.
    given = dataclasses.replace(config, output_dir=str(tmp_path / "given"), vocabulary=(*info.vocabulary, "ghost"))
    with pytest.raises(catalog.CatalogError, match=r"no usable track: \['ghost'\]"):
        pipeline.run(parsed, given, ["--direct_num_workers=2"])
    assert not (tmp_path / "given" / dataset_info.FILENAME).exists()


def _tag_totals(info):
    totals = {tag: 0 for tag in info.vocabulary}
    for split in info.splits.values():
        for tag, count in split.tag_counts.items():
            totals[tag] += count
    return totals


def test_splits_are_artist_disjoint_and_info_matches_shards(messy_run):
    directory, parsed, _, _ = messy_run
    info = dataset_info.load(str(directory / "out"))
    examples = _read_all(directory / "out", info)
    split_of_artist = {}
    for split, example in examples.values():
        assert split_of_artist.setdefault(example[schema.ARTIST], split) == split
    for name, split in info.splits.items():
        members = [e for s, e in examples.values() if s == name]
        assert split.examples == len(members)
        assert split.seconds == pytest.approx(sum(e[schema.DURATION_S] for e in members), abs=0.01)
        for tag, count in split.tag_counts.items():
            assert count == sum(tag in e[schema.TAGS] for e in members)
    assert not (directory / "out" / beam_jobs.STAGING_DIRNAME).exists()


def test_readers_work_on_the_pipeline_output(messy_run):
    directory = str(messy_run[0] / "out")
    info = dataset_info.load(directory)
    batch, labels = next(iter(readers.train_dataset(directory, crops_per_track=2, global_batch_size=4, seed=0)))
    assert batch.shape == (4, 231, 128) and labels.shape == (4, info.num_tags)
    chunks = list(readers.eval_dataset(directory, split="train"))
    assert len(chunks) == info.splits["train"].examples
    for item in chunks:  # As many chunks as each track's length needs (`readers.chunk_count`), at most 16.
        frames = int(item[schema.DURATION_S] * info.log_mel.sample_rate) // info.log_mel.hop_length + 1
        expected = int(readers.chunk_count(frames, 231, 16))
        assert item[schema.LOG_MEL].shape == (expected, 231, 128) and int(item[readers.NUM_CHUNKS]) == expected


def test_rerun_is_idempotent(messy_run, tmp_path):
    directory, parsed, config, _ = messy_run
    output = directory / "out"
    snapshot = tmp_path / "snapshot"
    shutil.copytree(output, snapshot)
    (output / "train-00099-of-00100.tfrecord").write_bytes(b"stale shard from an older run")
    pipeline.run(parsed, config, ["--direct_num_workers=2"])
    comparison = filecmp.dircmp(output, snapshot)
    assert sorted(os.listdir(output)) == sorted(os.listdir(snapshot))
    assert not comparison.diff_files and not comparison.left_only and not comparison.right_only
    for name in os.listdir(output):
        assert (output / name).read_bytes() == (snapshot / name).read_bytes(), name


def test_runs_in_separate_processes_write_identical_bytes(tmp_path, demo_catalog):
    """Records are serialised deterministically (protobuf map order is otherwise per-process)."""
    rows = (REPO_ROOT / "demo" / "catalog.csv").read_text().splitlines()
    small = tmp_path / "catalog.csv"
    small.write_text("\n".join(rows[:1] + rows[1::4]) + "\n")
    outputs = []
    for seed in ("1", "2"):
        output = tmp_path / f"run{seed}"
        command = [*_cli(output, "--log_mel_dtype=float16"), f"--catalog={small}", f"--audio_root={REPO_ROOT / 'demo'}"]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONHASHSEED": seed}
        done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.append(output)
    shards = sorted(name for name in os.listdir(outputs[0]) if ".tfrecord" in name)
    assert shards and shards == sorted(name for name in os.listdir(outputs[1]) if ".tfrecord" in name)
    for name in shards:
        assert (outputs[0] / name).read_bytes() == (outputs[1] / name).read_bytes(), name


def test_96_mel_dataset_and_gzip(tmp_path, demo_catalog):
    parsed = catalog.read_catalog(str(demo_catalog))
    config = pipeline.PreprocessConfig(
        output_dir=str(tmp_path),
        log_mel=LogMelSpec(n_mels=96),
        compression="GZIP",
        split_by="track",
        log_mel_dtype="float32",
    )
    pipeline.run(parsed, config, ["--direct_running_mode=in_memory"])
    info = dataset_info.load(str(tmp_path))
    assert info.log_mel.n_mels == 96 and info.compression == "GZIP"
    assert all(name.endswith(".tfrecord.gz") for split in info.splits.values() for name in split.shards)
    item = next(iter(readers.eval_dataset(str(tmp_path), split="train", chunk_frames=1813, num_chunks=1)))
    assert item[schema.LOG_MEL].shape == (1, 1813, 96)


def _cli(output_dir, *extra):
    return [
        sys.executable,
        "-m",
        "data_prep",
        f"--catalog={REPO_ROOT / 'demo' / 'catalog.csv'}",
        f"--output_dir={output_dir}",
        "--split_by=track",
        *extra,
    ]


def _kill_when_staging_has_examples(process, output_dir, timeout=120.0):
    examples_dir = output_dir / beam_jobs.STAGING_DIRNAME / "examples"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if examples_dir.is_dir() and any(examples_dir.iterdir()):
            process.send_signal(signal.SIGKILL)
            process.wait()
            return
        if process.poll() is not None:
            pytest.fail(f"the run finished before it could be killed: {process.returncode}")
        time.sleep(0.02)
    process.kill()
    pytest.fail("the run never started writing examples")


def test_cli_killed_run_leaves_no_complete_looking_dataset_and_resumes(tmp_path):
    fresh = tmp_path / "fresh"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        _cli(fresh), cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _kill_when_staging_has_examples(process, fresh)
    assert not (fresh / dataset_info.FILENAME).exists()
    with pytest.raises(dataset_info.IncompleteDatasetError):
        readers.train_dataset(str(fresh))

    done = run_binary("data_prep", *_cli(fresh)[3:])  # The same command; its `main` in this process.
    assert done.returncode == 0, done.stderr[-3000:]
    assert "written:       16" in done.stdout and "rejected:      0" in done.stdout
    info = dataset_info.load(str(fresh))
    assert info.num_written == 16
    assert not (fresh / beam_jobs.STAGING_DIRNAME).exists()
    first = {name: (fresh / name).read_bytes() for name in os.listdir(fresh)}

    # Killing a re-run over a complete dataset leaves the old one intact.
    process = subprocess.Popen(
        _cli(fresh), cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _kill_when_staging_has_examples(process, fresh)
    assert dataset_info.load(str(fresh)).num_written == 16
    for name, data in first.items():
        assert (fresh / name).read_bytes() == data


def test_cli_rejects_bad_usage(tmp_path):
    result = run_binary("data_prep", f"--output_dir={tmp_path}")
    assert result.returncode != 0 and "exactly one of --catalog and --mtat_annotations" in result.stderr
    missing = run_binary("data_prep", f"--catalog={tmp_path / 'nope.csv'}", f"--output_dir={tmp_path}")
    assert missing.returncode != 0 and "nope.csv: cannot read the catalog" in missing.stderr
    no_column = tmp_path / "catalog.csv"
    no_column.write_text("id,path\nx,a.mp3\n")
    bad_header = run_binary("data_prep", f"--catalog={no_column}", f"--output_dir={tmp_path / 'out'}")
    assert bad_header.returncode != 0 and "missing required column(s) ['track_id']" in bad_header.stderr


def test_cli_log_mel_preset_writes_the_musicnn_front_end(tmp_path):
    clash = run_binary("data_prep", *_cli(tmp_path / "clash", "--log_mel_preset=musicnn", "--n_mels=128")[3:])
    assert clash.returncode != 0 and "--log_mel_preset sets the front end; drop --n_mels" in clash.stderr
    output = tmp_path / "musicnn"
    rows = (REPO_ROOT / "demo" / "catalog.csv").read_text().splitlines()
    small = tmp_path / "catalog.csv"
    small.write_text("\n".join(rows[:1] + rows[1::4]) + "\n")  # Four tracks.
    done = run_binary(
        "data_prep",
        *_cli(output, "--log_mel_preset=musicnn", "--log_mel_dtype=float32")[3:],
        f"--catalog={small}",
        f"--audio_root={REPO_ROOT / 'demo'}",
        "--direct_running_mode=in_memory",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    info = dataset_info.load(str(output))
    assert info.log_mel == PRESETS["musicnn"] and info.num_written == 4
    record = next(iter(tf.data.TFRecordDataset(dataset_info.shard_paths(str(output), info, "train"))))
    example = schema.decode_example(record.numpy(), info.log_mel_dtype)
    entry = next(e for e in catalog.read_catalog(str(REPO_ROOT / "demo" / "catalog.csv")).entries
                 if e.track_id == example[schema.TRACK_ID])  # fmt: skip
    waveform, _ = audio.load_mono(entry.uri, entry.uri, 16000)
    expected = log_mel_spectrogram(waveform, PRESETS["musicnn"]).numpy()
    np.testing.assert_allclose(example[schema.LOG_MEL], expected, atol=1e-4)
    assert 0.0 <= example[schema.LOG_MEL].min() and example[schema.LOG_MEL].max() < 10.0  # log10(1 + 10000 x)


def test_config_validation():
    with pytest.raises(ValueError, match="compression"):
        pipeline.PreprocessConfig(output_dir="x", compression="bz2")
    with pytest.raises(ValueError, match="min_duration_s"):
        pipeline.PreprocessConfig(output_dir="x", min_duration_s=0.001)


def test_an_untagged_catalog_is_kept_whole_with_norequire_tags(untagged_demo):
    """A catalog without a tags column (the input of self-supervised training): every row written."""
    for name in ("128", "musicnn"):
        info = dataset_info.load(untagged_demo[name])
        assert info.vocabulary == [] and info.num_written == 16 and info.rejected["count"] == 0
        assert {split: i.examples for split, i in info.splits.items()} == {"train": 8, "valid": 4, "test": 4}
        assert info.options["require_tags"] is False


def test_an_untagged_catalog_without_norequire_tags_says_how_to_keep_it(untagged_demo, tmp_path):
    parsed = catalog.read_catalog(untagged_demo["catalog"])
    tasks, rejections, vocabulary = pipeline.plan_tasks(parsed, pipeline.PreprocessConfig(output_dir=str(tmp_path)))
    assert tasks == [] and vocabulary.tags == () and len(rejections) == 16
    assert {r.reason for r in rejections} == {"no_usable_tag"}
    assert all("--norequire_tags" in r.detail for r in rejections)


def test_a_folder_of_music_is_preprocessed_and_its_catalog_written_beside_the_dataset(tmp_path):
    music = make_music_folder(tmp_path / "My Music")
    output = tmp_path / "out"
    done = run_binary("data_prep", f"--catalog={music.root}", f"--output_dir={output}", "--norequire_tags")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"folder {music.root}: 9 audio files; skipped 5 other files" in done.stdout
    info = dataset_info.load(str(output))
    assert info.catalog["format"] == "folder" and info.catalog["rows"] == len(music.audio)
    rejected = rejections_from_csv((output / "rejected.csv").read_text())
    assert [(r.path, r.reason) for r in rejected] == [("broken.mp3", "decode_error")]  # As the catalog names it.
    assert info.num_written + len(rejected) == len(music.audio)  # What came in = written + rejected.
    written = catalog.read_catalog(str(output / "catalog.csv"))  # The catalog used, to repeat or edit the run.
    assert [entry.uri for entry in written.entries] == [str(music.root / path) for path in music.audio]
    again = run_binary("data_prep", f"--catalog={output / 'catalog.csv'}", f"--output_dir={output}", "--norequire_tags")
    assert again.returncode == 0, again.stderr[-3000:]
    assert dataset_info.load(str(output)).num_written == info.num_written
    assert (output / "catalog.csv").exists()  # A rerun from it keeps it.
