"""A trained and exported demo model shared by the serving tests."""

from __future__ import annotations

import pytest
import tensorflow as tf

from data_prep import catalog, pipeline
from serving import saved_model
from train import config as config_lib
from train.experiment import Experiment
from train.trainer import Trainer


@pytest.fixture(scope="session")
def trained(tmp_path_factory, demo_catalog):
    """Two demo tracks through the real pipeline (float32 storage) and a smoke run."""
    root = tmp_path_factory.mktemp("export")
    parsed = catalog.read_catalog(str(demo_catalog))
    parsed = catalog.Catalog(parsed.source, parsed.sha256, 3, parsed.entries[::6][:3], (), parsed.audio_root)
    config = pipeline.PreprocessConfig(
        output_dir=str(root / "data"), split_by="track", split_fractions=(1, 1, 1), log_mel_dtype="float32"
    )
    pipeline.run(parsed, config, ["--direct_running_mode=in_memory"])
    text = config_lib.parse(["short_chunk_res.gin", "smoke.gin"], [f"Experiment.dataset_dir = '{root / 'data'}'"])
    config_lib.check_or_save(str(root / "run"), text)
    Trainer(Experiment(), str(root / "run"), tf.distribute.get_strategy()).train()
    export_base = root / "export" / "short_chunk_res"
    path = saved_model.export(str(root / "run"), str(export_base), num_chunks=4)
    return root, parsed, export_base, path
