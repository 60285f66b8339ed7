"""State features: the vector layout, the history windows against a naive computation, the hour."""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import pandas as pd
import pytest
from logs_factory import make_logs

from batchrl_mtf.data.config import DatasetConfig
from batchrl_mtf.data.features import (
    MS_PER_HOUR,
    FeatureConfig,
    StateParts,
    UserHistory,
    assemble,
    feature_names,
    feature_spec,
)
from batchrl_mtf.data.parts import process_logs
from batchrl_mtf.data.reward import RewardConfig
from batchrl_mtf.logs.schema import LogFrame, discover_columns

REWARD = RewardConfig(10.0, {"watch_time": 0.02}, {"like": 1.0})
FEEDBACK = ("click", "like")
TS0 = 1_700_000_000_000 - 1_700_000_000_000 % (24 * MS_PER_HOUR)  # midnight UTC


def _parts(ts_ms: int = TS0 + 6 * MS_PER_HOUR) -> StateParts:
    """One state whose every ingredient has its own value."""
    return StateParts(
        user=np.array([[11.0, 12.0]]),
        depth=np.array([21.0]),
        elapsed_s=np.array([22.0]),
        session_sums=np.array([[31.0, 32.0]]),
        prev_sums=np.array([[41.0, 42.0]]),
        hist_rates=np.array([[51.0, 52.0]]),
        hist_sessions=np.array([61.0]),
        ts_ms=np.array([ts_ms], dtype=np.int64),
    )


VALUE = {
    "u_a": 11.0,
    "u_b": 12.0,
    "session_depth": 21.0,
    "session_elapsed_s": 22.0,
    "session_click": 31.0,
    "session_like": 32.0,
    "prev_click": 41.0,
    "prev_like": 42.0,
    "hist_click_rate": 51.0,
    "hist_like_rate": 52.0,
    "hist_sessions": 61.0,
    "hour_sin": 1.0,  # 06:00 UTC
    "hour_cos": 0.0,
}


@pytest.mark.parametrize(
    ("user", "session", "prev", "hist", "hour"), list(product((True, False), repeat=5))
)
def test_state_vector_follows_the_documented_order(
    user: bool, session: bool, prev: bool, hist: bool, hour: bool
) -> None:
    cfg = FeatureConfig(user=user, session=session, prev=prev, hist=hist, hour=hour)
    names = feature_names(("u_a", "u_b"), FEEDBACK, cfg)
    expected_names = [
        *(["u_a", "u_b"] if user else []),
        *(
            ["session_depth", "session_elapsed_s", "session_click", "session_like"]
            if session
            else []
        ),
        *(["prev_click", "prev_like"] if prev else []),
        *(["hist_click_rate", "hist_like_rate", "hist_sessions"] if hist else []),
        *(["hour_sin", "hour_cos"] if hour else []),
    ]
    assert list(names) == expected_names
    vec = assemble(_parts(), cfg)
    assert vec.shape == (1, len(names))
    np.testing.assert_allclose(vec[0], [VALUE[n] for n in names], atol=1e-12)


@pytest.mark.parametrize("hour", range(24))
def test_hour_features_are_the_utc_hour_on_the_circle(hour: int) -> None:
    cfg = FeatureConfig(user=False, session=False, prev=False, hist=False)
    ts = TS0 + hour * MS_PER_HOUR + 59 * 60_000  # minutes do not count
    vec = assemble(_parts(ts), cfg)[0]
    angle = 2 * math.pi * hour / 24
    np.testing.assert_allclose(vec, [math.sin(angle), math.cos(angle)], atol=1e-12)


