"""The published checkpoints this project ships as model artifacts, and their installation.

| artifact | architecture | weights from | trained on |
|---|---|---|---|
| `mtat_crnn` | `crnn` | minzwon/sota-music-tagging-models (MIT) | MagnaTagATune top 50 |
| `msd_musicnn` | `musicnn` | the `musicnn` 0.1.0 wheel (ISC) | Million Song Dataset top 50 |
| `mtt_musicnn` | `musicnn` | the `musicnn` 0.1.0 wheel (ISC) | MagnaTagATune top 50 |
| `msd_musicnn_vgg` | `musicnn_vgg` | the `musicnn` 0.1.0 wheel (ISC) | Million Song Dataset top 50 |
| `mtt_musicnn_vgg` | `musicnn_vgg` | the `musicnn` 0.1.0 wheel (ISC) | MagnaTagATune top 50 |

The converted `mtat_crnn` is carried in the repository (`pretrained/`);
the musicnn artifacts are made at install time from the wheel, fetched from
the package registry without its dependencies (`install_musicnn`), after
checking the wheel's and every checkpoint file's SHA-256 against the values
pinned here. Nothing is downloaded at run time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from typing import TYPE_CHECKING

from models.vocabularies import MSD_TOP50_TAGS, MTAT_TOP50_TAGS

if TYPE_CHECKING:
    from models import artifact

# Keras loads when a model is converted or read, not when this module is imported: `models.install_pretrained
# --help` answers at once.

MUSICNN_REQUIREMENT = "musicnn==0.1.0"
MUSICNN_WHEEL = "musicnn-0.1.0-py3-none-any.whl"
MUSICNN_WHEEL_SHA256 = "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa"
CONVERTER_VERSION = 1
# The reference's PyTorch architectures `models.convert_torch_lib` converts.
TORCH_ARCHITECTURES = ("crnn", "short_chunk_cnn", "short_chunk_res")
DOWNLOADS_DIRNAME = "downloads"

_MUSICNN_LICENSE = (
    "ISC (musicnn 0.1.0, code and weights, (c) Music Technology Group, Universitat Pompeu Fabra 2019, by Jordi Pons)"
)
_MUSICNN_REFERENCE = (
    "Pons & Serra, musicnn: pre-trained convolutional neural networks for music audio tagging, ISMIR LBD 2019"
)
_MTAT_TERMS = "; trained on MagnaTagATune, whose audio is licensed CC BY-NC-SA 3.0"
_MSD_TERMS = "; trained on the Million Song Dataset's audio previews and Last.fm tags"


@dataclasses.dataclass(frozen=True)
class PublishedModel:
    """A published checkpoint and what is known about it.

    Attributes:
        name: Its artifact folder name.
        architecture: A key of `models.MODEL_BUILDERS`.
        vocabulary: Its tags in output order.
        source: Where the weights are published.
        files: SHA-256 of each source file, by name.
        license: The weights' license and the training data's terms.
        training_data: What it was trained on.
        published_metrics: The figures published with it.
        reference: The paper.
        crop_frames: The input length it was trained on.
        checkpoint_dir: The checkpoint's folder inside the musicnn wheel, if from there.
    """

    name: str
    architecture: str
    vocabulary: tuple[str, ...]
    source: str
    files: dict[str, str]
    license: str
    training_data: str
    published_metrics: dict[str, float]
    reference: str
    crop_frames: int
    checkpoint_dir: str | None = None

    def info(self, embedding_dim: int, converter: str) -> artifact.ModelInfo:
        """The `ModelInfo` of this checkpoint once converted by `converter`."""
        from models import DEFAULT_LOG_MEL, artifact

        return artifact.ModelInfo(
            model_name=self.architecture,
            crop_frames=self.crop_frames,
            vocabulary=self.vocabulary,
            log_mel=DEFAULT_LOG_MEL[self.architecture],
            embedding_dim=embedding_dim,
            provenance=artifact.Provenance(
                source=self.source,
                source_sha256=dict(self.files),
                license=self.license,
                training_data=self.training_data,
                published_metrics=dict(self.published_metrics),
                converter=f"{converter} {CONVERTER_VERSION}",
                reference=self.reference,
            ),
        )


def _musicnn(name, architecture, checkpoint_dir, vocabulary, terms, training_data, metrics, index_sha, data_sha):
    return PublishedModel(
        name=name,
        architecture=architecture,
        vocabulary=vocabulary,
        source=f"{MUSICNN_REQUIREMENT} wheel on PyPI ({MUSICNN_WHEEL}), musicnn/{checkpoint_dir}/",
        files={f"{checkpoint_dir}/.index": index_sha, f"{checkpoint_dir}/.data-00000-of-00001": data_sha},
        license=_MUSICNN_LICENSE + terms,
        training_data=training_data,
        published_metrics=metrics,
        reference=_MUSICNN_REFERENCE,
        crop_frames=187,
        checkpoint_dir=checkpoint_dir,
    )


PUBLISHED = {
    model.name: model
    for model in (
        PublishedModel(
            name="mtat_crnn",
            architecture="crnn",
            vocabulary=MTAT_TOP50_TAGS,
            source="minzwon/sota-music-tagging-models, models/mtat/crnn/best_model.pth (tags: dataset/tags.npy)",
            files={"best_model.pth": "cd22fc70cafd06f8f2bfc7dd795abccb1f4b50d5b09094c39ad100baf87475a3"},
            license="MIT (minzwon/sota-music-tagging-models, (c) 2020 Minz Won)" + _MTAT_TERMS,
            training_data="MagnaTagATune, top-50 tags (the reference's split)",
            published_metrics={"roc_auc": 0.8722, "pr_auc": 0.3625},
            reference=(
                "Choi et al., Convolutional recurrent neural networks for music classification, ICASSP 2017; "
                "Won et al., Evaluation of CNN-based automatic music tagging models, SMC 2020"
            ),
            crop_frames=1813,
        ),
        _musicnn("msd_musicnn", "musicnn", "MSD_musicnn", MSD_TOP50_TAGS, _MSD_TERMS,
                 "Million Song Dataset, top-50 Last.fm tags", {"roc_auc": 0.8802, "pr_auc": 0.2891},
                 "87f3e0f3550c8d3bafc840374003e5c8af5eeb5ecf6add61af09a7822d3282c8",
                 "8579734ee6388f799ed0def4bbd0d1fdcbeaf213ef2a9dc860917bd76a303de6"),
        _musicnn("mtt_musicnn", "musicnn", "MTT_musicnn", MTAT_TOP50_TAGS, _MTAT_TERMS,
                 "MagnaTagATune, top-50 tags", {"roc_auc": 0.9067, "pr_auc": 0.3831},
                 "da2d7bb670b2b31e9bc441bb1bd75eca31b5b061f963cc1f9630c1aff3238f57",
                 "041f3935e981a65cea739842d30c188d3a7d2adf4410955c8668eb3de4a5acab"),
        _musicnn("msd_musicnn_vgg", "musicnn_vgg", "MSD_vgg", MSD_TOP50_TAGS, _MSD_TERMS,
                 "Million Song Dataset, top-50 Last.fm tags", {"roc_auc": 0.8768, "pr_auc": 0.2819},
                 "50e499238457558bba9f34f8b84d4afb8279afd43520cdf0a4fdf805a49c9ca3",
                 "9683d756b8311146534f333502ebf4a2a78a3e320c54ab0411dff6186d8375fc"),
        _musicnn("mtt_musicnn_vgg", "musicnn_vgg", "MTT_vgg", MTAT_TOP50_TAGS, _MTAT_TERMS,
                 "MagnaTagATune, top-50 tags", {"roc_auc": 0.9030, "pr_auc": 0.3823},
                 "4b0d3d2d02bbe0919c063c1fb74bfa9018ac3517e362d681b07444d4207a5f5f",
                 "458f5c8bcecc086a3bba3dce83809df6da6e0a3560a59ddd84711bf3d5fd8303"),
    )
}  # fmt: skip
MUSICNN_MODELS = tuple(name for name, model in PUBLISHED.items() if model.checkpoint_dir)


class IntegrityError(ValueError):
    """A file whose SHA-256 is not the pinned one; the message names it."""


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def published_by_sha256(sha256: str) -> PublishedModel | None:
    """The published model one of whose files has this SHA-256, if any."""
    return next((model for model in PUBLISHED.values() if sha256 in model.files.values()), None)


def _check_sha256(path: str, expected: str, what: str):
    actual = sha256_of(path)
    if actual != expected:
        raise IntegrityError(f"{path}: SHA-256 {actual} is not the pinned {expected} of {what}; refusing to convert it")


def download_musicnn_wheel(directory: str) -> str:
    """Fetches the musicnn wheel from the package registry (pip, no dependencies).

    Raises:
        RuntimeError: pip failed, with its last words.
    """
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    result = subprocess.run([*command, "--dest", directory, MUSICNN_REQUIREMENT], capture_output=True, text=True)
    wheel = os.path.join(directory, MUSICNN_WHEEL)
    if result.returncode != 0 or not os.path.exists(wheel):
        raise RuntimeError(f"pip could not download {MUSICNN_REQUIREMENT}: {result.stderr.strip()[-1000:]}")
    return wheel


def kept_musicnn_wheel(output_dir: str) -> str:
    """The wheel in `output_dir/downloads/`, downloaded there first if missing or not the pinned one."""
    downloads = os.path.join(output_dir, DOWNLOADS_DIRNAME)
    wheel = os.path.join(downloads, MUSICNN_WHEEL)
    if not os.path.exists(wheel) or sha256_of(wheel) != MUSICNN_WHEEL_SHA256:
        os.makedirs(downloads, exist_ok=True)
        download_musicnn_wheel(downloads)
    return wheel


def extract_checkpoint(wheel: zipfile.ZipFile, model: PublishedModel, directory: str) -> str:
    checkpoint = os.path.join(directory, model.checkpoint_dir)
    os.makedirs(checkpoint, exist_ok=True)
    for name, expected in model.files.items():
        target = os.path.join(directory, name)
        with wheel.open(f"musicnn/{name}") as source, open(target, "wb") as sink:
            sink.write(source.read())
        _check_sha256(target, expected, f"{model.name}'s {name}")
    return checkpoint


def convert_musicnn(checkpoint_dir: str, model: PublishedModel, output_dir: str) -> str:
    """Converts one of the wheel's checkpoint folders into a model artifact at `output_dir`."""
    from models import artifact, convert_musicnn_lib

    for name, expected in model.files.items():
        _check_sha256(os.path.join(checkpoint_dir, os.path.basename(name)), expected, f"{model.name}'s {name}")
    variables = convert_musicnn_lib.read_checkpoint(checkpoint_dir)
    keras_model = convert_musicnn_lib.convert(variables, model.architecture, model.vocabulary)
    info = model.info(artifact.embedding_dim(keras_model), "models.convert_musicnn")
    return artifact.save(keras_model, info, output_dir)


