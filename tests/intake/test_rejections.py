"""The one rejection-record format: reasons, JSON lines, `rejected.csv`."""

from __future__ import annotations

import pytest

from intake import rejections
from intake.rejections import REASONS, Rejection, register_reasons, rejections_from_csv, rejections_to_csv


def test_unknown_reasons_are_refused():
    with pytest.raises(ValueError, match="unknown rejection reason 'typo'"):
        Rejection(1, "t", "a.mp3", "typo", "")


def test_a_later_stage_registers_its_own_reasons_once():
    register_reasons({"test_only_reason": "used by this test"})
    register_reasons({"test_only_reason": "used by this test"})  # The same meaning again: fine.
    assert Rejection(1, "t", "a.mp3", "test_only_reason", "").reason in REASONS
    with pytest.raises(ValueError, match="already registered"):
        register_reasons({"silent": "another meaning"})


def test_the_embedding_jobs_reasons_are_its_own():
    from serving.retrieval import embedding_job  # noqa: F401 - registers its reasons on import.

    assert {"model_error", "incomplete_features"} <= set(REASONS)
    source = rejections.__file__
    with open(source, encoding="utf-8") as handle:
        assert "model_error" not in handle.read()  # Defined by the stage that rejects for it.


def test_json_lines_and_csv_round_trip():
    rows = [
        Rejection(3, "b", "b.mp3", "silent", 'peak level -90.0 dBFS, with "quotes", commas\nand a newline'),
        Rejection(1, "a", "ä.mp3", "missing_file", "no such file"),
    ]
    assert [Rejection.from_json(r.to_json()) for r in rows] == rows
    text = rejections_to_csv(rows)
    assert text.splitlines()[0] == "row,track_id,path,reason,detail"
    assert rejections_from_csv(text) == sorted(rows, key=lambda r: r.row)
