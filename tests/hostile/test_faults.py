"""Faults while writing: a full disk, a read-only file system, a killed run, a missing extra.

Each fault ends in one ``error:`` line and exit 2, leaves no temporary file or directory, and
leaves what was there before unchanged.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import batchrl_mtf.core.io as core_io
import batchrl_mtf.export.network as network
import batchrl_mtf.training.trainer as trainer
from batchrl_mtf.core.io import MARKER
from batchrl_mtf.data.build import build_dataset
from batchrl_mtf.data.formats import load_dataset
from batchrl_mtf.data.reward import RewardConfig
from batchrl_mtf.training import resolve_config, train
from tests.hostile._harness import judge, leftovers, run_cli, snapshot
from tests.logs_factory import make_logs

REWARD = "[reward.stickiness]\nwatch_time = 0.02\n[reward.activeness]\nlike = 1.0\n"
TINY = {"n_steps": 6, "n_steps_per_epoch": 3, "hidden_units": [8], "batch_size": 8, "algo": "bc"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("fault_in")
    make_logs(n_users=6, sessions_per_user=2).to_parquet(tmp / "logs.parquet", index=False)
    (tmp / "reward.toml").write_text(REWARD)
    return tmp / "logs.parquet", tmp / "reward.toml"


@pytest.fixture(scope="module")
def dataset(inputs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fault_ds") / "ds"
    build_dataset([inputs[0]], RewardConfig(stickiness={"watch_time": 0.02}), out)
    return out


@pytest.fixture(scope="module")
def policy(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fault_pol") / "bc"
    train(dataset, out, resolve_config([("t", TINY)]))
    return out


def _raise(code: int) -> Callable[..., None]:
    def f(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code), str(args[0]) if args else None)

    return f


def _tally_clean(
    name: str,
    ended: object,
    watched: dict[str, str],
    folders: list[Path],
    tally: Callable[..., None],
) -> None:
    outcome = judge(ended, expect="clean", watched=watched, folders=folders)  # type: ignore[arg-type]
    tally(f"fault/{name}", outcome)
    assert outcome == "clean", (outcome, ended.output, ended.traceback)  # type: ignore[attr-defined]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT])
def test_build_dataset_disk_fault(
    code: int,
    inputs: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tally: Callable[..., None],
) -> None:
    monkeypatch.setattr(Path, "write_bytes", _raise(code))  # transitions.parquet in the temp dir
    out = tmp_path / "ds"
    watched = snapshot([inputs[0].parent])
    ended = run_cli(["build-dataset", inputs[0], "--reward", inputs[1], "--out", out])
    _tally_clean(f"build-dataset {errno.errorcode[code]}", ended, watched, [tmp_path], tally)
    assert not out.exists()
    if code == errno.ENOSPC:
        assert "disk is full" in ended.output


def test_a_full_disk_while_replacing_keeps_the_old_dataset(
    inputs: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tally: Callable[..., None],
) -> None:
    out = tmp_path / "ds"
    args = ["build-dataset", inputs[0], "--reward", inputs[1], "--out", out, "--overwrite"]
    assert run_cli(args).exit_code == 0
    watched = snapshot([out, inputs[0].parent])
    monkeypatch.setattr("batchrl_mtf.data.build.write_d3rlpy_file", _raise(errno.ENOSPC))
    _tally_clean("replace dataset ENOSPC", run_cli(args), watched, [tmp_path], tally)


def test_train_disk_full_at_the_checkpoint(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tally: Callable[..., None]
) -> None:
    monkeypatch.setattr(trainer, "save_algo", _raise(errno.ENOSPC))
    out = tmp_path / "pol"
    watched = snapshot([dataset])
    ended = run_cli(
        ["train", dataset, "--out", out, "--algo", "bc", "--n-steps", "4", "--no-progress"]
    )
    _tally_clean("train ENOSPC", ended, watched, [tmp_path], tally)
    assert not out.exists()


def test_train_finds_an_unwritable_out_before_training(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tally: Callable[..., None]
) -> None:
    def probe_fails(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path))

    monkeypatch.setattr(core_io.tempfile, "mkstemp", probe_fails)
    called: list[int] = []
    monkeypatch.setattr(trainer, "build_algo", lambda *a: called.append(1))
    watched = snapshot([dataset])
    ended = run_cli(["train", dataset, "--out", tmp_path / "pol", "--algo", "bc", "--no-progress"])
    _tally_clean("train read-only out", ended, watched, [tmp_path], tally)
    assert "read-only" in ended.output.lower() and not called


def test_train_refuses_to_replace_a_policy_without_overwrite(
    dataset: Path, policy: Path, tmp_path: Path, tally: Callable[..., None]
) -> None:
    out = tmp_path / "bc"
    ended0 = run_cli(
        ["train", dataset, "--out", out, "--algo", "bc", "--n-steps", "3", "--no-progress"]
    )
    assert ended0.exit_code == 0, ended0.output
    watched = snapshot([out, dataset])
    ended = run_cli(
        ["train", dataset, "--out", out, "--algo", "bc", "--n-steps", "3", "--no-progress"]
    )
    _tally_clean("train existing policy", ended, watched, [tmp_path], tally)
    assert "--overwrite" in ended.output


def test_torchscript_export_disk_full(
    policy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tally: Callable[..., None]
) -> None:
    monkeypatch.setattr(network.os, "fsync", _raise(errno.ENOSPC))
    target = tmp_path / "p.pt"
    watched = snapshot([policy])
    ended = run_cli(["export", policy, "--format", "torchscript", "--out", target])
    _tally_clean("torchscript ENOSPC", ended, watched, [tmp_path], tally)
    assert not target.exists()


def test_onnx_export_without_the_onnx_extra(
    policy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tally: Callable[..., None]
) -> None:
    real = network.importlib.util.find_spec
    monkeypatch.setattr(
        network.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "onnx" else real(name, *a),
    )
    watched = snapshot([policy])
    ended = run_cli(["export", policy, "--format", "onnx", "--out", tmp_path / "p.onnx"])
    _tally_clean("onnx missing", ended, watched, [tmp_path], tally)
    assert "pip install 'batchrl-mtf[onnx]'" in ended.output


def test_exported_files_get_the_usual_permissions(policy: Path, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        target = tmp_path / "p.pt"
        assert (
            run_cli(["export", policy, "--format", "torchscript", "--out", target]).exit_code == 0
        )
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


@pytest.mark.parametrize("fault", ["rng missing", "rng corrupt", "model missing"])
def test_resume_with_a_broken_checkpoint(
    fault: str, dataset: Path, policy: Path, tmp_path: Path, tally: Callable[..., None]
) -> None:
    p = tmp_path / "bc"
    shutil.copytree(policy, p)
    if fault == "rng missing":
        (p / "rng_state.json").unlink()
    elif fault == "rng corrupt":
        (p / "rng_state.json").write_text('{"format": "batchrl-mtf/rng-state@1", "numpy": {}}')
    else:
        (p / "model.safetensors").unlink()
    watched = snapshot([p, dataset])
    ended = run_cli(["train", dataset, "--out", p, "--resume", "--n-steps", "9", "--no-progress"])
    _tally_clean(f"resume {fault}", ended, watched, [tmp_path], tally)


KILL = """
import os, signal, sys
import batchrl_mtf.data.build as ds
def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
ds.write_d3rlpy_file = die
from batchrl_mtf.cli import main
sys.argv = ["batchrl-mtf", *sys.argv[1:]]
main()
"""


def test_a_run_killed_mid_write_leaves_nothing_the_next_run_cannot_clean(
    inputs: tuple[Path, Path], tmp_path: Path, tally: Callable[..., None]
) -> None:
    out = tmp_path / "ds"
    args = ["build-dataset", str(inputs[0]), "--reward", str(inputs[1]), "--out", str(out)]
    proc = subprocess.run([sys.executable, "-c", KILL, *args], capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    left = leftovers(tmp_path)
    assert left and all((tmp_path / n / MARKER).is_file() for n in left if n.endswith(".tmp"))
    ended = run_cli(args)
    outcome = judge(ended, expect="ok", watched={}, folders=[tmp_path])
    tally("fault/killed mid-write then rerun", outcome)
    assert outcome == "ok", (outcome, ended.output, leftovers(tmp_path))
    assert load_dataset(out).spec.tasks
