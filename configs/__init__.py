"""Packaged gin configs: `python -m train --config=crnn.gin` finds them here.

Top-level experiments (`crnn.gin`, `short_chunk_res.gin`, ...) include one
file from each of `model/`, `dataset/` and `optimization/`.
"""

import pathlib

CONFIG_DIR = pathlib.Path(__file__).resolve().parent
