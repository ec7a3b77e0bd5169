"""Reference PyTorch checkpoints converted to Keras give the same outputs.

The published MagnaTagATune CRNN is checked on real music, torchaudio front
end included: from `../shared/pretrained/` where it exists, else from the
copy the repository carries (`pretrained/sota-mtat-crnn/`, identical bytes).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import models
from intake import audio
from models import artifact, convert_torch_lib, pretrained
from tests.binaries import run_binary
from tests.conftest import DEMO_DIR, REPO_ROOT
from tests.models import torch_reference

SHARED_CHECKPOINT = REPO_ROOT.parent / "shared" / "pretrained" / "sota-mtat-crnn" / "best_model.pth"
CARRIED_CHECKPOINT = REPO_ROOT / "pretrained" / "sota-mtat-crnn" / "best_model.pth"
SHARED_MUSIC = REPO_ROOT.parent / "shared" / "data" / "music"

FRAMES = {"crnn": 1813, "short_chunk_cnn": 231, "short_chunk_res": 231}


def _reference(name, n_class=50, seed=0):
    module = torch_reference.randomize(torch_reference.build(name, n_class), seed)
    with torch.no_grad():  # Realistic input statistics for the dB spectrogram.
        module.spec_bn.running_mean.fill_(-30.0)
        module.spec_bn.running_var.fill_(400.0)
    return module


def _log_mel(name, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    n_mels = models.DEFAULT_N_MELS[name]
    return rng.uniform(-90.0, 30.0, size=(batch, FRAMES[name], n_mels)).astype(np.float32)


@pytest.mark.parametrize("name", ["short_chunk_res", "crnn", "short_chunk_cnn"])
def test_converted_model_equals_pytorch(name, tmp_path):
    reference = _reference(name)
    checkpoint = tmp_path / "best_model.pth"
    torch.save(reference.state_dict(), checkpoint)
    model = convert_torch_lib.convert(convert_torch_lib.load_state_dict(str(checkpoint)), name)
    log_mel = _log_mel(name)
    with torch.no_grad():
        expected_tags, expected_embedding = reference(torch.from_numpy(log_mel).permute(0, 2, 1))
    outputs = model(log_mel, training=False)
    np.testing.assert_allclose(outputs[models.EMBEDDING].numpy(), expected_embedding.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(outputs[models.TAGS].numpy(), expected_tags.numpy(), atol=1e-4)
    assert models.tag_vocabulary(model) == list(convert_torch_lib.MTAT_TOP50_TAGS)
    trainable = sum(p.numel() for p in reference.parameters())
    assert trainable == sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_data_parallel_prefix_and_wrapped_state_dict(tmp_path):
    reference = _reference("crnn", n_class=3)
    checkpoint = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, checkpoint)
    model = convert_torch_lib.convert(convert_torch_lib.load_state_dict(str(checkpoint)), "crnn", ["a", "b", "c"])
    assert models.tag_vocabulary(model) == ["a", "b", "c"]


def test_mismatches_are_refused(tmp_path):
    state = {k: v.numpy() for k, v in _reference("short_chunk_res").state_dict().items()}
    with pytest.raises(convert_torch_lib.ConversionError, match="no dense.weight"):
        convert_torch_lib.convert(state, "crnn")
    wrong_fb = dict(state, **{"spec.mel_scale.fb": state["spec.mel_scale.fb"] * 2})
    with pytest.raises(convert_torch_lib.ConversionError, match="mel filterbank"):
        convert_torch_lib.convert(wrong_fb, "short_chunk_res")
    extra = dict(state, **{"layer8.conv_1.weight": np.zeros(3, np.float32)})
    with pytest.raises(convert_torch_lib.ConversionError, match="layer8"):
        convert_torch_lib.convert(extra, "short_chunk_res")
    missing = {k: v for k, v in state.items() if k != "layer3.bn_2.running_var"}
    with pytest.raises(convert_torch_lib.ConversionError, match="layer3.bn_2.running_var"):
        convert_torch_lib.convert(missing, "short_chunk_res")


def test_pickled_objects_are_not_executed(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("executed",))

    checkpoint = tmp_path / "evil.pth"
    torch.save({"x": Payload()}, checkpoint)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        convert_torch_lib.load_state_dict(str(checkpoint))


def _published_checkpoint():
    return SHARED_CHECKPOINT if SHARED_CHECKPOINT.exists() else CARRIED_CHECKPOINT


def _real_tracks():
    """30 s previews of five soundtracks from ../shared where present, else the demo's 15 s excerpts."""
    if SHARED_MUSIC.exists():
        return sorted(SHARED_MUSIC.glob("*.mp3"))[::40]
    return sorted((DEMO_DIR / "audio").glob("*.mp3"))[::4]


