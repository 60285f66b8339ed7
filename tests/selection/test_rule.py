"""The selection rule on hand-made estimates: the highest lower bound of the gain, else production."""

from __future__ import annotations

import math

import pytest

from batchrl_mtf.selection import PRODUCTION, Gain, choose

NAN = math.nan


@pytest.mark.parametrize(
    ("gains", "chosen", "why"),
    [
        # the highest lower bound wins, not the highest estimate
        ([("bold", 5.0, -1.0, 11.0), ("safe", 1.0, 0.4, 1.6)], "safe", "highest lower bound"),
        ([("a", 1.0, 0.2, 1.8), ("b", 2.0, 0.9, 3.1)], "b", "highest lower bound"),
        # no lower bound above zero: production
        ([("a", 0.5, -0.1, 1.1), ("b", 3.0, -2.0, 8.0)], PRODUCTION, "keep production"),
        ([("a", 0.2, 0.0, 0.4)], PRODUCTION, "keep production"),  # zero is not above zero
        ([("a", -1.0, -1.5, -0.5)], PRODUCTION, "keep production"),
        # a smaller trust-region step with a positive bound beats its unconstrained table
        (
            [("p", 2.0, -0.5, 4.5), ("p-tr0.5", 1.2, 0.3, 2.1), ("p-tr0.25", 0.6, 0.2, 1.0)],
            "p-tr0.5",
            "highest lower bound",
        ),
        # ties on the bound: the larger gain, then the earlier candidate
        ([("a", 1.0, 0.5, 1.5), ("b", 2.0, 0.5, 3.5)], "b", "highest lower bound"),
        ([("a", 1.0, 0.5, 1.5), ("b", 1.0, 0.5, 1.5)], "a", "highest lower bound"),
        # candidates without a finite bound are not eligible
        ([("a", 9.0, NAN, NAN), ("b", 0.8, 0.1, 1.5)], "b", "highest lower bound"),
        ([("a", 9.0, NAN, NAN)], PRODUCTION, "no candidate has a finite"),
        ([], PRODUCTION, "no candidate has a finite"),
    ],
)
def test_lower_bound_rule(gains: list[tuple], chosen: str, why: str) -> None:
    choice = choose([Gain(*g) for g in gains])
    assert choice.name == chosen
    assert why in choice.reason


def test_candidates_outside_the_logged_support_are_left_out() -> None:
    gains = [Gain("far", 3.0, 1.0, 5.0, supported=False), Gain("near", 0.5, 0.1, 0.9)]
    assert choose(gains).name == "near"
    assert choose(gains, require_support=False).name == "far"
    only_far = choose(gains[:1])
    assert only_far.name == PRODUCTION and "leaves the logged support (far)" in only_far.reason
