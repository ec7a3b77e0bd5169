"""The dataset's split names, in order: one definition for the pipeline that writes them and every reader.

Imports nothing heavy: binaries check a `--split` flag against it before TensorFlow loads.
"""

from __future__ import annotations

SPLITS = ("train", "valid", "test")
