from __future__ import annotations

import pytest

from batchrl_mtf.core.config import config_from_mapping, config_to_dict, parse_overrides
from batchrl_mtf.data.config import DatasetConfig
from batchrl_mtf.data.features import FeatureConfig
from batchrl_mtf.errors import ConfigError


def test_round_trip_nested() -> None:
    cfg = DatasetConfig(gamma=0.9, action_bounds=(0.0, 3.0), features=FeatureConfig(hist_n=7))
    again = config_from_mapping(DatasetConfig, config_to_dict(cfg), "test")
    assert again == cfg


@pytest.mark.parametrize(
    ("mapping", "match"),
    [
        ({"gama": 0.9}, r"unknown key\(s\) 'gama'"),
        ({"gamma": "high"}, "'gamma': expected a number, found 'high'"),
        ({"gamma": 1.5}, r"gamma: expected a number in \[0, 1\]"),
        ({"on_error": "ignore"}, "'on_error': expected one of"),
        ({"action_bounds": [2.0, 1.0]}, "expected finite LO,HI with LO < HI"),
        ({"features": {"hist_n": 0}}, "features.hist_n: expected an integer >= 1"),
        ({"features": {"hist": 3}}, "'hist': expected true or false"),
    ],
)
def test_bad_mappings(mapping: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config_from_mapping(DatasetConfig, mapping, "pipeline.toml [data]")


def test_parse_overrides() -> None:
    assert parse_overrides(["a=1", "b=0.5", "c=true", "d=hello", "e=[1, 2]"]) == {
        "a": 1,
        "b": 0.5,
        "c": True,
        "d": "hello",
        "e": [1, 2],
    }
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["novalue"])
