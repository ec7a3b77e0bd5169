"""Serializable Keras 3 layers shared by the taggers.

Layout: the taggers take log-mels `[batch, frames, n_mels]` as the pipeline
writes them and turn them into channels-last images `[batch, n_mels, frames,
1]` (height = frequency, width = time), the orientation of the PyTorch
reference, so that its 3x3 kernels map onto these without flipping.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from features.logmel import LogMelSpec, log_mel_spectrogram

PACKAGE = "music_recommender"

# PyTorch's BatchNorm defaults (eps 1e-5, running average weight 0.1), so that
# converted reference statistics mean the same thing here.
BATCH_NORM_EPSILON = 1e-5
BATCH_NORM_MOMENTUM = 0.9


def batch_norm(name: str, dtype=None) -> layers.BatchNormalization:
    """A BatchNormalization with the reference's (PyTorch's) constants."""
    return layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM, name=name, dtype=dtype)


def batch_norm_affine(layer: layers.BatchNormalization) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) per channel of a batch norm at inference: `y = x * scale + shift`, in float64."""
    gamma, beta, mean, variance = (
        np.asarray(ops.convert_to_numpy(weight), np.float64)
        for weight in (layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance)
    )
    scale = gamma / np.sqrt(variance + layer.epsilon)
    return scale, beta - mean * scale


def clone_for_inference(
    model: keras.Model,
    replacement: Callable[[layers.Layer], layers.Layer | None] = lambda layer: None,
    dtype_policy: str | None = None,
    float32_layers: tuple[str, ...] = (),
) -> keras.Model:
    """A copy of a trained functional model, some layers replaced, for inference.

    Args:
        model: The trained model; left as it is.
        replacement: Given each layer, the layer to stand in its place (its
            weights set), or None to copy it with its weights.
        dtype_policy: The copies' dtype policy (e.g. `mixed_bfloat16`);
            default: each layer's own.
        float32_layers: Names of layers that stay float32 whatever the policy.

    Returns:
        A model of its own layers: nothing shared with `model`.
    """
    replaced = set()

    def clone(layer):
        stand_in = replacement(layer)
        if stand_in is not None:
            replaced.add(layer.name)
            return stand_in
        config = layer.get_config()
        if dtype_policy is not None and layer.name not in float32_layers:
            config["dtype"] = dtype_policy
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    for layer in copy.layers:
        if layer.name not in replaced and layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return copy


def _fold_into(target: layers.Conv2D, conv: layers.Conv2D, bn: layers.BatchNormalization):
    """Sets `target` to `bn(conv(x))` at inference: the kernel scaled per output channel, the bias shifted."""
    scale, shift = batch_norm_affine(bn)
    kernel = np.asarray(ops.convert_to_numpy(conv.kernel), np.float64) * scale
    bias = np.asarray(ops.convert_to_numpy(conv.bias), np.float64) * scale + shift
    target.kernel.assign(kernel.astype(np.float32))
    target.bias.assign(bias.astype(np.float32))


