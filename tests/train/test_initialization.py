"""Fine-tuning: a run started from a model artifact (the shipped MagnaTagATune CRNN)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import models
from features.logmel import LogMelSpec
from models import artifact
from tests.conftest import REPO_ROOT
from tests.tfrecords.dataset_writer import write_dataset
from train import config as config_lib
from train.experiment import Experiment
from train.initialization import InitializationError, initialize_from
from train.trainer import Trainer

MTAT_CRNN = str(REPO_ROOT / "pretrained" / "mtat_crnn")
VOCABULARY = ["calm", "busy"]


@pytest.fixture(scope="module")
def dataset_96(tmp_path_factory):
    """Two learnable tags at 96 mel bands (the CRNN's front end), 15 s per track."""
    directory = tmp_path_factory.mktemp("finetune_data")
    rng = np.random.default_rng(0)
    tracks = {}
    for split, count in (("train", 8), ("valid", 4), ("test", 2)):
        tracks[split] = {}
        for i in range(count):
            tag = VOCABULARY[i % 2]
            level = -60.0 if tag == "calm" else -20.0
            log_mel = rng.normal(level, 6.0, size=(938, 96)).astype(np.float32)
            tracks[split][f"{split}{i}"] = (log_mel, [tag])
    write_dataset(directory, tracks, VOCABULARY, spec=LogMelSpec(n_mels=96), log_mel_dtype="float16")
    return str(directory)


def _weights_by_layer(model):
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


def test_new_vocabulary_keeps_every_layer_but_the_tag_head():
    source, info = artifact.load(MTAT_CRNN)
    model = models.get_model("crnn", 2, vocabulary=VOCABULARY, num_frames=938)
    fresh_head = model.get_layer(models.TAGS).get_weights()
    done = initialize_from(model, MTAT_CRNN, "crnn", info.log_mel.fingerprint(), VOCABULARY)
    assert done.new_head and models.TAGS not in done.copied_layers
    expected = _weights_by_layer(source)
    for name, weights in _weights_by_layer(model).items():
        if name == models.TAGS:
            for mine, fresh in zip(weights, fresh_head, strict=True):
                np.testing.assert_array_equal(mine, fresh)
            assert weights[0].shape == (32, 2)
        else:
            for mine, theirs in zip(weights, expected[name], strict=True):
                np.testing.assert_array_equal(mine, theirs)
    assert set(done.copied_layers) == set(expected) - {models.TAGS}


def test_same_vocabulary_keeps_the_tag_head_too():
    source, info = artifact.load(MTAT_CRNN)
    model = models.get_model("crnn", 50, vocabulary=list(info.vocabulary))
    done = initialize_from(model, MTAT_CRNN, "crnn", info.log_mel.fingerprint(), info.vocabulary)
    assert not done.new_head
    probe = np.random.default_rng(0).normal(-40, 10, (1, 1813, 96)).astype(np.float32)
    np.testing.assert_array_equal(
        model(probe, training=False)[models.TAGS].numpy(), source(probe, training=False)[models.TAGS].numpy()
    )


def test_another_architecture_or_front_end_is_refused():
    _, info = artifact.load(MTAT_CRNN)
    model = models.get_model("short_chunk_res", 2, n_mels=96)
    with pytest.raises(InitializationError, match="is a crnn, this experiment trains a short_chunk_res"):
        initialize_from(model, MTAT_CRNN, "short_chunk_res", info.log_mel.fingerprint(), VOCABULARY)
    crnn = models.get_model("crnn", 2)
    with pytest.raises(InitializationError, match="log_mel_preset"):
        initialize_from(crnn, MTAT_CRNN, "crnn", LogMelSpec(n_mels=96, f_max=4000.0).fingerprint(), VOCABULARY)
    with pytest.raises(InitializationError, match="no model_info.json"):
        initialize_from(crnn, str(REPO_ROOT / "pretrained"), "crnn", info.log_mel.fingerprint(), VOCABULARY)


def test_finetuning_config_starts_from_the_published_weights_and_learns(dataset_96, tmp_path):
    bindings = [
        f"Experiment.dataset_dir = '{dataset_96}'",
        "Experiment.crop_frames = 469",
        "Experiment.epochs = 3",
        "Experiment.steps_per_epoch = 4",
        "Experiment.batch_size = 4",
        "Experiment.eval_num_chunks = 1",
        "adam/Phase.learning_rate = 1e-3",
        "Experiment.input_seed = 0",  # The same steps in every test run: the loss check does not depend on luck.
    ]
    config_text = config_lib.parse(["finetune_mtat_crnn.gin"], bindings)
    config_lib.check_or_save(str(tmp_path), config_text)
    trainer = Trainer(Experiment(), str(tmp_path), tf.distribute.get_strategy())
    source, _ = artifact.load(MTAT_CRNN)
    trainer.restore_or_start()  # What train() does first: the pretrained weights go in before step 1.
    start = _weights_by_layer(trainer.model)
    for name, weights in _weights_by_layer(source).items():
        if name != models.TAGS:
            np.testing.assert_array_equal(start[name][0], weights[0])
    first_loss = trainer.validate()["val_loss"]
    result = trainer.train()
    assert result.epochs_completed == 3
    assert trainer.validate()["val_loss"] < first_loss
    _, info = artifact.load(str(tmp_path))
    assert info.training.init_from == "pretrained/mtat_crnn" and list(info.vocabulary) == VOCABULARY
