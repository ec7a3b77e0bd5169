"""The files of an index folder, the choices a build records, and the check that an index is there.

Nothing heavy is imported here: binaries define their flags from it and check
their arguments before they load TensorFlow or ScaNN.

`serving.retrieval.catalog_index` writes and reads these files;
`serving.retrieval.sharded_index` lists shards in `shards.json`. Binaries
call `require_index` before they load TensorFlow or ScaNN, so a mistyped
`--index_dir` is answered at once, with the message loading it would give.
"""

from __future__ import annotations

import os

INFO_FILENAME = "catalog_index.json"
SHARDS_FILENAME = "shards.json"  # Lists the shards of a sharded index (`serving.retrieval.sharded_index`).
PREVIOUS_SUFFIX = ".old"  # An index a crash left moved aside during a save (restored by the next load).
SEARCHER_KINDS = ("brute_force", "ah", "tree_ah")  # The ScaNN configurations (`serving.retrieval.searcher`).
TRACKS_PER_BATCH = 8  # Tracks of one length the embedding job sends through a model at once, by default.
# An index built from a folder of music records the folder, which its track paths are relative to: the web app
# plays them from there unless `--audio_root` says otherwise.
AUDIO_ROOT_FILENAME = "audio_root.txt"


def no_index_error(directory: str) -> FileNotFoundError:
    return FileNotFoundError(f"{directory}: no {INFO_FILENAME}; build one with `python -m serving.build_index`")


def require_index(directory: str) -> None:
    """Raises `no_index_error` unless `directory` holds an index (one, sharded, or one a crash moved aside)."""
    previous = os.path.normpath(directory) + PREVIOUS_SUFFIX
    if not any(
        os.path.exists(path)
        for path in (
            os.path.join(directory, INFO_FILENAME),
            os.path.join(directory, SHARDS_FILENAME),
            os.path.join(previous, INFO_FILENAME),
        )
    ):
        raise no_index_error(directory)


def write_audio_root(directory: str, audio_root: str) -> None:
    """Records the folder the index's track paths are relative to (`recorded_audio_root` reads it)."""
    temporary = os.path.join(directory, AUDIO_ROOT_FILENAME + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(os.path.abspath(audio_root) + "\n")
    os.replace(temporary, os.path.join(directory, AUDIO_ROOT_FILENAME))


def recorded_audio_root(directory: str) -> str | None:
    """The folder an index built from a folder of music recorded (None for an index built otherwise)."""
    try:
        with open(os.path.join(directory, AUDIO_ROOT_FILENAME), encoding="utf-8") as handle:
            return handle.read().strip() or None
    except FileNotFoundError:
        return None