@keras.saving.register_keras_serializable(package=PACKAGE)
class LogMelToImage(layers.Layer):
    """`[batch, frames, n_mels]` to `[batch, n_mels, frames, 1]`."""

    def call(self, log_mel):
        return ops.expand_dims(ops.transpose(log_mel, (0, 2, 1)), -1)

    def compute_output_shape(self, input_shape):
        batch, frames, mels = input_shape
        return (batch, mels, frames, 1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvBlock(layers.Layer):
    """The reference's `Conv_2d`: 3x3 conv (padding 1) -> BN -> ReLU -> max pool.

    Args:
        filters: Output channels.
        pool_size: Max-pool window and stride, an int or (freq, time).
        folded: The inference form (`folded_copy()`): the batch norm folded into
            the convolution's kernel and bias; not trainable as a tagger.
    """

    def __init__(self, filters: int, pool_size=2, folded: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.pool_size = tuple(pool_size) if isinstance(pool_size, list | tuple) else (pool_size, pool_size)
        self.folded = folded
        policy = self.dtype_policy  # Sub-layers compute as the block does (a bfloat16 inference form).
        self.pad = layers.ZeroPadding2D(1, dtype=policy)
        self.conv = layers.Conv2D(filters, 3, padding="valid", name="conv", dtype=policy)
        self.bn = None if folded else batch_norm("bn", dtype=policy)
        self.pool = layers.MaxPooling2D(self.pool_size, padding="valid", dtype=policy)

    def build(self, input_shape):
        padded = self.pad.compute_output_shape(input_shape)
        self.conv.build(padded)
        conv_shape = self.conv.compute_output_shape(padded)
        if self.bn is not None:
            self.bn.build(conv_shape)
        self.pool.build(conv_shape)

    def call(self, inputs, training=None):
        if self.folded:
            # Bias and ReLU after the pool: both are non-decreasing, so they commute with the max (a quarter of the work).
            pooled = self.pool(ops.conv(self.pad(inputs), self.conv.kernel, padding="valid"))
            return ops.relu(pooled + self.conv.bias)
        x = self.conv(self.pad(inputs))
        return self.pool(ops.relu(self.bn(x, training=training)))

    def folded_copy(self) -> ConvBlock:
        """The same block at inference with its batch norm folded into the convolution (one pass less)."""
        block = ConvBlock(self.filters, self.pool_size, folded=True, name=self.name, dtype=self.dtype_policy)
        block.build((None, None, None, self.conv.kernel.shape[2]))
        _fold_into(block.conv, self.conv, self.bn)
        return block

    def compute_output_shape(self, input_shape):
        padded = self.pad.compute_output_shape(input_shape)
        return self.pool.compute_output_shape(self.conv.compute_output_shape(padded))

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "pool_size": list(self.pool_size),
            "folded": self.folded,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResBlock(layers.Layer):
    """The reference's `Res_2d`.

    3x3 conv (stride 2, padding 1) -> BN -> ReLU -> 3x3 conv -> BN, plus a
    shortcut that is a 3x3 stride-2 conv + BN when the shape changes, then
    ReLU. Explicit padding of 1 reproduces PyTorch's alignment on even sizes,
    where Keras' 'same' would pad only at the end.

    Args:
        filters: Output channels.
        stride: Stride of the first conv and of the shortcut.
        folded: The inference form (`folded_copy()`): each batch norm folded
            into the convolution before it; not trainable as a tagger.
    """

    def __init__(self, filters: int, stride: int = 2, folded: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.stride = stride
        self.folded = folded
        policy = self.dtype_policy  # Sub-layers compute as the block does (a bfloat16 inference form).
        self.pad = layers.ZeroPadding2D(1, dtype=policy)
        self.conv_1 = layers.Conv2D(filters, 3, strides=stride, padding="valid", name="conv_1", dtype=policy)
        self.bn_1 = None if folded else batch_norm("bn_1", dtype=policy)
        self.conv_2 = layers.Conv2D(filters, 3, padding="valid", name="conv_2", dtype=policy)
        self.bn_2 = None if folded else batch_norm("bn_2", dtype=policy)
        self.conv_3 = None
        self.bn_3 = None

    def build(self, input_shape):
        padded = self.pad.compute_output_shape(input_shape)
        self.conv_1.build(padded)
        out_shape = self.conv_1.compute_output_shape(padded)
        self.conv_2.build(self.pad.compute_output_shape(out_shape))
        if not self.folded:
            self.bn_1.build(out_shape)
            self.bn_2.build(out_shape)
        if self.stride != 1 or input_shape[-1] != self.filters:
            policy = self.dtype_policy
            self.conv_3 = layers.Conv2D(
                self.filters, 3, strides=self.stride, padding="valid", name="conv_3", dtype=policy
            )
            self.conv_3.build(padded)
            if not self.folded:
                self.bn_3 = batch_norm("bn_3", dtype=policy)
                self.bn_3.build(out_shape)

    @staticmethod
    def _normalized(bn, x, training):
        return x if bn is None else bn(x, training=training)

    def call(self, inputs, training=None):
        x = ops.relu(self._normalized(self.bn_1, self.conv_1(self.pad(inputs)), training))
        x = self._normalized(self.bn_2, self.conv_2(self.pad(x)), training)
        shortcut = inputs
        if self.conv_3 is not None:
            shortcut = self._normalized(self.bn_3, self.conv_3(self.pad(inputs)), training)
        return ops.relu(x + shortcut)

    def folded_copy(self) -> ResBlock:
        """The same block at inference with each batch norm folded into its convolution (three passes less)."""
        block = ResBlock(self.filters, self.stride, folded=True, name=self.name, dtype=self.dtype_policy)
        block.build((None, None, None, self.conv_1.kernel.shape[2]))
        for conv, bn in (("conv_1", "bn_1"), ("conv_2", "bn_2"), ("conv_3", "bn_3")):
            if getattr(self, conv) is not None:
                _fold_into(getattr(block, conv), getattr(self, conv), getattr(self, bn))
        return block

    def compute_output_shape(self, input_shape):
        return self.conv_1.compute_output_shape(self.pad.compute_output_shape(input_shape))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "stride": self.stride, "folded": self.folded}


@keras.saving.register_keras_serializable(package=PACKAGE)
class TagHead(layers.Layer):
    """Dense -> sigmoid tag probabilities, always float32, with the vocabulary.

    With `num_tags=0` the model has no tags (an embedding trained without
    labels, e.g. contrastively from scratch): the output is `[batch, 0]`.

    Args:
        num_tags: Number of tags (0: none).
        vocabulary: Optional tag names, kept in the saved model.
    """

    def __init__(self, num_tags: int, vocabulary: list[str] | None = None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if vocabulary is not None and len(vocabulary) != num_tags:
            raise ValueError(f"vocabulary has {len(vocabulary)} tags, expected {num_tags}")
        self.num_tags = num_tags
        self.vocabulary = list(vocabulary) if vocabulary is not None else None
        if num_tags < 0:
            raise ValueError(f"num_tags must be >= 0, got {num_tags}")
        self.dense = layers.Dense(num_tags, dtype="float32", name="dense") if num_tags else None

    def build(self, input_shape):
        if self.dense is not None:
            self.dense.build(input_shape)

    def call(self, inputs):
        if self.dense is None:
            return ops.zeros((ops.shape(inputs)[0], 0), dtype="float32")
        return ops.sigmoid(self.dense(ops.cast(inputs, "float32")))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.num_tags)

    def get_config(self):
        return {**super().get_config(), "num_tags": self.num_tags, "vocabulary": self.vocabulary}


@keras.saving.register_keras_serializable(package=PACKAGE)
class LogMelFrontEnd(layers.Layer):
    """Waveform `[batch, samples]` at 16 kHz -> log-mel `[batch, frames, n_mels]`.

    A thin wrapper of `features.logmel.log_mel_spectrogram`, the function
    the preprocessing pipeline uses, so that a waveform-in model sees exactly
    what the model saw in training. Always computes and returns float32 (the
    STFT itself runs in float64), also under a mixed-precision policy.

    Args:
        spec: The log-mel parameters (a `LogMelSpec` or its dict).
    """

    def __init__(self, spec: LogMelSpec | dict | None = None, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if spec is None:
            spec = LogMelSpec()
        self.spec = LogMelSpec.from_dict(spec) if isinstance(spec, dict) else spec

    def call(self, waveform):
        return log_mel_spectrogram(tf.cast(waveform, tf.float32), self.spec)

    def compute_output_shape(self, input_shape):
        batch, samples = input_shape
        frames = None if samples is None else self.spec.num_frames(samples)
        return (batch, frames, self.spec.n_mels)

    def get_config(self):
        return {**super().get_config(), "spec": self.spec.to_dict()}
