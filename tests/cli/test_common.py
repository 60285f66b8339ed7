"""`batchrl-mtf --quiet` silences progress bars; without it long stages show one."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from batchrl_mtf.cli import main
from batchrl_mtf.data.build import build_dataset
from batchrl_mtf.data.reward import RewardConfig


def test_quiet_hides_progress_bar(tmp_path: Path, logs_parquet: Path, reward: RewardConfig) -> None:
    build_dataset([logs_parquet], reward, tmp_path / "ds")
    args = ["train", str(tmp_path / "ds"), "--algo", "bc", "--n-steps", "4", "--out"]
    loud = CliRunner().invoke(main, [*args, str(tmp_path / "a"), "--set", "n_steps_per_epoch=4"])
    quiet = CliRunner().invoke(
        main, ["-q", *args, str(tmp_path / "b"), "--set", "n_steps_per_epoch=4"]
    )
    assert loud.exit_code == 0, loud.output
    assert quiet.exit_code == 0, quiet.output
    assert "4/4" in loud.stderr
    assert "4/4" not in quiet.stderr
    assert "policy:" in quiet.stdout
