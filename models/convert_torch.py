r"""Converts a reference PyTorch checkpoint into a model artifact.

Usage (the MagnaTagATune CRNN of minzwon/sota-music-tagging-models, as
shipped in `pretrained/mtat_crnn`):

    python -m models.convert_torch --model=crnn \
        --checkpoint=pretrained/sota-mtat-crnn/best_model.pth --output_dir=/tmp/mtat_crnn

writes `model.keras` and `model_info.json` (the artifact `python -m train`
writes, with the checkpoint's provenance: source, SHA-256, license,
published metrics), which `python -m serving.export --model_dir=/tmp/mtat_crnn`
exports as is and `Experiment.init_from` fine-tunes. `--tags` names the
checkpoint's vocabulary (one tag per line, or the reference's `tags.npy`);
50-output checkpoints default to the MagnaTagATune top 50. Needs PyTorch:
pip install -e ".[torch]".
"""

from __future__ import annotations

from tf_startup import load_tensorflow, run

import os
import pathlib

import numpy as np
from absl import app, flags

from models import pretrained

_MODEL = flags.DEFINE_enum(
    "model", None, sorted(pretrained.TORCH_ARCHITECTURES), "Which reference architecture.", required=True
)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "The PyTorch state_dict (.pth).", required=True)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "The model artifact directory to write.", required=True)
_TAGS = flags.DEFINE_string("tags", None, "Tag vocabulary: a text file (one per line) or tags.npy.")


def _read_tags(path: str) -> list[str]:
    if path.endswith(".npy"):
        return [str(tag) for tag in np.load(path, allow_pickle=False)]
    return [line.strip() for line in pathlib.Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def _provenance(checkpoint: str, sha256: str):
    """An unpublished checkpoint: only what the file itself says."""
    from models import artifact

    return artifact.Provenance(
        source=os.path.abspath(checkpoint),
        source_sha256={os.path.basename(checkpoint): sha256},
        license="unknown: not a checkpoint this project knows; see its publisher's terms",
        training_data="unknown",
        published_metrics={},
        converter=f"models.convert_torch {pretrained.CONVERTER_VERSION}",
        reference="",
    )


def main(argv):
    del argv
    load_tensorflow()
    import models
    from models import artifact, convert_torch_lib

    try:
        state = convert_torch_lib.load_state_dict(_CHECKPOINT.value)
    except ImportError as error:
        raise app.UsageError(str(error)) from error
    vocabulary = _read_tags(_TAGS.value) if _TAGS.value else None
    model = convert_torch_lib.convert(state, _MODEL.value, vocabulary)
    sha256 = pretrained.sha256_of(_CHECKPOINT.value)
    published = pretrained.published_by_sha256(sha256)
    if (
        published
        and published.architecture == _MODEL.value
        and list(published.vocabulary) == models.tag_vocabulary(model)
    ):
        info = published.info(artifact.embedding_dim(model), "models.convert_torch")
    else:
        info = artifact.ModelInfo(
            model_name=_MODEL.value,
            crop_frames=model.input_shape[1],
            vocabulary=models.tag_vocabulary(model)
            or [f"tag_{index}" for index in range(model.output_shape[models.TAGS][-1])],
            log_mel=models.DEFAULT_LOG_MEL[_MODEL.value],
            embedding_dim=artifact.embedding_dim(model),
            provenance=_provenance(_CHECKPOINT.value, sha256),
        )
    artifact.save(model, info, _OUTPUT_DIR.value)
    source = f"published {published.name}" if published else "unpublished checkpoint"
    print(
        f"{_MODEL.value} ({source}): {model.count_params():,} parameters, {len(info.vocabulary)} tags -> {_OUTPUT_DIR.value}"
    )


if __name__ == "__main__":
    run(main)
