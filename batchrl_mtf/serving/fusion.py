"""Fusion of per-candidate task predictions into one score, and ranking by it."""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from batchrl_mtf.core.fusion import FORMULAS, Fusion
from batchrl_mtf.errors import ExportError

__all__ = ["FORMULAS", "fuse", "rank"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def fuse(
    preds: npt.ArrayLike,
    weights: npt.ArrayLike,
    formula: Literal["logsum", "sum"] = "logsum",
    beta: npt.ArrayLike | None = None,
) -> FloatArray:
    """Fuse per-candidate task predictions into one ranking score.

    ``logsum``: ``score = sum_k w_k * log(p_k + beta_k)``; ``sum``: ``score = sum_k w_k * p_k``
    (:meth:`batchrl_mtf.core.fusion.Fusion.score`).

    Args:
        preds: Predictions ``pred_<task>`` in task order, shape (n_candidates, k) for one request
            or (n_requests, n_candidates, k).
        weights: Fusion weights, shape (k,), or (n_requests, k) with 3-D ``preds``.
        formula: ``"logsum"`` or ``"sum"``.
        beta: Offsets of shape (k,); required for ``logsum``.

    Returns:
        Scores, shape (n_candidates,) or (n_requests, n_candidates).

    Raises:
        ExportError: Unknown formula, missing ``beta``, or shapes that do not fit.
    """
    if formula == "logsum":
        if beta is None:
            raise ExportError("fuse: formula 'logsum' needs beta (one offset per task)")
        fusion = Fusion("logsum", tuple(np.asarray(beta, dtype=np.float64).reshape(-1)))
    elif formula == "sum":
        fusion = Fusion("sum")
    else:
        raise ExportError(f"fuse: expected formula 'logsum' or 'sum', found {formula!r}")
    return fusion.score(preds, weights)


def rank(
    preds: npt.ArrayLike,
    weights: npt.ArrayLike,
    formula: Literal["logsum", "sum"] = "logsum",
    beta: npt.ArrayLike | None = None,
    top_n: int | None = None,
) -> IntArray:
    """Candidate indices from the best fused score to the worst.

    Ties keep the candidates' input order; NaN scores rank last.

    Args:
        preds: Shape (n_candidates, k) or (n_requests, n_candidates, k), see :func:`fuse`.
        weights: Shape (k,) or (n_requests, k).
        formula: ``"logsum"`` or ``"sum"``.
        beta: Offsets of shape (k,); required for ``logsum``.
        top_n: Keep only the first ``top_n`` indices (all when ``None``).

    Returns:
        Indices, shape (n,) or (n_requests, n) with ``n = min(top_n, n_candidates)``.
    """
    scores = fuse(preds, weights, formula, beta)
    order = np.argsort(-scores, axis=-1, kind="stable")
    return order if top_n is None else order[..., :top_n]
