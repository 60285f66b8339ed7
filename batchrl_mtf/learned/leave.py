"""The leave model: a calibrated logistic regression of "the session ends after this request".

Inputs are the state before the request (the foundation's state vector) and the request's
feedback summed over its items (``req_<fb>``); the label is 1 on the last request of a session.
Inputs are standardised with the training mean and standard deviation, and the coefficients
maximise the L2-penalised log-likelihood (Newton's method, penalty ``l2 * ||c||^2 / 2`` on the
coefficients, not on the intercept). Logistic regression fitted by maximum likelihood with an
intercept is calibrated in the large on its training data (mean prediction = observed rate);
:func:`calibration_table` reports it on held-out sessions by decile of the prediction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from batchrl_mtf.learned.runtime import LeaveModel

__all__ = ["calibration_table", "fit_leave_model", "log_loss", "segment_feedback_pairs"]

FloatArray = npt.NDArray[np.float64]


def _sigmoid(z: FloatArray) -> FloatArray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0))), dtype=np.float64)


def fit_leave_model(
    x: FloatArray,
    y: FloatArray,
    names: Sequence[str],
    l2: float = 1.0,
    max_iter: int = 50,
    tol: float = 1e-8,
    pairs: Sequence[tuple[int, int]] = (),
) -> LeaveModel:
    """Fit the leave model.

    Args:
        x: Inputs, shape (n, d), columns named by ``names``.
        y: Labels in {0, 1}, shape (n,).
        names: Input names, length d.
        l2: L2 penalty on the standardised coefficients (the data term is a sum over rows).
        max_iter: Newton iterations at most.
        tol: Stop when the largest coefficient change is below this.
        pairs: Interactions ``(i, j)``: the products of standardised inputs ``z_i z_j`` are
            extra inputs (penalised like the others).

    Returns:
        The fitted :class:`LeaveModel`.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std > 1e-9, std, 1.0)
    pair_arr = np.asarray(list(pairs), dtype=np.int64).reshape(-1, 2)
    z = LeaveModel(tuple(names), mean, std, np.zeros(0), 0.0, pair_arr).design(x)
    n, d = z.shape
    a = np.concatenate([np.ones((n, 1)), z], axis=1)
    rate = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
    theta = np.zeros(d + 1)
    theta[0] = np.log(rate / (1 - rate))
    pen = np.full(d + 1, l2)
    pen[0] = 0.0
    for _ in range(max_iter):
        p = _sigmoid(a @ theta)
        grad = a.T @ (p - y) + pen * theta
        wgt = p * (1 - p)
        hess = (a * wgt[:, None]).T @ a + np.diag(pen) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if float(np.max(np.abs(step))) < tol:
            break
    return LeaveModel(tuple(names), mean, std, theta[1:].copy(), float(theta[0]), pair_arr)


def segment_feedback_pairs(names: Sequence[str], feedback: Sequence[str]) -> list[tuple[int, int]]:
    """Interactions of the inputs that reveal who the user is (``u_*``, ``hist_<fb>_rate``) with
    the session's and the request's feedback (``session_<fb>``, ``req_<fb>``) and depth, so
    leaving can depend on feedback differently for different users."""
    col = {n: i for i, n in enumerate(names)}
    who = [i for n, i in col.items() if n.startswith("u_")]
    who += [col[f"hist_{c}_rate"] for c in feedback if f"hist_{c}_rate" in col]
    what = [col[f"{p}_{c}"] for p in ("req", "session") for c in feedback if f"{p}_{c}" in col]
    if "session_depth" in col:
        what.append(col["session_depth"])
    return [(i, j) for i in who for j in what]


def log_loss(p: FloatArray, y: FloatArray) -> float:
    """Mean binary log-loss."""
    q = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def calibration_table(p: FloatArray, y: FloatArray, bins: int = 10) -> list[dict[str, float]]:
    """Mean predicted vs observed rate by quantile bin (decile) of the prediction.

    Args:
        p: Predicted probabilities, shape (n,).
        y: Labels, shape (n,).
        bins: Number of quantile bins.

    Returns:
        One entry per non-empty bin: ``n``, ``mean_predicted``, ``observed``.
    """
    if len(p) == 0:
        return []
    order = np.argsort(p, kind="stable")
    out = []
    for part in np.array_split(order, bins):
        if len(part):
            out.append(
                {
                    "n": float(len(part)),
                    "mean_predicted": float(p[part].mean()),
                    "observed": float(y[part].mean()),
                }
            )
    return out
