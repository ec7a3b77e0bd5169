"""How the project's binaries start TensorFlow: quietly, and without noise where there is no NVIDIA GPU.

Every binary runs, before anything it imports can import TensorFlow:

    from tfrecords import tf_startup

    tf_startup.quiet_start()

which keeps TensorFlow's C++ log at warnings and above (`TF_CPP_MIN_LOG_LEVEL=2`
unless set) and initialises its devices at once, without the CUDA probe's
error on machines that cannot have a GPU.

TensorFlow's pip build probes for CUDA when it first enumerates devices and,
on a machine without an NVIDIA driver, logs `failed call to cuInit: ...
UNKNOWN ERROR (303)` at error level: newcomers read it as a failure. Every
binary calls `quiet_start()` before TensorFlow is imported; on a machine
without NVIDIA device nodes it enumerates the devices with standard error
pointed at /dev/null for that one call, so the probe's message (about a GPU
that cannot exist there) is dropped and nothing else is. Where an NVIDIA
device exists, nothing is hidden: its messages may matter.
"""

from __future__ import annotations

import os
import sys


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
    import tensorflow as tf

    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_start() -> None:
    """What every binary does first: TensorFlow's C++ log at warnings and above, then `silence_cuda_probe`."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    silence_cuda_probe()
