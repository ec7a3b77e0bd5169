r"""Installs the pretrained models: the musicnn checkpoints converted into model artifacts.

Usage (what `make install` runs; idempotent):

    python -m models.install_pretrained --output_dir=pretrained

fetches the `musicnn` 0.1.0 wheel from the package registry without its
dependencies (or takes `--musicnn_wheel=PATH`), checks the SHA-256 of the
wheel and of every checkpoint file against the pinned values, and converts
`msd_musicnn`, `mtt_musicnn`, `msd_musicnn_vgg` and `mtt_musicnn_vgg` into
`OUTPUT_DIR/<name>/` (`model.keras` + `model_info.json`). Artifacts already
converted from the pinned files are kept. `pretrained/mtat_crnn` (the
reference's MagnaTagATune CRNN) is carried in the repository. Licenses and
provenance: `pretrained/ATTRIBUTION.md`.
"""

from __future__ import annotations

from tf_startup import load_tensorflow, run

import os

from absl import app, flags

from models import pretrained

_OUTPUT_DIR = flags.DEFINE_string("output_dir", "pretrained", "Where the model artifacts go.")
_MUSICNN_WHEEL = flags.DEFINE_string("musicnn_wheel", None, "A local copy of the musicnn 0.1.0 wheel (else pip).")
_MODELS = flags.DEFINE_list("models", list(pretrained.MUSICNN_MODELS), "Which musicnn artifacts.")


def main(argv):
    del argv
    unknown = sorted(set(_MODELS.value) - set(pretrained.MUSICNN_MODELS))
    if unknown:
        raise app.UsageError(f"--models: unknown {unknown}; choose from {list(pretrained.MUSICNN_MODELS)}")
    load_tensorflow()
    from models import convert_musicnn_lib

    try:
        results = pretrained.install_musicnn(_OUTPUT_DIR.value, _MUSICNN_WHEEL.value, _MODELS.value)
    except (pretrained.IntegrityError, convert_musicnn_lib.ConversionError, RuntimeError, OSError) as error:
        raise app.UsageError(str(error)) from error
    for name, outcome in results.items():
        print(f"{name}: {outcome} ({os.path.join(_OUTPUT_DIR.value, name)})")


if __name__ == "__main__":
    run(main)
