"""The action box from the logged support: quantiles (the default) or the raw min/max."""

from __future__ import annotations

import numpy as np
import pytest

from batchrl_mtf.data.box import DEFAULT_ACTION_BOX, action_box, outside_box, parse_action_box
from batchrl_mtf.errors import ConfigError


def _logged() -> np.ndarray:
    """1,000 weights uniform on [0, 1] per task plus 5 extreme ones (a heavy-tailed logger)."""
    rng = np.random.default_rng(0)
    body = rng.uniform(0.0, 1.0, size=(1000, 2))
    tail = np.array([[9.0, -5.0]] * 5)
    return np.vstack([body, tail])


@pytest.mark.parametrize(
    ("box", "low", "high"),
    [
        # the quantile box ignores the few extreme logged weights
        ("q0.01-0.99", (0.01, 0.0), (0.99, 0.99)),
        ("q0.05-0.95", (0.05, 0.05), (0.95, 0.95)),
        # the raw box is stretched by them
        ("minmax", (0.0, -5.0), (9.0, 1.0)),
    ],
)
def test_action_box_from_logged_quantiles(box: str, low: tuple, high: tuple) -> None:
    lo, hi = action_box(_logged(), box)
    np.testing.assert_allclose(lo, low, atol=0.02)
    np.testing.assert_allclose(hi, high, atol=0.02)


def test_default_box_is_quantiles_and_matches_numpy() -> None:
    a = _logged()
    assert parse_action_box(DEFAULT_ACTION_BOX) == (0.01, 0.99)
    lo, hi = action_box(a)
    np.testing.assert_array_equal(lo, np.quantile(a, 0.01, axis=0))
    np.testing.assert_array_equal(hi, np.quantile(a, 0.99, axis=0))


def test_a_constant_task_gets_a_non_empty_box() -> None:
    a = np.column_stack([np.linspace(0, 1, 50), np.full(50, 0.3)])
    lo, hi = action_box(a)
    assert hi[1] > lo[1] and lo[1] < 0.3 < hi[1]


@pytest.mark.parametrize("bad", ["q0.9-0.1", "q0-2", "quantile", "", "q0.1"])
def test_bad_box_names_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError, match="action_box"):
        parse_action_box(bad)


def test_outside_box_shares() -> None:
    acts = np.array([[0.5, 0.5], [2.0, 0.5], [0.5, -1.0], [2.0, -1.0]])
    share, by_task = outside_box(acts, np.zeros(2), np.ones(2))
    assert share == 0.75
    np.testing.assert_array_equal(by_task, [0.5, 0.5])
