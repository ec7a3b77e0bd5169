"""Objectives: NT-Xent against a NumPy reference and across replicas, distillation losses, refusals."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from train import objectives


def _reference_nt_xent(projections: np.ndarray, temperature: float) -> np.ndarray:
    """SimCLR's loss written out: anchors are all 2N views, the positive is the other view of the track."""
    z = projections / np.linalg.norm(projections, axis=-1, keepdims=True)
    n = len(z)
    views = np.concatenate([z[:, 0], z[:, 1]])  # Index i and i + n are a pair.
    losses = []
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        logits = np.array([views[i] @ views[j] / temperature for j in range(2 * n) if j != i])
        others = [j for j in range(2 * n) if j != i]
        log_softmax = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
        losses.append(-log_softmax[others.index(positive)])
    return np.array(losses)


def _track_major(losses: np.ndarray) -> np.ndarray:
    """The references' order (every first view, then every second view) as `nt_xent` returns it: track by track."""
    return losses.reshape(2, -1).T.reshape(-1)


def test_nt_xent_equals_the_written_out_loss():
    projections = np.random.default_rng(0).normal(size=(6, 2, 16)).astype(np.float32)
    losses, statistics = objectives.nt_xent(tf.constant(projections), 0.2)
    np.testing.assert_allclose(losses.numpy(), _track_major(_reference_nt_xent(projections, 0.2)), rtol=1e-5, atol=1e-5)
    z = projections / np.linalg.norm(projections, axis=-1, keepdims=True)
    np.testing.assert_allclose(statistics["positive_similarity"], np.mean(np.sum(z[:, 0] * z[:, 1], -1)), rtol=1e-5)
    np.testing.assert_allclose(statistics["alignment"], np.mean(np.sum((z[:, 0] - z[:, 1]) ** 2, -1)), rtol=1e-5)


def _reference_debiased(projections: np.ndarray, temperature: float, prior: float) -> np.ndarray:
    """Chuang et al. 2020, eq. 7, written out: the negatives' sum less `prior` times as many positives."""
    z = projections / np.linalg.norm(projections, axis=-1, keepdims=True)
    n = len(z)
    views = np.concatenate([z[:, 0], z[:, 1]]).astype(np.float64)
    losses = []
    for i in range(2 * n):
        positive = np.exp(views[i] @ views[(i + n) % (2 * n)] / temperature)
        negatives = [np.exp(views[i] @ views[j] / temperature) for j in range(2 * n) if j not in (i, (i + n) % (2 * n))]
        count = len(negatives)
        negative_term = max((sum(negatives) - prior * count * positive) / (1 - prior), count * np.exp(-1 / temperature))
        losses.append(-np.log(positive / (positive + negative_term)))
    return np.array(losses)


@pytest.mark.parametrize("prior", [0.1, 0.4])
def test_debiased_nt_xent_equals_the_written_out_loss(prior):
    rng = np.random.default_rng(4)
    # Views of a pair close together: at 0.1 no row reaches the lower bound of the negative term, at 0.4 all do.
    anchors = rng.normal(size=(6, 16)).astype(np.float32)
    projections = np.stack([anchors, anchors + 0.3 * rng.normal(size=anchors.shape)], axis=1).astype(np.float32)
    losses, _ = objectives.nt_xent(tf.constant(projections), 0.5, false_negative_prior=prior)
    reference = _reference_debiased(projections, 0.5, prior)
    np.testing.assert_allclose(losses.numpy(), _track_major(reference), rtol=1e-4, atol=1e-5)
    # Fewer negatives are counted than SimCLR counts: the debiased loss is lower, and 0 is SimCLR's.
    assert np.all(reference < _reference_nt_xent(projections, 0.5) + 1e-6)
    np.testing.assert_allclose(
        _reference_debiased(projections, 0.5, 0.0), _reference_nt_xent(projections, 0.5), rtol=1e-5
    )


