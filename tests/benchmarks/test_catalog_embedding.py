"""benchmarks.catalog_embedding: agreement with the baseline and the reduced-precision retrieval check."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from benchmarks import catalog_embedding, layer_profile, preprocess_throughput
from intake.catalog import Catalog, CatalogEntry, read_catalog

ALBUMS = 6
TRACKS_PER_ALBUM = 5


def _catalog() -> Catalog:
    entries = tuple(
        CatalogEntry(row=i + 1, track_id=f"t{i:02d}", path="", uri="", tags=(f"album{i // TRACKS_PER_ALBUM}",))
        for i in range(ALBUMS * TRACKS_PER_ALBUM)
    )
    return Catalog("catalog.csv", "", len(entries), entries, ())


def _row(embeddings: np.ndarray) -> catalog_embedding.Row:
    ids = [f"t{i:02d}" for i in range(len(embeddings))]
    tags = {i: np.full(3, 0.5) for i in ids}
    return catalog_embedding.Row("system", len(ids), 1.0, dict(zip(ids, embeddings, strict=True)), tags)


def _clustered(rng, noise: float) -> np.ndarray:
    centres = rng.normal(size=(ALBUMS, 16))
    return np.repeat(centres, TRACKS_PER_ALBUM, axis=0) + noise * rng.normal(size=(ALBUMS * TRACKS_PER_ALBUM, 16))


def test_the_same_embeddings_agree_fully_and_pass_the_check():
    rng = np.random.default_rng(0)
    reference = _row(_clustered(rng, 0.3))
    rounded = _row(np.array(list(reference.embeddings.values())) * (1 + 1e-7))
    tag_difference, cosine, identical = catalog_embedding.agreement(rounded, reference)
    assert tag_difference == 0.0 and cosine > 0.999999 and identical == 1.0
    check = catalog_embedding.reduced_precision_check(rounded, reference, _catalog())
    assert check.top10_overlap == 1.0 and check.holds
    assert check.reference.precision == pytest.approx(0.8)  # Each finds the 4 others of its album in its top 5.


def test_embeddings_that_lose_the_albums_fail_the_check():
    rng = np.random.default_rng(1)
    reference = _row(_clustered(rng, 0.3))
    scrambled = _row(rng.normal(size=(ALBUMS * TRACKS_PER_ALBUM, 16)))
    check = catalog_embedding.reduced_precision_check(scrambled, reference, _catalog())
    assert check.top10_overlap < 0.95 and not check.holds
    difference, low, high = check.difference
    assert difference < 0 and high < 0
    tag_difference, cosine, identical = catalog_embedding.agreement(scrambled, reference)
    assert tag_difference == 0.0 and cosine < 0.9 and identical < 0.5


def test_a_catalog_without_tags_cannot_be_checked():
    rng = np.random.default_rng(2)
    reference = _row(_clustered(rng, 0.3))
    untagged = Catalog("c.csv", "", 1, tuple(CatalogEntry(1, e.track_id, "", "") for e in _catalog().entries), ())
    assert catalog_embedding.reduced_precision_check(reference, reference, untagged) is None
    assert "no tags" in catalog_embedding.bfloat16_note(None, native=False)


def test_the_target_is_judged_on_the_shipped_precision():
    """Float32 shipped: the ratio and exact agreement; bfloat16 shipped: its own speed and the retrieval check."""
    rng = np.random.default_rng(3)
    embeddings = _clustered(rng, 0.3)
    baseline, inference = _row(embeddings), _row(embeddings * (1 + 1e-7))
    inference = catalog_embedding.Row("float32", inference.tracks, 0.5, inference.embeddings, inference.tags)
    faster = catalog_embedding.Row("bfloat16", inference.tracks, 0.25, inference.embeddings, inference.tags)
    holds = catalog_embedding.reduced_precision_check(faster, inference, _catalog())
    note = catalog_embedding.target_note("float32", inference, inference, baseline, holds)
    assert "2.00x (not met)" in note and "float32 outputs agree" in note and "NOT AGREEING" not in note
    note = catalog_embedding.target_note("bfloat16", faster, inference, baseline, holds)
    assert "4.00x (met)" in note and "float32 inference graphs alone 2.00x" in note and "check holds" in note
    scrambled = _row(rng.normal(size=embeddings.shape))
    fails = catalog_embedding.reduced_precision_check(scrambled, inference, _catalog())
    note = catalog_embedding.target_note("bfloat16", faster, inference, baseline, fails)
    assert "DOES NOT HOLD" in note and "NOT AGREEING" in note


def _timed(tracks_per_s: float) -> catalog_embedding.Row:
    return catalog_embedding.Row("system", 100, 100 / tracks_per_s, {}, {})


def test_the_target_is_set_against_what_the_arithmetic_allows():
    # 64 GFLOP a track at 320 GFLOP/s: 200 ms of arithmetic; decoding 40 ms of one core, 20 ms of two.
    floor = layer_profile.ArithmeticFloor({"a": 32 * 10**9, "b": 32 * 10**9}, "bfloat16", 320.0)
    baseline = _timed(1.0)  # 2.5x is 400 ms a track: 380 ms for the models, 53 % of the rate.
    note = catalog_embedding.floor_note(floor, 0.040, baseline, _timed(2.0), cores=2)
    assert "2.5x the baseline is 400 ms per track" in note and "at 53% of the matrix-product rate" in note
    assert "runs them at 42% of it (500 ms per track)" in note and "reach 4.55x the baseline" in note
    assert "no formulation" not in note
    fast_baseline = _timed(2.0)  # 2.5x is 200 ms a track: less than the arithmetic alone.
    note = catalog_embedding.floor_note(floor, 0.040, fast_baseline, _timed(3.0), cores=2)
    assert "at 111% of the matrix-product rate" in note and "no formulation of this arithmetic meets" in note
    assert "reach 2.27x the baseline" in note


def test_decoding_is_timed_on_the_catalogs_real_audio():
    path, _ = preprocess_throughput.find_catalog()
    catalog = read_catalog(path)
    few = dataclasses.replace(catalog, entries=catalog.entries[:3])
    seconds = catalog_embedding.decode_seconds_per_track(few, 16000)
    assert 0.0 < seconds < 30.0  # A 30 s excerpt decodes faster than it plays.
