"""Contrastive fine-tuning and distillation on real (untagged) audio: losses fall, artifacts, refusals."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

import models
from models import artifact
from tests.conftest import REPO_ROOT
from tests.train.run_checkpoints import checkpoint_state
from train import config as config_lib
from train import evaluation_report, objectives
from train.experiment import Experiment
from train.trainer import Trainer


def test_contrastive_fine_tuning_lowers_the_loss_on_real_audio(contrastive_run):
    assert contrastive_run["global_step"] == 6
    # From the published weights the 8 tracks are told apart well already (loss ~0.17); six steps on the
    # seeded input lower it clearly (to ~0.26x).
    assert contrastive_run["after"] < 0.9 * contrastive_run["before"], contrastive_run


def test_the_fine_tuned_artifact_keeps_the_published_tags_and_drops_the_projection_head(contrastive_run):
    model, info = artifact.load(contrastive_run["model_dir"])
    published, published_info = artifact.load(str(REPO_ROOT / "pretrained" / "msd_musicnn"))
    assert info.vocabulary == published_info.vocabulary and info.embedding_dim == 200
    assert info.training.objective["name"] == objectives.CONTRASTIVE
    assert info.training.init_from.endswith("msd_musicnn")
    assert [layer.name for layer in model.layers] == [layer.name for layer in published.layers]  # No head.
    for name in (models.TAGS,):  # Not part of the loss: unchanged.
        for new, old in zip(model.get_layer(name).get_weights(), published.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(new, old)
    changed = [
        layer.name
        for layer in model.layers
        if layer.weights
        and not all(
            np.array_equal(a, b)
            for a, b in zip(layer.get_weights(), published.get_layer(layer.name).get_weights(), strict=True)
        )
    ]
    assert len(changed) > 5  # The embedding was trained.


def test_distillation_lowers_the_loss_on_real_audio(distilled_run):
    assert distilled_run["global_step"] == 6
    assert distilled_run["after"] < 0.9 * distilled_run["before"], distilled_run
    student, info = artifact.load(distilled_run["model_dir"])
    _, teacher = artifact.load(str(REPO_ROOT / "pretrained" / "msd_musicnn"))
    assert info.model_name == "short_chunk_res" and info.vocabulary == teacher.vocabulary  # The teacher's tags.
    assert info.training.objective["name"] == objectives.DISTILLATION
    assert info.training.objective["teacher"]["model"].endswith("msd_musicnn")
    # Both training-only heads are checkpointed (a resumed run continues them), neither is exported.
    assert checkpoint_state(distilled_run["model_dir"])["heads"] == ["embedding_map", "projection"]
    assert not {"embedding_map", "projection"} & {layer.name for layer in student.layers}


def _trainer(tmp_path, configs, bindings):
    config_lib.check_or_save(str(tmp_path), config_lib.parse(configs, bindings))
    return Trainer(Experiment(), str(tmp_path), tf.distribute.get_strategy())


def test_tagging_an_untagged_dataset_is_refused_with_the_way_out(untagged_demo, tmp_path):
    with pytest.raises(objectives.ObjectiveError, match="contrastive or distillation"):
        _trainer(tmp_path, ["short_chunk_res.gin"], [f"Experiment.dataset_dir = '{untagged_demo['128']}'"])


def test_distilling_without_teacher_targets_is_refused(untagged_demo, tmp_path):
    with pytest.raises(objectives.ObjectiveError, match="compute_teacher_targets"):
        _trainer(tmp_path, ["distill_short_chunk_res.gin"], [f"Experiment.dataset_dir = '{untagged_demo['128']}'"])


def test_a_batch_larger_than_the_training_split_is_refused(untagged_demo, tmp_path):
    with pytest.raises(objectives.ObjectiveError, match="lower the batch size"):
        _trainer(tmp_path, ["contrastive_short_chunk_res.gin"], [f"Experiment.dataset_dir = '{untagged_demo['128']}'"])


def test_contrastive_from_scratch_gives_a_model_without_tags(untagged_demo, tmp_path):
    trainer = _trainer(
        tmp_path,
        ["contrastive_short_chunk_res.gin", "smoke.gin"],
        [f"Experiment.dataset_dir = '{untagged_demo['128']}'", "Experiment.batch_size = 4", "Experiment.epochs = 1"],
    )
    trainer.train()
    model, info = artifact.load(str(tmp_path))
    assert info.vocabulary == () and info.training.objective["name"] == objectives.CONTRASTIVE
    outputs = model(np.zeros((1, 231, 128), np.float32))
    assert outputs[models.TAGS].shape == (1, 0) and outputs[models.EMBEDDING].shape == (1, 512)


def _scalar_names(directory):
    accumulator = event_accumulator.EventAccumulator(str(directory), size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    return set(accumulator.Tags()["tensors"])


def test_tensorboard_gets_the_contrastive_statistics_and_both_views(contrastive_run):
    statistics = {"alignment", "uniformity", "positive_similarity", "negative_similarity"}
    train = _scalar_names(os.path.join(contrastive_run["model_dir"], "train"))
    valid = _scalar_names(os.path.join(contrastive_run["model_dir"], "valid"))
    assert statistics | {"loss", "learning_rate", "input_log_mel"} <= train
    assert statistics | {"loss"} <= valid


def test_evaluating_tags_of_a_run_without_tag_labels_is_refused(contrastive_run):
    with pytest.raises(evaluation_report.NotATaggingRunError, match="retrieval"):
        evaluation_report.load_run(contrastive_run["model_dir"])
