"""Identifying exported models: the fingerprint must tell other weights apart, and only them."""

from __future__ import annotations

import shutil

import keras
import numpy as np
import pytest

from models import artifact
from serving.export import saved_model
from serving.export.exported_model import ModelMismatchError, resolve


def test_the_checksum_covers_the_weights(tmp_path, trained):
    run = trained[0] / "run_short_chunk_res"
    first = resolve(saved_model.export(str(run), str(tmp_path / "a" / "short_chunk_res"), 1, num_chunks=4))
    again = resolve(saved_model.export(str(run), str(tmp_path / "b" / "short_chunk_res"), 1, num_chunks=4))
    assert again.checksum == first.checksum and again.path != first.path
    first.check_same(again, "embedding")  # The same model exported twice: accepted.

    # The same architecture and graph with other weights (e.g. another training run).
    other_run = tmp_path / "other_run"
    shutil.copytree(run / "best", other_run / "best")
    model = keras.saving.load_model(other_run / "best" / artifact.MODEL_FILENAME)
    weights = model.get_weights()
    weights[0] = weights[0] + np.float32(0.01)
    model.set_weights(weights)
    model.save(other_run / "best" / artifact.MODEL_FILENAME)
    other = resolve(saved_model.export(str(other_run), str(tmp_path / "c" / "short_chunk_res"), 1, num_chunks=4))
    assert other.checksum != first.checksum
    with pytest.raises(
        ModelMismatchError, match=rf"short_chunk_res/1@{other.checksum}.*short_chunk_res/1@{first.checksum}"
    ):
        first.check_same(other, "embedding")
