"""The album split the training-without-tags benchmarks report on: fixed, untagged, album-disjoint."""

from __future__ import annotations

import collections
import csv

from benchmarks import album_split
from tests.conftest import DEMO_CATALOG


def test_unseen_albums_are_test_and_every_seventh_training_track_validates():
    assert all(album_split.split_of(album, i) == "test" for album in album_split.UNSEEN_ALBUMS for i in range(20))
    splits = [album_split.split_of("Colobot", i) for i in range(21)]
    assert splits.count("valid") == 3 and splits.count("train") == 18 and splits[3] == "valid"


def test_the_written_catalog_has_no_tags_and_keeps_albums_whole(tmp_path):
    path = tmp_path / "split.csv"
    albums = album_split.write_catalog(str(path), DEMO_CATALOG)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert "tags" not in rows[0] and len(rows) == len(albums) == 16
    splits_of_album = collections.defaultdict(set)
    for row in rows:
        splits_of_album[row["album"]].add(row["split"])
        assert albums[row["track_id"]] == row["album"]
    for album, splits in splits_of_album.items():
        assert splits == {"test"} if album in album_split.UNSEEN_ALBUMS else "test" not in splits
    assert album_split.write_catalog(str(tmp_path / "again.csv"), DEMO_CATALOG) == albums
    assert (tmp_path / "again.csv").read_bytes() == path.read_bytes()  # Deterministic.
