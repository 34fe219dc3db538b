"""Classification metrics shared by training, prediction and evaluation.

Multi-label throughout: ``y_true`` is an ``(N, C)`` 0/1 matrix, ``scores`` an
``(N, C)`` matrix of probabilities.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, f1_score


def f1_report(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, object]:
    """Macro-F1, sample-F1 and per-class F1 of binary predictions.

    Macro-F1 averages over the classes present in ``y_true`` or ``y_pred``
    (absent classes would otherwise count as 0 or 1 arbitrarily).

    Examples
    --------
    >>> r = f1_report(np.array([[1, 0], [0, 1]]), np.array([[1, 0], [1, 1]]))
    >>> round(r["macro_f1"], 4), round(r["sample_f1"], 4)
    (0.8333, 0.8333)
    """
    y_true = np.asarray(y_true).astype(bool)
    y_pred = np.asarray(y_pred).astype(bool)
    per_class = f1_score(y_true, y_pred, average=None, zero_division=0.0)
    present = y_true.any(0) | y_pred.any(0)
    macro = float(per_class[present].mean()) if present.any() else 0.0
    sample = float(f1_score(y_true, y_pred, average="samples", zero_division=0.0)) if len(y_true) else 0.0
    return {"macro_f1": macro, "sample_f1": sample, "per_class_f1": per_class.tolist()}


def per_class_ap(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Average precision per class (NaN for classes without positives)."""
    y_true = np.asarray(y_true).astype(bool)
    out = np.full(y_true.shape[1], np.nan)
    for c in range(y_true.shape[1]):
        if y_true[:, c].any():
            out[c] = average_precision_score(y_true[:, c], scores[:, c])
    return out


def tune_thresholds(
    y_true: np.ndarray, scores: np.ndarray, grid: np.ndarray | None = None, default: float = 0.5
) -> np.ndarray:
    """Per-class threshold maximising that class's F1 on validation data.

    Classes without positives keep ``default``. Ties go to the threshold
    closest to ``default``.

    Examples
    --------
    >>> t = tune_thresholds(np.array([[1], [1], [0]]), np.array([[0.3], [0.2], [0.1]]))
    >>> bool(0.1 < t[0] <= 0.2)
    True
    """
    y_true = np.asarray(y_true).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    grid = np.linspace(0.02, 0.98, 49) if grid is None else np.asarray(grid)
    out = np.full(y_true.shape[1], default, dtype=np.float64)
    for c in range(y_true.shape[1]):
        t = y_true[:, c]
        if not t.any():
            continue
        pred = scores[:, c][None, :] >= grid[:, None]  # (G, N)
        tp = (pred & t).sum(1)
        fp = (pred & ~t).sum(1)
        fn = t.sum() - tp
        f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
        best = np.flatnonzero(f1 == f1.max())
        out[c] = grid[best[np.argmin(np.abs(grid[best] - default))]]
    return out
