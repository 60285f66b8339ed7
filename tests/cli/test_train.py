"""Tests of ``batchrl-mtf train`` (click CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from batchrl_mtf.cli import main
from batchrl_mtf.data.build import build_dataset
from batchrl_mtf.data.formats import load_dataset
from batchrl_mtf.data.reward import RewardConfig
from batchrl_mtf.training import load_policy
from tests.logs_factory import make_logs

SMALL = ["--set", "hidden_units=[8]", "--set", "batch_size=8", "--set", "n_steps_per_epoch=5"]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("cli")
    make_logs(n_users=6, sessions_per_user=2).to_parquet(tmp / "logs.parquet")
    reward = RewardConfig(
        stickiness={"watch_time": 0.02, "valid_play": 0.3}, activeness={"like": 1.0}
    )
    build_dataset([tmp / "logs.parquet"], reward, tmp / "ds")
    return tmp / "ds"


def test_help_lists_algorithms_and_examples() -> None:
    result = CliRunner().invoke(main, ["train", "--help"])
    assert result.exit_code == 0
    for text in ("bcq|cql|iql|td3bc|awac|bc", "--resume", "preset=paper", "--device", "Examples"):
        assert text in result.output


def test_train_then_resume_from_the_command_line(dataset_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "pol"
    toml = tmp_path / "train.toml"
    toml.write_text("[train]\nalgo = 'iql'\nseed = 5\n[train.iql]\nexpectile = 0.8\n")
    args = ["train", str(dataset_dir), "--out", str(out), "--config", str(toml), "--n-steps", "10"]
    result = CliRunner().invoke(main, [*args, *SMALL, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"policy: {out}" in result.output
    config = json.loads((out / "config.json").read_text())
    assert (config["algo"], config["seed"], config["iql"]["expectile"]) == ("iql", 5, 0.8)
    assert config["hidden_units"] == [8]

    result = CliRunner().invoke(
        main,
        [
            "train",
            str(dataset_dir),
            "--out",
            str(out),
            "--resume",
            "--n-steps",
            "15",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "policy.json").read_text())
    assert manifest["n_steps_done"] == 15
    assert manifest["algo"] == "iql"
    assert len((out / "metrics.csv").read_text().splitlines()) == 1 + 3
    data = load_dataset(dataset_dir)
    weights = load_policy(out, data.spec).act(data.observations)
    assert weights.shape == (len(data), len(data.spec.tasks))
    assert np.isfinite(weights).all()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "learning_rte=0.1"], "error: --set: unknown key 'learning_rte'"),
        (["--set", "bcq.actor_lr=0.1"], "unknown key(s) 'actor_lr'"),
        (["--set", "n_steps"], "error: --set: expected key=value"),
        (["--device", "cuda:7"], "'cuda:7' requested but torch sees"),
        (["--resume"], "nothing to resume"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(
    extra: list[str], message: str, dataset_dir: Path, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        main, ["train", str(dataset_dir), "--out", str(tmp_path / "p"), "--n-steps", "2", *extra]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_missing_dataset_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["train", str(tmp_path / "nope"), "--out", str(tmp_path / "p")]
    )
    assert result.exit_code == 2
    assert "no such dataset directory" in result.output
