"""Engines: the shared part function, parts merging, transitions directories, Spark equivalence."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from logs_factory import make_logs

from batchrl_mtf.cli import main
from batchrl_mtf.data.build import build_dataset
from batchrl_mtf.data.clean import check_columns
from batchrl_mtf.data.config import DatasetConfig
from batchrl_mtf.data.formats import (
    load_dataset,
    write_d3rlpy_file,
    write_d3rlpy_file_from_transitions,
)
from batchrl_mtf.data.parts import process_logs, process_part
from batchrl_mtf.data.reward import RewardConfig
from batchrl_mtf.data.stats import PartSummary
from batchrl_mtf.errors import ConfigError, SchemaError
from batchrl_mtf.logs.schema import LogFrame
from batchrl_mtf.logs.validate import merge_problems

REWARD = RewardConfig(10.0, {"watch_time": 0.02, "valid_play": 0.3}, {"like": 1.0, "click": 0.1})


def bad_logs() -> pd.DataFrame:
    """Logs with a problem of most kinds, including ones that link users across partitions."""
    df = make_logs(n_users=12, sessions_per_user=3, seed=4)
    users = sorted(df["user_id"].unique())
    df["user_id"] = df["user_id"].astype("float64")
    df.loc[df.index[3], "pred_click"] = 2.0  # prob_range
    r = df.loc[df.user_id == users[1], "request_id"].iloc[0]
    df.loc[(df.request_id == r) & (df.position == 0), "user_id"] = users[2]  # request spans users
    r = df.loc[df.user_id == users[3], "request_id"].iloc[0]
    df.loc[(df.request_id == r) & (df.position == 1), "user_id"] = np.nan  # null user in a request
    s = df.loc[df.user_id == users[4], "session_id"].iloc[-1]
    last = df.loc[df.session_id == s, "request_id"].max()
    df.loc[df.request_id == last, "user_id"] = users[5]  # session spans users
    r = df.loc[df.user_id == users[6], "request_id"].iloc[0]
    rows = df.index[df.request_id == r]
    df.loc[rows[1], "position"] = df.loc[rows[0], "position"]  # duplicate_position
    r = df.loc[df.user_id == users[7], "request_id"].iloc[-1]
    df.loc[df.index[df.request_id == r][1], "w_like"] += 0.5  # weights_differ
    u8 = df.user_id == users[8]
    sess = df.loc[u8, "session_id"].unique()
    df.loc[df.session_id == sess[1], "ts"] = df.loc[df.session_id == sess[0], "ts"].min() + 1
    df.loc[df.index[-1], "watch_time"] = -1.0  # negative_value
    return df.sample(frac=1.0, random_state=0).reset_index(drop=True)  # input order must not matter


def _frame(df: pd.DataFrame) -> LogFrame:
    df = df.copy()
    df["user_id"] = df["user_id"].astype("Int64")
    return LogFrame(df.assign(__file=np.int16(0)), ("bad.parquet",))


def test_parts_of_complete_users_merge_to_the_whole() -> None:
    logs = _frame(bad_logs())
    cfg = DatasetConfig(on_error="drop-session")
    columns = check_columns(logs.frame, "bad.parquet", REWARD, cfg)
    whole = process_part(logs, columns, REWARD, cfg)
    # parts closed under shared requests/sessions: link users through requests and sessions
    f = logs.frame
    key = f["user_id"].astype("string").fillna("<na>")
    linked: set[str] = set()
    for col in ("request_id", "session_id"):
        users_per = key.groupby(f[col]).nunique()
        linked |= set(key[f[col].isin(users_per[users_per > 1].index)])
    group = np.where(key.isin(linked), "mixed", key)
    parts = []
    for g in sorted(set(group), reverse=True):  # a different order than the whole
        sub = f[group == g].reset_index(drop=True)
        parts.append(process_part(LogFrame(sub, logs.files), columns, REWARD, cfg))
    merged = PartSummary.merge([p.summary for p in parts])
    assert merged.accounting == whole.summary.accounting
    assert merge_problems(merged.raw_problems, logs.files) == merge_problems(
        whole.summary.raw_problems, logs.files
    )
    rules = {p.rule for p in merge_problems(merged.raw_problems, logs.files)}
    assert {"request_conflict", "session_user_conflict", "null_id", "prob_range"} <= rules
    # transitions: the same rows per session, bit for bit
    assert whole.transitions is not None
    w = whole.transitions
    by_req = {r: i for i, r in enumerate(w.request_id)}
    n = 0
    for p in parts:
        if p.transitions is None:
            continue
        t = p.transitions
        idx = [by_req[r] for r in t.request_id]
        np.testing.assert_array_equal(t.observations, w.observations[idx])
        np.testing.assert_array_equal(t.rewards, w.rewards[idx])
        np.testing.assert_array_equal(t.terminals, w.terminals[idx])
        n += len(idx)
    assert n == len(w.request_id)
    np.testing.assert_allclose(merged.obs.mean, whole.summary.obs.mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(merged.obs.std, whole.summary.obs.std, rtol=1e-12, atol=1e-12)
    # the local engine (column checks, the part function, the merged checks) gives the same
    local, problems = process_logs(logs, REWARD, cfg)
    assert local.summary.accounting == whole.summary.accounting
    assert problems == merge_problems(whole.summary.raw_problems, logs.files)
    assert local.transitions is not None
    np.testing.assert_array_equal(local.transitions.observations, w.observations)


def test_problem_examples_are_the_smallest_request_ids() -> None:
    df = make_logs(n_users=6)
    df["pred_like"] = 3.0
    shuffled = df.sample(frac=1.0, random_state=3)
    cfg = DatasetConfig(on_error="drop-session")
    for frame in (df, shuffled):
        with pytest.raises(SchemaError) as info:
            process_logs(_frame(frame), REWARD, cfg)
        (p,) = [p for p in info.value.problems if p.rule == "prob_range"]
        assert p.examples == tuple(str(r) for r in sorted(df["request_id"].unique())[:5])


def test_transitions_directory_loads_and_streams_to_the_same_h5(tmp_path: Path) -> None:
    df = make_logs(n_users=8)
    df.to_parquet(tmp_path / "l.parquet", index=False)
    build_dataset([tmp_path / "l.parquet"], REWARD, tmp_path / "a")
    whole = load_dataset(tmp_path / "a")
    # the Spark layout: a transitions/ directory of parts
    b = tmp_path / "b"
    shutil.copytree(tmp_path / "a", b)
    table = pq.read_table(b / "transitions.parquet")
    (b / "transitions.parquet").unlink()
    (b / "transitions").mkdir()
    cuts = [0, 5, 11, table.num_rows]
    for i in range(3):
        pq.write_table(
            table.slice(cuts[i], cuts[i + 1] - cuts[i]), b / "transitions" / f"part-{i:05d}.parquet"
        )
    (b / "transitions" / "_SUCCESS").write_text("")
    parts = load_dataset(b)
    np.testing.assert_array_equal(parts.observations, whole.observations)
    np.testing.assert_array_equal(parts.request_id, whole.request_id)
    assert list(parts.split) == list(whole.split)
    # --from-transitions writes the same arrays as the in-memory writer, in small batches
    (b / "dataset.h5").unlink()
    write_d3rlpy_file_from_transitions(b, batch_rows=4)
    write_d3rlpy_file(tmp_path / "ref.h5", whole)
    with h5py.File(b / "dataset.h5") as got, h5py.File(tmp_path / "ref.h5") as ref:
        assert got.attrs["format"] == ref.attrs["format"]
        for name in ("observations", "actions", "rewards", "terminals", "timeouts"):
            np.testing.assert_array_equal(got[name][()], ref[name][()])
    (b / "dataset.h5").unlink()
    r = CliRunner().invoke(main, ["build-dataset", "--from-transitions", str(b)])
    assert r.exit_code == 0, r.output
    assert (b / "dataset.h5").is_file()


def test_engine_spark_without_pyspark_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_logs().to_parquet(tmp_path / "l.parquet", index=False)
    (tmp_path / "r.toml").write_text(REWARD.to_toml())
    monkeypatch.setitem(sys.modules, "pyspark", None)
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    r = CliRunner().invoke(
        main,
        [
            "build-dataset",
            str(tmp_path / "l.parquet"),
            "--reward",
            str(tmp_path / "r.toml"),
            "--out",
            str(tmp_path / "ds"),
            "--engine",
            "spark",
        ],
    )
    assert r.exit_code == 2, r.output
    assert "pip install 'batchrl-mtf[spark]'" in r.output
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ([], r"expected LOGS \(or --from-transitions DIR\)"),
        (["x.parquet", "--out", "ds"], r"--reward: required"),
        (["x.parquet", "--from-transitions", "ds"], r"--from-transitions: expected no LOGS"),
    ],
)
def test_build_dataset_argument_errors(args: list[str], match: str) -> None:
    r = CliRunner().invoke(main, ["build-dataset", *args])
    assert r.exit_code == 2
    assert pytest.importorskip("re").search(match, r.output), r.output


def test_spark_options_are_validated() -> None:
    from batchrl_mtf.data.spark import SparkOptions

    with pytest.raises(ConfigError, match="chunk_rows"):
        SparkOptions(chunk_rows=0)


# --- Spark (local[2]) ---------------------------------------------------------------------------


def _floats_close(a: object, b: object, path: str = "") -> None:
    """Same structure and values; floats within 1e-9 (relative or absolute)."""
    if isinstance(a, dict):
        assert isinstance(b, dict), path
        assert sorted(a) == sorted(b), path
        for k in a:
            _floats_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list), path
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _floats_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and not isinstance(b, bool):
        assert b == pytest.approx(a, rel=1e-9, abs=1e-9), path
    else:
        assert a == b, path


def clean_linking_logs(string_users: bool = False) -> pd.DataFrame:
    """Logs with problems that do not link users (no request or session spans two users)."""
    df = make_logs(n_users=14, sessions_per_user=3, seed=5)
    users = sorted(df["user_id"].unique())
    df.loc[df.index[7], "pred_click"] = -0.5  # prob_range
    r = df.loc[df.user_id == users[2], "request_id"].iloc[0]
    rows = df.index[df.request_id == r]
    df.loc[rows[1], "position"] = df.loc[rows[0], "position"]  # duplicate_position
    r = df.loc[df.user_id == users[5], "request_id"].iloc[-1]
    df.loc[df.index[df.request_id == r][1], "w_like"] += 0.5  # weights_differ
    df.loc[df.index[-1], "watch_time"] = -1.0  # negative_value
    if string_users:  # text ids: code-point order ("u10" < "u9"), not numeric order
        df["user_id"] = "u" + (df["user_id"] - 95).astype(str)
    return df.sample(frac=1.0, random_state=1).reset_index(drop=True)


def _build_both(
    tmp_path: Path,
    df: pd.DataFrame,
    n_files: int,
    options: object,
    caplog: pytest.LogCaptureFixture,
) -> tuple[dict[str, object], dict[str, object], bool]:
    """Build ``df`` (as ``n_files`` Parquet files) with both engines; also whether the Spark
    engine found linked users."""
    from batchrl_mtf.data.spark import SparkOptions, build_dataset_spark

    assert isinstance(options, SparkOptions)
    d = tmp_path / "logs"
    d.mkdir()
    for i in range(n_files):  # problems attributed to each file
        df[df["request_id"] % n_files == i].to_parquet(d / f"{'ab'[i]}.parquet", index=False)
    cfg = DatasetConfig(on_error="drop-session", window_end_ms=int(df["ts"].max()) + 1)
    local = build_dataset([d], REWARD, tmp_path / "local", cfg)
    with caplog.at_level(logging.INFO, logger="batchrl_mtf.data.spark"):
        spark = build_dataset_spark([d], REWARD, tmp_path / "spark", cfg, options)
    linked = any("link users" in r.getMessage() for r in caplog.records)
    return local, spark, linked


def _assert_same_datasets(
    tmp_path: Path, local: dict[str, object], spark: dict[str, object], n_parts: int
) -> None:
    """The Spark dataset equals the local one (see docs/scale.md for what "equal" is)."""
    from batchrl_mtf.data.spark_io import hash_parts

    # accounting and problems identical; the other report floats within 1e-9
    assert spark["accounting"] == local["accounting"]
    assert spark["problems"] == local["problems"]
    parts = sorted((tmp_path / "spark" / "transitions").glob("part-*.parquet"))
    assert len(parts) == n_parts, "transitions are partitioned"
    assert spark["dataset_hash"] == hash_parts(tmp_path / "spark" / "transitions")
    fl = json.loads((tmp_path / "local" / "features.json").read_text())
    fs = json.loads((tmp_path / "spark" / "features.json").read_text())
    assert fs["dataset_hash"] == spark["dataset_hash"]
    assert json.loads((tmp_path / "spark" / "report.json").read_text()) == spark
    local, spark = dict(local), dict(spark)
    for doc in (local, spark):
        doc.pop("dataset_hash")  # each engine hashes the Parquet bytes it wrote
    _floats_close(local, spark)
    fl.pop("dataset_hash")
    fs.pop("dataset_hash")
    _floats_close(fl, fs)
    # identical transitions, in canonical order
    a, b = load_dataset(tmp_path / "local"), load_dataset(tmp_path / "spark")
    assert len(a) == len(b) > 0
    for name in ("session_id", "request_id", "step", "terminals", "timeouts", "split"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for name in ("observations", "actions", "rewards", "stickiness", "activeness"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(a.behavior_logp, b.behavior_logp, rtol=1e-9, atol=1e-9)
    ta = pq.read_table(tmp_path / "local" / "transitions.parquet")
    tb = pq.read_table(tmp_path / "spark" / "transitions")  # the parts in name order
    assert ta.column("user_id").to_pylist() == tb.column("user_id").to_pylist()
    assert ta.column("ts").to_pylist() == tb.column("ts").to_pylist()
    # dataset.h5 from the Spark output on the "training machine"
    r = CliRunner().invoke(main, ["build-dataset", "--from-transitions", str(tmp_path / "spark")])
    assert r.exit_code == 0, r.output
    with (
        h5py.File(tmp_path / "spark" / "dataset.h5") as got,
        h5py.File(tmp_path / "local" / "dataset.h5") as ref,
    ):
        for name in ("observations", "actions", "rewards", "terminals", "timeouts"):
            np.testing.assert_allclose(got[name][()], ref[name][()], rtol=1e-6)


def test_spark_and_local_engines_are_equivalent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Linked users (grouped first, output sorted), two files, chunks within partitions."""
    pytest.importorskip("pyspark")
    from batchrl_mtf.data.spark import SparkOptions

    opts = SparkOptions(master="local[2]", partitions=3, chunk_rows=60)
    local, spark, linked = _build_both(tmp_path, bad_logs(), 2, opts, caplog)
    assert linked
    assert len(local["problems"]) >= 6  # type: ignore[arg-type]
    _assert_same_datasets(tmp_path, local, spark, 3)


