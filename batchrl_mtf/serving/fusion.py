"""Fusion of per-candidate task predictions into one score, and ranking by it.

Inputs are checked (every problem is an :class:`~batchrl_mtf.errors.ExportError`): numeric arrays of
fitting shapes; finite weights; ``logsum`` predictions are probabilities in ``[0, 1]`` and
``beta`` is finite and > 0; ``sum`` predictions are finite.

NaN policy: a NaN prediction means "no prediction for this candidate". Its candidate's score is
NaN and :func:`rank` puts it after every candidate with a score (NaN candidates keep their input
order). Infinite or out-of-range predictions are errors, never ranked.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import numpy.typing as npt

from batchrl_mtf.core.fusion import FORMULAS, Fusion
from batchrl_mtf.errors import ExportError
from batchrl_mtf.serving._types import show

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
        ExportError: Unknown formula, missing or invalid ``beta``, shapes that do not fit,
            non-numeric input, non-finite weights, or predictions that are infinite (``sum``) or
            outside ``[0, 1]`` (``logsum``). NaN predictions are allowed: see the module's NaN
            policy.
    """
    p = _floats(preds, "preds")
    w = _floats(weights, "weights")
    if formula not in FORMULAS:
        raise ExportError(f"fuse: expected formula 'logsum' or 'sum', found {show(formula)}")
    ok_2d = p.ndim == 2 and w.shape == (p.shape[1],)
    if not (ok_2d or (p.ndim == 3 and w.shape == (p.shape[0], p.shape[2]))):
        raise ExportError(
            "fuse: expected preds (n_candidates, k) with weights (k,), or preds "
            f"(n_requests, n_candidates, k) with weights (n_requests, k); found {p.shape} and "
            f"{w.shape}"
        )
    small = w.size <= 64  # a request's weights: Python floats beat numpy calls on 8 values
    w_abs = sum(map(abs, w.ravel().tolist())) if small else float(np.abs(w).sum())
    if not math.isfinite(w_abs) and not np.isfinite(w).all():
        raise ExportError(f"fuse: expected finite weights, found {show(w.tolist())}")
    if formula == "logsum":
        if beta is None:
            raise ExportError("fuse: formula 'logsum' needs beta (one offset per task)")
        b = _floats(beta, "beta")
        if b.shape != (p.shape[-1],):
            _raise_bad_beta(b, p.shape[-1])
        cached = _LOGSUM.get(b.tobytes())  # offsets seen before were checked then
        if cached is None:
            if not (np.isfinite(b) & (b > 0)).all():
                _raise_bad_beta(b, p.shape[-1])
            cached = _logsum(b)
        fusion, x_max = cached
    else:
        fusion, x_max = _SUM, math.inf
    # One min and one max prove the common case: a NaN makes both NaN (so none is missing).
    lo, hi = (float(p.min()), float(p.max())) if p.size else (0.0, 0.0)
    if formula == "logsum":
        clean = lo >= 0.0 and hi <= 1.0
    else:
        clean = math.isfinite(lo) and math.isfinite(hi)
        x_max = max(abs(lo), abs(hi)) if clean else math.inf
    # |score| <= sum_k |w_k| * max |transform(p)|: far below the largest double, no overflow
    if clean and math.isfinite(w_abs) and w_abs * x_max < 1e300:
        return fusion.score(p, w)  # the one fusion formula (batchrl_mtf.core.fusion)
    nan = np.isnan(p)
    if not clean:
        if formula == "logsum":
            good = nan | ((p >= 0.0) & (p <= 1.0))
            expected = "a probability in [0, 1] (or NaN: no prediction)"
        else:
            good = nan | np.isfinite(p)
            expected = "a finite number (or NaN: no prediction)"
        if not good.all():
            _raise_bad(p, good, expected)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below
        scores = fusion.score(p, w)
    if nan.any():  # NaN policy: any missing prediction makes the candidate's score NaN
        scores[nan.any(axis=-1)] = np.nan
    if np.isinf(scores).any():
        raise ExportError("fuse: a score overflows a double (weights times predictions too large)")
    return scores


_SUM = Fusion("sum")
_LOGSUM: dict[bytes, tuple[Fusion, float]] = {}
"""The ``logsum`` fusion and ``max_k max_p |log(p + beta_k)|`` by the offsets' bytes (requests
reuse their table's offsets; building and checking a Fusion per request costs more than the
request's own checks). Only checked offsets are stored; kept small."""


def _logsum(beta: FloatArray) -> tuple[Fusion, float]:
    """The ``logsum`` fusion with offsets ``beta`` (finite, > 0, checked by the caller), and the
    largest ``|log(p + beta_k)|`` for ``p`` in ``[0, 1]``."""
    if len(_LOGSUM) >= 64:
        _LOGSUM.clear()
    offsets = tuple(float(v) for v in beta)
    x_max = max(max(abs(math.log(v)), abs(math.log1p(v))) for v in offsets) if offsets else 0.0
    _LOGSUM[beta.tobytes()] = entry = (Fusion("logsum", offsets), x_max)
    return entry


def _raise_bad_beta(b: FloatArray, k: int) -> None:
    raise ExportError(
        f"fuse: expected beta of shape ({k},), finite and > 0, found {show(b.tolist())}"
    )


def _floats(x: object, name: str) -> FloatArray:
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ExportError(f"fuse: expected {name} as numbers, found {show(x)}") from None


def _raise_bad(p: FloatArray, good: npt.NDArray[np.bool_], expected: str) -> None:
    where = tuple(int(i) for i in np.argwhere(~good)[0])
    raise ExportError(f"fuse: preds{list(where)}: expected {expected}, found {float(p[where])!r}")


def rank(
    preds: npt.ArrayLike,
    weights: npt.ArrayLike,
    formula: Literal["logsum", "sum"] = "logsum",
    beta: npt.ArrayLike | None = None,
    top_n: int | None = None,
) -> IntArray:
    """Candidate indices from the best fused score to the worst.

    Ties keep the candidates' input order (the lower index first); NaN scores rank last.

    Args:
        preds: Shape (n_candidates, k) or (n_requests, n_candidates, k), see :func:`fuse`.
        weights: Shape (k,) or (n_requests, k).
        formula: ``"logsum"`` or ``"sum"``.
        beta: Offsets of shape (k,); required for ``logsum``.
        top_n: Keep only the first ``top_n`` indices (all when ``None``).

    Returns:
        Indices, shape (n,) or (n_requests, n) with ``n = min(top_n, n_candidates)``.
    """
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 0):
        raise ExportError(f"rank: expected top_n an integer >= 0 or None, found {show(top_n)}")
    scores = fuse(preds, weights, formula, beta)
    order = np.argsort(-scores, axis=-1, kind="stable")
    return order if top_n is None else order[..., :top_n]
