"""Trained and exported demo models, and a demo index, shared by the serving tests.

Each is built once per test run, by whichever pytest-xdist worker needs it
first (the `built_once` fixture of `tests/conftest.py`); the others wait for it and reuse it. No
test writes into them: tests that change an export or an index copy it first.
"""

from __future__ import annotations

import pytest
import tensorflow as tf

from data_prep import pipeline
from features.logmel import LogMelSpec
from intake import catalog
from serving.embedding.ensemble import EmbeddingModels
from serving.embedding.index_models import IndexModels
from serving.export import exported_model, saved_model
from serving.retrieval import index_builder
from tests.conftest import REPO_ROOT
from train import config as config_lib
from train.experiment import Experiment
from train.trainer import Trainer

# The serving tests' ResNet at 16 channels (its graph, a 64-d embedding): what they check is the export,
# the index and the answers, which do not depend on the width; every embedding is 64x cheaper.
NARROW_RESNET = "Experiment.model_kwargs = {'n_channels': 16}"


def _train_and_export(root, parsed, model_config: str, n_mels: int, name: str, bindings=()):
    """The tracks through the real pipeline (float32 storage), a smoke run and an export."""
    data = root / f"data_{n_mels}"
    config = pipeline.PreprocessConfig(
        output_dir=str(data),
        split_by="track",
        split_fractions=(1, 1, 1),
        log_mel_dtype="float32",
        log_mel=LogMelSpec(n_mels=n_mels),
    )
    pipeline.run(parsed, config, ["--direct_running_mode=in_memory"])
    text = config_lib.parse([model_config, "smoke.gin"], [f"Experiment.dataset_dir = '{data}'", *bindings])
    run = root / f"run_{name}"
    config_lib.check_or_save(str(run), text)
    Trainer(Experiment(), str(run), tf.distribute.get_strategy()).train()
    export_base = root / "export" / name
    return data, export_base, saved_model.export(str(run), str(export_base), num_chunks=4)


@pytest.fixture(scope="session")
def demo_subset(demo_catalog):
    """Three demo tracks, one from each of three albums."""
    parsed = catalog.read_catalog(str(demo_catalog))
    return catalog.Catalog(parsed.source, parsed.sha256, 3, parsed.entries[::6][:3], (), parsed.audio_root)


@pytest.fixture(scope="session")
def trained(built_once, demo_subset):
    """A Short-Chunk ResNet (16 channels) trained briefly on three demo tracks (128 mel bands) and exported."""

    def build(root):
        _, export_base, path = _train_and_export(
            root, demo_subset, "short_chunk_res.gin", 128, "short_chunk_res", [NARROW_RESNET]
        )
        return root, demo_subset, export_base, path

    return built_once("trained", build)


@pytest.fixture(scope="session")
def trained_crnn(built_once, trained):
    """A CRNN trained briefly on the same tracks at 96 mel bands, exported next to the ResNet."""
    root, parsed, _, _ = trained
    return built_once("trained_crnn", lambda _: _train_and_export(root, parsed, "crnn.gin", 96, "crnn"))


@pytest.fixture(scope="session")
def model_refs(trained, trained_crnn) -> dict[str, exported_model.ModelRef]:
    """The demo-trained models: the ResNet ranks (`embedding`), the CRNN tags (`tag`)."""
    return {
        "embedding": exported_model.resolve(str(trained[2])),
        "tag": exported_model.resolve(str(trained_crnn[1])),
    }


@pytest.fixture(scope="session")
def job_models(model_refs) -> IndexModels:
    return IndexModels(EmbeddingModels((model_refs["embedding"],)), model_refs["tag"])


@pytest.fixture(scope="session")
def demo_index(built_once, demo_catalog, job_models):
    """The whole demo catalog embedded by the real Beam job into a saved index."""

    def build(root):
        summary = index_builder.build_index(
            str(root / "demo"),
            job_models,
            catalog=catalog.read_catalog(str(demo_catalog)),
            pipeline_args=["--direct_running_mode=in_memory"],
        )
        return root / "demo", summary

    return built_once("demo_index", build)


@pytest.fixture(scope="session")
def pretrained_exports(built_once) -> dict[str, str]:
    """The shipped MTAT CRNN and the installed MSD musicnn, exported as `make demo` does (default chunking)."""

    def build(root):
        return {
            name: saved_model.export(str(REPO_ROOT / "pretrained" / name), str(root / name))
            for name in ("mtat_crnn", "msd_musicnn")
        }

    return built_once("pretrained_exports", build)


@pytest.fixture(scope="session")
def pretrained_index(built_once, demo_catalog, pretrained_exports):
    """The demo catalog indexed by the pretrained models: CRNN tags for stage 1, musicnn embeddings for stage 2."""

    def build(root):
        models = IndexModels(
            EmbeddingModels((exported_model.resolve(pretrained_exports["msd_musicnn"]),)),
            exported_model.resolve(pretrained_exports["mtat_crnn"]),
        )
        index_builder.build_index(
            str(root / "index"),
            models,
            catalog=catalog.read_catalog(str(demo_catalog)),
            pipeline_args=["--direct_running_mode=in_memory"],
        )
        return root / "index"

    return built_once("pretrained_index", build)


@pytest.fixture(scope="session")
def entries(demo_catalog):
    return {e.track_id: e for e in catalog.read_catalog(str(demo_catalog)).entries}


@pytest.fixture(scope="session")
def standin_models(model_refs):
    return {ref.name: {ref.version: tf.saved_model.load(ref.path)} for ref in model_refs.values()}