@pytest.mark.parametrize(
    ("string_users", "n_files", "partitions", "chunk_rows"),
    [
        (False, 1, 0, 1_000_000),  # one chunk per partition, summaries by accumulator
        (True, 2, 3, 60),  # text ids, two files, sorted chunks within range partitions
    ],
)
def test_spark_without_linked_users_writes_ranges_in_canonical_order(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    string_users: bool,
    n_files: int,
    partitions: int,
    chunk_rows: int,
) -> None:
    pytest.importorskip("pyspark")
    from batchrl_mtf.data.spark import SparkOptions

    opts = SparkOptions(master="local[2]", partitions=partitions, chunk_rows=chunk_rows)
    df = clean_linking_logs(string_users)
    local, spark, linked = _build_both(tmp_path, df, n_files, opts, caplog)
    assert not linked
    rules = {p["rule"] for p in local["problems"]}  # type: ignore[attr-defined]
    assert {"prob_range", "duplicate_position", "weights_differ", "negative_value"} <= rules
    _assert_same_datasets(tmp_path, local, spark, partitions or 2)


def test_spark_fails_like_the_local_engine_and_leaves_nothing(tmp_path: Path) -> None:
    """on_error="fail" without linked users: the one-pass plan writes before it merges the
    summaries, so the failure must remove what it wrote."""
    pytest.importorskip("pyspark")
    from batchrl_mtf.data.spark import SparkOptions, build_dataset_spark

    clean_linking_logs().to_parquet(tmp_path / "l.parquet", index=False)
    cfg = DatasetConfig(on_error="fail")
    with pytest.raises(SchemaError) as local:
        build_dataset([tmp_path / "l.parquet"], REWARD, tmp_path / "local", cfg)
    with pytest.raises(SchemaError) as spark:
        build_dataset_spark(
            [tmp_path / "l.parquet"], REWARD, tmp_path / "spark", cfg, SparkOptions("local[2]")
        )
    assert str(spark.value) == str(local.value)
    assert not (tmp_path / "spark").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["l.parquet"]  # no temporary sibling left
