"""The selection rule on hand-made estimates: the highest lower bound of the gain, else production."""

from __future__ import annotations

import math

import pytest

from batchrl_mtf.errors import ConfigError
from batchrl_mtf.selection import PRODUCTION, Gain, choose
from batchrl_mtf.selection.rule import (
    LOGGED,
    gain_from_doc,
    margin_gain,
    ranked_gain,
    value_lower,
)

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


def _g(name: str, rec: tuple[float, float, float], **others: tuple[float, float, float]) -> Gain:
    return Gain(name, *rec, by_estimator={"fqe": rec, **others})


DISAGREE = [
    _g("a", (3.0, 2.0, 4.0), dr=(0.5, -1.0, 2.0)),
    _g("b", (1.0, 0.5, 1.5), dr=(1.2, 0.6, 1.8)),
]
"""FQE is sure of ``a`` and DR is not; both agree on ``b``."""


@pytest.mark.parametrize(
    ("gains", "bound", "min_gain", "chosen", "lower"),
    [
        # FQE is sure of "a", DR is not: with every estimator's bound, "b" (both agree) wins
        (
            DISAGREE,
            "all-estimators",
            0.0,
            "b",
            0.5,
        ),
        (
            DISAGREE,
            "recommended",
            0.0,
            "a",
            2.0,
        ),
        # every candidate has an estimator whose bound is below zero: production
        ([_g("a", (3.0, 2.0, 4.0), dr=(0.5, -1.0, 2.0))], "all-estimators", 0.0, PRODUCTION, NAN),
        # a non-finite bound of any estimator makes the candidate ineligible under all-estimators
        ([_g("a", (3.0, 2.0, 4.0), dr=(NAN, NAN, NAN))], "all-estimators", 0.0, PRODUCTION, NAN),
        # FQE's bound for every candidate: "a" (DR-recommended, wide) against "b" (FQE's bound)
        (
            [
                Gain(
                    "a", 3.0, 2.0, 4.0, by_estimator={"dr": (3.0, 2.0, 4.0), "fqe": (1.0, 0.2, 1.8)}
                ),
                _g("b", (1.0, 0.5, 1.5)),
            ],
            "fqe",
            0.0,
            "b",
            0.5,
        ),
        # no FQE estimate: not eligible under the FQE bound
        (
            [Gain("a", 3.0, 2.0, 4.0, by_estimator={"dr": (3.0, 2.0, 4.0)})],
            "fqe",
            0.0,
            PRODUCTION,
            NAN,
        ),
        # a margin: the bound must clear min_gain, not just zero
        ([_g("a", (1.0, 0.4, 1.6))], "recommended", 0.5, PRODUCTION, NAN),
        ([_g("a", (1.0, 0.6, 1.4))], "recommended", 0.5, "a", 0.6),
    ],
)
def test_bound_and_margin(
    gains: list[Gain], bound: str, min_gain: float, chosen: str, lower: float
) -> None:
    choice = choose(gains, bound=bound, min_gain=min_gain)
    assert choice.name == chosen
    assert math.isnan(lower) if math.isnan(choice.lower) else choice.lower == lower
    assert math.isnan(choice.lower) == math.isnan(lower)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bound": "median"}, "bound: expected one of fqe, recommended, all-estimators"),
        ({"min_gain": -0.1}, "min_gain: expected >= 0"),
        ({"min_gain": NAN}, "min_gain: expected >= 0"),
        ({"baseline": "auto"}, "baseline: expected one of production, logged"),
    ],
)
def test_bad_rule_settings_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        choose([Gain("a", 1.0, 0.5, 1.5)], **kwargs)


def test_the_fqe_bound_quotes_fqes_gain_and_interval() -> None:
    g = Gain("a", 9.0, 4.0, 14.0, by_estimator={"dr": (9.0, 4.0, 14.0), "fqe": (2.0, 1.5, 2.5)})
    choice = choose([g], bound="fqe")
    assert choice.name == "a" and choice.lower == 1.5
    assert (
        "highest FQE lower bound" in choice.reason
        and "gain 2, interval [1.5, 2.5]" in choice.reason
    )


def test_ranked_gain_is_the_gain_the_bound_ranks_by() -> None:
    fqe = {"gain": 2.0, "lower": 1.5, "upper": 2.5}
    doc = {
        "estimator": "dr",
        "gain": 9.0,
        "lower": 4.0,
        "upper": 14.0,
        "by_estimator": {"fqe": fqe},
    }
    assert ranked_gain(doc, "fqe") == {**fqe, "estimator": "fqe"}
    assert ranked_gain(doc, "recommended") == doc
    no_fqe = {"estimator": "dr", "gain": 9.0, "lower": 4.0, "upper": 14.0}
    assert ranked_gain(no_fqe, "fqe") == no_fqe  # files written before by_estimator
    assert ranked_gain(None, "fqe") is None


def test_the_baseline_names_what_the_gains_are_over_and_production_stays_the_fallback() -> None:
    won = choose([Gain("a", 2.0, 1.0, 3.0)], baseline=LOGGED)
    assert won.name == "a" and "gain over the logging policy" in won.reason
    kept = choose([Gain("a", 0.5, -0.5, 1.5)], baseline=LOGGED)
    assert kept.name == PRODUCTION and "over the logging policy" in kept.reason
    assert "keep production" in kept.reason
    assert "gain over production" in choose([Gain("a", 2.0, 1.0, 3.0)]).reason


def test_value_lower_carries_the_rules_margin_and_old_documents_load() -> None:
    # the rule's bound 0.5 is 1.5 below the recommended estimator's 2.0: the value bound drops too
    assert value_lower(10.0, 2.0, 0.5) == 8.5
    assert value_lower(10.0, 2.0, 2.0) == 10.0
    assert value_lower(10.0, NAN, NAN) == 10.0  # production: no gain, no shift
    assert value_lower(None, 2.0, 0.5) is None
    assert margin_gain(0.02, -50.0) == 1.0 and margin_gain(0.02, None) == 0.0
    old = gain_from_doc("a", {"gain": 1.0, "lower": 0.5, "upper": 1.5}, None)
    assert old == Gain("a", 1.0, 0.5, 1.5)
    new = gain_from_doc(
        "a",
        {
            "gain": 1.0,
            "lower": 0.5,
            "upper": 1.5,
            "by_estimator": {"dr": {"gain": 2, "lower": -1, "upper": 5}},
        },
        {"flag": True},
    )
    assert new.by_estimator == {"dr": (2.0, -1.0, 5.0)} and not new.supported
