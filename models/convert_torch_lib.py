"""Loads the reference's PyTorch checkpoints into the Keras taggers.

minzwon/sota-music-tagging-models publishes MagnaTagATune checkpoints
(`best_model.pth`, a `state_dict`) for its models. This maps such a state dict
onto `models.get_model(...)`: convolution kernels `[out, in, kh, kw]` become
`[kh, kw, in, out]` (the Keras models keep the reference's frequency-by-time
orientation, so no spatial flip is needed), dense weights are transposed,
batch-norm running statistics are kept, and GRU gates are reordered from
PyTorch's (reset, update, new) to Keras' (update, reset, new).

Reading never unpickles arbitrary objects: `torch.load(weights_only=True)`.
PyTorch is only needed here (`pip install -e ".[torch]"`).
"""

from __future__ import annotations

import keras
import numpy as np
from absl import logging

import models
from features.logmel import LogMelSpec, mel_filterbank
from models import pretrained
from models.vocabularies import MTAT_TOP50_TAGS

# The reference architectures this converter maps.
ARCHITECTURES = pretrained.TORCH_ARCHITECTURES

# State-dict entries that carry no weights of the Keras models: the
# torchaudio front end's buffers (checked separately) and batch counters.
_IGNORED_SUFFIXES = ("num_batches_tracked",)
_FRONT_END_KEYS = ("spec.mel_scale.fb", "spec.spectrogram.window")


