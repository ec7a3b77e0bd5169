"""Track-level tagging metrics: macro ROC-AUC and PR-AUC.

The definitions are scikit-learn's (`roc_auc_score(average='macro')`,
`average_precision_score(average='macro')`), written in NumPy so that the
training loop needs no scikit-learn and so that tags without both positives
and negatives in a split are handled explicitly: scikit-learn raises for
ROC-AUC and silently scores such a tag 0 for average precision; here they
are left out of the macro averages and reported by name.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of one tag (ties count half), as sklearn.

    Args:
        labels: Binary vector with at least one positive and one negative.
        scores: Scores of the same length.
    """
    labels = labels.astype(bool)
    positives, negatives = labels.sum(), (~labels).sum()
    ranks = _average_ranks(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _average_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [scores.size]])
    ranks = np.empty(scores.size, dtype=np.float64)
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + 1 + end) / 2.0
    return ranks


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision of one tag, as sklearn: sum over thresholds of
    (recall_n - recall_{n-1}) * precision_n, thresholds at distinct scores."""
    labels = labels.astype(bool)
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_labels = scores[order], labels[order]
    threshold_ends = np.concatenate([np.flatnonzero(np.diff(sorted_scores)), [scores.size - 1]])
    true_positives = np.cumsum(sorted_labels)[threshold_ends]
    predicted = threshold_ends + 1
    precision = true_positives / predicted
    recall = true_positives / labels.sum()
    recall_steps = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(recall_steps * precision))


@dataclasses.dataclass(frozen=True)
class TagMetrics:
    """Per-tag and macro metrics of a split.

    Attributes:
        roc_auc: ROC-AUC per tag (NaN where undefined).
        pr_auc: Average precision per tag (NaN where undefined).
        macro_roc_auc: Mean over the defined tags.
        macro_pr_auc: Mean over the defined tags.
        undefined_tags: Tags left out: no positive or no negative track.
    """

    roc_auc: np.ndarray
    pr_auc: np.ndarray
    macro_roc_auc: float
    macro_pr_auc: float
    undefined_tags: list[str]


def tag_metrics(labels: np.ndarray, scores: np.ndarray, vocabulary: list[str]) -> TagMetrics:
    """Macro ROC-AUC and PR-AUC over tags, track level.

    Args:
        labels: `[tracks, tags]` binary ground truth.
        scores: `[tracks, tags]` predicted probabilities (e.g. averaged over
            each track's chunks).
        vocabulary: Tag names, for the report of undefined tags.

    Returns:
        The metrics; macro values are NaN when no tag is defined.
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape or labels.ndim != 2 or labels.shape[1] != len(vocabulary):
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must be [tracks, {len(vocabulary)}]")
    num_tags = labels.shape[1]
    roc = np.full(num_tags, np.nan)
    pr = np.full(num_tags, np.nan)
    undefined = []
    for tag in range(num_tags):
        positives = int(labels[:, tag].sum())
        if positives == 0 or positives == labels.shape[0]:
            undefined.append(vocabulary[tag])
            continue
        roc[tag] = roc_auc(labels[:, tag], scores[:, tag])
        pr[tag] = average_precision(labels[:, tag], scores[:, tag])
    defined = ~np.isnan(roc)
    macro_roc = float(roc[defined].mean()) if defined.any() else float("nan")
    macro_pr = float(pr[defined].mean()) if defined.any() else float("nan")
    return TagMetrics(roc, pr, macro_roc, macro_pr, undefined)
