"""Track-level metrics equal scikit-learn's."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from train import metrics


@pytest.mark.parametrize("seed", range(5))
def test_macro_metrics_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = (rng.random((60, 7)) < 0.3).astype(int)
    labels[0, :] = 1  # Every tag has a positive ...
    labels[1, :] = 0  # ... and a negative.
    scores = np.round(rng.random((60, 7)), 1)  # Rounding creates ties.
    result = metrics.tag_metrics(labels, scores, [f"t{i}" for i in range(7)])
    assert result.macro_roc_auc == pytest.approx(roc_auc_score(labels, scores, average="macro"), abs=1e-12)
    assert result.macro_pr_auc == pytest.approx(average_precision_score(labels, scores, average="macro"), abs=1e-12)
    for tag in range(7):
        assert result.roc_auc[tag] == pytest.approx(roc_auc_score(labels[:, tag], scores[:, tag]), abs=1e-12)
        assert result.pr_auc[tag] == pytest.approx(average_precision_score(labels[:, tag], scores[:, tag]), abs=1e-12)
    assert result.undefined_tags == []


def test_tags_without_positives_or_negatives_are_reported_and_left_out():
    labels = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]])
    scores = np.array([[0.9, 0.2, 0.5], [0.1, 0.3, 0.4], [0.8, 0.1, 0.6], [0.3, 0.9, 0.2]])
    result = metrics.tag_metrics(labels, scores, ["rock", "jazz", "pop"])
    assert result.undefined_tags == ["jazz", "pop"]
    assert np.isnan(result.roc_auc[1]) and np.isnan(result.pr_auc[2])
    assert result.macro_roc_auc == pytest.approx(roc_auc_score(labels[:, :1], scores[:, :1], average="macro"))
    assert result.macro_roc_auc == 1.0


def test_shape_mismatch():
    with pytest.raises(ValueError, match="tracks"):
        metrics.tag_metrics(np.zeros((3, 2)), np.zeros((3, 3)), ["a", "b"])
