"""Log schema v1 reading and column discovery: file types, dtypes, classification, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from logs_factory import make_logs

from batchrl_mtf.cli import main
from batchrl_mtf.errors import SchemaError
from batchrl_mtf.logs.schema import (
    FILE_COLUMN,
    discover_columns,
    missing_required,
    normalise_ts,
    read_logs,
    read_table,
)

TS0 = 1_700_000_000_000


def test_parquet_and_csv_read_to_the_same_frame(tmp_path: Path) -> None:
    df = make_logs(n_users=3)
    df.to_parquet(tmp_path / "l.parquet", index=False)
    df.to_csv(tmp_path / "l.csv", index=False)
    a = read_logs([tmp_path / "l.parquet"])
    b = read_logs([tmp_path / "l.csv"])
    assert a.files == (str(tmp_path / "l.parquet"),)
    assert a.n_rows == len(df)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    # ids as int64, ts as int64 ms, the file index as int16, the logged values unchanged
    for col in ("user_id", "request_id", "item_id", "ts"):
        assert a.frame[col].dtype == np.int64, col
    assert a.frame[FILE_COLUMN].dtype == np.int16
    assert (a.frame[FILE_COLUMN] == 0).all()
    np.testing.assert_array_equal(a.frame["ts"].to_numpy(), df["ts"].to_numpy())
    np.testing.assert_array_equal(a.frame["w_click"].to_numpy(), df["w_click"].to_numpy())
    assert a.frame["session_id"].dtype == "string"


def test_directories_read_in_name_order_with_the_file_of_each_row(tmp_path: Path) -> None:
    df = make_logs(n_users=4)
    d = tmp_path / "logs"
    (d / "sub").mkdir(parents=True)
    half = len(df) // 2
    df.iloc[half:].to_parquet(d / "b.parquet", index=False)
    df.iloc[:half].to_parquet(d / "sub" / "a.parquet", index=False)  # "b" < "sub/a"
    (d / "notes.txt").write_text("not a log")
    logs = read_logs([d])
    assert logs.files == (str(d / "b.parquet"), str(d / "sub" / "a.parquet"))
    np.testing.assert_array_equal(
        logs.frame["request_id"].to_numpy(),
        np.concatenate([df["request_id"].iloc[half:], df["request_id"].iloc[:half]]),
    )
    np.testing.assert_array_equal(
        logs.frame[FILE_COLUMN].to_numpy(), np.repeat([0, 1], [len(df) - half, half])
    )


def test_ids_become_one_type_per_column_across_files(tmp_path: Path) -> None:
    df = make_logs(n_users=2)
    a, b = df.iloc[:8].copy(), df.iloc[8:].copy()
    b["user_id"] = "user-" + b["user_id"].astype(str)  # text ids in one file: text everywhere
    a["request_id"] = a["request_id"].astype("float64")  # integral floats stay integers
    a.loc[a.index[0], "item_id"] = None  # a missing integer id: nullable integers
    a.to_parquet(tmp_path / "a.parquet", index=False)
    b.to_parquet(tmp_path / "b.parquet", index=False)
    frame = read_logs([tmp_path / "a.parquet", tmp_path / "b.parquet"]).frame
    assert frame["user_id"].dtype == "string"
    assert list(frame["user_id"].iloc[:2]) == ["100", "100"]
    assert frame["request_id"].dtype == np.int64
    assert frame["item_id"].dtype == "Int64"
    assert frame["item_id"].isna().sum() == 1


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (pd.Series([TS0, TS0 + 1500]), [TS0, TS0 + 1500]),
        (pd.Series([float(TS0), np.nan]), [TS0, np.iinfo(np.int64).min]),
        (pd.Series(pd.to_datetime([TS0, TS0 + 1000], unit="ms")), [TS0, TS0 + 1000]),
        (
            pd.Series(pd.to_datetime([TS0], unit="ms", utc=True).tz_convert("Asia/Shanghai")),
            [TS0],
        ),
        (pd.Series(["2023-11-14T22:13:20Z", None]), [TS0, np.iinfo(np.int64).min]),
    ],
)
def test_ts_becomes_int64_epoch_milliseconds(values: pd.Series, expected: list[int]) -> None:
    out = normalise_ts(values, "f.parquet")
    assert out.dtype == np.int64
    assert out.tolist() == expected


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (pd.Series([1.5, 2.0]), r"f\.parquet: column 'ts': .* found fractional numbers"),
        (pd.Series(["noon"]), r"f\.parquet: column 'ts': .* found 'noon'"),
        (pd.Series([True, False]), r"f\.parquet: column 'ts': expected int64 .*found bool"),
    ],
)
def test_unreadable_ts_is_one_clear_error(values: pd.Series, match: str) -> None:
    with pytest.raises(SchemaError, match=match):
        normalise_ts(values, "f.parquet")


def test_columns_are_classified() -> None:
    df = make_logs(n_users=1).assign(
        u_age=1.0, comment=0, extra_label=0.0, note="x", duration=10.0, flag=True
    )
    cols = discover_columns(df, extra_feedback=("extra_label",), source="l.parquet")
    assert cols.tasks == ("click", "longview", "like")
    assert cols.pred_columns == ("pred_click", "pred_longview", "pred_like")
    assert cols.weight_columns == ("w_click", "w_longview", "w_like")
    assert cols.user_features == ("u_activity", "u_age")
    # task labels, known label names and the named extras are feedback, in log column order
    assert cols.feedback == ("click", "longview", "like", "watch_time", "comment", "extra_label")
    assert cols.unknown == ("note", "flag")
    assert cols.has_session_id and cols.has_behavior_logp and cols.has_duration
    plain = discover_columns(make_logs(n_users=1, behavior_logp=False))
    assert not plain.has_behavior_logp and not plain.has_duration


@pytest.mark.parametrize(
    ("change", "rule", "column"),
    [
        (lambda d: d.drop(columns=["w_like"]), "task_mismatch", "pred_like"),
        (lambda d: d.drop(columns=["pred_like"]), "task_mismatch", "w_like"),
        (
            lambda d: d.drop(columns=[c for c in d.columns if c.startswith(("pred_", "w_"))]),
            "task_mismatch",
            "pred_*",
        ),
        (lambda d: d.assign(u_activity="high"), "column_type", "u_activity"),
        (lambda d: d.assign(watch_time="long"), "column_type", "watch_time"),
        (lambda d: d.assign(w_click=True), "column_type", "w_click"),
    ],
)
def test_column_problems_name_the_column(change: object, rule: str, column: str) -> None:
    df = change(make_logs(n_users=1))  # type: ignore[operator]
    with pytest.raises(SchemaError, match=r"l\.parquet: 1 column problem") as info:
        discover_columns(df, source="l.parquet")
    ((p),) = info.value.problems
    assert (p.rule, p.column, p.file) == (rule, column, "l.parquet")


def test_boolean_feedback_is_accepted() -> None:
    df = make_logs(n_users=1)
    df["click"] = df["click"].astype(bool)
    assert "click" in discover_columns(df).feedback


def test_session_id_is_required_unless_sessions_come_from_gaps() -> None:
    df = make_logs(n_users=1).drop(columns=["session_id", "position"])
    assert [p.column for p in missing_required(df, False, "l")] == ["session_id", "position"]
    assert [p.column for p in missing_required(df, True, "l")] == ["position"]


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("missing.parquet", None, r"missing\.parquet: no such file or directory"),
        ("logs.txt", b"hello", r"logs\.txt: unsupported file type '\.txt'"),
        ("broken.parquet", b"not parquet", r"broken\.parquet: cannot read as parquet"),
        ("broken.csv", b'a,b\n"1,2\n', r"broken\.csv: cannot read as csv"),
        ("empty_dir", "dir", r"empty_dir: directory holds no \*\.parquet files"),
    ],
)
def test_bad_files_give_one_clear_error(
    tmp_path: Path, name: str, content: object, match: str
) -> None:
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    for read in (read_logs, read_table):
        with pytest.raises(SchemaError, match=match):
            read([path]) if read is read_logs else read(path)  # type: ignore[operator]
    # on the command line: exit 2, one line naming the file, no traceback
    r = CliRunner().invoke(main, ["validate", str(path)])
    assert r.exit_code == 2, r.output
    assert name in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output


def test_files_with_other_columns_are_refused(tmp_path: Path) -> None:
    df = make_logs(n_users=2)
    df.to_parquet(tmp_path / "a.parquet", index=False)
    df.drop(columns=["u_activity"]).assign(u_new=1.0).to_parquet(tmp_path / "b.parquet")
    with pytest.raises(
        SchemaError,
        match=r"b\.parquet: columns differ from .*a\.parquet.*\['u_new'\].*\['u_activity'\]",
    ):
        read_logs([tmp_path / "a.parquet", tmp_path / "b.parquet"])


def test_read_table_reads_as_stored(tmp_path: Path) -> None:
    df = make_logs(n_users=3)
    (tmp_path / "d").mkdir()
    df.iloc[:20].to_parquet(tmp_path / "d" / "part-0.parquet")
    df.iloc[20:].to_parquet(tmp_path / "d" / "part-1.parquet")
    df.to_csv(tmp_path / "l.csv", index=False)
    whole = read_table(tmp_path / "d")
    pd.testing.assert_frame_equal(whole, df)  # no id, ts or file-column changes
    assert FILE_COLUMN not in read_table(tmp_path / "l.csv").columns
    assert len(read_table(tmp_path / "l.csv")) == len(df)
