"""The architectures by name (`get_model`), their front ends, and the waveform wrapper (`with_waveform_front_end`).

What `models` exposes; `models/__init__.py` loads this module on first use.
"""

from __future__ import annotations

import tf_startup  # noqa: F401 - first: TensorFlow's log level, before keras imports it.

import dataclasses

import keras

from features.logmel import PRESETS, LogMelSpec
from models import musicnn, taggers
from models.layers import LogMelFrontEnd, clone_for_inference
from models.taggers import EMBEDDING, TAGS

MODEL_BUILDERS = {
    "crnn": taggers.build_crnn,
    "short_chunk_cnn": taggers.build_short_chunk_cnn,
    "short_chunk_res": taggers.build_short_chunk_res,
    "musicnn": musicnn.build_musicnn,
    "musicnn_vgg": musicnn.build_musicnn_vgg,
}

# The front end each architecture was designed (and its published weights trained) for.
DEFAULT_LOG_MEL = {
    "crnn": PRESETS["won2020_96"],
    "short_chunk_cnn": PRESETS["won2020"],
    "short_chunk_res": PRESETS["won2020"],
    "musicnn": PRESETS["musicnn"],
    "musicnn_vgg": PRESETS["musicnn"],
}
DEFAULT_N_MELS = {name: spec.n_mels for name, spec in DEFAULT_LOG_MEL.items()}
# Architectures built for their default mel bands only (their pooling or filter heights are fractions of them);
# the short-chunk models take any.
_FIXED_N_MELS = ("crnn", "musicnn", "musicnn_vgg")

# The arithmetic an inference form can run in (`for_inference`).
INFERENCE_PRECISIONS = ("float32", "bfloat16")
# Each architecture's inference form: the same function of the same weights, computed faster on a CPU.
_INFERENCE_FORMS = {
    "crnn": taggers.fold_batch_norms,
    "short_chunk_cnn": taggers.fold_batch_norms,
    "short_chunk_res": taggers.fold_batch_norms,
    "musicnn": musicnn.fused_for_inference,
}


def get_model(name: str, num_tags: int, **kwargs) -> keras.Model:
    """Builds a tagger by name (a key of `MODEL_BUILDERS`).

    Args:
        name: The model name.
        num_tags: Size of the tag vocabulary.
        **kwargs: Passed to the builder (`n_mels`, `num_frames`, `vocabulary`,
            and the architecture's own, e.g. `dropout`).

    Returns:
        An unbuilt-weights Keras functional model with outputs
        `{"tags": ..., "embedding": ...}`.
    """
    if name not in MODEL_BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[name](num_tags, **kwargs)


def required_n_mels(name: str) -> int | None:
    """The mel bands an architecture needs (None: any number works)."""
    if name not in MODEL_BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODEL_BUILDERS)}")
    return DEFAULT_N_MELS[name] if name in _FIXED_N_MELS else None


def for_inference(model: keras.Model, name: str, precision: str = "float32") -> keras.Model:
    """A trained tagger in its inference form, for serving and embedding (not for training).

    Batch norms folded into the convolutions before them (CRNN, short-chunk
    models), musicnn's front end pooled before its batch norms and its
    temporal convolutions as matrix products (`musicnn.fused_for_inference`).
    Outputs equal the model's at `training=False` up to float rounding. An
    architecture without one (`musicnn_vgg`) keeps its layers.

    Args:
        model: The trained model (`models.artifact.load`).
        name: Its architecture, a key of `MODEL_BUILDERS`.
        precision: `float32`, or `bfloat16`: the arithmetic in bfloat16
            (Keras' `mixed_bfloat16`), weights, tags and embedding float32.
            Fast only where the CPU (or accelerator) computes bfloat16
            natively; outputs then differ in the third significant digit.

    Raises:
        ValueError: An unknown architecture or precision, naming it.
    """
    if name not in MODEL_BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODEL_BUILDERS)}")
    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(INFERENCE_PRECISIONS)}")
    inference_form = _INFERENCE_FORMS.get(name)
    form = model if inference_form is None else inference_form(model)
    if precision == "float32":
        return form
    return clone_for_inference(form, dtype_policy="mixed_bfloat16", float32_layers=(TAGS, EMBEDDING))


def tag_vocabulary(model: keras.Model) -> list[str] | None:
    """The tag names stored in a tagger's `tags` head, if any."""
    return model.get_layer(TAGS).vocabulary


def with_waveform_front_end(tagger: keras.Model, spec: LogMelSpec | None = None) -> keras.Model:
    """Wraps a log-mel tagger into a model taking 16 kHz waveforms `[batch, samples]`.

    The front end is the pipeline's log-mel function, so the wrapped model on a
    waveform equals the tagger on the stored log-mel of the same audio. By
    default it is the architecture's own (`DEFAULT_LOG_MEL`, by the model's
    name) with the tagger's mel bands.
    """
    if spec is None:
        default = DEFAULT_LOG_MEL.get(tagger.name, PRESETS["won2020"])
        spec = dataclasses.replace(default, n_mels=tagger.input_shape[-1])
    if spec.n_mels != tagger.input_shape[-1]:
        raise ValueError(f"the front end has {spec.n_mels} mel bands, the tagger expects {tagger.input_shape[-1]}")
    frames = tagger.input_shape[1]
    samples = None if frames is None else spec.num_samples_for_frames(frames)
    waveform = keras.Input(shape=(samples,), name="waveform")
    log_mel = LogMelFrontEnd(spec, name="log_mel_front_end")(waveform)
    return keras.Model(waveform, tagger(log_mel), name=f"{tagger.name}_waveform")
