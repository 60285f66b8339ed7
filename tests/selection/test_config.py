"""SelectConfig: the documented portfolio, overrides (OPE fields pass through) and errors."""

from __future__ import annotations

import pytest

from batchrl_mtf.errors import ConfigError
from batchrl_mtf.selection import SelectConfig, portfolio, resolve_select_config


def test_default_portfolio_is_algorithms_x_conservativeness_x_seeds() -> None:
    specs = portfolio(SelectConfig())
    assert [s.name for s in specs] == ["td3bc-alpha10-s0", "td3bc-alpha2.5-s0", "bc-s0"]
    assert specs[0].overrides["td3bc.alpha"] == 10.0
    assert specs[0].overrides["action_box"] == "q0.01-0.99"
    assert "bc.alpha" not in specs[2].overrides


def test_overrides_nest_ope_and_conservativeness() -> None:
    cfg = resolve_select_config(
        [
            (
                "--set",
                {
                    "seeds": [0, 1],
                    "ope.fqe_n_steps": 123,
                    "conservativeness.td3bc": [1.0],
                    "algorithms": ["td3bc"],
                },
            )
        ]
    )
    assert cfg.ope.fqe_n_steps == 123
    assert cfg.ope.gamma == 1.0  # the other select OPE defaults stay
    assert [s.name for s in portfolio(cfg)] == ["td3bc-alpha1-s0", "td3bc-alpha1-s1"]


@pytest.mark.parametrize(
    ("layer", "match"),
    [
        ({"algorithms": ["nope"]}, "algorithms"),
        ({"conservativeness.bc": [1.0]}, "conservativeness"),
        ({"trust_steps": [-1.0]}, "trust_steps"),
        ({"budget_minutes": -1}, "budget_minutes"),
        ({"ope.n_bootstrap": 0}, "n_bootstrap"),
        ({"ope.no_such": 1}, "no_such"),
        ({"train.alpha": 1}, "dotted keys"),
        ({"action_box": "wide"}, "action_box"),
        ({"bound": "median"}, "bound: expected one of fqe, recommended, all-estimators"),
        ({"ope.estimators": ["dr", "wdr"]}, "bound: bound = 'fqe' ranks by FQE's paired bound"),
        ({"margin": -0.01}, "margin: expected >= 0"),
        ({"baseline": "logged"}, "baseline: expected one of auto, production"),
    ],
)
def test_bad_settings_name_the_key(layer: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        resolve_select_config([("--set", layer)])
