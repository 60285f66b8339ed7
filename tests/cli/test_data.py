"""The validate and build-dataset commands: output, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from batchrl_mtf import __version__
from batchrl_mtf.cli import main
from batchrl_mtf.core.fusion import Fusion
from batchrl_mtf.data.formats import load_dataset


def test_version_and_help() -> None:
    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output
    r = CliRunner().invoke(main, ["build-dataset", "--help"])
    assert r.exit_code == 0 and "Examples:" in r.output and "--on-error" in r.output


def test_validate_clean(logs_parquet: Path) -> None:
    r = CliRunner().invoke(main, ["validate", str(logs_parquet)])
    assert r.exit_code == 0, r.output
    assert "tasks: click, longview, like" in r.output
    assert "OK: no problems found" in r.output


def test_validate_problems_exit_2_and_json(tmp_path: Path, logs: pd.DataFrame) -> None:
    bad = logs.copy()
    bad.loc[3, "pred_like"] = 7.0
    path = tmp_path / "bad.parquet"
    bad.to_parquet(path, index=False)
    out = tmp_path / "findings.json"
    r = CliRunner().invoke(main, ["validate", str(path), "--json", str(out)])
    assert r.exit_code == 2
    assert "column 'pred_like' [prob_range]" in r.output
    assert f"request_id {bad.loc[3, 'request_id']}" in r.output
    doc = json.loads(out.read_text())
    assert doc["ok"] is False and doc["problems"][0]["rule"] == "prob_range"


def test_build_dataset_cli(tmp_path: Path, logs_parquet: Path, reward_toml: Path) -> None:
    out = tmp_path / "ds"
    r = CliRunner().invoke(
        main,
        [
            "build-dataset",
            str(logs_parquet),
            "--reward",
            str(reward_toml),
            "--out",
            str(out),
            "--gamma",
            "0.9",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "sessions" in r.output and (out / "transitions.parquet").is_file()
    assert json.loads((out / "features.json").read_text())["gamma"] == 0.9


@pytest.mark.parametrize(
    ("flags", "line", "fusion"),
    [
        (
            [],
            "fusion recorded: logsum, beta 0.1 (default: no --formula/--beta given)",
            {"formula": "logsum", "beta": {"click": 0.1, "longview": 0.1, "like": 0.1}},
        ),
        (
            ["--formula", "logsum", "--beta", "0.1"],
            "fusion recorded: logsum, beta 0.1\n",
            {"formula": "logsum", "beta": {"click": 0.1, "longview": 0.1, "like": 0.1}},
        ),
        (
            ["--beta", "0.2,0.05,0.01"],
            "fusion recorded: logsum, beta click=0.2,longview=0.05,like=0.01\n",
            {"formula": "logsum", "beta": {"click": 0.2, "longview": 0.05, "like": 0.01}},
        ),
        (["--formula", "sum"], "fusion recorded: sum\n", {"formula": "sum"}),
    ],
)
def test_build_dataset_records_its_fusion_and_says_so(
    tmp_path: Path,
    logs_parquet: Path,
    reward_toml: Path,
    flags: list[str],
    line: str,
    fusion: dict[str, object],
) -> None:
    out = tmp_path / "ds"
    args = ["build-dataset", str(logs_parquet), "--reward", str(reward_toml), "--out", str(out)]
    r = CliRunner().invoke(main, [*args, *flags])
    assert r.exit_code == 0, r.output
    assert line in r.output
    source = "default" if not flags else "given"
    want = {**fusion, "source": source}
    assert json.loads((out / "features.json").read_text())["fusion"] == want
    assert json.loads((out / "report.json").read_text())["config"]["fusion"] == want
    spec = load_dataset(out).spec
    assert spec.fusion == Fusion.from_dict(fusion).for_tasks(spec.tasks)
    assert spec.fusion_source == source


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--gamma", "2"], r"error: gamma: expected a number in \[0, 1\], found 2.0"),
        (["--action-bounds", "1"], r"error: --action-bounds: expected LO,HI"),
        (["--action-bounds", "a,b"], r"error: --action-bounds: expected comma-separated numbers"),
        (
            ["--window-end", "yesterday-ish"],
            r"error: --window-end: expected epoch milliseconds or an ISO",
        ),
        (["--hist-n", "0"], r"error: features.hist_n: expected an integer >= 1"),
        (["--feedback", "nope"], r"error: features.feedback names column\(s\) \['nope'\] absent"),
        (["--formula", "sum", "--beta", "0.1"], r"error: --beta: expected no offsets with"),
        (["--beta", "0.1,x"], r"error: --beta: expected a number \(0.1\), numbers in task order"),
        (["--beta", "0,0.1,0.1"], r"error: --beta\[0\]: expected a finite number > 0"),
        (["--beta", "0.1,0.2"], r"error: fusion.beta: expected 1 or 3 offsets \(tasks \['click'"),
        (
            ["--beta", "click=0.1,share=0.2"],
            r"error: fusion.beta: expected one offset for each task \['click', 'longview', "
            r"'like'\]; missing \['longview', 'like'\], unknown \['share'\]",
        ),
    ],
)
def test_build_dataset_bad_flags_one_line_exit_2(
    tmp_path: Path, logs_parquet: Path, reward_toml: Path, extra: list[str], match: str
) -> None:
    out = tmp_path / "ds"
    r = CliRunner().invoke(
        main,
        [
            "build-dataset",
            str(logs_parquet),
            "--reward",
            str(reward_toml),
            "--out",
            str(out),
            *extra,
        ],
    )
    assert r.exit_code == 2, r.output
    assert pytest.importorskip("re").search(match, r.output), r.output
    assert len([ln for ln in r.output.splitlines() if ln.startswith("error:")]) == 1
    assert "Traceback" not in r.output
    assert not out.exists()


def test_build_dataset_schema_error_lists_problems(
    tmp_path: Path, logs: pd.DataFrame, reward_toml: Path
) -> None:
    bad = logs.copy()
    bad.loc[0, "watch_time"] = -5.0
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    out = tmp_path / "ds"
    r = CliRunner().invoke(
        main, ["build-dataset", str(path), "--reward", str(reward_toml), "--out", str(out)]
    )
    assert r.exit_code == 2
    assert "column 'watch_time' [negative_value]" in r.output
    assert "error: 1 problem(s) in the logs; nothing was written" in r.output
    assert not out.exists()
    r = CliRunner().invoke(
        main,
        [
            "build-dataset",
            str(path),
            "--reward",
            str(reward_toml),
            "--out",
            str(out),
            "--on-error",
            "drop-session",
        ],
    )
    assert r.exit_code == 0, r.output
    assert '"negative_value"' in r.output


def test_reward_with_absent_column(tmp_path: Path, logs_parquet: Path) -> None:
    reward = Path(__file__).resolve().parents[2] / "envs" / "reward_default.toml"
    r = CliRunner().invoke(
        main,
        [
            "build-dataset",
            str(logs_parquet),
            "--reward",
            str(reward),
            "--out",
            str(tmp_path / "ds"),
        ],
    )
    assert r.exit_code == 2
    assert "error: reward names column(s) 'follow', 'comment', 'share' absent from" in r.output
