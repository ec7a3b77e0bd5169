"""The model artifact: one format written by training and the converters, read by export and fine-tuning."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import models
from features.logmel import PRESETS, LogMelSpec
from models import artifact
from tests.conftest import REPO_ROOT


def _info(**overrides) -> artifact.ModelInfo:
    values = {
        "model_name": "musicnn",
        "crop_frames": 187,
        "vocabulary": ("a", "b", "c"),
        "log_mel": PRESETS["musicnn"],
        "embedding_dim": 200,
        "provenance": artifact.Provenance(
            source="somewhere",
            source_sha256={"file": "00"},
            license="ISC",
            training_data="data",
            published_metrics={"roc_auc": 0.9},
            converter="test 1",
            reference="paper",
        ),
    }
    return artifact.ModelInfo(**{**values, **overrides})


def test_info_round_trips_through_json():
    info = _info(training=artifact.TrainingRecord("data", "val_loss", 0.5, 3, 100, init_from="pretrained/x"))
    assert artifact.ModelInfo.from_json(info.to_json(), "x") == info
    assert json.loads(info.to_json())["log_mel"]["fingerprint"] == PRESETS["musicnn"].fingerprint()


def test_save_then_load_gives_the_same_model(tmp_path):
    model = models.get_model("musicnn", 3, vocabulary=["a", "b", "c"])
    artifact.save(model, _info(), str(tmp_path / "artifact"))
    loaded, info = artifact.load(str(tmp_path / "artifact"))
    assert info == _info()
    probe = np.random.default_rng(0).uniform(0, 3, (2, 187, 96)).astype(np.float32)
    np.testing.assert_allclose(
        loaded(probe, training=False)["embedding"].numpy(), model(probe, training=False)["embedding"].numpy(), atol=1e-6
    )
    # A training run's model directory holds its artifact in best/.
    with pytest.raises(artifact.ArtifactError, match="not a model artifact"):
        artifact.artifact_dir(str(tmp_path / "run"))
    artifact.save(model, _info(), str(tmp_path / "run" / artifact.BEST_DIRNAME))
    assert artifact.artifact_dir(str(tmp_path / "run")) == str(tmp_path / "run" / artifact.BEST_DIRNAME)


def test_inconsistent_or_damaged_artifacts_are_refused_naming_the_file(tmp_path):
    model = models.get_model("musicnn", 3, vocabulary=["a", "b", "c"])
    with pytest.raises(artifact.ArtifactError, match="vocabulary differs"):
        artifact.save(model, _info(vocabulary=("a", "b", "x")), str(tmp_path / "a"))
    with pytest.raises(artifact.ArtifactError, match="200 dimensions"):
        artifact.save(model, _info(embedding_dim=32), str(tmp_path / "a"))
    with pytest.raises(artifact.ArtifactError, match="takes 96 mel bands"):
        artifact.save(model, _info(log_mel=LogMelSpec(n_mels=128)), str(tmp_path / "a"))
    with pytest.raises(artifact.ArtifactError, match=f"{tmp_path / 'empty'}: no model_info.json"):
        artifact.load(str(tmp_path / "empty"))
    directory = tmp_path / "damaged"
    artifact.save(model, _info(), str(directory))
    info_file = directory / artifact.MODEL_INFO_FILENAME
    text = info_file.read_text()
    info_file.write_text(text[: len(text) // 2])
    with pytest.raises(artifact.ArtifactError, match=f"{info_file}: not valid JSON"):
        artifact.load(str(directory))
    info_file.write_text(json.dumps({**json.loads(text), "format_version": 99}))
    with pytest.raises(artifact.ArtifactError, match="format 99"):
        artifact.load(str(directory))
    values = json.loads(text)
    values["log_mel"]["fingerprint"] = "0000"
    info_file.write_text(json.dumps(values))
    with pytest.raises(artifact.ArtifactError, match="fingerprint 0000"):
        artifact.load(str(directory))
    info_file.write_text(text)
    (directory / artifact.MODEL_FILENAME).unlink()
    with pytest.raises(artifact.ArtifactError, match="no model.keras"):
        artifact.load(str(directory))


def test_an_artifact_loads_in_a_process_that_imported_nothing_else():
    """`models` loads its modules on first use: loading an artifact must register every architecture's layers itself."""
    script = (
        "from models import artifact; model, info = artifact.load('pretrained/msd_musicnn'); print(info.model_name)"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "musicnn"