def test_published_crnn_equals_the_pytorch_reference_on_real_audio():
    checkpoint = _published_checkpoint()
    assert pretrained.sha256_of(str(checkpoint)) == pretrained.PUBLISHED["mtat_crnn"].files["best_model.pth"]
    reference = torch_reference.build("crnn")
    reference.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))  # fb and window too
    reference.eval()
    shipped, info = artifact.load(str(REPO_ROOT / "pretrained" / "mtat_crnn"))
    # The same weights at any input length: the reference runs on whole tracks.
    tagger = models.get_model("crnn", 50, vocabulary=list(info.vocabulary), num_frames=None)
    tagger.set_weights(shipped.get_weights())
    waveform_model = models.with_waveform_front_end(tagger, info.log_mel)
    tops = set()
    for path in _real_tracks():
        waveform, _ = audio.load_mono(str(path), str(path), 16000)
        waveform = waveform[: info.log_mel.num_samples_for_frames(info.crop_frames)]
        with torch.no_grad():
            expected_tags, expected_embedding = reference.from_waveform(torch.from_numpy(waveform)[None])
        outputs = waveform_model(waveform[np.newaxis], training=False)
        np.testing.assert_allclose(outputs[models.TAGS].numpy(), expected_tags.numpy(), atol=1e-4, err_msg=str(path))
        np.testing.assert_allclose(
            outputs[models.EMBEDDING].numpy(), expected_embedding.numpy(), atol=1e-4, err_msg=str(path)
        )
        tops.add(info.vocabulary[int(np.argmax(expected_tags.numpy()))])
    assert tops <= set(info.vocabulary) and len(tops) >= 2  # Different music, different leading tags.


def test_shipped_crnn_is_the_published_checkpoint_converted(tmp_path):
    output = tmp_path / "mtat_crnn"
    result = run_binary(
        "models.convert_torch",
        "--model=crnn",
        f"--checkpoint={_published_checkpoint()}",
        f"--tags={CARRIED_CHECKPOINT.parent / 'tags.npy'}",
        f"--output_dir={output}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "published mtat_crnn" in result.stdout
    converted, info = artifact.load(str(output))
    shipped, shipped_info = artifact.load(str(REPO_ROOT / "pretrained" / "mtat_crnn"))
    assert info == shipped_info
    for mine, theirs in zip(converted.get_weights(), shipped.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    published = pretrained.PUBLISHED["mtat_crnn"]
    assert info.provenance.source_sha256 == published.files and "MIT" in info.provenance.license
    assert info.provenance.published_metrics == {"roc_auc": 0.8722, "pr_auc": 0.3625}
    tags = [str(t) for t in np.load(CARRIED_CHECKPOINT.parent / "tags.npy", allow_pickle=False)]
    assert list(info.vocabulary) == tags == list(convert_torch_lib.MTAT_TOP50_TAGS)
    assert info.embedding_dim == 32 and info.crop_frames == 1813 and info.log_mel.n_mels == 96


def test_command_line_writes_a_loadable_keras_model(tmp_path):
    reference = _reference("short_chunk_res", n_class=4)
    checkpoint = tmp_path / "best_model.pth"
    torch.save(reference.state_dict(), checkpoint)
    (tmp_path / "tags.txt").write_text("rock\npop\njazz\nmetal\n")
    output = tmp_path / "artifact"
    result = run_binary(
        "models.convert_torch",
        "--model=short_chunk_res",
        f"--checkpoint={checkpoint}",
        f"--output_dir={output}",
        f"--tags={tmp_path / 'tags.txt'}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    loaded, info = artifact.load(str(output))
    assert models.tag_vocabulary(loaded) == ["rock", "pop", "jazz", "metal"] == list(info.vocabulary)
    assert "not a checkpoint this project knows" in info.provenance.license  # Nothing invented for it.
    assert info.provenance.source_sha256 == {"best_model.pth": pretrained.sha256_of(str(checkpoint))}
    log_mel = _log_mel("short_chunk_res", batch=1)
    with torch.no_grad():
        expected, _ = reference(torch.from_numpy(log_mel).permute(0, 2, 1))
    np.testing.assert_allclose(loaded(log_mel, training=False)[models.TAGS].numpy(), expected.numpy(), atol=1e-4)


def test_missing_pytorch_gives_a_clear_message(tmp_path):
    """A `torch` that fails to import stands in for an environment without it."""
    (tmp_path / "torch.py").write_text("raise ImportError(\"No module named 'torch'\")\n")
    reference = tmp_path / "best_model.pth"
    reference.write_bytes(b"not read")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "models.convert_torch",
            "--model=crnn",
            f"--checkpoint={reference}",
            f"--output_dir={tmp_path / 'out'}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}:{REPO_ROOT}"},
    )
    assert result.returncode != 0
    assert "pip install -e '.[torch]'" in result.stderr
