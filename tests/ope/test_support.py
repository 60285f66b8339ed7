"""The support diagnostic: share of a policy's actions outside the logged quantile box."""

from __future__ import annotations

import numpy as np
import pytest

from batchrl_mtf.ope.support import support_diagnostic

LOGGED = np.random.default_rng(0).uniform(0.0, 1.0, size=(2000, 2))


@pytest.mark.parametrize(
    ("actions", "share", "flag"),
    [
        (np.full((10, 2), 0.5), 0.0, False),  # the middle of the logs
        (np.tile([[0.5, 1.5]], (10, 1)), 1.0, True),  # one task beyond every logged weight
        # just beyond the 1%-99% box (2% of its width) ...
        (np.tile([[0.5, 1.02]], (10, 1)), 1.0, True),
        # ... but a weight within 1% of the box width of its edge is inside (a hard bound)
        (np.tile([[0.5, 0.995]], (10, 1)), 0.0, False),
        (np.vstack([np.full((97, 2), 0.5), np.full((3, 2), 2.0)]), 0.03, False),  # under 5%
        (np.vstack([np.full((90, 2), 0.5), np.full((10, 2), 2.0)]), 0.10, True),
    ],
)
def test_support_share_and_flag(actions: np.ndarray, share: float, flag: bool) -> None:
    d = support_diagnostic(actions, LOGGED, ("a", "b"), "q0.01-0.99", 0.05)
    assert d["outside_share"] == pytest.approx(share)
    assert d["flag"] is flag
    assert set(d["outside_by_task"]) == {"w_a", "w_b"}  # type: ignore[arg-type]
    assert d["box"] == "q0.01-0.99"
