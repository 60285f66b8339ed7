"""A fuzzer: random corruptions of valid schema-v1 logs through build-dataset and validate.

Asserts for every example: no traceback; exit 0 or one ``error:`` line with exit 2; nothing
half-written (no output directory after an error, no temporary file or lock left); and after a
successful ``--on-error drop-session`` build, every row, request and session is accounted for
exactly once and the kept counts are what the dataset holds.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile._harness import check_accounting, judge, leftovers, run_cli, snapshot
from tests.logs_factory import make_logs

BASE = make_logs(n_users=4, sessions_per_user=2, requests_per_session=3)
REWARD = "[reward.stickiness]\nwatch_time = 0.02\n[reward.activeness]\nlike = 1.0\nclick = 0.5\n"
VALUES = [None, np.nan, np.inf, -np.inf, 1e39, -1e39, -1.0, 7.0, 0, 2**62, 1e-320]

cell = st.tuples(
    st.just("set"),
    st.integers(0, len(BASE) - 1),
    st.sampled_from(list(BASE.columns)),
    st.sampled_from(range(len(VALUES))),
)
row_op = st.tuples(
    st.sampled_from(["duplicate", "delete", "swap_session"]), st.integers(0, len(BASE) - 1)
)
ops = st.lists(st.one_of(cell, row_op), min_size=1, max_size=8)


def _apply(ops: list[tuple[object, ...]], shuffle: int) -> pd.DataFrame:
    df = BASE.copy()
    for op in ops:
        kind, row = op[0], int(op[1])  # type: ignore[call-overload]
        if row >= len(df):
            continue
        if kind == "set":
            col, value = str(op[2]), VALUES[int(op[3])]  # type: ignore[call-overload]
            if value is None or (df[col].dtype.kind in "iub" and not float(value).is_integer()):
                df[col] = df[col].astype(object)
            try:
                df.loc[df.index[row], col] = value
            except (OverflowError, TypeError, ValueError):
                df[col] = df[col].astype(object)
                df.loc[df.index[row], col] = value
        elif kind == "duplicate":
            df = pd.concat([df, df.iloc[[row]]], ignore_index=True)
        elif kind == "delete":
            df = df.drop(index=df.index[row]).reset_index(drop=True)
        else:
            other = (row + 7) % len(df)
            df.loc[df.index[row], "session_id"] = df.loc[df.index[other], "session_id"]
    if shuffle:
        df = df.sample(frac=1.0, random_state=shuffle).reset_index(drop=True)
    return df


def _write(df: pd.DataFrame, path: Path) -> bool:
    """Write the logs; ``False`` when the corruption cannot be stored in the format at all."""
    try:
        if path.suffix == ".csv":
            df.to_csv(path, index=False)
        else:
            df.to_parquet(path, index=False)
    except (TypeError, ValueError, OverflowError, pd.errors.IntCastingNaNError) as exc:
        del exc
        return False
    except Exception as exc:  # pyarrow's conversion errors
        return type(exc).__module__.startswith("pyarrow")
    return True


def _fuzz_one(ops: list[tuple[object, ...]], shuffle: int, fmt: str, on_error: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        logs = tmp / "in" / f"logs.{fmt}"
        logs.parent.mkdir()
        if not _write(_apply(ops, shuffle), logs):
            return
        (tmp / "in" / "reward.toml").write_text(REWARD)
        watched = snapshot([tmp / "in"])
        out = tmp / "ds"
        ended = run_cli(
            [
                "build-dataset",
                logs,
                "--reward",
                tmp / "in" / "reward.toml",
                "--out",
                out,
                "--on-error",
                on_error,
            ]
        )
        expect = "ok" if ended.exit_code == 0 else "clean"
        outcome = judge(ended, expect=expect, watched=watched, out=out, folders=[tmp])
        assert outcome in ("ok", "clean"), (outcome, ended.output, ended.traceback)
        assert not leftovers(tmp)
        if ended.exit_code == 0:
            check_accounting(out)
        v = run_cli(["validate", logs])
        assert not v.traceback and v.exit_code in (0, 2), v.traceback


FUZZ = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}


@settings(max_examples=30, derandomize=True, **FUZZ)  # type: ignore[arg-type]
@given(
    ops,
    st.integers(0, 3),
    st.sampled_from(["parquet", "csv"]),
    st.sampled_from(["fail", "drop-session"]),
)
def test_fuzzed_logs_never_traceback_and_always_account(
    ops: list[tuple[object, ...]], shuffle: int, fmt: str, on_error: str
) -> None:
    _fuzz_one(ops, shuffle, fmt, on_error)


@pytest.mark.slow
@settings(max_examples=400, **FUZZ)  # type: ignore[arg-type]
@given(
    ops,
    st.integers(0, 3),
    st.sampled_from(["parquet", "csv"]),
    st.sampled_from(["fail", "drop-session"]),
)
def test_fuzzed_logs_long_run(
    ops: list[tuple[object, ...]], shuffle: int, fmt: str, on_error: str
) -> None:
    _fuzz_one(ops, shuffle, fmt, on_error)
