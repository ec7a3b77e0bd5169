"""How the project's binaries start TensorFlow: quietly, and without noise where there is no NVIDIA GPU.

Every binary imports this module first (ruff's import order puts it there:
see `[tool.ruff.lint.isort]` in pyproject.toml) and hands its `main` to `run`:

    from tf_startup import run
    ...
    if __name__ == "__main__":
        run(main)

Importing it keeps TensorFlow's C++ log at warnings and above
(`TF_CPP_MIN_LOG_LEVEL=2` unless set), which must happen before TensorFlow is
imported; `run` then initialises TensorFlow's devices without the CUDA
probe's error on machines that cannot have a GPU, and runs `main` with
`absl.app.run`.

TensorFlow's pip build probes for CUDA when it first enumerates devices and,
on a machine without an NVIDIA driver, logs `failed call to cuInit: ...
UNKNOWN ERROR (303)` at error level: newcomers read it as a failure. Importing
TensorFlow (and Keras, ScaNN, Beam) does not enumerate devices; `run` does so
first, on a machine without NVIDIA device nodes with standard error pointed at
/dev/null for that one call, so the probe's message (about a GPU that cannot
exist there) is dropped and nothing else is. Where an NVIDIA device exists,
nothing is hidden: its messages may matter.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def has_nvidia_device(dev_dir: str = "/dev") -> bool:
    """Whether the machine exposes an NVIDIA device node (`/dev/nvidia0`, `/dev/nvidiactl`, ...)."""
    try:
        return any(name.startswith("nvidia") for name in os.listdir(dev_dir))
    except OSError:
        return True  # Unknown: hide nothing.


def silence_cuda_probe() -> None:
    """Enumerates TensorFlow's devices now, without the CUDA probe's error where no NVIDIA GPU can exist."""
    if has_nvidia_device():
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        # Imported here: once absl has parsed the flags (a binary's `main` loads TensorFlow after its checks),
        # importing TensorFlow itself runs the probe. A Python error still raises, after the redirect ends.
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def load_tensorflow() -> None:
    """What a binary calls when it starts the real work, after checking its flags: loads TensorFlow quietly.

    Binaries import TensorFlow (and Beam, ScaNN) inside `main`, not at the top, so `--help` and usage
    errors answer at once; this loads it first, without the CUDA probe's noise (`silence_cuda_probe`).
    """
    silence_cuda_probe()


def run(main, **absl_run_kwargs) -> None:
    """What every binary's `__main__` block calls: `silence_cuda_probe`, then `absl.app.run(main, ...)`.

    A binary that never imports TensorFlow (the Spotify collector) does not
    pay for importing it here.
    """
    from absl import app

    if "tensorflow" in sys.modules:
        silence_cuda_probe()
    app.run(main, **absl_run_kwargs)
