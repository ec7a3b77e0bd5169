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

_FROM_REGISTRY = (
    "DEFAULT_LOG_MEL",
    "DEFAULT_N_MELS",
    "EMBEDDING",
    "MODEL_BUILDERS",
    "TAGS",
    "LogMelFrontEnd",
    "get_model",
    "tag_vocabulary",
    "with_waveform_front_end",
)
_SUBMODULES = ("artifact", "layers", "musicnn", "taggers")

__all__ = [*_FROM_REGISTRY, *_SUBMODULES]


def __getattr__(name: str):
    if name in _FROM_REGISTRY:
        return getattr(importlib.import_module("models.registry"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"models.{name}")
    raise AttributeError(f"module 'models' has no attribute {name!r}")
