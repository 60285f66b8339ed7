"""Held-out metrics of a predictor: AUC, log-loss, RMSE and calibration per task."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["TaskMetrics", "auc", "format_metrics", "log_loss", "task_metrics"]


@dataclass(frozen=True)
class TaskMetrics:
    """Metrics of one task on the held-out part.

    Attributes:
        task: Task name.
        kind: ``"binary"`` or ``"regression"``.
        n: Number of held-out rows.
        auc: ROC AUC of the prediction against the label (binary; NaN if one class only).
        log_loss: Mean binary cross-entropy (binary tasks; NaN for regression).
        rmse: Root mean squared error on the scaled target (regression; NaN for binary).
        mean_pred: Mean prediction (calibration: compare with ``observed``).
        observed: Observed positive rate (binary) or mean scaled target (regression).
    """

    task: str
    kind: str
    n: int
    auc: float
    log_loss: float
    rmse: float
    mean_pred: float
    observed: float


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney, ties count half).

    Args:
        y: Binary labels, shape (n,).
        p: Scores, shape (n,).

    Returns:
        The AUC, or NaN when ``y`` holds one class only.
    """
    y = np.asarray(y, dtype=np.float64)
    n_pos = float((y == 1).sum())
    n_neg = float(len(y) - n_pos)
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = pd.Series(np.asarray(p, dtype=np.float64)).rank(method="average").to_numpy()
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(y: np.ndarray, p: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities ``p`` (n,) for labels ``y`` (n,)."""
    q = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(y, dtype=np.float64)
    return float(-(y * np.log(q) + (1 - y) * np.log(1 - q)).mean()) if len(y) else math.nan


def task_metrics(task: str, kind: str, y: np.ndarray, p: np.ndarray) -> TaskMetrics:
    """Metrics of one task from labels ``y`` (n,) and predictions ``p`` (n,), both in [0, 1]."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    n = len(y)
    mean_pred = float(p.mean()) if n else math.nan
    observed = float(y.mean()) if n else math.nan
    if kind == "binary":
        return TaskMetrics(task, kind, n, auc(y, p), log_loss(y, p), math.nan, mean_pred, observed)
    rmse = float(np.sqrt(((y - p) ** 2).mean())) if n else math.nan
    return TaskMetrics(task, kind, n, math.nan, math.nan, rmse, mean_pred, observed)


def format_metrics(rows: list[TaskMetrics]) -> str:
    """A fixed-width table of held-out metrics (one line per task)."""

    def f(x: float) -> str:
        return "   -  " if math.isnan(x) else f"{x:6.4f}"

    lines = ["task            kind        n      auc  logloss     rmse mean_pred observed"]
    for m in rows:
        lines.append(
            f"{m.task:<15} {m.kind:<10} {m.n:>6} {f(m.auc)} {f(m.log_loss):>8} {f(m.rmse):>8} "
            f"{f(m.mean_pred):>9} {f(m.observed):>8}"
        )
    return "\n".join(lines)
