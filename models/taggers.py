"""The taggers of Won et al. (2020), "Evaluation of CNN-based automatic music
tagging models", in Keras 3, faithful to the reference code
(minzwon/sota-music-tagging-models) layer by layer and parameter by parameter.

Every model takes a log-mel `[batch, frames, n_mels]` and returns a dict:
`tags` (sigmoid probabilities `[batch, num_tags]`, float32) and `embedding`
(the penultimate representation, float32, not normalised: the 512-d
post-ReLU dense layer of the short-chunk models, the last GRU output of the
CRNN), so that retrieval never cuts the graph by layer name.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from models.layers import PACKAGE, ConvBlock, LogMelToImage, ResBlock, TagHead, batch_norm, clone_for_inference

TAGS = "tags"
EMBEDDING = "embedding"

SHORT_CHUNK_FRAMES = 231  # 59,049 samples at 16 kHz, hop 256.
CRNN_FRAMES = 1813  # 29 s at 16 kHz, hop 256.


def _spectrogram_input(n_mels: int, num_frames: int | None):
    inputs = keras.Input(shape=(num_frames, n_mels), name="log_mel")
    image = LogMelToImage(name="to_image")(inputs)
    return inputs, batch_norm("spec_bn")(image)


def _outputs(embedding, dropout: float, num_tags: int, vocabulary: list[str] | None) -> dict:
    """Tag probabilities from the dropped-out embedding, and the embedding."""
    tags = TagHead(num_tags, vocabulary, name=TAGS)(layers.Dropout(dropout, name="dropout")(embedding))
    embedding = layers.Activation("linear", dtype="float32", name=EMBEDDING)(embedding)
    return {TAGS: tags, EMBEDDING: embedding}


def _short_chunk_embedding(x, n_channels: int):
    """Global max pool, then Dense -> BN -> ReLU: the 512-d embedding."""
    x = layers.GlobalMaxPooling2D(name="global_max_pool")(x)
    x = layers.Dense(n_channels * 4, name="dense1")(x)
    x = batch_norm("bn")(x)
    return layers.ReLU(name="relu")(x)


# Channel multipliers of the seven short-chunk blocks (x n_channels).
_SHORT_CHUNK_PLAN = (1, 1, 2, 2, 2, 2, 4)


def _short_chunk_model(name, make_block, num_tags, n_mels, num_frames, n_channels, dropout, vocabulary):
    inputs, x = _spectrogram_input(n_mels, num_frames)
    for index, multiplier in enumerate(_SHORT_CHUNK_PLAN, start=1):
        x = make_block(n_channels * multiplier, f"layer{index}")(x)
    outputs = _outputs(_short_chunk_embedding(x, n_channels), dropout, num_tags, vocabulary)
    return keras.Model(inputs, outputs, name=name)


def build_short_chunk_res(
    num_tags: int,
    n_mels: int = 128,
    num_frames: int | None = SHORT_CHUNK_FRAMES,
    n_channels: int = 128,
    dropout: float = 0.5,
    vocabulary: list[str] | None = None,
) -> keras.Model:
    """Short-chunk CNN with residual blocks (`ShortChunkCNN_Res`).

    Seven `ResBlock`s with channels 128, 128, 256, 256, 256, 256, 512 (for
    `n_channels=128`), global max pool, Dense 512 -> BN -> ReLU -> Dropout
    -> Dense num_tags -> sigmoid. 12,104,244 trainable parameters for 50 tags.
    """
    return _short_chunk_model(
        "short_chunk_res",
        lambda filters, name: ResBlock(filters, stride=2, name=name),
        num_tags, n_mels, num_frames, n_channels, dropout, vocabulary,
    )  # fmt: skip


def build_short_chunk_cnn(
    num_tags: int,
    n_mels: int = 128,
    num_frames: int | None = SHORT_CHUNK_FRAMES,
    n_channels: int = 128,
    dropout: float = 0.5,
    vocabulary: list[str] | None = None,
) -> keras.Model:
    """Short-chunk CNN (`ShortChunkCNN`): seven `ConvBlock`s with 2x2 pools, needs >= 128 frames."""
    return _short_chunk_model(
        "short_chunk_cnn",
        lambda filters, name: ConvBlock(filters, pool_size=2, name=name),
        num_tags, n_mels, num_frames, n_channels, dropout, vocabulary,
    )  # fmt: skip


@keras.saving.register_keras_serializable(package=PACKAGE)
class FrequencySqueeze(layers.Layer):
    """`[batch, 1, time, channels]` -> `[batch, time, channels]`."""

    def call(self, x):
        return ops.squeeze(x, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2], input_shape[3])


def fold_batch_norms(model: keras.Model) -> keras.Model:
    """A trained CRNN or short-chunk tagger with every `ConvBlock`/`ResBlock` batch norm folded into its convolution.

    The same function of the same weights at inference, with one pass over
    each block's largest tensor less; every other layer a copy of the
    trained one. Inference only.
    """
    return clone_for_inference(
        model, lambda layer: layer.folded_copy() if isinstance(layer, ConvBlock | ResBlock) else None
    )


def build_crnn(
    num_tags: int,
    n_mels: int = 96,
    num_frames: int | None = CRNN_FRAMES,
    gru_units: int = 32,
    dropout: float = 0.5,
    vocabulary: list[str] | None = None,
) -> keras.Model:
    """CRNN of Choi et al. (2017) as in the reference (`CRNN`).

    Four `ConvBlock`s: 64 (2x2 pool), 128 (3x3), 128 (4x4), 128 (4x4), which
    reduce 96 mel bands to 1; a two-layer GRU of 32 units over time; the last
    step; Dropout; Dense num_tags; sigmoid. 394,100 trainable parameters for
    50 tags. `n_mels` must be 96 (the pools need 96 bands).
    """
    if n_mels != 96:
        raise ValueError(f"the CRNN's pools reduce exactly 96 mel bands to 1, got n_mels={n_mels}")
    inputs, x = _spectrogram_input(n_mels, num_frames)
    for index, (filters, pool) in enumerate(((64, 2), (128, 3), (128, 4), (128, 4)), start=1):
        x = ConvBlock(filters, pool_size=pool, name=f"layer{index}")(x)
    x = FrequencySqueeze(name="squeeze_frequency")(x)
    x = layers.GRU(gru_units, return_sequences=True, reset_after=True, name="gru_1")(x)
    embedding = layers.GRU(gru_units, return_sequences=False, reset_after=True, name="gru_2")(x)
    return keras.Model(inputs, _outputs(embedding, dropout, num_tags, vocabulary), name="crnn")
