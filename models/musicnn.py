"""musicnn (Pons & Serra 2019) and its VGG baseline in Keras 3.

Layer by layer the graphs of the `musicnn` package (`musicnn/models.py`,
ISC license), so that its published checkpoints (`MSD_musicnn`,
`MTT_musicnn`, `MSD_vgg`, `MTT_vgg`) convert exactly
(`models.convert_musicnn_lib`). Both take the log-mel `[batch, frames, 96]` of
the `musicnn` front end (`features.logmel.PRESETS["musicnn"]`: Slaney mel,
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

`fused_for_inference(model)` is the same function of the same weights in the
form a CPU computes fast, for serving: each front-end branch becomes one
`FrequencyPooledConv` (pool over frequency first, then bias, ReLU and batch
norm on 1/30 to 1/96 of the values; the temporal kernels as polyphase
convolutions over groups of frames).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from models.layers import PACKAGE, TagHead, batch_norm_affine, clone_for_inference
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


# The front end's branches, in the order their outputs are concatenated.
FRONT_END_BRANCHES = ("timbral_74", "timbral_77", "temporal_128", "temporal_64", "temporal_32")
# Frames per group of a temporal kernel's polyphase convolution, its input channels: 2 to 8 measured alike
# (AVX-512 BF16, and oneDNN held to AVX2); 4 among the fastest in both precisions.
_PHASE_FRAMES = 4


def _max_over(values, axis: int):
    """`ops.max(values, axis)` for an axis before the last one, computed as a max pool where it can be.

    Where the axis' length is static the max runs as `ops.max_pool` with a
    window of the whole axis over `[rest before, axis, 1, rest after]`:
    TensorFlow's CPU pooling kernel vectorises over the trailing values,
    where its reduction walks the pooled axis. The same maxima, the same shape.
    """
    length = values.shape[axis]
    if length is None:
        return ops.max(values, axis=axis)
    shape = ops.shape(values)
    before = 1
    for size in shape[:axis]:
        before = before * size
    image = ops.reshape(values, (before, length, 1, -1))
    pooled = ops.max_pool(image, pool_size=(length, 1), strides=(length, 1), padding="valid")
    return ops.reshape(pooled, (*shape[:axis], *shape[axis + 1 :]))


@keras.saving.register_keras_serializable(package=PACKAGE)
class FrequencyPooledConv(layers.Layer):
    """Inference form of a front-end branch: `Conv2D -> ReLU -> BatchNorm -> max over frequency` as one layer.

    `[batch, frames, freq, 1]` -> `[batch, frames, filters]`, equal to the
    branch's output. Batch norm at inference is an affine map per channel,
    increasing where gamma > 0 and decreasing where gamma < 0, and ReLU does
    not decrease, so the max over frequency of the branch is the branch
    applied to the max (gamma >= 0) or the min (gamma < 0) over frequency of
    the convolution alone: the layer convolves with the kernel negated where
    gamma < 0 (min = -max of the negation), pools, and applies bias, ReLU and
    batch norm to the pooled values only. Time is padded as the branch pads
    it ((k - 1) // 2 frames before, the rest after); frequency is valid.

    Timbral kernels (k x f, f > 1) run as a convolution, its max over
    frequency as a max pool. Temporal kernels (k x 1 on the single input
    channel: a few percent of the CPU's matrix-product rate as a convolution)
    run as a polyphase convolution: each band's frames are grouped
    `phase_frames` at a time into channels, and one convolution over the
    groups with `phase_frames x filters` outputs, the kernel laid out per
    output phase (`_polyphase_kernel`), gives every band's outputs at once;
    then the max over the bands. No gather and no loop: one convolution and
    one pool per branch, at a quarter (32 frames) to two thirds (128 frames)
    of the CPU's matrix-product rate (`benchmarks/layer_profile.py`).

    Inference only: training needs the batch statistics of the unpooled
    convolution; build it from a trained branch with `from_branch`.

    Args:
        filters: Output channels.
        kernel_size: (frames, bands) of the branch's convolution.
        phase_frames: Frames per group of the polyphase convolution (temporal kernels only).
    """

    def __init__(self, filters: int, kernel_size, phase_frames: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = (int(kernel_size[0]), int(kernel_size[1]))
        self.temporal = self.kernel_size[1] == 1
        frames = self.kernel_size[0]
        self.phase_frames = int(phase_frames or _PHASE_FRAMES) if self.temporal else None
        self.pad_before = (frames - 1) // 2
        self.pad_after = frames - 1 - self.pad_before

    def build(self, input_shape):
        frames, bands = self.kernel_size
        if self.temporal:
            phases = self.phase_frames
            shape = (1, _polyphase_groups(frames, phases), phases, phases * self.filters)
        else:
            shape = (frames, bands, 1, self.filters)
        self.kernel = self.add_weight(name="kernel", shape=shape, initializer="zeros", trainable=False)
        for name in ("sign", "bias", "scale", "shift"):
            setattr(self, name, self.add_weight(name=name, shape=(self.filters,), initializer="zeros", trainable=False))

    def _pooled_convolution(self, image):
        padded = ops.pad(image, ((0, 0), (self.pad_before, self.pad_after), (0, 0), (0, 0)))
        return _max_over(ops.conv(padded, self.kernel, padding="valid"), axis=2)

    def _pooled_polyphase_convolution(self, image):
        batch, frames, num_bands, _ = ops.shape(image)
        phases, groups = self.phase_frames, self.kernel.shape[1]
        output_groups = (frames + phases - 1) // phases
        padded_frames = (output_groups + groups - 1) * phases
        bands = ops.transpose(image[..., 0], (0, 2, 1))  # [batch, bands, frames]
        bands = ops.pad(bands, ((0, 0), (0, 0), (self.pad_before, padded_frames - frames - self.pad_before)))
        grouped = ops.reshape(bands, (batch, num_bands, -1, phases))  # [batch, bands, groups, phase]
        # [batch, bands, output groups, phase x filters]: output frame group * phases + phase.
        outputs = ops.conv(grouped, self.kernel, padding="valid")
        pooled = _max_over(outputs, axis=1)
        return ops.reshape(pooled, (batch, -1, self.filters))[:, :frames]

    def call(self, image):
        pooled = self._pooled_polyphase_convolution(image) if self.temporal else self._pooled_convolution(image)
        return ops.relu(pooled * self.sign + self.bias) * self.scale + self.shift

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": list(self.kernel_size),
            "phase_frames": self.phase_frames,
        }

    @classmethod
    def from_branch(cls, conv: layers.Conv2D, batch_norm: layers.BatchNormalization, **kwargs) -> FrequencyPooledConv:
        """The fused layer holding a trained branch's weights (`conv` with ReLU, then `batch_norm`)."""
        kernel = np.asarray(keras.ops.convert_to_numpy(conv.kernel), np.float64)
        frames, bands, _, filters = kernel.shape
        scale, shift = batch_norm_affine(batch_norm)
        sign = np.where(scale < 0, -1.0, 1.0)
        layer = cls(filters, (frames, bands), name=kwargs.pop("name", conv.name), **kwargs)
        layer.build((None, None, None, 1))
        signed = kernel * sign
        if layer.temporal:
            signed = _polyphase_kernel(signed[:, 0, 0, :], layer.phase_frames)
        for weight, value in (
            (layer.kernel, signed),
            (layer.sign, sign),
            (layer.bias, keras.ops.convert_to_numpy(conv.bias)),
            (layer.scale, scale),
            (layer.shift, shift),
        ):
            weight.assign(np.asarray(value, np.float32))
        return layer


@keras.saving.register_keras_serializable(package=PACKAGE)
class Absorbed(layers.Layer):
    """Stands where a layer was whose work the fused layer before it does (a branch's batch norm and pool)."""

    def call(self, inputs, training=None, mask=None):
        del training, mask
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def _polyphase_groups(frames: int, phases: int) -> int:
    """Groups of `phases` input frames that the outputs of one group of `phases` frames read (a k-frame kernel)."""
    return (phases - 1 + frames + phases - 1) // phases


def _polyphase_kernel(kernel: np.ndarray, phases: int) -> np.ndarray:
    """`[k, filters]` -> `[1, groups, phases, phases * filters]`, the kernel of a polyphase convolution.

    Output phase r of a group reads input frame `r + j` for kernel tap j,
    counted from the group's first frame: entry
    `(0, (r + j) // phases, (r + j) % phases, r * filters + c)` is kernel[j, c],
    the rest zero.
    """
    frames, filters = kernel.shape
    matrix = np.zeros((_polyphase_groups(frames, phases), phases, phases, filters), kernel.dtype)
    for phase in range(phases):
        for tap in range(frames):
            matrix[(phase + tap) // phases, (phase + tap) % phases, phase] = kernel[tap]
    return matrix.reshape(1, -1, phases, phases * filters)


def fused_for_inference(model: keras.Model) -> keras.Model:
    """A trained `musicnn` as the same function in its fast inference form (`FrequencyPooledConv` front end).

    Each front-end branch's convolution becomes a `FrequencyPooledConv`
    holding its weights and its batch norm's; the branch's batch norm and
    frequency pool (and a timbral branch's time padding) become `Absorbed`:
    the fused layer does them. Every other layer is a copy of the trained
    one. Inference only.
    """
    absorbed = {f"{name}_{part}" for name in FRONT_END_BRANCHES for part in ("pad", "bn", "pool")}

    def inference_layer(layer):
        if layer.name in FRONT_END_BRANCHES:
            return FrequencyPooledConv.from_branch(layer, model.get_layer(f"{layer.name}_bn"))
        if layer.name in absorbed:
            return Absorbed(name=layer.name)
        return None

    return clone_for_inference(model, inference_layer)


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
    timbral_74, timbral_77, temporal_128, temporal_64, temporal_32 = FRONT_END_BRANCHES
    front = [
        _timbral(image, int(0.4 * n_mels), timbral_filters, timbral_74),
        _timbral(image, int(0.7 * n_mels), timbral_filters, timbral_77),
        _temporal(image, 128, temporal_filters, temporal_128),
        _temporal(image, 64, temporal_filters, temporal_64),
        _temporal(image, 32, temporal_filters, temporal_32),
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
