"""Tests of the fit-predictor and rescore commands (click.testing.CliRunner on the main group)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from batchrl_mtf.cli import main

SMALL = [
    "--set",
    "hidden_dims=[8]",
    "--set",
    "tower_dims=[4]",
    "--set",
    "embedding_dim=4",
    "--no-progress",
]


def cli_logs(n: int = 1200, seed: int = 1) -> pd.DataFrame:
    """Schema-v1 logs with learnable click/like labels and a watch_time target."""
    rng = np.random.default_rng(seed)
    u = rng.integers(0, 20, n)
    i = rng.integers(0, 30, n)
    ib = rng.normal(size=30) * 2
    click = (rng.random(n) < 1 / (1 + np.exp(-ib[i]))).astype(np.int64)
    return pd.DataFrame(
        {
            "user_id": u,
            "session_id": u,
            "request_id": np.arange(n) // 4,
            "ts": 1_700_000_000_000 + np.arange(n, dtype=np.int64) * 500,
            "item_id": i,
            "position": np.arange(n) % 4,
            "pred_click": 0.5,
            "pred_like": 0.5,
            "w_click": 1.0,
            "click": click,
            "like": click * (rng.random(n) < 0.5),
            "watch_time": rng.exponential(5.0, n) * (1 + click),
            "duration": rng.uniform(5, 60, 30)[i],
        }
    )


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models train fastest on one thread (and do not fight other processes for cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def logs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("logs") / "logs.parquet"
    cli_logs().to_parquet(path, index=False)
    return path


def test_fit_predictor_then_rescore(logs_file: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "pred"
    args = [
        "fit-predictor",
        str(logs_file),
        "--model",
        "mmoe",
        "--tasks",
        "click,like",
        "--tasks",
        "watch_time",
    ]
    res = runner.invoke(
        main, [*args, "--out", str(out), "--epochs", "3", "--context", "position", *SMALL]
    )
    assert res.exit_code == 0, res.output
    assert "held-out metrics (240 latest rows of 1200)" in res.output
    assert "click" in res.output
    assert "content hash: sha256:" in res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert [m["task"] for m in metrics["held_out"]] == ["click", "like", "watch_time"]
    assert metrics["held_out"][0]["auc"] > 0.6
    config = json.loads((out / "config.json").read_text())
    assert config["predictor"]["context_features"] == ["position"]
    assert config["predictor"]["hidden_dims"] == [8]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["data_hash"].startswith("sha256:")
    assert "torch" in meta["versions"]

    rescored = tmp_path / "rescored.csv"
    res = runner.invoke(
        main, ["rescore", str(logs_file), "--predictor", str(out), "--out", str(rescored)]
    )
    assert res.exit_code == 0, res.output
    df = pd.read_csv(rescored)
    original = pd.read_parquet(logs_file)
    assert len(df) == len(original)
    assert set(original.columns) | {"pred_watch_time"} == set(df.columns)
    for task in ("click", "like", "watch_time"):
        assert df[f"pred_{task}"].between(0, 1).all()
    assert df["pred_click"].nunique() > 10  # the constant 0.5 was rewritten
    np.testing.assert_array_equal(df["click"].to_numpy(), original["click"].to_numpy())


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--model", "xgboost", "--tasks", "click"], "Invalid value for '--model'"),
        (
            ["--model", "mmoe", "--tasks", "click,follow"],
            "column 'follow': expected a label column",
        ),
        (["--model", "esmm", "--tasks", "click"], "ESMM needs a click task"),
        (
            ["--model", "mmoe", "--tasks", "click", "--set", "n_layers=3"],
            "fit-predictor: unknown key(s) 'n_layers'",
        ),
        (
            ["--model", "mmoe", "--tasks", "click", "--set", "n_epochs=two"],
            "'n_epochs': expected an integer",
        ),
        (
            ["--model", "mmoe", "--tasks", "click", "--loss-weighting", "magic"],
            "Invalid value for '--loss-weighting'",
        ),
        (
            ["--model", "mmoe", "--tasks", "click", "--context", "slot"],
            "missing context column(s) 'slot'",
        ),
    ],
)
def test_fit_predictor_errors(logs_file: Path, tmp_path: Path, args: list[str], match: str) -> None:
    res = CliRunner().invoke(
        main, ["fit-predictor", str(logs_file), *args, "--out", str(tmp_path / "p"), *SMALL]
    )
    assert res.exit_code == 2, res.output
    assert match in res.output
    assert not (tmp_path / "p").exists()  # nothing half-written


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("missing.parquet", None, "missing.parquet: no such file or directory"),
        ("logs.json", b"{}", "logs.json: unsupported file type '.json'"),
        ("broken.parquet", b"PAR1 garbage", "broken.parquet: cannot read as parquet"),
        ("broken.csv", b"\xff\xfe\x00bad", "broken.csv: cannot read as csv"),
    ],
)
def test_bad_input_files(tmp_path: Path, name: str, content: bytes | None, match: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    res = CliRunner().invoke(
        main,
        [
            "fit-predictor",
            str(path),
            "--model",
            "mmoe",
            "--tasks",
            "click",
            "--out",
            str(tmp_path / "p"),
        ],
    )
    assert res.exit_code == 2, res.output
    assert match in res.output


def test_rescore_errors(logs_file: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(
        main, ["rescore", str(logs_file), "--predictor", str(tmp_path / "none"), "--out", "x.csv"]
    )
    assert res.exit_code == 2
    assert "not a predictor artefact directory" in res.output
    res = runner.invoke(
        main, ["rescore", str(logs_file), "--predictor", str(tmp_path), "--out", "x.txt"]
    )
    assert res.exit_code == 2
    assert "unsupported output file type" in res.output


def test_help_texts_have_examples() -> None:
    for command in ("fit-predictor", "rescore"):
        res = CliRunner().invoke(main, [command, "--help"])
        assert res.exit_code == 0
        assert "Examples:" in res.output
        assert f"batchrl-mtf {command}" in res.output
