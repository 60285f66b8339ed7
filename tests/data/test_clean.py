"""Accounting of batchrl_mtf.data.clean: every row, request and session counted exactly once."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchrl_mtf.data.build import build_dataset
from batchrl_mtf.data.config import DatasetConfig
from batchrl_mtf.data.reward import RewardConfig
from batchrl_mtf.errors import SchemaError
from tests.logs_factory import make_logs

BASE = make_logs(n_users=4, sessions_per_user=2, requests_per_session=3)
REWARD = RewardConfig(stickiness={"watch_time": 0.02}, activeness={"like": 1.0})
NULLABLE = ("user_id", "session_id", "request_id", "item_id", "ts", "position")
FLAGS = ("u_activity", "pred_click", "w_click", "watch_time")

edits = st.lists(
    st.tuples(
        st.integers(0, len(BASE) - 1),
        st.sampled_from(NULLABLE + FLAGS),
        st.sampled_from(["null", "nan", "1e39", "negative"]),
    ),
    min_size=1,
    max_size=6,
)


def _corrupt(edits: list[tuple[int, str, str]]) -> pd.DataFrame:
    df = BASE.copy()
    for row, col, what in edits:
        if col in NULLABLE or what == "null":
            df[col] = df[col].astype(object)
            df.loc[row, col] = None
        else:
            df.loc[row, col] = {"nan": np.nan, "1e39": 1e39, "negative": -1.0}[what]
    return df


def _check(df: pd.DataFrame, tmp: Path) -> None:
    logs = tmp / "logs.parquet"
    df.to_parquet(logs, index=False)
    try:
        report = build_dataset([logs], REWARD, tmp / "ds", DatasetConfig(on_error="drop-session"))
    except SchemaError:  # every session dropped: nothing written
        assert not (tmp / "ds").exists()
        return
    acc = report["accounting"]
    for level in ("rows", "requests", "sessions"):
        a = acc[level]  # type: ignore[index]
        assert a["kept"] + sum(a["dropped"].values()) == a["read"], (level, a)
    trans = pd.read_parquet(tmp / "ds" / "transitions.parquet")
    assert acc["requests"]["kept"] == len(trans)  # type: ignore[index]
    assert acc["sessions"]["kept"] == trans["session_id"].nunique()  # type: ignore[index]
    assert acc["rows"]["read"] == len(df)  # type: ignore[index]
    # a kept request has every one of its logged rows (none silently lost)
    kept_req = set(trans["request_id"].tolist())
    logged = df[df["request_id"].isin(kept_req)]
    assert acc["rows"]["kept"] == len(logged)  # type: ignore[index]


def test_a_null_session_id_drops_its_whole_request_and_session(tmp_path: Path) -> None:
    df = BASE.copy()
    df["session_id"] = df["session_id"].astype(object)
    df.loc[1, "session_id"] = None
    _check(df, tmp_path)
    report = build_dataset(
        [tmp_path / "logs.parquet"],
        REWARD,
        tmp_path / "ds2",
        DatasetConfig(on_error="drop-session"),
    )
    trans = pd.read_parquet(tmp_path / "ds2" / "transitions.parquet")
    assert BASE.loc[1, "request_id"] not in set(trans["request_id"])
    assert BASE.loc[1, "session_id"] not in set(trans["session_id"])
    assert report["accounting"]["requests"]["dropped"]["null_id"] >= 1  # type: ignore[index]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits)
def test_kept_plus_dropped_is_read_and_kept_is_in_the_dataset(
    edits: list[tuple[int, str, str]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _check(_corrupt(edits), Path(tmp))
