"""Hostile logs, reward TOML files and ``--out`` paths through validate and build-dataset.

Every case runs the real command in-process and is judged by :func:`judge`: one ``error:`` line
and exit 2 (or a correct success), no traceback, the inputs and any foreign file unchanged, no
temporary file, lock or half-written output left. A successful ``--on-error drop-session`` build
must account for every row, request and session exactly once.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from batchrl_mtf.core.io import MARKER, output_dir
from tests.hostile._harness import check_accounting, judge, run_cli, snapshot
from tests.logs_factory import make_logs

REWARD = """[reward]
valid_play_s = 10.0
[reward.stickiness]
watch_time = 0.02
[reward.activeness]
like = 1.0
click = 0.1
"""

Corrupt = Callable[[pd.DataFrame], pd.DataFrame]


def _set(col: str, value: object, row: int = 3) -> Corrupt:
    def f(df: pd.DataFrame) -> pd.DataFrame:
        if isinstance(value, str):
            df[col] = df[col].astype(str)
        elif value is None:
            df[col] = df[col].astype(object)
        df.loc[row, col] = value
        return df

    return f


def _drop(col: str) -> Corrupt:
    return lambda df: df.drop(columns=[col])


def _weights_differ(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[1, "w_click"] = df.loc[1, "w_click"] + 0.5
    return df


def _duplicate_position(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[1, "position"] = df.loc[0, "position"]
    return df


def _request_two_ts(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[1, "ts"] = df.loc[1, "ts"] + 5
    return df


def _session_two_users(df: pd.DataFrame) -> pd.DataFrame:
    rid = df.loc[0, "request_id"]
    df.loc[df["request_id"] == rid, "user_id"] = 999
    return df


def _extra_column(df: pd.DataFrame) -> pd.DataFrame:
    df["notes"] = "hello"
    return df


def _all_sessions_null(df: pd.DataFrame) -> pd.DataFrame:
    df["session_id"] = None
    return df


def _float_feedback(df: pd.DataFrame) -> pd.DataFrame:
    df["click"] = df["click"].astype(float)
    return df


NON_FINITE = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "1e39": 1e39}
FLOAT_COLUMNS = ("u_activity", "w_click", "pred_click", "watch_time", "behavior_logp")

#: name -> (corruption, expectation of a drop-session build: "either" = accounted success or clean)
CORRUPTIONS: dict[str, tuple[Corrupt, str]] = {
    **{f"null {c}": (_set(c, None), "either") for c in ("user_id", "session_id", "request_id")},
    **{f"null {c}": (_set(c, None), "either") for c in ("item_id", "ts", "position")},
    **{
        f"{name} in {c}": (_set(c, v), "either")
        for c in FLOAT_COLUMNS
        for name, v in NON_FINITE.items()
    },
    **{
        f"{name} in click": (lambda df, v=v: _set("click", v)(_float_feedback(df)), "either")
        for name, v in NON_FINITE.items()
    },
    "pred 7.0": (_set("pred_like", 7.0), "either"),
    "pred -0.1": (_set("pred_like", -0.1), "either"),
    "negative watch_time": (_set("watch_time", -3.0), "either"),
    "weights differ in a request": (_weights_differ, "either"),
    "duplicate position": (_duplicate_position, "either"),
    "request with two ts": (_request_two_ts, "either"),
    "request with two users": (_session_two_users, "either"),
    "string in u_activity": (_set("u_activity", "abc"), "clean"),
    "string in w_click": (_set("w_click", "x"), "clean"),
    **{f"missing {c}": (_drop(c), "clean") for c in ("user_id", "request_id", "ts", "item_id")},
    **{f"missing {c}": (_drop(c), "clean") for c in ("position", "w_click", "pred_like")},
    "every session id null": (_all_sessions_null, "clean"),
    "zero rows": (lambda df: df.iloc[:0], "clean"),
    "extra column": (_extra_column, "ok"),
}
# clean logs plus what validation must accept
ACCEPTED = {"extra column"}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    return make_logs(n_users=4, sessions_per_user=2, requests_per_session=3)


@pytest.mark.parametrize("command", ["validate", "build-fail", "build-drop"])
@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupt_logs(
    name: str, command: str, base: pd.DataFrame, tmp_path: Path, tally: Callable[..., None]
) -> None:
    corrupt, drop_expect = CORRUPTIONS[name]
    df = corrupt(base.copy())
    logs = tmp_path / "in" / "logs.parquet"
    logs.parent.mkdir()
    df.to_parquet(logs, index=False)
    reward = tmp_path / "in" / "reward.toml"
    reward.write_text(REWARD)
    out = tmp_path / "ds"
    watched = snapshot([logs.parent])
    if command == "validate":
        ended = run_cli(["validate", logs])
        expect = "ok" if name in ACCEPTED else "clean"
    else:
        on_error = "fail" if command == "build-fail" else "drop-session"
        ended = run_cli(
            ["build-dataset", logs, "--reward", reward, "--out", out, "--on-error", on_error]
        )
        expect = ("ok" if name in ACCEPTED else "clean") if on_error == "fail" else drop_expect
    if expect == "either":
        expect = "ok" if ended.exit_code == 0 else "clean"
    outcome = judge(ended, expect=expect, watched=watched, out=out, folders=[tmp_path])
    tally(f"logs/{command}/{name}", outcome)
    assert outcome in ("clean", "ok"), (outcome, ended.output, ended.traceback)
    if command != "validate" and outcome == "ok":
        check_accounting(out)


UTF16 = "user_id,session_id\n1,a\n".encode("utf-16")
RAW_FILES: dict[str, tuple[str, bytes]] = {
    "0-byte csv": ("logs.csv", b""),
    "0-byte parquet": ("logs.parquet", b""),
    "binary parquet": ("logs.parquet", bytes(range(256)) * 8),
    "binary csv": ("logs.csv", b"\x00\xff\xfe" * 300),
    "utf-16 csv": ("logs.csv", UTF16),
    "header-only csv": ("logs.csv", b"user_id,session_id,request_id\n"),
    "ragged csv": ("logs.csv", b"a,b\n1,2,3,4\n5\n"),
    "parquet magic only": ("logs.parquet", b"PAR1PAR1"),
    "unsupported suffix": ("logs.txt", b"hello"),
}


@pytest.mark.parametrize("command", ["validate", "build"])
@pytest.mark.parametrize("name", sorted(RAW_FILES))
def test_unreadable_log_files(
    name: str, command: str, tmp_path: Path, tally: Callable[..., None]
) -> None:
    fname, data = RAW_FILES[name]
    logs = tmp_path / "in" / fname
    logs.parent.mkdir()
    logs.write_bytes(data)
    reward = tmp_path / "in" / "reward.toml"
    reward.write_text(REWARD)
    watched = snapshot([logs.parent])
    out = tmp_path / "ds"
    args = (
        ["validate", logs]
        if command == "validate"
        else ["build-dataset", logs, "--reward", reward, "--out", out]
    )
    ended = run_cli(args)
    outcome = judge(ended, expect="clean", watched=watched, out=out, folders=[tmp_path])
    tally(f"files/{command}/{name}", outcome)
    assert outcome == "clean", (outcome, ended.output, ended.traceback)


def test_zero_row_parquet_is_an_error_not_ok(tmp_path: Path, base: pd.DataFrame) -> None:
    logs = tmp_path / "empty.parquet"
    base.iloc[:0].to_parquet(logs, index=False)
    ended = run_cli(["validate", logs])
    assert ended.exit_code == 2 and "OK: no problems found" not in ended.output
    assert "no rows" in ended.output


REWARDS: dict[str, bytes] = {
    "0-byte": b"",
    "binary": bytes(range(256)),
    "utf-16": REWARD.encode("utf-16"),
    "syntax error": b"[reward\nlike = ",
    "no [reward] table": b"[other]\nx = 1\n",
    "weight is a string": b'[reward.activeness]\nlike = "a lot"\n',
    "weight 1e308": b"[reward.activeness]\nlike = 1e308\n",
    "weight 1e39": b"[reward.activeness]\nlike = 1e39\n",
    "weight inf": b"[reward.activeness]\nlike = inf\n",
    "weight nan": b"[reward.activeness]\nlike = nan\n",
    "unknown column": b"[reward.activeness]\nshares_on_mars = 1.0\n",
    "empty tables": b"[reward]\n[reward.stickiness]\n[reward.activeness]\n",
    "bool weight": b"[reward.activeness]\nlike = true\n",
    "table weight": b"[reward.activeness.like]\nx = 1\n",
    "unknown key": b"[reward]\nbonus = 3\n[reward.activeness]\nlike = 1.0\n",
    "negative valid_play_s": b"[reward]\nvalid_play_s = -1\n[reward.activeness]\nlike = 1.0\n",
    "deep nesting": b"[reward.activeness]\nlike = " + b"[" * 5000 + b"]" * 5000 + b"\n",
}


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_hostile_reward_toml(
    name: str, base: pd.DataFrame, tmp_path: Path, tally: Callable[..., None]
) -> None:
    logs = tmp_path / "in" / "logs.parquet"
    logs.parent.mkdir()
    base.to_parquet(logs, index=False)
    reward = tmp_path / "in" / "reward.toml"
    reward.write_bytes(REWARDS[name])
    watched = snapshot([logs.parent])
    out = tmp_path / "ds"
    ended = run_cli(["build-dataset", logs, "--reward", reward, "--out", out])
    outcome = judge(ended, expect="clean", watched=watched, out=out, folders=[tmp_path])
    tally(f"reward/{name}", outcome)
    assert outcome == "clean", (outcome, ended.output, ended.traceback)


def test_reward_weight_times_value_beyond_float32_is_flagged(
    base: pd.DataFrame, tmp_path: Path
) -> None:
    df = base.copy()
    df.loc[5, "watch_time"] = 1e37  # finite in float32, but x 100 is not
    logs = tmp_path / "logs.parquet"
    df.to_parquet(logs, index=False)
    reward = tmp_path / "reward.toml"
    reward.write_text("[reward.stickiness]\nwatch_time = 100.0\n")
    ended = run_cli(["build-dataset", logs, "--reward", reward, "--out", tmp_path / "ds"])
    assert ended.exit_code == 2, ended.output
    assert "watch_time" in ended.output and "reward weight 100.0" in ended.output
    assert str(df.loc[5, "request_id"]) in ended.output
    assert not (tmp_path / "ds").exists()


def test_values_beyond_float32_name_column_value_and_requests(
    base: pd.DataFrame, tmp_path: Path
) -> None:
    df = base.copy()
    df.loc[2, "u_activity"] = 5e38
    logs = tmp_path / "logs.parquet"
    df.to_parquet(logs, index=False)
    ended = run_cli(["validate", logs])
    assert ended.exit_code == 2
    assert "u_activity" in ended.output and "5e+38" in ended.output
    assert str(df.loc[2, "request_id"]) in ended.output


# --- --out ---------------------------------------------------------------------------------------


def _setup_out(kind: str, tmp: Path, logs: Path) -> tuple[Path, list[str]]:
    """(--out path, extra flags) for one --out case; may create foreign files to protect."""
    if kind == "out is the logs' directory":
        return logs.parent, []
    if kind == "out contains the logs":
        return tmp, []
    if kind == "out is the logs file":
        return logs, []
    if kind == "out is an existing file":
        f = tmp / "precious.txt"
        f.write_text("keep me")
        return f, []
    if kind == "out is a foreign project":
        d = tmp / "project"
        d.mkdir()
        (d / "main.py").write_text("print('hi')")
        return d, ["--overwrite"]
    if kind == "out has a fake marker":
        d = tmp / "fake"
        d.mkdir()
        (d / MARKER).write_text("not json")
        (d / "thesis.tex").write_text("years of work")
        return d, ["--overwrite"]
    if kind == "out is ours without --overwrite":
        d = tmp / "ds_old"
        d.mkdir()
        (d / MARKER).write_text('{"format": "batchrl-mtf/output@1", "kind": "dataset"}\n')
        (d / "report.json").write_text("{}")
        return d, []
    if kind == "out is another kind of ours":
        d = tmp / "pol"
        d.mkdir()
        (d / MARKER).write_text('{"format": "batchrl-mtf/output@1", "kind": "policy"}\n')
        (d / "policy.json").write_text("{}")
        return d, ["--overwrite"]
    if kind == "out is dot":
        return Path("."), []
    if kind == "out under a file":
        f = tmp / "afile"
        f.write_text("x")
        return f / "ds", []
    raise AssertionError(kind)


OUT_CASES = [
    "out is the logs' directory",
    "out contains the logs",
    "out is the logs file",
    "out is an existing file",
    "out is a foreign project",
    "out has a fake marker",
    "out is ours without --overwrite",
    "out is another kind of ours",
    "out is dot",
    "out under a file",
]


@pytest.mark.parametrize("kind", OUT_CASES)
def test_out_never_replaces_what_is_not_ours(
    kind: str,
    base: pd.DataFrame,
    tmp_path: Path,
    tally: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logs = tmp_path / "logs" / "logs.parquet"
    logs.parent.mkdir()
    base.to_parquet(logs, index=False)
    reward = tmp_path / "reward.toml"
    reward.write_text(REWARD)
    monkeypatch.chdir(logs.parent)  # so that "." holds the logs
    out, flags = _setup_out(kind, tmp_path, logs)
    existed = out.exists()
    watched = snapshot([tmp_path])
    ended = run_cli(["build-dataset", logs, "--reward", reward, "--out", out, *flags])
    outcome = judge(
        ended,
        expect="clean",
        watched=watched,
        out=out,
        out_existed=existed,
        folders=[tmp_path, logs.parent],
    )
    tally(f"out/{kind}", outcome)
    assert outcome == "clean", (outcome, ended.output, ended.traceback)


def test_overwrite_replaces_our_dataset_and_cleans_stale_temporaries(
    base: pd.DataFrame, tmp_path: Path
) -> None:
    logs = tmp_path / "logs.parquet"
    base.to_parquet(logs, index=False)
    reward = tmp_path / "reward.toml"
    reward.write_text(REWARD)
    out = tmp_path / "ds"
    args = ["build-dataset", logs, "--reward", reward, "--out", out]
    assert run_cli(args).exit_code == 0
    stale = tmp_path / ".ds.abc123.tmp"  # a killed run's temporary directory
    stale.mkdir()
    (stale / MARKER).write_text('{"format": "batchrl-mtf/output@1", "kind": "dataset"}\n')
    foreign = tmp_path / ".ds.mine.tmp"  # same pattern, not ours: kept
    foreign.mkdir()
    (foreign / "notes").write_text("mine")
    again = run_cli(args)
    assert again.exit_code == 2 and "pass --overwrite" in again.output
    assert run_cli([*args, "--overwrite"]).exit_code == 0
    assert not stale.exists() and (foreign / "notes").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".ds")) == [
        ".ds.mine.tmp"
    ]


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(
    base: pd.DataFrame, tmp_path: Path
) -> None:
    logs = tmp_path / "logs.parquet"
    base.to_parquet(logs, index=False)
    reward = tmp_path / "reward.toml"
    reward.write_text(REWARD)
    out = tmp_path / "ds"
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(out), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        ended = run_cli(["build-dataset", logs, "--reward", reward, "--out", out])
        assert ended.exit_code == 2 and "another batchrl-mtf run is writing it" in ended.output
        assert not out.exists()
    finally:
        release.set()
        holder.join(60)
    with output_dir(out, "dataset"):  # released: free again, and the lock file is gone after
        pass
    assert not (tmp_path / ".ds.lock").exists()


def _hold_lock(out: str, ready: object, release: object) -> None:
    with output_dir(out, "dataset"):
        ready.set()  # type: ignore[attr-defined]
        release.wait(60)  # type: ignore[attr-defined]
