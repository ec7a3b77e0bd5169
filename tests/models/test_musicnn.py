"""musicnn in Keras 3: the published checkpoints, converted, equal the original graphs on real audio.

The reference outputs (`fixtures/musicnn_reference.npz`) were recorded once
from the musicnn package's own TF1 graphs and checkpoints in a throw-away
environment (`fixtures/make_musicnn_reference.py`), on two demo tracks. Here
the same tracks are decoded by this project, go through its `musicnn`
log-mel variant, and then through the artifacts `make install` converted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

import models
from features.logmel import PRESETS, log_mel_spectrogram
from intake import audio
from models import artifact, convert_musicnn_lib, musicnn, pretrained
from tests.conftest import DEMO_DIR, REPO_ROOT
from tests.models.batch_norm_statistics import with_batch_statistics

FIXTURE = REPO_ROOT / "tests" / "models" / "fixtures" / "musicnn_reference.npz"
PRETRAINED = REPO_ROOT / "pretrained"
ORIGINAL_NAMES = {
    "msd_musicnn": "MSD_musicnn",
    "mtt_musicnn": "MTT_musicnn",
    "msd_musicnn_vgg": "MSD_vgg",
    "mtt_musicnn_vgg": "MTT_vgg",
}
PATCH = 187


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(FIXTURE))


@pytest.fixture(scope="module")
def wheel() -> str:
    """The musicnn wheel `make install` fetched (kept next to the artifacts)."""
    path = PRETRAINED / pretrained.DOWNLOADS_DIRNAME / pretrained.MUSICNN_WHEEL
    assert path.exists(), f"{path} is missing: `make install` fetches it (python -m models.install_pretrained)"
    return str(path)


def _patches(log_mel: np.ndarray) -> np.ndarray:
    """Non-overlapping 187-frame patches, as musicnn's extractor cuts them."""
    return np.stack([log_mel[start : start + PATCH] for start in range(0, log_mel.shape[0] - PATCH + 1, PATCH)])


@pytest.mark.parametrize("name", sorted(ORIGINAL_NAMES))
def test_installed_model_equals_the_original_graph_on_real_audio(name, reference):
    model, info = artifact.load(str(PRETRAINED / name))
    assert info.log_mel == PRESETS["musicnn"] and info.crop_frames == PATCH
    assert info.provenance.source_sha256 == pretrained.PUBLISHED[name].files
    assert info.vocabulary == pretrained.PUBLISHED[name].vocabulary
    inference_form = models.for_inference(model, info.model_name)
    for index, file_name in enumerate(reference["files"]):
        path = str(DEMO_DIR / "audio" / str(file_name))
        waveform, _ = audio.load_mono(path, path, info.log_mel.sample_rate)
        log_mel = log_mel_spectrogram(waveform, info.log_mel).numpy()
        if index == 0:  # The front end: librosa's mel and log10(1 + 10000 x), in float32.
            np.testing.assert_allclose(log_mel, reference["log_mel/0"], atol=1e-4)
        original = ORIGINAL_NAMES[name]
        for form in (model, inference_form):  # The layers as trained, and what exports run.
            outputs = form(_patches(log_mel), training=False)
            np.testing.assert_allclose(outputs[models.TAGS].numpy(), reference[f"{original}/{index}/tags"], atol=1e-4)
            np.testing.assert_allclose(
                outputs[models.EMBEDDING].numpy(), reference[f"{original}/{index}/embedding"], atol=1e-4
            )