def test_nt_xent_is_low_for_matching_views_and_high_for_swapped_ones():
    rng = np.random.default_rng(1)
    anchors = rng.normal(size=(8, 32)).astype(np.float32)
    matched = np.stack([anchors, anchors + 0.01 * rng.normal(size=anchors.shape)], axis=1)
    swapped = np.stack([anchors, np.roll(anchors, 1, axis=0)], axis=1)
    low, _ = objectives.nt_xent(tf.constant(matched), 0.1)
    high, _ = objectives.nt_xent(tf.constant(swapped), 0.1)
    assert float(tf.reduce_mean(low)) < 0.1 < 2.0 < float(tf.reduce_mean(high))


def test_negatives_are_gathered_across_replicas_with_their_gradients(two_cpu_mirrored_strategy):
    """Two replicas with half the batch each give the loss and gradients of one replica with all of it."""
    rng = np.random.default_rng(2)
    features = rng.normal(size=(8, 2, 10)).astype(np.float32)
    initial = rng.normal(size=(10, 6)).astype(np.float32)
    temperature, global_views = 0.3, 16

    def loss_and_gradient(strategy):
        with strategy.scope():
            weights = tf.Variable(initial)

        def replica_step(batch):
            with tf.GradientTape() as tape:
                losses, _ = objectives.nt_xent(tf.einsum("bvf,fd->bvd", batch, weights), temperature)
                loss = tf.nn.compute_average_loss(losses, global_batch_size=global_views)
            return loss, tape.gradient(loss, weights)

        dataset = tf.data.Dataset.from_tensor_slices(features).batch(8)
        batch = next(iter(strategy.experimental_distribute_dataset(dataset)))

        @tf.function
        def step(batch):
            loss, gradient = strategy.run(replica_step, args=(batch,))
            return (
                strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.SUM, gradient, axis=None),
            )

        return [value.numpy() for value in step(batch)]

    one_loss, one_gradient = loss_and_gradient(tf.distribute.OneDeviceStrategy("/cpu:0"))
    two_loss, two_gradient = loss_and_gradient(two_cpu_mirrored_strategy)
    np.testing.assert_allclose(two_loss, one_loss, rtol=1e-5)
    np.testing.assert_allclose(two_gradient, one_gradient, rtol=1e-4, atol=1e-6)


def test_distillation_losses_against_numpy():
    rng = np.random.default_rng(3)
    student_tags = rng.uniform(0.05, 0.95, size=(4, 5)).astype(np.float32)
    teacher_tags = rng.uniform(0, 1, size=(4, 5)).astype(np.float32)
    student_embedding = rng.normal(size=(4, 7)).astype(np.float32)
    teacher_embedding = rng.normal(size=(4, 7)).astype(np.float32)
    tag_loss, embedding_loss = objectives.distillation_losses(
        student_tags, student_embedding, teacher_tags, teacher_embedding
    )
    bce = -(teacher_tags * np.log(student_tags) + (1 - teacher_tags) * np.log(1 - student_tags)).mean(-1)
    cosine = np.sum(student_embedding * teacher_embedding, -1) / (
        np.linalg.norm(student_embedding, axis=-1) * np.linalg.norm(teacher_embedding, axis=-1)
    )
    np.testing.assert_allclose(tag_loss, bce, rtol=1e-4)
    np.testing.assert_allclose(embedding_loss, 1 - cosine, rtol=1e-4, atol=1e-6)


def test_settings_that_cannot_train_are_refused():
    with pytest.raises(objectives.ObjectiveError, match="val_loss"):
        objectives.Contrastive().check_best_metric("val_roc_auc")
    objectives.Tagging().check_best_metric("val_roc_auc")
    with pytest.raises(objectives.ObjectiveError, match="temperature"):
        objectives.Contrastive(temperature=0)
    with pytest.raises(objectives.ObjectiveError, match="false_negative_prior"):
        objectives.Contrastive(false_negative_prior=1.0)
    with pytest.raises(objectives.ObjectiveError, match="at least one"):
        objectives.Distillation(tag_weight=0, embedding_weight=0)
