"""Held-out metrics from scikit-learn and scipy: accuracy, macro-F1, MCC, the confusion matrix, Pearson, Spearman."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, matthews_corrcoef, mean_squared_error


def classification_metrics(labels: list[int], predictions: list[int], num_classes: int) -> dict[str, Any]:
    """accuracy, macro_f1, mcc and confusion (rows: true class, columns: predicted; -1 predictions are invalid)."""
    classes = list(range(num_classes))
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, labels=classes, average="macro", zero_division=0)),
        "mcc": float(matthews_corrcoef(labels, predictions)),
        "confusion": confusion_matrix(labels, predictions, labels=classes).tolist(),
    }


def regression_metrics(targets: list[float], predictions: list[float]) -> dict[str, float]:
    """pearson, spearman and mse of predictions against targets (correlations are 0 for constant predictions)."""
    y, p = np.asarray(targets, dtype=float), np.asarray(predictions, dtype=float)
    constant = bool(np.allclose(p, p[0]))
    return {
        "pearson": 0.0 if constant else float(stats.pearsonr(y, p).statistic),
        "spearman": 0.0 if constant else float(stats.spearmanr(y, p).statistic),
        "mse": float(mean_squared_error(y, p)),
    }


def exact_match(references: list[str], generations: list[str]) -> float:
    """Share of generations equal to their reference after stripping surrounding whitespace."""
    return float(accuracy_score([r.strip() for r in references], [g.strip() for g in generations]))
