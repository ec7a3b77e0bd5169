"""Keras 3 music taggers: CRNN, Short-Chunk CNN and Short-Chunk ResNet.

`get_model(name, num_tags, **kwargs)` builds one; `with_waveform_front_end`
wraps any of them into a waveform-in model for serving. Gin configuration is
registered from outside (see `train`), never inside the model classes.
"""

from __future__ import annotations

import keras

from models import layers, taggers
from models.layers import LogMelFrontEnd
from models.taggers import EMBEDDING, TAGS
from tfrecords.logmel import LogMelSpec

MODEL_BUILDERS = {
    "crnn": taggers.build_crnn,
    "short_chunk_cnn": taggers.build_short_chunk_cnn,
    "short_chunk_res": taggers.build_short_chunk_res,
}

DEFAULT_N_MELS = {"crnn": 96, "short_chunk_cnn": 128, "short_chunk_res": 128}

__all__ = [
    "DEFAULT_N_MELS",
    "EMBEDDING",
    "MODEL_BUILDERS",
    "TAGS",
    "LogMelFrontEnd",
    "get_model",
    "layers",
    "tag_vocabulary",
    "taggers",
    "with_waveform_front_end",
]


def get_model(name: str, num_tags: int, **kwargs) -> keras.Model:
    """Builds a tagger by name (`crnn`, `short_chunk_cnn`, `short_chunk_res`).

    Args:
        name: The model name.
        num_tags: Size of the tag vocabulary.
        **kwargs: Passed to the builder (`n_mels`, `num_frames`, `dropout`,
            `vocabulary`, ...).

    Returns:
        An unbuilt-weights Keras functional model with outputs
        `{"tags": ..., "embedding": ...}`.
    """
    if name not in MODEL_BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[name](num_tags, **kwargs)


def tag_vocabulary(model: keras.Model) -> list[str] | None:
    """The tag names stored in a tagger's `tags` head, if any."""
    return model.get_layer(TAGS).vocabulary


def with_waveform_front_end(tagger: keras.Model, spec: LogMelSpec | None = None) -> keras.Model:
    """Wraps a log-mel tagger into a model taking 16 kHz waveforms `[batch, samples]`.

    The front end is the pipeline's log-mel function, so the wrapped model on a
    waveform equals the tagger on the stored log-mel of the same audio.
    """
    spec = spec or LogMelSpec(n_mels=tagger.input_shape[-1])
    if spec.n_mels != tagger.input_shape[-1]:
        raise ValueError(f"the front end has {spec.n_mels} mel bands, the tagger expects {tagger.input_shape[-1]}")
    frames = tagger.input_shape[1]
    samples = None if frames is None else spec.num_samples_for_frames(frames)
    waveform = keras.Input(shape=(samples,), name="waveform")
    log_mel = LogMelFrontEnd(spec, name="log_mel_front_end")(waveform)
    return keras.Model(waveform, tagger(log_mel), name=f"{tagger.name}_waveform")
