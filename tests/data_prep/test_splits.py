"""Deterministic, artist-disjoint, stratified splits."""

from __future__ import annotations

import collections
import os
import subprocess
import sys

import pytest
from absl import flags

from data_prep.splits import assign_splits, check_split_fractions_flag, stable_hash
from intake.catalog import CatalogEntry


def _catalog(num_artists=40, tracks_per_artist=5, tags=("rock", "jazz", "pop", "rare")):
    entries = []
    for a in range(num_artists):
        for t in range(tracks_per_artist):
            tag = tags[a % 3] if a % 13 else "rare"
            entries.append(
                CatalogEntry(
                    row=len(entries) + 1, track_id=f"a{a}-t{t}", path="p", uri="p", artist=f"Artist {a}", tags=(tag,)
                )
            )
    return entries


def test_artist_disjoint_and_close_to_fractions():
    entries = _catalog()
    split_of = assign_splits(entries, ["rock", "jazz", "pop", "rare"], split_by="artist")
    artists = collections.defaultdict(set)
    for e in entries:
        artists[e.artist].add(split_of[e.track_id])
    assert all(len(s) == 1 for s in artists.values())
    counts = collections.Counter(split_of.values())
    assert counts["train"] == pytest.approx(160, abs=10) and counts["valid"] == pytest.approx(20, abs=5)
    for tag in ("rock", "jazz", "pop", "rare"):
        tagged = {split_of[e.track_id] for e in entries if tag in e.tags}
        assert "train" in tagged, tag
    rare = collections.Counter(split_of[e.track_id] for e in entries if "rare" in e.tags)
    assert len(rare) >= 2  # 4 artists carry the rare tag: not all in one split.


def test_deterministic_and_independent_of_row_order():
    entries = _catalog()
    vocabulary = ["rock", "jazz", "pop", "rare"]
    first = assign_splits(entries, vocabulary)
    assert assign_splits(list(reversed(entries)), vocabulary) == first
    assert assign_splits(entries, vocabulary, seed=1) != first


def test_track_split_and_given_split_wins():
    entries = _catalog(num_artists=4, tracks_per_artist=10)
    entries[0] = CatalogEntry(
        row=1, track_id="a0-t0", path="p", uri="p", artist="Artist 0", tags=("rare",), split="test"
    )
    split_of = assign_splits(entries, ["rock", "jazz", "pop", "rare"], split_by="track")
    assert split_of["a0-t0"] == "test"
    assert len({split_of[e.track_id] for e in entries if e.artist == "Artist 1"}) > 1
    by_artist = assign_splits(entries, ["rock", "jazz", "pop", "rare"], split_by="artist")
    assert {by_artist[e.track_id] for e in entries if e.artist == "Artist 0"} == {"test"}
    entries[1] = CatalogEntry(
        row=2, track_id="a0-t1", path="p", uri="p", artist="Artist 0", tags=("rare",), split="valid"
    )
    entries[2] = CatalogEntry(
        row=3, track_id="a0-t2", path="p", uri="p", artist="Artist 0", tags=("rare",), split="valid"
    )
    conflicting = assign_splits(entries, ["rock", "jazz", "pop", "rare"], split_by="artist")
    assert conflicting["a0-t0"] == "test"  # A given split is never overridden ...
    assert conflicting["a0-t1"] == conflicting["a0-t2"] == "valid"
    assert {conflicting[e.track_id] for e in entries[3:10]} == {"valid"}  # ... the rest follows the majority.


def test_given_requires_every_split_and_bad_arguments():
    entries = _catalog(num_artists=2, tracks_per_artist=1)
    with pytest.raises(ValueError, match="no split"):
        assign_splits(entries, [], split_by="given")
    with pytest.raises(ValueError, match="split_by"):
        assign_splits(entries, [], split_by="album")
    with pytest.raises(ValueError, match="fractions"):
        assign_splits(entries, [], fractions=(1.0, -0.5, 0.5))


def test_stable_hash_does_not_depend_on_the_process():
    code = "from data_prep.splits import stable_hash; print(stable_hash('artist:x', 3))"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert outputs == {str(stable_hash("artist:x", 3))}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["0.5", "0.5", "0.2"], "must add up to 1; these add up to 1.2"),
        (["0.8", "0.2"], "give three numbers"),
        (["0.8", "-0.1", "0.3"], "give three numbers from 0 on"),
        (["a", "b", "c"], "a,b,c are not three numbers"),
    ],
)
def test_split_fractions_flag_says_what_is_wrong(values, message):
    with pytest.raises(flags.ValidationError, match=message):
        check_split_fractions_flag(values)
    assert check_split_fractions_flag(["0.5", "0.25", "0.25"]) and check_split_fractions_flag(["1", "0", "0"])
