"""MagnaTagATune as a catalog, following the recipe of Won et al. (2020).

`annotations_final.csv` (tab-separated: `clip_id`, 188 binary tag columns,
`mp3_path`) gives the tags. The published top-50 split of
minzwon/sota-music-tagging-models (`split/mtat/{train,valid,test}.npy`,
`tags.npy`) gives the vocabulary, its order and the splits: each element of
a split file is `"<row>\\t<mp3_path>"` where `<row>` is the 0-based data row of
`annotations_final.csv` (not the clip id). Without the split files the same
recipe is recomputed: the 50 most frequent tags, and the split by the clip's
directory (`0`-`b` train, `c` valid, `d`-`f` test).

Clips without any top-50 tag are left out of the published split; here they
are rejected with the reason `no_usable_tag`, so the counts still reconcile.
"""

from __future__ import annotations

import csv
import hashlib
import io

import numpy as np
from apache_beam.io.filesystems import FileSystems

from intake.catalog import Catalog, CatalogEntry, CatalogError, read_text, resolve_audio_uri
from intake.rejections import Rejection

NUM_TOP_TAGS = 50


def _load_npy(path: str) -> np.ndarray:
    # allow_pickle=False: the published files are plain unicode arrays; a
    # pickled object array from the internet is refused rather than executed.
    return np.load(io.BytesIO(read_text(path)), allow_pickle=False)


def split_from_directory(mp3_path: str) -> str:
    """The published split rule: directory 0-b train, c valid, d-f test."""
    directory = int(mp3_path[0], 16)
    if directory < 12:
        return "train"
    return "valid" if directory < 13 else "test"


def artist_and_album(mp3_path: str) -> tuple[str, str]:
    """Artist and album from an MTAT file name (`f/artist-album-NN-title-a-b.mp3`)."""
    parts = mp3_path.split("/")[-1].split("-")
    artist = parts[0].replace("_", " ")
    album = parts[1].replace("_", " ") if len(parts) > 1 else ""
    return artist, album


def read_mtat(annotations_path: str, audio_root: str, split_dir: str | None = None) -> tuple[Catalog, list[str]]:
    """Reads MagnaTagATune annotations as a catalog with given splits.

    Args:
        annotations_path: `annotations_final.csv`.
        audio_root: Directory holding the `0/` ... `f/` MP3 folders.
        split_dir: Directory with the published `train.npy`, `valid.npy`,
            `test.npy` and `tags.npy`; None recomputes them.

    Returns:
        The catalog (every annotation row is an entry or a rejection) and the
        top-50 vocabulary in label order.
    """
    data = read_text(annotations_path)
    reader = csv.reader(io.StringIO(data.decode("utf-8")), delimiter="\t")
    try:
        header = next(reader)
    except StopIteration as error:
        raise CatalogError(f"{annotations_path}: empty file") from error
    if len(header) < 3 or header[0] != "clip_id" or header[-1] != "mp3_path":
        raise CatalogError(f"{annotations_path}: expected columns clip_id, <tags...>, mp3_path; got {header[:3]}...")
    tag_names = header[1:-1]
    rows = [row for row in reader if row]
    for number, row in enumerate(rows, start=1):
        if len(row) != len(header):
            raise CatalogError(f"{annotations_path}: data row {number} has {len(row)} fields, expected {len(header)}")
    matrix = np.array([[int(v) for v in row[1:-1]] for row in rows], dtype=np.int64).reshape(len(rows), len(tag_names))

    if split_dir is not None:
        vocabulary = [str(t) for t in _load_npy(FileSystems.join(split_dir, "tags.npy"))]
        unknown = [t for t in vocabulary if t not in tag_names]
        if unknown:
            raise CatalogError(f"{split_dir}/tags.npy: tags {unknown} are not columns of {annotations_path}")
        split_of_row = {}
        for split in ("train", "valid", "test"):
            for element in _load_npy(FileSystems.join(split_dir, f"{split}.npy")):
                row_index, mp3_path = str(element).split("\t")
                row_index = int(row_index)
                if row_index >= len(rows) or rows[row_index][-1] != mp3_path:
                    raise CatalogError(
                        f"{split_dir}/{split}.npy: element {str(element)!r} does not match row "
                        f"{row_index} of {annotations_path}"
                    )
                split_of_row[row_index] = split
    else:
        counts = matrix.sum(axis=0)
        order = np.argsort(-counts, kind="stable")[:NUM_TOP_TAGS]
        vocabulary = [tag_names[i] for i in order]
        split_of_row = None

    columns = [tag_names.index(t) for t in vocabulary]
    entries, rejections = [], []
    for index, row in enumerate(rows):
        mp3_path = row[-1]
        tags = tuple(vocabulary[k] for k, column in enumerate(columns) if matrix[index, column])
        artist, album = artist_and_album(mp3_path)
        if split_of_row is not None:
            split = split_of_row.get(index)
        else:
            split = split_from_directory(mp3_path)
        if not tags:
            rejections.append(Rejection(index + 1, row[0], mp3_path, "no_usable_tag", "no top-50 tag"))
            continue
        if split is None:
            rejections.append(
                Rejection(index + 1, row[0], mp3_path, "invalid_row", "not in the published train/valid/test split")
            )
            continue
        entries.append(
            CatalogEntry(
                row=index + 1,
                track_id=row[0],
                path=mp3_path,
                uri=resolve_audio_uri(mp3_path, audio_root),
                artist=artist,
                album=album,
                title=mp3_path.split("/")[-1].rsplit(".", 1)[0],
                tags=tags,
                split=split,
            )
        )
    catalog = Catalog(
        source=annotations_path,
        sha256=hashlib.sha256(data).hexdigest(),
        num_rows=len(rows),
        entries=tuple(entries),
        rejections=tuple(rejections),
        audio_root=audio_root,
        format="mtat",
    )
    return catalog, vocabulary
