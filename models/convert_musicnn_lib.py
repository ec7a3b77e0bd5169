"""Loads the musicnn package's TensorFlow 1 checkpoints into the Keras models.

The `musicnn` wheel (PyPI, ISC license) carries four checkpoints in its
package folder (`MSD_musicnn/`, `MTT_musicnn/`, `MSD_vgg/`, `MTT_vgg/`, each
with files named `.index` and `.data-00000-of-00001`). They are read with
`tf.train.load_checkpoint`, variable by variable: no TF1 graph, no tf-keras.
TF1 layer variables are named by creation order (`conv2d_3/kernel`,
`batch_normalization_7/gamma`), which `musicnn/models.py` fixes; the tables
below map them onto the layers of `models.musicnn`. Convolution and dense
kernels have Keras' layout already; the mid-end's `[7, width, 1, filters]`
kernels become `Conv1D` kernels `[7, width, filters]`.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

import models

# Keras layer -> TF1 variable scope, in the order musicnn/models.py creates them.
_MUSICNN_CONVS = {
    "timbral_74": "conv2d", "timbral_77": "conv2d_1", "temporal_128": "conv2d_2", "temporal_64": "conv2d_3",
    "temporal_32": "conv2d_4", "midend_1": "conv2d_5", "midend_2": "conv2d_6", "midend_3": "conv2d_7",
    "penultimate_dense": "dense",
}  # fmt: skip
_MUSICNN_BATCH_NORMS = {
    "input_bn": "batch_normalization", "timbral_74_bn": "batch_normalization_1",
    "timbral_77_bn": "batch_normalization_2", "temporal_128_bn": "batch_normalization_3",
    "temporal_64_bn": "batch_normalization_4", "temporal_32_bn": "batch_normalization_5",
    "midend_1_bn": "batch_normalization_6", "midend_2_bn": "batch_normalization_7",
    "midend_3_bn": "batch_normalization_8", "backend_bn": "batch_normalization_9",
    "penultimate_bn": "batch_normalization_10",
}  # fmt: skip
_VGG_CONVS = {f"conv{index}": f"{index}CNN" for index in range(1, 6)}
_VGG_BATCH_NORMS = {
    "input_bn": "batch_normalization",
    **{f"conv{index}_bn": f"batch_normalization_{index}" for index in range(1, 6)},
}
_LAYER_MAPS = {
    "musicnn": (_MUSICNN_CONVS, _MUSICNN_BATCH_NORMS, "dense_1"),
    "musicnn_vgg": (_VGG_CONVS, _VGG_BATCH_NORMS, "dense"),
}
# Optimizer slots and counters: in the checkpoint, not in the model.
_IGNORED = ("beta1_power", "beta2_power")
_IGNORED_SUFFIXES = ("/Adam", "/Adam_1")


class ConversionError(ValueError):
    """A checkpoint that does not fit the model; the message names the variable."""


def read_checkpoint(directory: str) -> dict[str, np.ndarray]:
    """Every variable of a checkpoint folder from the wheel, read with `tf.train.load_checkpoint`.

    The package names its files `.index` and `.data-00000-of-00001` (an
    empty prefix), and its `checkpoint` file points to the author's machine,
    so they are copied under a prefix of their own first.

    Raises:
        ConversionError: No checkpoint there, naming the folder.
    """
    index = os.path.join(directory, ".index")
    if not os.path.exists(index):
        raise ConversionError(f"{directory}: no musicnn checkpoint (.index) there")
    with tempfile.TemporaryDirectory() as local:
        for name in os.listdir(directory):
            if name.startswith(".index") or name.startswith(".data-"):
                shutil.copyfile(os.path.join(directory, name), os.path.join(local, "model" + name))
        reader = tf.train.load_checkpoint(os.path.join(local, "model"))
        return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def _assign(variable, value: np.ndarray, key: str):
    if len(variable.shape) == 3 and value.ndim == 4 and value.shape[2] == 1:
        value = value[:, :, 0, :]  # A mid-end conv2d over [time, width, 1] is a Conv1D over [time, width].
    if tuple(variable.shape) != value.shape:
        raise ConversionError(f"{key}: checkpoint shape {value.shape} does not fit {tuple(variable.shape)}")
    variable.assign(value.astype(np.float32))


def _take(variables: dict[str, np.ndarray], used: set[str], key: str) -> np.ndarray:
    if key not in variables:
        raise ConversionError(f"the checkpoint has no {key!r}")
    used.add(key)
    return variables[key]


def _load_kernel_and_bias(layer, variables, used, scope: str):
    _assign(layer.kernel, _take(variables, used, f"{scope}/kernel"), f"{scope}/kernel")
    _assign(layer.bias, _take(variables, used, f"{scope}/bias"), f"{scope}/bias")


def _load_batch_norm(layer: keras.layers.BatchNormalization, variables, used, scope: str):
    for variable, name in (
        (layer.gamma, "gamma"),
        (layer.beta, "beta"),
        (layer.moving_mean, "moving_mean"),
        (layer.moving_variance, "moving_variance"),
    ):
        _assign(variable, _take(variables, used, f"{scope}/{name}"), f"{scope}/{name}")


def convert(variables: dict[str, np.ndarray], architecture: str, vocabulary) -> keras.Model:
    """Builds a Keras `musicnn` or `musicnn_vgg` holding a checkpoint's weights.

    Args:
        variables: From `read_checkpoint`.
        architecture: `musicnn` or `musicnn_vgg`.
        vocabulary: The tag names in output order.

    Returns:
        The model (input 187 frames, the training patch length).

    Raises:
        ConversionError: Missing, unexpected or misshapen variables.
    """
    if architecture not in _LAYER_MAPS:
        raise ConversionError(f"unknown musicnn architecture {architecture!r}; choose one of {sorted(_LAYER_MAPS)}")
    convs, batch_norms, head = _LAYER_MAPS[architecture]
    for scope in (next(iter(convs.values())), head):
        if f"{scope}/kernel" not in variables:
            raise ConversionError(f"the checkpoint has no {scope}/kernel: not a {architecture} checkpoint")
    num_tags = variables[f"{head}/kernel"].shape[-1]
    if len(vocabulary) != num_tags:
        raise ConversionError(f"the checkpoint has {num_tags} outputs, the vocabulary {len(vocabulary)} tags")
    model = models.get_model(architecture, num_tags, vocabulary=list(vocabulary))
    used: set[str] = set()
    for layer_name, scope in convs.items():
        _load_kernel_and_bias(model.get_layer(layer_name), variables, used, scope)
    for layer_name, scope in batch_norms.items():
        _load_batch_norm(model.get_layer(layer_name), variables, used, scope)
    _load_kernel_and_bias(model.get_layer(models.TAGS).dense, variables, used, head)
    unexpected = sorted(
        name for name in variables if name not in used and name not in _IGNORED and not name.endswith(_IGNORED_SUFFIXES)
    )
    if unexpected:
        raise ConversionError(f"the checkpoint has variables this {architecture} does not: {unexpected[:8]}")
    return model
