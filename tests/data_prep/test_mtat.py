"""MagnaTagATune annotations and the published Won et al. split files."""

from __future__ import annotations

import numpy as np
import pytest

from data_prep import mtat
from intake.catalog import CatalogError

TAGS = ["guitar", "classical", "slow", "techno"]
ROWS = [
    # clip_id, tag flags, mp3_path
    ("2", [1, 1, 0, 0], "f/american_bach_soloists-j_s__bach_solo_cantatas-01-bwv54__i_aria-30-59.mp3"),
    ("6", [0, 1, 1, 0], "0/jacob_heringman-josquin-01-a_la_mignonne-0-29.mp3"),
    ("10", [0, 0, 0, 0], "0/jacob_heringman-josquin-02-b-0-29.mp3"),
    ("11", [1, 0, 0, 1], "c/some_artist-some_album-03-track-30-59.mp3"),
    ("12", [1, 0, 1, 0], "b/other_artist-other_album-04-x-0-29.mp3"),
]


@pytest.fixture
def annotations(tmp_path):
    lines = ["\t".join(["clip_id", *TAGS, "mp3_path"])]
    lines += ["\t".join([clip, *map(str, flags), path]) for clip, flags, path in ROWS]
    path = tmp_path / "annotations_final.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_recomputed_recipe(annotations, tmp_path):
    catalog, vocabulary = mtat.read_mtat(str(annotations), str(tmp_path / "mp3"))
    assert vocabulary == ["guitar", "classical", "slow", "techno"]  # By count, ties in column order.
    assert catalog.num_rows == 5
    by_id = {e.track_id: e for e in catalog.entries}
    assert by_id["2"].split == "test" and by_id["6"].split == "train" and by_id["11"].split == "valid"
    assert by_id["12"].split == "train"
    assert by_id["2"].tags == ("guitar", "classical")
    assert by_id["2"].artist == "american bach soloists" and by_id["2"].album == "j s  bach solo cantatas"
    assert by_id["6"].uri == str(tmp_path / "mp3" / ROWS[1][2])
    assert [(r.track_id, r.reason) for r in catalog.rejections] == [("10", "no_usable_tag")]


def test_published_split_files(annotations, tmp_path):
    split_dir = tmp_path / "split"
    split_dir.mkdir()
    np.save(split_dir / "tags.npy", np.array(["slow", "guitar"]))
    np.save(split_dir / "train.npy", np.array([f"1\t{ROWS[1][2]}", f"4\t{ROWS[4][2]}"]))
    np.save(split_dir / "valid.npy", np.array([f"3\t{ROWS[3][2]}"]))
    np.save(split_dir / "test.npy", np.array([], dtype="<U10"))
    catalog, vocabulary = mtat.read_mtat(str(annotations), str(tmp_path), str(split_dir))
    assert vocabulary == ["slow", "guitar"]
    assert {e.track_id: e.split for e in catalog.entries} == {"6": "train", "12": "train", "11": "valid"}
    assert {e.track_id: e.tags for e in catalog.entries}["12"] == ("slow", "guitar")
    reasons = {r.track_id: r.reason for r in catalog.rejections}
    assert reasons == {"2": "invalid_row", "10": "no_usable_tag"}
    assert len(catalog.entries) + len(catalog.rejections) == catalog.num_rows


def test_split_file_that_does_not_match_the_annotations(annotations, tmp_path):
    split_dir = tmp_path / "split"
    split_dir.mkdir()
    np.save(split_dir / "tags.npy", np.array(["slow"]))
    np.save(split_dir / "train.npy", np.array(["1\tf/wrong.mp3"]))
    np.save(split_dir / "valid.npy", np.array([], dtype="<U4"))
    np.save(split_dir / "test.npy", np.array([], dtype="<U4"))
    with pytest.raises(CatalogError, match="does not match row 1"):
        mtat.read_mtat(str(annotations), str(tmp_path), str(split_dir))


def test_pickled_split_files_are_refused(annotations, tmp_path):
    split_dir = tmp_path / "split"
    split_dir.mkdir()
    np.save(split_dir / "tags.npy", np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        mtat.read_mtat(str(annotations), str(tmp_path), str(split_dir))


def test_wrong_header(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("id\tx\tpath\n1\t0\ta.mp3\n")
    with pytest.raises(CatalogError, match="clip_id"):
        mtat.read_mtat(str(path), str(tmp_path))
