"""Every validation rule of log schema v1, table-driven: the message names column and request."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from batchrl_mtf.data.build import build_dataset
from batchrl_mtf.data.config import DatasetConfig
from batchrl_mtf.data.reward import RewardConfig
from batchrl_mtf.errors import SchemaError
from batchrl_mtf.logs.validate import RULES


def _multi_request_session(df: pd.DataFrame) -> str:
    counts = df.groupby("session_id")["request_id"].nunique()
    return str(counts[counts >= 2].index[0])


def _set(col: str, value: object, row: int = 5) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def f(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        if value is None:
            df[col] = df[col].astype(object)
        elif isinstance(value, float):
            df[col] = df[col].astype("float64")
        df.loc[row, col] = value
        return df

    return f


def _weights_differ(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df.loc[1, "w_click"] = df.loc[0, "w_click"] + 0.5
    return df


def _ts_conflict(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df.loc[1, "ts"] = df.loc[0, "ts"] + 5
    return df


def _duplicate_position(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df.loc[1, "position"] = df.loc[0, "position"]
    return df


def _session_two_users(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    sess = _multi_request_session(df)
    last_req = df.loc[df.session_id == sess, "request_id"].max()
    owner = df.loc[df.session_id == sess, "user_id"].iloc[0]
    other = df.loc[df.user_id != owner, "user_id"].iloc[0]
    df.loc[df.request_id == last_req, "user_id"] = other
    return df


def _interleaved(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    sess = _multi_request_session(df)
    user = df.loc[df.session_id == sess, "user_id"].iloc[0]
    start = df.loc[df.session_id == sess, "ts"].min()
    other = df.loc[(df.user_id == user) & (df.session_id != sess), "session_id"].iloc[0]
    df.loc[df.session_id == other, "ts"] = start + 1
    return df


CASES = [
    ("null_id", "user_id", _set("user_id", None)),
    ("null_id", "session_id", _set("session_id", None)),
    ("non_finite", "pred_click", _set("pred_click", np.nan)),
    ("non_finite", "w_like", _set("w_like", np.inf)),
    ("non_finite", "watch_time", _set("watch_time", np.nan)),
    ("non_finite", "u_activity", _set("u_activity", np.nan)),
    ("non_finite", "behavior_logp", _set("behavior_logp", np.nan)),
    ("prob_range", "pred_like", _set("pred_like", 1.5)),
    ("prob_range", "pred_click", _set("pred_click", -0.1)),
    ("negative_value", "watch_time", _set("watch_time", -3.0)),
    ("negative_value", "position", _set("position", -1)),
    ("negative_value", "position", _set("position", -1.0)),  # a float-typed position column
    ("negative_value", "position", _set("position", 2.5)),  # fractional rank
    ("non_finite", "w_like", _set("w_like", -np.inf)),
    ("weights_differ", "w_click", _weights_differ),
    ("request_conflict", "ts", _ts_conflict),
    ("duplicate_position", "position", _duplicate_position),
    ("session_user_conflict", "session_id", _session_two_users),
    ("session_interleaved", "ts", _interleaved),
]


@pytest.mark.parametrize(("rule", "column", "mutate"), CASES, ids=[f"{r}-{c}" for r, c, _ in CASES])
def test_rule_fails_build_and_names_column_and_request(
    tmp_path: Path,
    logs: pd.DataFrame,
    reward: RewardConfig,
    rule: str,
    column: str,
    mutate: Callable[[pd.DataFrame], pd.DataFrame],
) -> None:
    bad = mutate(logs)
    path = tmp_path / "bad.parquet"
    bad.to_parquet(path, index=False)
    out = tmp_path / "ds"
    with pytest.raises(SchemaError, match="problem") as info:
        build_dataset([path], reward, out)
    assert not out.exists(), "nothing may be written when validation fails"
    messages = [str(p) for p in info.value.problems]
    hits = [p for p in info.value.problems if p.rule == rule and p.column == column]
    assert hits, f"expected a [{rule}] problem on {column}; got {messages}"
    p = hits[0]
    assert p.file == str(path)
    assert p.n_rows >= 1
    assert f"column '{column}'" in str(p) and f"[{rule}]" in str(p)
    if column != "request_id":
        assert p.examples, "a problem must give example request_ids"
        assert "request_id" in str(p)


@pytest.mark.parametrize(("rule", "column", "mutate"), CASES, ids=[f"{r}-{c}" for r, c, _ in CASES])
def test_drop_session_accounts_for_every_row(
    tmp_path: Path,
    logs: pd.DataFrame,
    reward: RewardConfig,
    rule: str,
    column: str,
    mutate: Callable[[pd.DataFrame], pd.DataFrame],
) -> None:
    bad = mutate(logs)
    path = tmp_path / "bad.parquet"
    bad.to_parquet(path, index=False)
    report = build_dataset([path], reward, tmp_path / "ds", DatasetConfig(on_error="drop-session"))
    acc = report["accounting"]
    assert isinstance(acc, dict)
    for level in ("rows", "requests", "sessions"):
        a = acc[level]
        assert a["read"] == a["kept"] + sum(a["dropped"].values()), (level, a)
    assert acc["rows"]["read"] == len(bad)
    assert rule in acc["rows"]["dropped"]
    assert acc["rows"]["kept"] < len(bad)
    assert set(acc["rows"]["dropped"]) <= set(RULES)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda df: df.drop(columns=["ts"]), r"column 'ts' \[missing_column\]"),
        (lambda df: df.drop(columns=["session_id"]), r"missing_column.*--session-gap"),
        (lambda df: df.drop(columns=["w_like"]), r"column 'pred_like' \[task_mismatch\].*'w_like'"),
        (lambda df: df.drop(columns=["pred_like"]), r"column 'w_like' \[task_mismatch\]"),
        (lambda df: df.assign(pred_click="high"), r"column 'pred_click' \[column_type\].*numeric"),
    ],
)
def test_column_level_problems(
    tmp_path: Path, logs: pd.DataFrame, reward: RewardConfig, mutate: Callable, match: str
) -> None:
    path = tmp_path / "bad.parquet"
    mutate(logs).to_parquet(path, index=False)
    with pytest.raises(SchemaError) as info:
        build_dataset([path], reward, tmp_path / "ds", DatasetConfig(on_error="drop-session"))
    assert any(pytest.importorskip("re").search(match, str(p)) for p in info.value.problems), [
        str(p) for p in info.value.problems
    ]


def test_problems_attributed_to_each_file(
    tmp_path: Path, logs: pd.DataFrame, reward: RewardConfig
) -> None:
    half = logs["user_id"] < logs["user_id"].median()
    a, b = logs[half].copy(), logs[~half].copy()
    a.loc[a.index[0], "pred_click"] = 2.0
    b.loc[b.index[0], "pred_click"] = 2.0
    pa_, pb = tmp_path / "a.parquet", tmp_path / "b.parquet"
    a.to_parquet(pa_, index=False)
    b.to_parquet(pb, index=False)
    with pytest.raises(SchemaError) as info:
        build_dataset([pa_, pb], reward, tmp_path / "ds")
    files = sorted(p.file for p in info.value.problems if p.rule == "prob_range")
    assert files == sorted([str(pa_), str(pb)])


def test_examples_capped_at_five(tmp_path: Path, logs: pd.DataFrame, reward: RewardConfig) -> None:
    bad = logs.copy()
    bad["pred_like"] = 3.0
    path = tmp_path / "bad.parquet"
    bad.to_parquet(path, index=False)
    with pytest.raises(SchemaError) as info:
        build_dataset([path], reward, tmp_path / "ds")
    (p,) = [p for p in info.value.problems if p.rule == "prob_range"]
    assert len(p.examples) == 5
    assert p.n_rows == len(bad)


def test_clean_fast_paths_do_not_hide_or_invent_problems(
    tmp_path: Path, logs: pd.DataFrame, reward: RewardConfig
) -> None:
    """Large values finite in float32 are not flagged, values beyond float32 (finite in float64,
    infinite once training casts them) are; float-typed integer positions give the same dataset
    as integer ones."""
    big = logs.copy()
    big["u_activity"] = np.where(np.arange(len(big)) % 2 == 0, 3e38, -3e38)
    big.to_parquet(tmp_path / "big.parquet", index=False)
    report = build_dataset([tmp_path / "big.parquet"], reward, tmp_path / "ds_big")
    assert report["accounting"]["rows"]["kept"] == len(logs)  # type: ignore[index]
    huge = big.assign(u_activity=big["u_activity"] * 1e269)  # +-3e307: beyond float32
    huge.to_parquet(tmp_path / "huge.parquet", index=False)
    with pytest.raises(SchemaError) as err:
        build_dataset([tmp_path / "huge.parquet"], reward, tmp_path / "ds_huge")
    (problem,) = err.value.problems
    assert (problem.rule, problem.column, problem.n_rows) == ("non_finite", "u_activity", len(logs))
    assert "beyond float32" in problem.found and "3e+307" in problem.found

    as_float = logs.assign(position=logs["position"].astype("float64"))
    logs.to_parquet(tmp_path / "int.parquet", index=False)
    as_float.to_parquet(tmp_path / "float.parquet", index=False)
    build_dataset([tmp_path / "int.parquet"], reward, tmp_path / "ds_int")
    build_dataset([tmp_path / "float.parquet"], reward, tmp_path / "ds_float")
    a = pd.read_parquet(tmp_path / "ds_int" / "transitions.parquet")
    b = pd.read_parquet(tmp_path / "ds_float" / "transitions.parquet")
    pd.testing.assert_frame_equal(a, b)