def is_installed(model: PublishedModel, directory: str) -> bool:
    """Whether `directory` holds this model converted from the pinned files by this converter version."""
    from models import artifact

    try:
        info = artifact.read_info(directory)
    except (artifact.ArtifactError, OSError):
        return False
    provenance = info.provenance
    return bool(
        provenance
        and provenance.source_sha256 == model.files
        and provenance.converter.endswith(f" {CONVERTER_VERSION}")
        and os.path.exists(os.path.join(directory, artifact.MODEL_FILENAME))
    )


def install_musicnn(output_dir: str, wheel: str | None = None, names=MUSICNN_MODELS) -> dict[str, str]:
    """Converts the musicnn wheel's checkpoints into artifacts `output_dir/<name>/`.

    Args:
        output_dir: Where the artifacts go.
        wheel: A local copy of the wheel; default: the one kept in
            `output_dir/downloads/` by an earlier install, else downloaded
            with pip and kept there.
        names: Which of `MUSICNN_MODELS`.

    Returns:
        Name to what happened (`converted` or `already installed`).

    Raises:
        IntegrityError: The wheel or a checkpoint file is not the pinned one.
    """
    todo = [PUBLISHED[name] for name in names if not is_installed(PUBLISHED[name], os.path.join(output_dir, name))]
    done = {name: "already installed" for name in names}
    if not todo:
        return done
    wheel = wheel or kept_musicnn_wheel(output_dir)
    _check_sha256(wheel, MUSICNN_WHEEL_SHA256, MUSICNN_WHEEL)
    with tempfile.TemporaryDirectory() as scratch:
        with zipfile.ZipFile(wheel) as archive:
            for model in todo:
                checkpoint = extract_checkpoint(archive, model, scratch)
                convert_musicnn(checkpoint, model, os.path.join(output_dir, model.name))
                done[model.name] = "converted"
    return done
