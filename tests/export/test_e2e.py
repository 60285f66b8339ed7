"""End to end with the real stages: simulate -> build-dataset -> train -> export.

Checks that a real trained policy exports as a weight table whose fidelity block carries the
offline estimate and the simulator's true value of both the network and the table, and as
TorchScript / ONNX artefacts that reproduce the policy's actions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from batchrl_mtf.cli import main
from batchrl_mtf.data.formats import load_dataset
from batchrl_mtf.training import load_policy

REPO = Path(__file__).resolve().parents[2]


def _ok(args: list[str]) -> str:
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output + repr(r.exception)
    return r.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("e2e")
    logs, ds, pol = tmp / "logs.parquet", tmp / "ds", tmp / "bc"
    _ok(["simulate", "--sessions", "120", "--policy", "mixed", "--seed", "0", "--out", str(logs)])
    _ok(
        [
            "build-dataset",
            str(logs),
            "--reward",
            str(REPO / "envs/reward_default.toml"),
            "--out",
            str(ds),
        ]
    )
    _ok(
        [
            "train", str(ds), "--algo", "bc", "--n-steps", "30", "--seed", "0", "--out", str(pol),
            "--set", "n_steps_per_epoch=30",
        ]
    )  # fmt: skip
    return ds, pol


def test_table_export_reports_offline_and_true_values(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    ds, pol = trained
    out = tmp_path / "table.json"
    output = _ok(
        [
            "export", str(pol), "--dataset", str(ds), "--keys", "session_depth,hist_sessions",
            "--buckets", "3", "--min-support", "10", "--formula", "logsum",
            "--beta", "0.05,0.05,0.01,0.005,0.005,0.005", "--env", "short_video", "--fqe-steps", "300", "--fqe-fits", "2", "--out", str(out),
        ]
    )  # fmt: skip
    doc = json.loads(out.read_text())
    assert doc["format"] == "batchrl-mtf/weight-table@1"
    assert doc["meta"]["ope"]["source"].startswith("ope:")
    assert [k["name"] for k in doc["keys"]] == ["session_depth", "hist_sessions"]
    fidelity = doc["meta"]["fidelity"]
    assert "true value" in output and "offline estimate" in output
    for part in ("ope", "true"):
        block = fidelity[part]
        assert np.isfinite(block["network"]) and np.isfinite(block["table"]), fidelity
        assert block["value_lost"] == pytest.approx(block["network"] - block["table"])
    assert (tmp_path / "table.csv").is_file()


def test_table_for_another_fusion_than_the_world_is_refused(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    ds, pol = trained
    out = tmp_path / "t.json"
    r = CliRunner().invoke(
        main,
        ["export", str(pol), "--dataset", str(ds), "--keys", "session_depth", "--formula",
         "logsum", "--beta", "0.1", "--env", "short_video", "--out", str(out)],
    )  # fmt: skip
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: ") and len(r.output.strip().splitlines()) == 1
    assert f"{out}: table fusion logsum, beta 0.1 differs from the environment's" in r.output
    assert "differs from the environment's logsum, beta click=0.05," in r.output
    assert not out.exists()  # nothing half-written


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_network_export_reproduces_actions(
    trained: tuple[Path, Path], tmp_path: Path, fmt: str
) -> None:
    ds, pol = trained
    out = tmp_path / ("policy.pt" if fmt == "torchscript" else "policy.onnx")
    _ok(["export", str(pol), "--format", fmt, "--dataset", str(ds), "--out", str(out)])
    obs = load_dataset(ds).observations[:64].astype(np.float32)
    expected = load_policy(pol).act(obs)
    if fmt == "torchscript":
        import torch

        got = torch.jit.load(str(out))(torch.from_numpy(obs)).detach().numpy()
    else:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: obs})[0]
    policy = load_policy(pol)
    np.testing.assert_allclose(
        np.clip(got, policy.action_low, policy.action_high), expected, atol=1e-5
    )
