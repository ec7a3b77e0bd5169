"""The exported SavedModel, loaded the way TF Serving loads it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

import models
from features.logmel import PRESETS, log_mel_spectrogram
from intake import audio
from models import artifact, pretrained
from serving.export import saved_model
from tests.binaries import run_binary
from tests.conftest import DEMO_DIR, REPO_ROOT
from tfrecords import dataset_info, readers, schema


def test_versions_and_files(trained, tmp_path):
    root, _, export_base, path = trained
    assert path == str(export_base / "1")
    assert sorted(os.listdir(export_base)) == ["1"]
    assert (export_base / "1" / "assets" / saved_model.VOCABULARY_ASSET).read_text().split("\n")[:-1] == list(
        dataset_info.load(str(root / "data_128")).vocabulary
    )
    copy = tmp_path / "short_chunk_res"
    shutil.copytree(export_base, copy)
    assert saved_model.export(str(root / "run_short_chunk_res"), str(copy), num_chunks=4) == str(copy / "2")
    with pytest.raises(saved_model.ExportError, match="immutable"):
        saved_model.export(str(root / "run_short_chunk_res"), str(copy), version=2)


def test_signatures_and_shapes(trained):
    _, _, _, path = trained
    loaded = tf.saved_model.load(path)
    assert set(loaded.signatures) == {"serving_default", "tags", "embed", "log_mel"}
    serve = loaded.signatures["serving_default"]
    (spec,) = serve.structured_input_signature[1].values()
    assert spec.dtype == tf.float32 and spec.shape.as_list() == [None, None]
    outputs = serve(waveform=tf.zeros([2, 32000]) + 0.01)
    num_tags = len(loaded.vocabulary.numpy())
    assert outputs["tags"].shape == (2, num_tags) and outputs["embedding"].shape == (2, 64)  # 16 channels x 4
    np.testing.assert_allclose(np.linalg.norm(outputs["embedding"].numpy(), axis=1), 1.0, rtol=1e-5)
    assert set(loaded.signatures["tags"](waveform=tf.zeros([1, 16000]))) == {"tags"}
    assert set(loaded.signatures["embed"](waveform=tf.zeros([1, 16000]))) == {"embedding"}


@pytest.mark.parametrize("seconds", [1.0, 29.0, 600.0])
def test_any_length_of_at_least_one_second(trained, seconds):
    loaded = tf.saved_model.load(trained[3])
    waveform = np.random.default_rng(0).normal(0, 0.1, (1, int(seconds * 16000))).astype(np.float32)
    outputs = loaded.signatures["serving_default"](waveform=tf.constant(waveform))
    assert np.isfinite(outputs["tags"].numpy()).all() and np.isfinite(outputs["embedding"].numpy()).all()


def test_shorter_than_one_second_is_refused(trained):
    loaded = tf.saved_model.load(trained[3])
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least 1.0 s"):
        loaded.signatures["serving_default"](waveform=tf.zeros([1, 8000]))


def test_parity_with_the_keras_model_on_the_pipeline_log_mel(trained):
    root, parsed, _, path = trained
    import keras

    keras_model = keras.saving.load_model(root / "run_short_chunk_res" / "best" / "model.keras")
    loaded = tf.saved_model.load(path)
    info = dataset_info.load(str(root / "data_128"))
    for item in readers.eval_dataset(str(root / "data_128"), split="train", chunk_frames=231, num_chunks=4, info=info):
        track_id = item[schema.TRACK_ID].numpy().decode()
        entry = next(e for e in parsed.entries if e.track_id == track_id)
        waveform, _ = audio.load_mono(entry.uri, entry.uri, 16000)
        served = loaded.signatures["serving_default"](waveform=tf.constant(waveform[np.newaxis]))
        expected = keras_model(item[schema.LOG_MEL], training=False)
        np.testing.assert_allclose(served["tags"].numpy()[0], expected["tags"].numpy().mean(axis=0), atol=1e-5)
        embedding = expected["embedding"].numpy().mean(axis=0)
        np.testing.assert_allclose(served["embedding"].numpy()[0], embedding / np.linalg.norm(embedding), atol=1e-5)
        from_log_mel = loaded.signatures["log_mel"](log_mel=tf.constant(item[schema.LOG_MEL].numpy()[:1]))
        assert from_log_mel["tags"].shape == (1, len(info.vocabulary))


def test_warmup_requests_match_the_signature(trained):
    path = trained[3]
    records = list(tf.data.TFRecordDataset(os.path.join(path, "assets.extra", saved_model.WARMUP_FILENAME)))
    assert len(records) == 2
    loaded = tf.saved_model.load(path)
    for record in records:
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        assert request.model_spec.name == "short_chunk_res" and request.model_spec.signature_name == "serving_default"
        waveform = tf.make_ndarray(request.inputs["waveform"])
        outputs = loaded.signatures["serving_default"](waveform=tf.constant(waveform))
        assert outputs["tags"].shape[0] == 1


def test_saved_model_cli_reads_it(trained):
    beside_python = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    cli = beside_python if os.path.exists(beside_python) else shutil.which("saved_model_cli")
    assert cli, "saved_model_cli comes with TensorFlow"
    result = subprocess.run([cli, "show", "--dir", trained[3], "--all"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("serving_default", "embed", "tags", "log_mel"):
        assert f"signature_def['{name}']" in result.stdout


def test_model_dir_without_a_finished_run(tmp_path):
    with pytest.raises(saved_model.ExportError, match="model_info.json"):
        saved_model.export(str(tmp_path), str(tmp_path / "export"))


@pytest.mark.parametrize("name", ["msd_musicnn", "mtat_crnn"])
def test_converted_checkpoints_export_as_they_are(name, pretrained_exports):
    """A converted artifact is a trained model like any other: exported unchanged, its front end inside."""
    tagger, info = artifact.load(str(REPO_ROOT / "pretrained" / name))
    version_dir = pretrained_exports[name]
    loaded = tf.saved_model.load(version_dir)
    exported_info = artifact.read_info(os.path.join(version_dir, "assets.extra"))
    assert exported_info == info and info.provenance.source_sha256 == pretrained.PUBLISHED[name].files
    assert [v.decode() for v in loaded.vocabulary.numpy()] == list(pretrained.PUBLISHED[name].vocabulary)
    num_chunks = int(loaded.num_chunks_variable.numpy())
    path = str(DEMO_DIR / "audio" / "starfighter--death.mp3")  # 15 s: shorter than the CRNN's 29 s input.
    waveform, _ = audio.load_mono(path, path, 16000)
    outputs = loaded.signatures["serving_default"](waveform=tf.constant(waveform[np.newaxis]))
    log_mel = log_mel_spectrogram(waveform, info.log_mel)
    chunks = readers.evenly_spaced_chunks(log_mel, info.crop_frames, num_chunks)
    expected = tagger(chunks, training=False)
    np.testing.assert_allclose(outputs["tags"].numpy()[0], expected[models.TAGS].numpy().mean(axis=0), atol=1e-5)
    embedding = expected[models.EMBEDDING].numpy().mean(axis=0)
    np.testing.assert_allclose(outputs["embedding"].numpy()[0], embedding / np.linalg.norm(embedding), atol=1e-5)
    if name == "msd_musicnn":
        assert info.log_mel == PRESETS["musicnn"] and num_chunks == saved_model.DEFAULT_NUM_CHUNKS


def test_export_of_a_directory_that_is_no_artifact_names_it(tmp_path):
    with pytest.raises(saved_model.ExportError, match=f"{tmp_path}: no model_info.json"):
        saved_model.export(str(tmp_path), str(tmp_path / "export"))
    done = run_binary("serving.export", f"--model_dir={tmp_path}", f"--export_dir={tmp_path / 'export'}")
    assert done.returncode != 0 and f"error: {tmp_path}: no model_info.json" in done.stderr


def test_the_crnn_export_makes_as_many_passes_as_the_track_needs(trained_crnn):
    """A 30 s preview: one pass of the 29 s input; 3 minutes: the cap (4 here); the chunks the evaluation takes."""
    data_96, _, path = trained_crnn
    tagger, info = artifact.load(str(data_96.parent / "run_crnn"))
    loaded = tf.saved_model.load(path)
    rng = np.random.default_rng(0)
    for seconds, passes in ((30, 1), (180, 4)):
        waveform = (0.1 * rng.standard_normal(seconds * 16000)).astype(np.float32)
        served = loaded.signatures["serving_default"](waveform=tf.constant(waveform[np.newaxis]))
        log_mel = log_mel_spectrogram(waveform, info.log_mel).numpy()
        hop = (log_mel.shape[0] - info.crop_frames) // passes
        chunks = np.stack([log_mel[i * hop : i * hop + info.crop_frames] for i in range(passes)])
        expected = tagger(chunks, training=False)[models.TAGS].numpy().mean(axis=0)
        np.testing.assert_allclose(served["tags"].numpy()[0], expected, atol=1e-5)


def test_both_graphs_export_the_same_function(pretrained_exports, tmp_path):
    """`--graph=as_trained` keeps the layers as trained (the baseline); the default inference form gives the same outputs."""
    inference = tf.saved_model.load(pretrained_exports["mtat_crnn"])
    done = run_binary(
        "serving.export",
        f"--model_dir={REPO_ROOT / 'pretrained' / 'mtat_crnn'}",
        f"--export_dir={tmp_path / 'mtat_crnn'}",
        "--graph=as_trained",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    as_trained = tf.saved_model.load(str(tmp_path / "mtat_crnn" / "1"))
    assert inference.graph.numpy() == b"inference" and as_trained.graph.numpy() == b"as_trained"
    path = str(DEMO_DIR / "audio" / "starfighter--death.mp3")
    waveform = tf.constant(audio.load_mono(path, path, 16000)[0][np.newaxis])
    expected = as_trained.signatures["serving_default"](waveform=waveform)
    got = inference.signatures["serving_default"](waveform=waveform)
    np.testing.assert_allclose(got["tags"].numpy(), expected["tags"].numpy(), atol=1e-5)
    assert float(np.sum(got["embedding"].numpy() * expected["embedding"].numpy())) >= 0.9999
    with pytest.raises(saved_model.ExportError, match="unknown graph 'fast'"):
        saved_model.export(str(REPO_ROOT / "pretrained" / "mtat_crnn"), str(tmp_path / "other"), graph="fast")


def test_a_bfloat16_export_answers_in_float32_close_to_float32(pretrained_exports, tmp_path):
    """`--precision=bfloat16`: the inference form in bfloat16 arithmetic; the baseline graph refuses it."""
    model_dir = REPO_ROOT / "pretrained" / "mtat_crnn"
    done = run_binary(
        "serving.export", f"--model_dir={model_dir}", f"--export_dir={tmp_path / 'bf16'}", "--precision=bfloat16"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    bfloat16 = tf.saved_model.load(str(tmp_path / "bf16" / "1"))
    float32 = tf.saved_model.load(pretrained_exports["mtat_crnn"])
    assert bfloat16.precision.numpy() == b"bfloat16" and float32.precision.numpy() == b"float32"
    path = str(DEMO_DIR / "audio" / "starfighter--death.mp3")
    waveform = tf.constant(audio.load_mono(path, path, 16000)[0][np.newaxis])
    got, expected = (model.signatures["serving_default"](waveform=waveform) for model in (bfloat16, float32))
    assert got["tags"].dtype == got["embedding"].dtype == tf.float32
    assert float(np.sum(got["embedding"].numpy() * expected["embedding"].numpy())) > 0.99
    np.testing.assert_allclose(got["tags"].numpy(), expected["tags"].numpy(), atol=0.05)
    refused = run_binary(
        "serving.export",
        f"--model_dir={model_dir}",
        f"--export_dir={tmp_path / 'refused'}",
        "--graph=as_trained",
        "--precision=bfloat16",
    )
    assert refused.returncode != 0 and "error: the layers as trained run in float32 only" in refused.stderr
    assert not (tmp_path / "refused").exists()