def test_architectures_have_the_checkpoints_parameter_counts(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as archive:
        for name in ("msd_musicnn", "msd_musicnn_vgg"):
            checkpoint = pretrained.extract_checkpoint(archive, pretrained.PUBLISHED[name], str(tmp_path))
            variables = convert_musicnn_lib.read_checkpoint(checkpoint)
            trainable = sum(
                value.size
                for key, value in variables.items()
                if not key.endswith(("/Adam", "/Adam_1", "moving_mean", "moving_variance")) and "power" not in key
            )
            model = models.get_model(pretrained.PUBLISHED[name].architecture, 50)
            assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == trainable
    assert trainable == 605_748  # musicnn_vgg; musicnn's 787,159 is checked by the first pass.


@pytest.mark.parametrize("frames", [187, 100, 250])
def test_fused_front_end_equals_the_branches_for_both_gamma_signs_and_any_length(frames, tmp_path):
    rng = np.random.default_rng(frames)
    model = with_batch_statistics(models.get_model("musicnn", 6, num_frames=None, frontend_filters=0.4), rng)
    fused = musicnn.fused_for_inference(model)
    kinds = [type(layer) for layer in fused.layers]
    assert kinds.count(musicnn.FrequencyPooledConv) == 5 and keras.layers.Conv2D not in kinds
    log_mel = rng.normal(1.0, 1.0, size=(3, frames, 96)).astype(np.float32)
    expected, got = model(log_mel, training=False), fused(log_mel, training=False)
    for key in (models.TAGS, models.EMBEDDING):
        np.testing.assert_allclose(got[key].numpy(), expected[key].numpy(), atol=1e-4)
    for name in musicnn.FRONT_END_BRANCHES:  # Each branch alone, before the mid-end mixes them.
        branch = keras.Model(model.input, model.get_layer(f"{name}_pool").output)
        image = keras.Model(model.input, model.get_layer("input_bn").output)(log_mel, training=False)
        pooled = musicnn.FrequencyPooledConv.from_branch(model.get_layer(name), model.get_layer(f"{name}_bn"))
        np.testing.assert_allclose(pooled(image).numpy(), branch(log_mel, training=False).numpy(), atol=1e-4)
    fused.save(tmp_path / "fused.keras")  # A serializable layer: the inference form saves and loads.
    loaded = keras.saving.load_model(tmp_path / "fused.keras")
    np.testing.assert_array_equal(loaded(log_mel)[models.EMBEDDING].numpy(), got[models.EMBEDDING].numpy())


@pytest.mark.parametrize("phases", [1, 3, 4])
def test_a_polyphase_kernel_gives_each_output_phase_its_taps_and_nothing_else(phases):
    kernel = np.arange(1.0, 11.0).reshape(5, 2)  # k = 5 frames, 2 filters
    matrix = musicnn._polyphase_kernel(kernel, phases)
    groups = matrix.shape[1]
    inputs = matrix.reshape(groups * phases, phases, 2)  # [input frame from the group's first, phase, filter]
    for phase in range(phases):  # Output frame `phase` reads input frames phase .. phase + 4.
        np.testing.assert_array_equal(inputs[phase : phase + 5, phase], kernel)
        assert not np.delete(inputs[:, phase], range(phase, phase + 5), axis=0).any()
    assert (groups - 1) * phases < phases - 1 + 5 <= groups * phases  # No group more than the last phase reads.


def test_musicnn_takes_any_length_and_vgg_refuses_none():
    model = models.get_model("musicnn", 5, num_frames=None)
    outputs = model(np.zeros((2, 300, 96), np.float32), training=False)
    assert outputs[models.TAGS].shape == (2, 5) and outputs[models.EMBEDDING].shape == (2, 200)
    with pytest.raises(ValueError, match="fixed num_frames"):
        models.get_model("musicnn_vgg", 5, num_frames=None)


def test_conversion_refuses_altered_missing_and_foreign_variables(wheel, tmp_path):
    model = pretrained.PUBLISHED["mtt_musicnn"]
    with zipfile.ZipFile(wheel) as archive:
        checkpoint = pretrained.extract_checkpoint(archive, model, str(tmp_path))
    variables = convert_musicnn_lib.read_checkpoint(checkpoint)
    missing = {k: v for k, v in variables.items() if k != "batch_normalization_7/moving_variance"}
    with pytest.raises(convert_musicnn_lib.ConversionError, match="batch_normalization_7/moving_variance"):
        convert_musicnn_lib.convert(missing, "musicnn", model.vocabulary)
    extra = dict(variables, **{"conv2d_99/kernel": np.zeros(3, np.float32)})
    with pytest.raises(convert_musicnn_lib.ConversionError, match="conv2d_99"):
        convert_musicnn_lib.convert(extra, "musicnn", model.vocabulary)
    with pytest.raises(convert_musicnn_lib.ConversionError, match="not a musicnn_vgg checkpoint|no 1CNN"):
        convert_musicnn_lib.convert(variables, "musicnn_vgg", model.vocabulary)
    with pytest.raises(convert_musicnn_lib.ConversionError, match="50 outputs, the vocabulary 2"):
        convert_musicnn_lib.convert(variables, "musicnn", ["a", "b"])
    # A checkpoint file that is not the published one is refused before it is read.
    data_file = tmp_path / "MTT_musicnn" / ".data-00000-of-00001"
    contents = bytearray(data_file.read_bytes())
    contents[1000] ^= 0xFF
    data_file.write_bytes(bytes(contents))
    with pytest.raises(pretrained.IntegrityError, match=r"\.data-00000-of-00001: SHA-256"):
        pretrained.convert_musicnn(checkpoint, model, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_install_checks_the_wheel_and_keeps_installed_models(wheel, tmp_path):
    altered = tmp_path / pretrained.MUSICNN_WHEEL
    shutil.copyfile(wheel, altered)
    with open(altered, "r+b") as handle:
        handle.seek(100)
        handle.write(b"\0\0\0\0")
    with pytest.raises(pretrained.IntegrityError, match=pretrained.MUSICNN_WHEEL):
        pretrained.install_musicnn(str(tmp_path / "out"), wheel=str(altered), names=["mtt_musicnn_vgg"])
    done = pretrained.install_musicnn(str(tmp_path / "out"), wheel=wheel, names=["mtt_musicnn_vgg"])
    assert done == {"mtt_musicnn_vgg": "converted"}
    assert pretrained.is_installed(pretrained.PUBLISHED["mtt_musicnn_vgg"], str(tmp_path / "out" / "mtt_musicnn_vgg"))
    again = pretrained.install_musicnn(str(tmp_path / "out"), wheel=str(altered), names=["mtt_musicnn_vgg"])
    assert again == {"mtt_musicnn_vgg": "already installed"}  # Nothing re-read, so the bad wheel is not touched.


def test_install_command_reports_the_installed_models():
    done = subprocess.run(
        [sys.executable, "-m", "models.install_pretrained", f"--output_dir={PRETRAINED}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PIP_NO_INDEX": "1"},  # Installed already: no download may be needed.
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for name in pretrained.MUSICNN_MODELS:
        assert f"{name}: already installed" in done.stdout
