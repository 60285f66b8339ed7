"""The one transitions type: episode ends, session counts, selections, and the file round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from logs_factory import make_logs

from batchrl_mtf import Transitions, load_dataset
from batchrl_mtf.data.build import build_dataset, build_dataset_from_frame
from batchrl_mtf.data.clean import account, check_columns, check_rows, kept_rows
from batchrl_mtf.data.config import DatasetConfig
from batchrl_mtf.data.formats import load_d3rlpy_file
from batchrl_mtf.data.reward import RewardConfig
from batchrl_mtf.data.transitions import compute_transitions
from batchrl_mtf.errors import DatasetError
from batchrl_mtf.logs.schema import LogFrame

ARRAYS = [f.name for f in dataclasses.fields(Transitions) if f.name not in ("spec", "path")]


def _frame(df: pd.DataFrame) -> LogFrame:
    return LogFrame(df.assign(__file=np.int16(0)), ("l.parquet",))


def _build(df: pd.DataFrame, reward: RewardConfig, **cfg: object) -> Transitions:
    data, _ = build_dataset_from_frame(_frame(df), reward, DatasetConfig(**cfg))  # type: ignore[arg-type]
    return data


def _session_ends(data: Transitions) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "session": pd.Series(data.session_id).astype(str),
            "step": data.step,
            "ts": data.ts_ms,
            "terminal": data.terminals,
            "timeout": data.timeouts,
        }
    )
    frame["last"] = frame["step"] == frame.groupby("session")["step"].transform("max")
    return frame


@pytest.mark.parametrize("margin_s", [0.0, 60.0, 3600.0 * 3])
def test_each_session_ends_once_in_a_terminal_or_a_timeout(
    reward: RewardConfig, margin_s: float
) -> None:
    df = make_logs(n_users=5, sessions_per_user=3)
    end = int(df["ts"].max()) + 1
    data = _build(df, reward, window_end_ms=end, window_margin_s=margin_s)
    ends = _session_ends(data)
    # the end flags are on the last step of a session only, exactly one of the two there
    assert not (ends["terminal"] | ends["timeout"])[~ends["last"]].any()
    last = ends[ends["last"]]
    assert (last["terminal"] ^ last["timeout"]).all()
    # a timeout is a session whose last request is within the margin of the window's end
    np.testing.assert_array_equal(last["timeout"], last["ts"] >= end - margin_s * 1000.0)
    assert last["timeout"].any() == (margin_s > 0)


def test_without_a_log_window_every_session_ends_in_a_terminal(reward: RewardConfig) -> None:
    data = _build(make_logs(n_users=3), reward)
    ends = _session_ends(data)
    np.testing.assert_array_equal(ends["terminal"], ends["last"])
    assert not data.timeouts.any()


def test_session_count_and_starts(reward: RewardConfig) -> None:
    df = make_logs(n_users=4, sessions_per_user=3)
    data = _build(df, reward, window_end_ms=int(df["ts"].max()) + 1, window_margin_s=600.0)
    n = df["session_id"].nunique()
    assert data.n_sessions == n
    assert int((data.terminals | data.timeouts).sum()) == n
    starts = data.episode_starts()
    assert len(starts) == n and starts[0] == 0
    assert (data.step[starts] == 0).all()
    # sessions are contiguous: the session id changes exactly at the starts
    sid = pd.Series(data.session_id).astype(str).to_numpy()
    np.testing.assert_array_equal(np.flatnonzero(sid[1:] != sid[:-1]) + 1, starts[1:])


def test_select_and_take_keep_whole_sessions(reward: RewardConfig) -> None:
    data = _build(make_logs(n_users=8, sessions_per_user=3), reward)
    train, test = data.select("train"), data.select("test")
    assert data.select(None) is data and data.select("all") is data
    assert len(train) + len(test) == len(data)
    assert train.n_sessions + test.n_sessions == data.n_sessions
    assert set(test.split) == {"test"} and set(train.split) == {"train"}
    assert not set(train.session_id) & set(test.session_id)
    assert train.spec == data.spec
    rows = np.flatnonzero(data.split == "test")
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(test, name), getattr(data, name)[rows], name)
    with pytest.raises(DatasetError, match="expected 'train', 'test' or 'all', found 'valid'"):
        data.select("valid")
    empty = data.take(np.flatnonzero(data.split == "train"))
    with pytest.raises(DatasetError, match="split 'test' of the dataset holds no session"):
        empty.select("test")


def test_transitions_of_a_part_have_no_statistics_until_built(reward: RewardConfig) -> None:
    logs = _frame(make_logs(n_users=3))
    cfg = DatasetConfig(gamma=0.9)
    columns = check_columns(logs.frame, "l.parquet", reward, cfg)
    checked = check_rows(logs, columns, cfg)
    keep, acc = account(checked.codes, checked.flags.reason)
    t = compute_transitions(kept_rows(logs, checked, keep, acc), reward, cfg)
    assert t.spec.features.mean == () and t.spec.action_low == () and t.spec.dataset_hash == ""
    assert t.spec.gamma == 0.9 and t.spec.tasks == columns.tasks
    np.testing.assert_array_equal(t.rewards, t.stickiness + t.activeness)
    built, _ = build_dataset_from_frame(logs, reward, cfg)
    assert len(built.spec.features.mean) == len(built.spec.features.names)
    assert len(built.spec.action_low) == len(built.spec.tasks)
    assert built.spec.dataset_hash.startswith("sha256:")
    for name in ARRAYS:  # building only fills in the spec
        np.testing.assert_array_equal(getattr(built, name), getattr(t, name), name)


def test_round_trip_through_the_file_formats(tmp_path: Path, reward: RewardConfig) -> None:
    df = make_logs(n_users=5, sessions_per_user=3, seed=2)
    df["user_id"] = "user-" + df["user_id"].astype(str)  # text ids round-trip too
    df.to_parquet(tmp_path / "l.parquet", index=False)
    cfg = DatasetConfig(window_end_ms=int(df["ts"].max()) + 1, window_margin_s=600.0)
    built, _ = build_dataset_from_frame(_frame(df), reward, cfg)
    build_dataset([tmp_path / "l.parquet"], reward, tmp_path / "ds", cfg)
    loaded = load_dataset(tmp_path / "ds")
    assert loaded.path == tmp_path / "ds" and built.path is None
    for name in ARRAYS:
        a, b = getattr(built, name), getattr(loaded, name)
        if name in ("user_id", "session_id", "request_id"):
            a, b = a.astype(str), b.astype(str)
        np.testing.assert_array_equal(a, b, name)
        assert len(b) == len(loaded), name
    assert loaded.timeouts.any() and loaded.terminals.any()
    assert loaded.ts_ms.dtype == np.int64 and loaded.step.dtype == np.int64
    assert loaded.spec.features == built.spec.features
    assert loaded.spec.dataset_hash == built.spec.dataset_hash  # the same Parquet bytes
    assert loaded.spec.data_hash.startswith("sha256:")
    # dataset.h5 holds the episodes as d3rlpy reads them, equal to to_d3rlpy()
    from_file = load_d3rlpy_file(tmp_path / "ds" / "dataset.h5")
    in_memory = loaded.to_d3rlpy()
    assert len(from_file.episodes) == len(in_memory.episodes) == loaded.n_sessions  # type: ignore[attr-defined]
    for e, f in zip(in_memory.episodes, from_file.episodes, strict=True):  # type: ignore[attr-defined]
        np.testing.assert_array_equal(e.observations, f.observations)
        np.testing.assert_array_equal(e.actions, f.actions)
        np.testing.assert_array_equal(e.rewards, f.rewards)
        assert e.terminated == f.terminated
    ends = loaded.episode_starts()[1:] - 1
    assert [bool(e.terminated) for e in from_file.episodes] == [  # type: ignore[attr-defined]
        *(bool(x) for x in loaded.terminals[ends]),
        bool(loaded.terminals[-1]),
    ]
