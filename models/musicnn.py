"""musicnn (Pons & Serra 2019) and its VGG baseline in Keras 3.

Layer by layer the graphs of the `musicnn` package (`musicnn/models.py`,
ISC license), so that its published checkpoints (`MSD_musicnn`,
`MTT_musicnn`, `MSD_vgg`, `MTT_vgg`) convert exactly
(`models.musicnn_conversion`). Both take the log-mel `[batch, frames, 96]` of
the `musicnn` front end (`tfrecords.logmel.PRESETS["musicnn"]`: Slaney mel,
`log10(1 + 10000 x)`), 187 frames (3 s) per patch as trained, and return
`tags` (sigmoid probabilities) and `embedding`:

- `musicnn`: musically motivated front end (timbral convolutions 7 x 38
  and 7 x 67 over time x frequency, temporal convolutions 128, 64 and
  32 x 1, each max-pooled over frequency), three densely connected 1-D
  convolutions (mid-end), max and mean pooling over time, a 200-unit dense
  layer: its batch-normalised output is the `embedding` (the package's
  `penultimate` feature). Any number of frames works.
- `musicnn_vgg`: five 3 x 3 convolution blocks; the flattened last pool
  (256 values for 187 frames) is the `embedding`. Fixed input length.

Batch normalisation uses TensorFlow 1's constants (epsilon 1e-3, momentum
0.99), as the checkpoints were trained with.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from models.layers import PACKAGE, TagHead
from models.taggers import EMBEDDING, TAGS

PATCH_FRAMES = 187  # 3 s at 16 kHz, hop 256: the training patch length.
N_MELS = 96

# TensorFlow 1's batch-norm defaults, which the checkpoints were trained with.
TF1_BATCH_NORM_EPSILON = 1e-3
TF1_BATCH_NORM_MOMENTUM = 0.99


def _batch_norm(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(epsilon=TF1_BATCH_NORM_EPSILON, momentum=TF1_BATCH_NORM_MOMENTUM, name=name)


@keras.saving.register_keras_serializable(package=PACKAGE)
class FrequencyMaxPool(layers.Layer):
    """`[batch, frames, freq, channels]` -> `[batch, frames, channels]`: max over frequency."""

    def call(self, x):
        return ops.max(x, axis=2)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], input_shape[3])


@keras.saving.register_keras_serializable(package=PACKAGE)
class TemporalMaxMeanPool(layers.Layer):
    """`[batch, frames, channels]` -> `[batch, 2 * channels]`: max and mean over
    time, interleaved per channel (max_0, mean_0, max_1, ...) as musicnn's
    concatenate-then-flatten orders them."""

    def call(self, x):
        pooled = ops.stack([ops.max(x, axis=1), ops.mean(x, axis=1)], axis=-1)
        return ops.reshape(pooled, (-1, 2 * x.shape[-1]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2 * input_shape[2])


def _image(inputs):
    x = layers.Reshape((-1, inputs.shape[-1], 1), name="to_image")(inputs)
    return _batch_norm("input_bn")(x)


def _outputs(embedding, num_tags: int, vocabulary: list[str] | None) -> dict:
    tags = TagHead(num_tags, vocabulary, name=TAGS)(layers.Dropout(0.5, name="dropout")(embedding))
    return {TAGS: tags, EMBEDDING: layers.Activation("linear", dtype="float32", name=EMBEDDING)(embedding)}


def _timbral(image, kernel_frequencies: int, filters: int, name: str):
    x = layers.ZeroPadding2D(((3, 3), (0, 0)), name=f"{name}_pad")(image)
    x = layers.Conv2D(filters, (7, kernel_frequencies), padding="valid", activation="relu", name=name)(x)
    return FrequencyMaxPool(name=f"{name}_pool")(_batch_norm(f"{name}_bn")(x))


def _temporal(image, kernel_frames: int, filters: int, name: str):
    x = layers.Conv2D(filters, (kernel_frames, 1), padding="same", activation="relu", name=name)(image)
    return FrequencyMaxPool(name=f"{name}_pool")(_batch_norm(f"{name}_bn")(x))


def _midend_conv(x, filters: int, name: str):
    return _batch_norm(f"{name}_bn")(layers.Conv1D(filters, 7, padding="same", activation="relu", name=name)(x))


def build_musicnn(
    num_tags: int,
    n_mels: int = N_MELS,
    num_frames: int | None = PATCH_FRAMES,
    frontend_filters: float = 1.6,
    midend_filters: int = 64,
    backend_units: int = 200,
    vocabulary: list[str] | None = None,
) -> keras.Model:
    """musicnn (`build_musicnn` of the package): 787,159 trainable parameters for 50 tags.

    Args:
        num_tags: Outputs of the tag head.
        n_mels: Mel bands (96 for the published checkpoints).
        num_frames: Input frames; None accepts any length.
        frontend_filters: Multiplier of the front end's filter counts.
        midend_filters: Filters of the three mid-end convolutions.
        backend_units: Size of the penultimate dense layer (the embedding).
        vocabulary: Tag names.
    """
    inputs = keras.Input(shape=(num_frames, n_mels), name="log_mel")
    image = _image(inputs)
    timbral_filters, temporal_filters = int(frontend_filters * 128), int(frontend_filters * 32)
    front = [
        _timbral(image, int(0.4 * n_mels), timbral_filters, "timbral_74"),
        _timbral(image, int(0.7 * n_mels), timbral_filters, "timbral_77"),
        _temporal(image, 128, temporal_filters, "temporal_128"),
        _temporal(image, 64, temporal_filters, "temporal_64"),
        _temporal(image, 32, temporal_filters, "temporal_32"),
    ]
    front = layers.Concatenate(axis=-1, name="frontend")(front)
    conv1 = _midend_conv(front, midend_filters, "midend_1")
    res2 = layers.Add(name="midend_2_residual")([_midend_conv(conv1, midend_filters, "midend_2"), conv1])
    res3 = layers.Add(name="midend_3_residual")([_midend_conv(res2, midend_filters, "midend_3"), res2])
    features = layers.Concatenate(axis=-1, name="midend")([front, conv1, res2, res3])
    x = _batch_norm("backend_bn")(TemporalMaxMeanPool(name="temporal_pool")(features))
    x = layers.Dense(backend_units, activation="relu", name="penultimate_dense")(
        layers.Dropout(0.5, name="backend_dropout")(x)
    )
    embedding = _batch_norm("penultimate_bn")(x)
    return keras.Model(inputs, _outputs(embedding, num_tags, vocabulary), name="musicnn")


# (pool size, strides) after each of the five VGG convolutions, (time, frequency).
_VGG_POOLS = (((4, 1), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((4, 4), (4, 4)))


def build_musicnn_vgg(
    num_tags: int,
    n_mels: int = N_MELS,
    num_frames: int = PATCH_FRAMES,
    filters: int = 128,
    vocabulary: list[str] | None = None,
) -> keras.Model:
    """The VGG baseline of the musicnn package (`vgg`): 605,748 trainable parameters for 50 tags.

    Five blocks of 3 x 3 convolution ('same', ReLU) -> batch norm -> max
    pool -> dropout 0.25 (not after the last); the flattened last pool is the
    embedding. The input length is fixed (the tag head is dense over it).
    """
    if num_frames is None:
        raise ValueError("musicnn_vgg needs a fixed num_frames (its tag head is dense over the flattened pool)")
    inputs = keras.Input(shape=(num_frames, n_mels), name="log_mel")
    x = _image(inputs)
    for index, (pool, strides) in enumerate(_VGG_POOLS, start=1):
        if index > 1:
            x = layers.Dropout(0.25, name=f"dropout_{index - 1}")(x)
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{index}")(x)
        x = _batch_norm(f"conv{index}_bn")(x)
        x = layers.MaxPooling2D(pool, strides=strides, padding="valid", name=f"pool{index}")(x)
    embedding = layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, _outputs(embedding, num_tags, vocabulary), name="musicnn_vgg")