def test_feature_spec_uses_the_configured_feedback_or_every_feedback_column() -> None:
    cols = discover_columns(make_logs(n_users=1))
    every = feature_spec(cols, FeatureConfig())
    assert every.feedback == cols.feedback == ("click", "longview", "like", "watch_time")
    assert every.names == feature_names(cols.user_features, cols.feedback, FeatureConfig())
    narrow = feature_spec(cols, FeatureConfig(feedback=("like",)))
    assert narrow.feedback == ("like",)
    assert "session_like" in narrow.names and "session_click" not in narrow.names
    assert narrow.mean == () and narrow.std == ()  # statistics come with the dataset


def _naive_states(df: pd.DataFrame, hist_n: int) -> dict[int, dict[str, float]]:
    """Every feature of every request by the definitions in ``features.py``, one row at a time."""
    df = df.copy()
    df["start"] = df.groupby("session_id")["ts"].transform("min")
    df = df.sort_values(["user_id", "start", "session_id", "ts", "request_id", "position"])
    out: dict[int, dict[str, float]] = {}
    for _u, urows in df.groupby("user_id", sort=False):
        seen: list[pd.Series] = []  # the user's impressions before the current session
        for sessions_before, (_s, srows) in enumerate(urows.groupby("session_id", sort=False)):
            window = seen[-hist_n:]
            t0 = int(srows["ts"].min())
            sums = dict.fromkeys(FEEDBACK, 0.0)
            prev = dict.fromkeys(FEEDBACK, 0.0)
            for depth, (r, rrows) in enumerate(srows.groupby("request_id", sort=False)):
                ts = int(rrows["ts"].iloc[0])
                state = {
                    "u_activity": float(rrows["u_activity"].iloc[0]),
                    "session_depth": float(depth),
                    "session_elapsed_s": (ts - t0) / 1000.0,
                    "hist_sessions": float(sessions_before),
                }
                for f in FEEDBACK:
                    state[f"session_{f}"] = sums[f]
                    state[f"prev_{f}"] = prev[f]
                    state[f"hist_{f}_rate"] = (
                        sum(float(w[f]) for w in window) / len(window) if window else 0.0
                    )
                hour = (ts // MS_PER_HOUR) % 24
                state["hour_sin"] = math.sin(2 * math.pi * hour / 24)
                state["hour_cos"] = math.cos(2 * math.pi * hour / 24)
                out[int(r)] = state
                prev = {f: float(rrows[f].sum()) for f in FEEDBACK}
                sums = {f: sums[f] + prev[f] for f in FEEDBACK}
            seen.extend(row for _, row in srows.iterrows())
    return out


@pytest.mark.parametrize("hist_n", [1, 3, 10, 500])
def test_history_windows_match_a_naive_computation(hist_n: int) -> None:
    # sessions of several requests, users with several sessions, rows in shuffled input order
    df = make_logs(n_users=4, sessions_per_user=4, requests_per_session=4, items_per_request=3)
    df = df.sample(frac=1.0, random_state=1).reset_index(drop=True)
    cfg = DatasetConfig(features=FeatureConfig(feedback=FEEDBACK, hist_n=hist_n))
    logs = LogFrame(df.assign(__file=np.int16(0)), ("l.parquet",))
    result, _ = process_logs(logs, REWARD, cfg)
    t = result.transitions
    assert t is not None
    naive = _naive_states(df, hist_n)
    names = t.spec.features.names
    assert len(t) == len(naive) == df["request_id"].nunique()
    for i, r in enumerate(t.request_id):
        np.testing.assert_allclose(
            t.observations[i], [naive[int(r)][n] for n in names], rtol=1e-12, atol=1e-12
        )


def test_online_user_history_keeps_the_same_window() -> None:
    rng = np.random.default_rng(0)
    fb = rng.integers(0, 2, size=(17, 2)).astype(np.float64)
    h = UserHistory(2, hist_n=5)
    np.testing.assert_array_equal(h.rates(), [0.0, 0.0])
    h.add_impressions(fb[:3])
    h.add_impressions(fb[3:])
    h.end_session()
    np.testing.assert_allclose(h.rates(), fb[-5:].mean(axis=0))
    assert h.n_sessions == 1
