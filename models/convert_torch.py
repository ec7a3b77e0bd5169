r"""Converts a reference PyTorch checkpoint into a Keras model.

Usage (a MagnaTagATune checkpoint of minzwon/sota-music-tagging-models):

    python -m models.convert_torch --model=short_chunk_res \
        --checkpoint=models/mtat/short_res/best_model.pth --output=/tmp/short_chunk_res.keras

`--tags` names a file with the checkpoint's tag vocabulary (one tag per line,
or the reference's `tags.npy`); 50-output checkpoints default to the
MagnaTagATune top 50. Needs PyTorch: pip install -e ".[torch]".
"""

from __future__ import annotations

import pathlib

import numpy as np
from absl import app, flags

import models
from models import torch_conversion

_MODEL = flags.DEFINE_enum("model", None, sorted(models.MODEL_BUILDERS), "Which reference model.", required=True)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "The PyTorch state_dict (.pth).", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the .keras model.", required=True)
_TAGS = flags.DEFINE_string("tags", None, "Tag vocabulary: a text file (one per line) or tags.npy.")


def _read_tags(path: str) -> list[str]:
    if path.endswith(".npy"):
        return [str(tag) for tag in np.load(path, allow_pickle=False)]
    return [line.strip() for line in pathlib.Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def main(argv):
    del argv
    try:
        state = torch_conversion.load_state_dict(_CHECKPOINT.value)
    except ImportError as error:
        raise app.UsageError(str(error)) from error
    vocabulary = _read_tags(_TAGS.value) if _TAGS.value else None
    model = torch_conversion.convert(state, _MODEL.value, vocabulary)
    model.save(_OUTPUT.value)
    print(
        f"{_MODEL.value}: {model.count_params():,} parameters, {len(models.tag_vocabulary(model) or [])} tags -> {_OUTPUT.value}"
    )


if __name__ == "__main__":
    app.run(main)