class ConversionError(ValueError):
    """A checkpoint that does not fit the requested model."""


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """Reads a PyTorch checkpoint safely into NumPy arrays.

    Args:
        path: A `.pth` file holding a `state_dict` (optionally wrapped in
            `{"state_dict": ...}` or saved from `nn.DataParallel`).

    Returns:
        Parameter name to float array.

    Raises:
        ImportError: With installation advice, when PyTorch is missing.
    """
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            "converting PyTorch checkpoints needs PyTorch: pip install -e '.[torch]' "
            "(or pip install torch --index-url https://download.pytorch.org/whl/cpu)"
        ) from error
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(loaded, dict) and "state_dict" in loaded and isinstance(loaded["state_dict"], dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise ConversionError(f"{path}: expected a state_dict, got {type(loaded).__name__}")
    return {key.removeprefix("module."): value.detach().cpu().numpy() for key, value in loaded.items()}


def _take(state: dict[str, np.ndarray], used: set[str], key: str) -> np.ndarray:
    if key not in state:
        raise ConversionError(f"the checkpoint has no {key!r}")
    used.add(key)
    return state[key]


def _assign(variable, value: np.ndarray, key: str):
    if tuple(variable.shape) != value.shape:
        raise ConversionError(f"{key}: checkpoint shape {value.shape} does not fit {tuple(variable.shape)}")
    variable.assign(value.astype(np.float32))


def _load_conv(layer: keras.layers.Conv2D, state, used, prefix: str):
    _assign(layer.kernel, np.transpose(_take(state, used, prefix + ".weight"), (2, 3, 1, 0)), prefix + ".weight")
    _assign(layer.bias, _take(state, used, prefix + ".bias"), prefix + ".bias")


def _load_batch_norm(layer: keras.layers.BatchNormalization, state, used, prefix: str):
    for variable, name in (
        (layer.gamma, "weight"),
        (layer.beta, "bias"),
        (layer.moving_mean, "running_mean"),
        (layer.moving_variance, "running_var"),
    ):
        _assign(variable, _take(state, used, f"{prefix}.{name}"), f"{prefix}.{name}")


def _load_dense(layer: keras.layers.Dense, state, used, prefix: str):
    _assign(layer.kernel, _take(state, used, prefix + ".weight").T, prefix + ".weight")
    _assign(layer.bias, _take(state, used, prefix + ".bias"), prefix + ".bias")


def _reorder_gates(matrix: np.ndarray) -> np.ndarray:
    """PyTorch (r, z, n) blocks along axis 0 -> Keras (z, r, n)."""
    reset, update, new = np.split(matrix, 3, axis=0)
    return np.concatenate([update, reset, new], axis=0)


def _load_gru(layer: keras.layers.GRU, state, used, prefix: str, index: int):
    cell = layer.cell
    w_ih = _take(state, used, f"{prefix}.weight_ih_l{index}")
    w_hh = _take(state, used, f"{prefix}.weight_hh_l{index}")
    b_ih = _take(state, used, f"{prefix}.bias_ih_l{index}")
    b_hh = _take(state, used, f"{prefix}.bias_hh_l{index}")
    _assign(cell.kernel, _reorder_gates(w_ih).T, f"{prefix}.weight_ih_l{index}")
    _assign(cell.recurrent_kernel, _reorder_gates(w_hh).T, f"{prefix}.weight_hh_l{index}")
    _assign(cell.bias, np.stack([_reorder_gates(b_ih), _reorder_gates(b_hh)]), f"{prefix}.bias_l{index}")


def _check_front_end(state, used, n_mels: int):
    """The checkpoint's torchaudio filterbank must be ours: otherwise the
    weights were trained on different inputs and would silently misbehave."""
    for key in _FRONT_END_KEYS:
        if key in state:
            used.add(key)
    if "spec.mel_scale.fb" not in state:
        logging.warning("the checkpoint has no spec.mel_scale.fb: its front end cannot be checked")
    else:
        theirs = state["spec.mel_scale.fb"]
        ours = mel_filterbank(LogMelSpec(n_mels=n_mels))
        if theirs.shape != ours.shape or np.abs(theirs - ours).max() > 1e-4:
            raise ConversionError(
                f"the checkpoint's mel filterbank {theirs.shape} differs from this project's front end "
                f"{ours.shape}; the weights would not transfer"
            )


def convert(state: dict[str, np.ndarray], model_name: str, vocabulary: list[str] | None = None) -> keras.Model:
    """Builds a Keras tagger holding a reference state dict's weights.

    Args:
        state: From `load_state_dict`.
        model_name: `crnn`, `short_chunk_cnn` or `short_chunk_res`.
        vocabulary: Tag names in label order; defaults to the MagnaTagATune
            top 50 when the checkpoint has 50 outputs.

    Returns:
        The Keras model in inference state (its weights loaded).

    Raises:
        ConversionError: On missing, unexpected or misshapen parameters.
    """
    if model_name not in ARCHITECTURES:
        raise ConversionError(f"{model_name!r} is not a reference architecture; choose one of {ARCHITECTURES}")
    head_key = "dense" if model_name == "crnn" else "dense2"
    if f"{head_key}.weight" not in state:
        raise ConversionError(f"the checkpoint has no {head_key}.weight: not a {model_name} checkpoint")
    num_tags = state[f"{head_key}.weight"].shape[0]
    if vocabulary is None and num_tags == len(MTAT_TOP50_TAGS):
        vocabulary = list(MTAT_TOP50_TAGS)
    n_mels = models.DEFAULT_N_MELS[model_name]
    model = models.get_model(model_name, num_tags, vocabulary=vocabulary, n_mels=n_mels)
    used: set[str] = set()
    _check_front_end(state, used, n_mels)
    _load_batch_norm(model.get_layer("spec_bn"), state, used, "spec_bn")
    if model_name == "crnn":
        for index in range(1, 5):
            block = model.get_layer(f"layer{index}")
            _load_conv(block.conv, state, used, f"layer{index}.conv")
            _load_batch_norm(block.bn, state, used, f"layer{index}.bn")
        _load_gru(model.get_layer("gru_1"), state, used, "layer5", 0)
        _load_gru(model.get_layer("gru_2"), state, used, "layer5", 1)
    else:
        for index in range(1, 8):
            block = model.get_layer(f"layer{index}")
            prefix = f"layer{index}"
            if model_name == "short_chunk_res":
                for part in ("1", "2", "3"):
                    conv, bn = getattr(block, f"conv_{part}"), getattr(block, f"bn_{part}")
                    if conv is None:
                        continue
                    _load_conv(conv, state, used, f"{prefix}.conv_{part}")
                    _load_batch_norm(bn, state, used, f"{prefix}.bn_{part}")
            else:
                _load_conv(block.conv, state, used, f"{prefix}.conv")
                _load_batch_norm(block.bn, state, used, f"{prefix}.bn")
        _load_dense(model.get_layer("dense1"), state, used, "dense1")
        _load_batch_norm(model.get_layer("bn"), state, used, "bn")
    _load_dense(model.get_layer(models.TAGS).dense, state, used, head_key)
    unexpected = sorted(k for k in state if k not in used and not k.endswith(_IGNORED_SUFFIXES))
    if unexpected:
        raise ConversionError(f"the checkpoint has parameters this {model_name} does not: {unexpected[:8]}")
    return model
