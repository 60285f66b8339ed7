"""TorchScript and ONNX export of a d3rlpy policy reproduce its actions (normalisation included)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from batchrl_mtf.core.d3rlpy import load_d3rlpy
from batchrl_mtf.errors import ExportError
from batchrl_mtf.export import export_network, load_network

D, K = 5, 3


@pytest.fixture(scope="module")
def algo_and_obs() -> tuple[Any, np.ndarray]:
    """A tiny BC policy with observation standardisation and min-max action scaling."""
    d3rlpy = load_d3rlpy()

    rng = np.random.default_rng(0)
    obs = (rng.normal(size=(64, D)) * np.array([1.0, 10.0, 0.1, 3.0, 100.0]) + 5.0).astype(
        np.float32
    )
    actions = rng.uniform(0.0, 2.0, size=(64, K)).astype(np.float32)
    terminals = np.zeros(64)
    terminals[-1] = 1.0
    dataset = d3rlpy.dataset.MDPDataset(
        obs,
        actions,
        rng.normal(size=64).astype(np.float32),
        terminals,
        action_space=d3rlpy.constants.ActionSpace.CONTINUOUS,
    )
    config = d3rlpy.algos.BCConfig(
        observation_scaler=d3rlpy.preprocessing.StandardObservationScaler(
            mean=obs.mean(axis=0), std=obs.std(axis=0)
        ),
        action_scaler=d3rlpy.preprocessing.MinMaxActionScaler(
            minimum=np.zeros(K), maximum=np.full(K, 2.0)
        ),
    )
    algo = config.create(device="cpu:0")
    algo.build_with_dataset(dataset)
    return algo, obs


@pytest.mark.parametrize(("fmt", "suffix"), [("torchscript", ".pt"), ("onnx", ".onnx")])
def test_artefact_reproduces_python_actions(
    tmp_path: Path, algo_and_obs: tuple[Any, np.ndarray], fmt: Any, suffix: str
) -> None:
    algo, obs = algo_and_obs
    path = tmp_path / f"policy{suffix}"
    diff = export_network(algo, path, fmt, obs)
    assert diff <= 1e-5
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left
    want = algo.predict(obs)
    # reload independently: torch.jit.load / onnxruntime, on a batch of a new size
    if fmt == "torchscript":
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path))
        got = module(torch.from_numpy(obs[:17])).detach().numpy()
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: obs[:17]})[0]
    np.testing.assert_allclose(got, want[:17], rtol=0, atol=1e-5)
    np.testing.assert_allclose(load_network(path)(obs), want, rtol=0, atol=1e-5)
    # normalisation is inside the graph: raw states far from the mean map to actions in bounds
    assert ((got >= -1e-6) & (got <= 2.0 + 1e-6)).all()


def test_parity_failure_writes_nothing(
    tmp_path: Path, algo_and_obs: tuple[Any, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    algo, obs = algo_and_obs
    real_predict = algo.predict
    monkeypatch.setattr(algo, "predict", lambda x: real_predict(x) + 1e-3)
    with pytest.raises(ExportError, match=r"differs from the policy by .* not written"):
        export_network(algo, tmp_path / "p.pt", "torchscript", obs)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "fmt", "obs", "match"),
    [
        ("p.onnx", "torchscript", None, r"expected a \.pt file"),
        ("p.pt", "onnx", None, r"expected a \.onnx file"),
        ("p.pt", "savedmodel", None, "--format: expected one of"),
        ("p.pt", "torchscript", np.zeros((4, D + 1)), r"expected parity states of shape \(n, 5\)"),
    ],
)
def test_export_network_errors(
    tmp_path: Path, algo_and_obs: tuple[Any, np.ndarray], name: str, fmt: Any, obs: Any, match: str
) -> None:
    with pytest.raises(ExportError, match=match):
        export_network(algo_and_obs[0], tmp_path / name, fmt, obs)


def test_unbuilt_algorithm_and_bad_files(tmp_path: Path) -> None:
    class Unbuilt:
        impl = None

    with pytest.raises(ExportError, match="not built"):
        export_network(Unbuilt(), tmp_path / "p.pt", "torchscript")
    with pytest.raises(ExportError, match=r"expected a \.pt \(TorchScript\) or \.onnx file"):
        load_network(tmp_path / "p.h5")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(ExportError, match=r"bad\.onnx: cannot load exported network"):
        load_network(tmp_path / "bad.onnx")
