r"""Converts a checkpoint of the musicnn package into a model artifact.

Usage (a checkpoint folder of the unpacked `musicnn` 0.1.0 wheel):

    pip download --no-deps musicnn==0.1.0 -d /tmp/musicnn && unzip -q /tmp/musicnn/*.whl -d /tmp/musicnn
    python -m models.convert_musicnn --checkpoint_dir=/tmp/musicnn/musicnn/MSD_musicnn \
        --output_dir=/tmp/msd_musicnn

writes `model.keras` and `model_info.json` with the checkpoint's
provenance. The folder's files must be the published ones (their SHA-256
is checked). `python -m models.install_pretrained` does this for all four
checkpoints, fetching the wheel itself.
"""

from __future__ import annotations

from tf_startup import load_tensorflow, run

import os

from absl import app, flags

from models import pretrained

_CHECKPOINT_DIR = flags.DEFINE_string(
    "checkpoint_dir", None, "MSD_musicnn, MTT_musicnn, MSD_vgg or MTT_vgg of the wheel.", required=True
)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "The model artifact directory to write.", required=True)


def main(argv):
    del argv
    folder = os.path.basename(os.path.normpath(_CHECKPOINT_DIR.value))
    published = {model.checkpoint_dir: model for model in pretrained.PUBLISHED.values() if model.checkpoint_dir}
    if folder not in published:
        raise app.UsageError(f"--checkpoint_dir must be one of the wheel's folders {sorted(published)}, got {folder!r}")
    load_tensorflow()
    from models import convert_musicnn_lib

    try:
        path = pretrained.convert_musicnn(_CHECKPOINT_DIR.value, published[folder], _OUTPUT_DIR.value)
    except (pretrained.IntegrityError, convert_musicnn_lib.ConversionError, OSError) as error:
        raise app.UsageError(str(error)) from error
    print(f"{folder} -> {path}")


if __name__ == "__main__":
    run(main)
