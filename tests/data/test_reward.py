from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from batchrl_mtf.data.reward import RewardConfig, default_reward, load_reward, request_reward
from batchrl_mtf.errors import ConfigError

GOOD = """
[reward]
valid_play_s = 10.0
[reward.stickiness]
watch_time = 0.02
valid_play = 0.3
[reward.activeness]
like = 1.0
comment = 1.5
share = 2.0
"""


def test_load_public_shape(tmp_path: Path) -> None:
    p = tmp_path / "r.toml"
    p.write_text(GOOD)
    r = load_reward(p)
    assert r.valid_play_s == 10.0
    assert dict(r.stickiness) == {"watch_time": 0.02, "valid_play": 0.3}
    assert dict(r.activeness) == {"like": 1.0, "comment": 1.5, "share": 2.0}
    assert r.columns() == ("watch_time", "like", "comment", "share")
    # round trip through the writer keeps the exact shape
    p2 = tmp_path / "r2.toml"
    p2.write_text(r.to_toml())
    assert load_reward(p2) == r


def test_shipped_default_reward_parses() -> None:
    shipped = Path(__file__).resolve().parents[2] / "envs" / "reward_default.toml"
    assert load_reward(shipped) == default_reward()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "[reward]\nvalid_play_s = 10\nbogus = 1\n[reward.stickiness]\nwatch_time = 1",
            "unknown key.*bogus",
        ),
        ("[other]\nx = 1", "unknown top-level key"),
        (
            "[reward.stickiness]\nwatch_time = 'a'",
            r"reward\.stickiness\.watch_time: expected a number",
        ),
        (
            "[reward]\nvalid_play_s = -1\n[reward.activeness]\nlike = 1",
            "valid_play_s: expected a number >= 0",
        ),
        ("[reward]\nvalid_play_s = 5", "both .* are empty"),
        ("not toml = = 1", "not valid TOML"),
        ("[reward]\nstickiness = 3", r"\[reward.stickiness\] must be a table"),
    ],
)
def test_bad_reward_files(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_reward(p)


def test_missing_file_names_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: reward file not found"):
        load_reward(tmp_path / "nope.toml")


def test_reward_names_absent_column() -> None:
    r = default_reward()
    with pytest.raises(ConfigError, match=r"'follow'.*absent from logs\.parquet"):
        r.check_columns(["watch_time", "like", "comment", "share"], "logs.parquet")


def test_request_reward_by_hand() -> None:
    r = RewardConfig(10.0, {"watch_time": 0.5, "valid_play": 2.0}, {"like": 3.0})
    cols = {
        "watch_time": np.array([12.0, 4.0, 10.0]),
        "like": np.array([1.0, 0.0, 1.0]),
    }
    parts = request_reward(r, cols, np.array([0, 0, 1]), 2)
    # request 0: 0.5*(12+4) + 2*(1 valid) = 10; activeness 3
    # request 1: 0.5*10 + 2*1 = 7; activeness 3
    np.testing.assert_allclose(parts.stickiness, [10.0, 7.0])
    np.testing.assert_allclose(parts.activeness, [3.0, 3.0])
    np.testing.assert_allclose(parts.total, [13.0, 10.0])
