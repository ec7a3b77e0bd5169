"""Keras 3 music taggers: CRNN, Short-Chunk CNN, Short-Chunk ResNet and musicnn.

`get_model(name, num_tags, **kwargs)` builds one; `with_waveform_front_end`
wraps any of them into a waveform-in model for serving; `artifact` is the
one format of a trained (or converted) model on disk. Gin configuration is
registered from outside (see `train`), never inside the model classes.

Importing the package loads nothing heavy: Keras and TensorFlow load when one
of these names is first used (`models.registry`), so the binaries under
`models/` answer `--help` and usage errors at once.
"""

from __future__ import annotations

import importlib

# Each public name and the module that defines it.
_DEFINED_IN = {
    "DEFAULT_LOG_MEL": "models.registry",
    "DEFAULT_N_MELS": "models.registry",
    "MODEL_BUILDERS": "models.registry",
    "for_inference": "models.registry",
    "required_n_mels": "models.registry",
    "get_model": "models.registry",
    "tag_vocabulary": "models.registry",
    "with_waveform_front_end": "models.registry",
    "EMBEDDING": "models.taggers",
    "TAGS": "models.taggers",
    "LogMelFrontEnd": "models.layers",
}
_SUBMODULES = ("artifact", "layers", "musicnn", "taggers")

__all__ = [*_DEFINED_IN, *_SUBMODULES]


def __getattr__(name: str):
    if name in _DEFINED_IN:
        return getattr(importlib.import_module(_DEFINED_IN[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"models.{name}")
    raise AttributeError(f"module 'models' has no attribute {name!r}")
