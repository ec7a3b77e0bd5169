"""Reference PyTorch checkpoints converted to Keras give the same outputs."""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import torch

import models
from models import torch_conversion
from tests.conftest import REPO_ROOT
from tests.models import torch_reference

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
    model = torch_conversion.convert(torch_conversion.load_state_dict(str(checkpoint)), name)
    log_mel = _log_mel(name)
    with torch.no_grad():
        expected_tags, expected_embedding = reference(torch.from_numpy(log_mel).permute(0, 2, 1))
    outputs = model(log_mel, training=False)
    np.testing.assert_allclose(outputs[models.EMBEDDING].numpy(), expected_embedding.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(outputs[models.TAGS].numpy(), expected_tags.numpy(), atol=1e-4)
    assert models.tag_vocabulary(model) == list(torch_conversion.MTAT_TOP50_TAGS)
    trainable = sum(p.numel() for p in reference.parameters())
    assert trainable == sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_data_parallel_prefix_and_wrapped_state_dict(tmp_path):
    reference = _reference("crnn", n_class=3)
    checkpoint = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, checkpoint)
    model = torch_conversion.convert(torch_conversion.load_state_dict(str(checkpoint)), "crnn", ["a", "b", "c"])
    assert models.tag_vocabulary(model) == ["a", "b", "c"]


def test_mismatches_are_refused(tmp_path):
    state = {k: v.numpy() for k, v in _reference("short_chunk_res").state_dict().items()}
    with pytest.raises(torch_conversion.ConversionError, match="no dense.weight"):
        torch_conversion.convert(state, "crnn")
    wrong_fb = dict(state, **{"spec.mel_scale.fb": state["spec.mel_scale.fb"] * 2})
    with pytest.raises(torch_conversion.ConversionError, match="mel filterbank"):
        torch_conversion.convert(wrong_fb, "short_chunk_res")
    extra = dict(state, **{"layer8.conv_1.weight": np.zeros(3, np.float32)})
    with pytest.raises(torch_conversion.ConversionError, match="layer8"):
        torch_conversion.convert(extra, "short_chunk_res")
    missing = {k: v for k, v in state.items() if k != "layer3.bn_2.running_var"}
    with pytest.raises(torch_conversion.ConversionError, match="layer3.bn_2.running_var"):
        torch_conversion.convert(missing, "short_chunk_res")


def test_pickled_objects_are_not_executed(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("executed",))

    checkpoint = tmp_path / "evil.pth"
    torch.save({"x": Payload()}, checkpoint)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        torch_conversion.load_state_dict(str(checkpoint))


def test_command_line_writes_a_loadable_keras_model(tmp_path):
    reference = _reference("short_chunk_res", n_class=4)
    checkpoint = tmp_path / "best_model.pth"
    torch.save(reference.state_dict(), checkpoint)
    (tmp_path / "tags.txt").write_text("rock\npop\njazz\nmetal\n")
    output = tmp_path / "model.keras"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "models.convert_torch",
            "--model=short_chunk_res",
            f"--checkpoint={checkpoint}",
            f"--output={output}",
            f"--tags={tmp_path / 'tags.txt'}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = keras.saving.load_model(output)
    assert models.tag_vocabulary(loaded) == ["rock", "pop", "jazz", "metal"]
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
            f"--output={tmp_path / 'out.keras'}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}:{REPO_ROOT}"},
    )
    assert result.returncode != 0
    assert "pip install -e '.[torch]'" in result.stderr
