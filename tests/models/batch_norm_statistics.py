"""Trained-looking batch norms for inference-form tests: a fresh batch norm is the identity, which hides folds."""

from __future__ import annotations

import keras
import numpy as np


def with_batch_statistics(model: keras.Model, rng: np.random.Generator) -> keras.Model:
    """Random running statistics and gammas of both signs in every batch norm, nested ones included."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, size) * rng.choice([-1.0, 1.0], size))
            layer.beta.assign(rng.normal(0, 0.5, size))
            layer.moving_mean.assign(rng.normal(0, 0.5, size))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size))
    return model
