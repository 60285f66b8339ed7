"""fuse/rank: the quick path for clean predictions gives the same bits as the formula and as the
checking path, offsets are checked whenever they change, and ranks are stable."""

from __future__ import annotations

import numpy as np
import pytest

from batchrl_mtf.core.fusion import Fusion
from batchrl_mtf.errors import ExportError
from batchrl_mtf.serving import fuse, rank

RNG = np.random.default_rng(7)
P = RNG.uniform(0.0, 1.0, (300, 8))
W = RNG.uniform(-2.0, 2.0, 8)
B = RNG.uniform(0.01, 0.5, 8)


def test_clean_predictions_score_exactly_as_the_formula() -> None:
    got = fuse(P, W, "logsum", B)
    assert np.array_equal(got, Fusion("logsum", tuple(B)).score(P, W))
    assert np.array_equal(got, np.log(P + B) @ W)
    assert np.array_equal(fuse(P, W, "sum"), P @ W)
    batch = RNG.uniform(0, 1, (3, 50, 8))
    ws = RNG.uniform(0, 2, (3, 8))
    assert np.array_equal(fuse(batch, ws, "logsum", B), Fusion("logsum", tuple(B)).score(batch, ws))


def test_scores_do_not_depend_on_a_missing_prediction_elsewhere() -> None:
    with_nan = np.vstack([P, [[np.nan] * 8]])
    for formula, beta in (("logsum", B), ("sum", None)):
        clean = fuse(P, W, formula, beta)  # type: ignore[arg-type]
        mixed = fuse(with_nan, W, formula, beta)  # type: ignore[arg-type]
        assert np.array_equal(mixed[:-1], clean) and np.isnan(mixed[-1])


def test_large_weights_still_report_overflow_and_nothing_else() -> None:
    big = np.full(8, 1e300)
    assert np.isfinite(fuse(P, big, "sum")).all()  # bound not proven: checked, and fine
    with pytest.raises(ExportError, match="overflows a double"):
        fuse(P + 1.0, big * 1e8, "sum")
    with pytest.raises(ExportError, match="overflows a double"):
        fuse(np.zeros((3, 8)), big * 1e6, "logsum", np.full(8, 1e-300))


def test_offsets_are_checked_each_time_they_change() -> None:
    beta = B.copy()
    fuse(P, W, "logsum", beta)
    beta[3] = -1.0  # same array object, new values
    with pytest.raises(ExportError, match="finite and > 0"):
        fuse(P, W, "logsum", beta)
    beta[3] = np.inf
    with pytest.raises(ExportError, match="finite and > 0"):
        fuse(P, W, "logsum", beta)
    with pytest.raises(ExportError, match=r"expected beta of shape \(8,\)"):
        fuse(P, W, "logsum", B.reshape(2, 4))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused(bad: float) -> None:
    w = W.copy()
    w[5] = bad
    with pytest.raises(ExportError, match="expected finite weights"):
        fuse(P, w, "logsum", B)


def test_predictions_out_of_range_are_refused_at_the_first_position() -> None:
    p = P.copy()
    p[10, 2], p[20, 1] = 1.5, -0.1
    with pytest.raises(ExportError, match=r"preds\[10, 2\]: expected a probability .* 1.5"):
        fuse(p, W, "logsum", B)
    p[10, 2] = np.nan  # a missing prediction is fine, the -0.1 is not
    with pytest.raises(ExportError, match=r"preds\[20, 1\]"):
        fuse(p, W, "logsum", B)
    assert np.isfinite(fuse(np.array([[0.0] * 8, [1.0] * 8]), W, "logsum", B)).all()


def test_rank_is_stable_on_ties_and_puts_nan_last_in_input_order() -> None:
    p = np.array([[0.5, 0.5], [0.9, 0.1], [np.nan, 0.3], [0.5, 0.5], [0.1, 0.9], [0.2, np.nan]])
    w = np.array([1.0, 1.0])
    assert rank(p, w, "sum").tolist() == [0, 1, 3, 4, 2, 5]  # four ties at 1.0, by index
    assert rank(p, w, "sum", top_n=2).tolist() == [0, 1]
    assert rank(np.zeros((0, 2)), w, "sum").tolist() == []
