"""The sim commands: simulate, rollout, search-constant."""

from __future__ import annotations

import json

import pandas as pd
from click.testing import CliRunner

from batchrl_mtf.cli import main


def test_simulate_writes_schema_v1_logs_with_behavior_logp(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "logs.parquet"
    res = CliRunner().invoke(
        main,
        ["simulate", "--sessions", "30", "--policy", "mixed", "--seed", "2", "--out", str(out)],
    )
    assert res.exit_code == 0, res.output
    assert "30 sessions" in res.output
    df = pd.read_parquet(out)
    assert df["session_id"].nunique() == 30
    assert {"behavior_logp", "pred_click", "w_share", "watch_time", "u_social"} <= set(df.columns)
    meta = json.loads((tmp_path / "logs.parquet.meta.json").read_text())
    assert meta["policy"] == "mixed"
    assert meta["seed"] == 2
    again = tmp_path / "again.parquet"
    CliRunner().invoke(
        main,
        ["simulate", "--sessions", "30", "--policy", "mixed", "--seed", "2", "--out", str(again)],
    )
    pd.testing.assert_frame_equal(df, pd.read_parquet(again))
    ds = CliRunner().invoke(
        main,
        [
            "build-dataset",
            str(out),
            "--reward",
            "envs/reward_default.toml",
            "--out",
            str(tmp_path / "ds"),
        ],
    )
    assert ds.exit_code == 0, ds.output


def test_simulate_deterministic_policy_has_no_behavior_logp(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "p.csv"
    res = CliRunner().invoke(
        main,
        [
            "simulate",
            "--env",
            "ecommerce",
            "--sessions",
            "5",
            "--policy",
            "production",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out)
    assert "behavior_logp" not in df.columns
    assert {"w_click", "w_cart", "w_buy", "cart", "buy"} <= set(df.columns)


def test_simulate_errors_are_one_line_exit_2(tmp_path) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    res = runner.invoke(main, ["simulate", "--sessions", "5", "--out", str(tmp_path / "x.txt")])
    assert res.exit_code == 2
    assert "expected a .parquet or .csv" in res.output
    res = runner.invoke(
        main,
        [
            "simulate",
            "--env",
            str(tmp_path / "no.toml"),
            "--sessions",
            "5",
            "--out",
            str(tmp_path / "x.parquet"),
        ],
    )
    assert res.exit_code == 2
    assert "platform spec not found" in res.output
    res = runner.invoke(
        main,
        [
            "simulate",
            "--sessions",
            "5",
            "--policy",
            "constant:1",
            "--out",
            str(tmp_path / "x.parquet"),
        ],
    )
    assert res.exit_code == 2
    assert "expected 6 weights" in res.output


def test_rollout_prints_and_writes_json(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "v.json"
    res = CliRunner().invoke(
        main,
        ["rollout", "--policy", "production", "--sessions", "60", "--seed", "1", "--out", str(out)],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert json.loads(res.output) == doc
    lo, hi = doc["return"]["ci95"]
    assert lo < doc["return"]["mean"] < hi
    assert doc["stickiness"]["mean"] + doc["activeness"]["mean"] == __import__("pytest").approx(
        doc["return"]["mean"]
    )
    assert doc["session_length"]["mean"] >= 1
    assert doc["watch_time_per_request"]["mean"] > 0
    assert doc["interaction_rate_per_request"]["mean"] > 0
    assert set(doc["by_segment"]) <= {"casual", "watcher", "social"}


def test_search_constant_grid_and_segment_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "s.json"
    res = CliRunner().invoke(
        main,
        [
            "search-constant",
            "--env",
            "ecommerce",
            "--method",
            "grid",
            "--grid-points",
            "2",
            "--iterations",
            "1",
            "--sessions",
            "20",
            "--eval-sessions",
            "30",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert res.output.startswith("best: constant:")
    doc = json.loads(out.read_text())
    assert doc["evaluations"] == 1 + 3 * 2
    assert set(doc["weights"]) == {"w_click", "w_cart", "w_buy"}
    bad = CliRunner().invoke(main, ["search-constant", "--segment", "nobody"])
    assert bad.exit_code == 2
    assert "expected one of casual, watcher, social" in bad.output


def test_help_has_examples() -> None:
    for cmd in ("simulate", "rollout", "search-constant"):
        res = CliRunner().invoke(main, [cmd, "--help"])
        assert res.exit_code == 0
        assert "Examples:" in res.output


def _table(tmp_path, beta, exploration=None):  # type: ignore[no-untyped-def]
    from batchrl_mtf.serving import Fusion, TableKey, TableRow, WeightTable

    table = WeightTable(
        tasks=("click", "longview", "like", "follow", "comment", "share"),
        fusion=Fusion("logsum", tuple(beta)),
        action_low=(0.0,) * 6,
        action_high=(2.0,) * 6,
        keys=(TableKey("u_social", (0.5,)),),
        default=(1.0, 0.4, 0.3, 0.1, 0.1, 0.1),
        rows=(
            TableRow(((None, 0.5),), (0.3, 1.0, 0.7, 0.4, 0.5, 0.8)),
            TableRow(((0.5, None),), (0.8, 0.5, 0.1, 1.0, 0.1, 0.6)),
        ),
        exploration=exploration,
    )
    return table.save(tmp_path / "table.json")


BETA = (0.05, 0.05, 0.01, 0.005, 0.005, 0.005)


def test_weight_table_policies_through_serving(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from batchrl_mtf.serving import Exploration

    path = _table(tmp_path, BETA)
    runner = CliRunner()
    res = runner.invoke(main, ["rollout", "--policy", str(path), "--sessions", "40"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "t.parquet"
    res = runner.invoke(
        main, ["simulate", "--sessions", "20", "--policy", str(path), "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(out)
    low = df["u_social"] < 0.5
    assert (df.loc[low, "w_longview"] == 1.0).all()
    assert (df.loc[~low, "w_follow"] == 1.0).all()
    # a table with an exploration block is sampled, with its log-density logged
    path = _table(tmp_path, BETA, Exploration("gaussian", (0.1,) * 6))
    res = runner.invoke(
        main, ["simulate", "--sessions", "20", "--policy", str(path), "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(out)
    assert df["behavior_logp"].notna().all()
    assert df["w_click"].nunique() > 20
    # a table made for another beta is refused
    path = _table(tmp_path, (0.1,) * 6)
    res = runner.invoke(main, ["rollout", "--policy", str(path), "--sessions", "10"])
    assert res.exit_code == 2
    assert "differs from the environment's" in res.output
