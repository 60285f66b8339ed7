"""Shared fixtures: tiny valid logs, a reward config, and the path of the shared data folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from logs_factory import make_logs

from batchrl_mtf.data.reward import RewardConfig

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture
def logs() -> pd.DataFrame:
    """Tiny valid logs: 4 users x 2 sessions, up to 3 requests of 4 items."""
    return make_logs()


@pytest.fixture
def reward() -> RewardConfig:
    """A reward that the tiny logs can compute."""
    return RewardConfig(
        valid_play_s=10.0,
        stickiness={"watch_time": 0.02, "valid_play": 0.3},
        activeness={"like": 1.0, "click": 0.1},
    )


@pytest.fixture
def reward_toml(tmp_path: Path, reward: RewardConfig) -> Path:
    """The same reward as a TOML file."""
    p = tmp_path / "reward.toml"
    p.write_text(reward.to_toml(), encoding="utf-8")
    return p


@pytest.fixture
def logs_parquet(tmp_path: Path, logs: pd.DataFrame) -> Path:
    """The tiny logs as a Parquet file."""
    p = tmp_path / "logs.parquet"
    logs.to_parquet(p, index=False)
    return p
