"""Tests of ``batchrl-mtf export`` (weight tables), with the dataset and policy loaders, OPE and
the simulator faked (``tests/export/test_workflow.py`` runs the real ones)."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest
from click.testing import CliRunner

from batchrl_mtf.cli import export as export_cli
from batchrl_mtf.cli import main
from batchrl_mtf.data.formats import load_dataset
from batchrl_mtf.export import workflow
from batchrl_mtf.ope import Recommended
from batchrl_mtf.serving import Fusion, WeightTable
from tests.logs_factory import make_logs

NAMES = ("u_activity", "session_depth", "hour_sin")
TASKS = ("click", "longview", "like")


@dataclass(frozen=True)
class FakeSpec:
    feature_names: tuple[str, ...] = NAMES
    tasks: tuple[str, ...] = TASKS
    action_low: tuple[float, ...] = (0.0, 0.0, 0.0)
    action_high: tuple[float, ...] = (2.0, 2.0, 2.0)
    dataset_hash: str = "sha256:abc"
    has_behavior_logp: bool = True


@dataclass(frozen=True)
class FakeData:
    observations: np.ndarray
    actions: np.ndarray
    spec: Any = FakeSpec()

    @property
    def split(self) -> np.ndarray:
        return np.full(len(self.observations), "test")

    def select(self, split: str) -> FakeData:
        return self


def _value(policy: Any) -> float:
    """The faked value of a policy: 2.0 for the network, 1.75 for its table."""
    return 2.0 if isinstance(policy, FakePolicy) else 1.75


def fake_evaluate(data: Any, policies: list[Any], config: Any) -> Any:
    return SimpleNamespace(
        policies=[
            SimpleNamespace(name=p.name, recommended=Recommended("fqe", _value(p), None, "test"))
            for p in policies
        ]
    )


def fake_true_value(world: Any, policy: Any, sessions: int, seed: int) -> Any:
    return SimpleNamespace(mean=_value(policy))


class FakePolicy:
    name = "fake"
    tasks = TASKS

    def act(self, observations: np.ndarray) -> np.ndarray:
        ua, sd = observations[:, 0], observations[:, 1]
        return np.stack([1 + 0.5 * np.tanh(ua), 0.3 + 0.1 * sd, 0.8 + 0 * ua], axis=1)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, Path, FakeData]:
    rng = np.random.default_rng(0)
    n = 3000
    obs = np.stack(
        [rng.normal(size=n), rng.integers(0, 10, size=n).astype(float), rng.uniform(-1, 1, n)], 1
    )
    data = FakeData(obs, np.tile([1.5, 0.2, 0.2], (n, 1)))
    monkeypatch.setattr(export_cli, "_load_inputs", lambda p, d: (FakePolicy(), data))
    monkeypatch.setattr(workflow, "evaluate_policies", fake_evaluate)
    monkeypatch.setattr(workflow, "true_value", fake_true_value)
    (tmp_path / "policy").mkdir()
    (tmp_path / "ds").mkdir()
    return tmp_path / "policy", tmp_path / "ds", data


def run(*args: str) -> Any:
    return CliRunner().invoke(main, ["export", *args], catch_exceptions=False)


def test_export_table_writes_json_csv_and_report(
    fake: tuple[Path, Path, FakeData], tmp_path: Path
) -> None:
    policy_dir, ds_dir, data = fake
    out = tmp_path / "table.json"
    result = run(
        str(policy_dir), "--dataset", str(ds_dir), "--keys", "u_activity,session_depth",
        "--edges", "u_activity=-0.4,0.3,1.0", "--buckets", "2", "--min-support", "0",
        "--formula", "logsum", "--beta", "0.1", "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table = WeightTable.load(out)
    assert table.keys[0].edges == (-0.4, 0.3, 1.0)
    assert table.fusion == Fusion("logsum", (0.1, 0.1, 0.1))
    assert table.default == (1.5, 0.2, 0.2)
    assert out.with_suffix(".csv").read_text() == table.to_csv()
    # lookup on the dataset states equals the per-bucket average of the policy's actions
    rows = table.row_index(data.observations, NAMES)
    actions = FakePolicy().act(data.observations)
    for i, row in enumerate(table.rows):
        np.testing.assert_allclose(row.weights, actions[rows == i].mean(axis=0), atol=1e-12)
    meta: Any = table.meta
    assert meta["policy"] == str(policy_dir)
    assert meta["dataset_hash"] == "sha256:abc"
    assert meta["ope"] == {"source": "ope:fqe", "network": 2.0, "table": 1.75, "value_lost": 0.25}
    assert meta["fidelity"]["true"] is None  # no --env
    gap = meta["fidelity"]["action_gap"]
    assert 0 < gap["mean_abs_scaled"] < 0.2
    assert "action gap (table vs network)" in result.output
    assert (
        f"wrote {out}: {len(table.rows)} rows over keys u_activity, session_depth" in result.output
    )


def test_export_reports_offline_and_true_values(
    fake: tuple[Path, Path, FakeData], tmp_path: Path
) -> None:
    policy_dir, ds_dir, _ = fake
    out = tmp_path / "t.json"
    result = run(
        str(policy_dir), "--dataset", str(ds_dir), "--keys", "auto", "--n-keys", "1",
        "--formula", "sum", "--env", "envs/sim.toml", "--explore", "gaussian:0.05",
        "--max-delta", "0.3", "--no-csv", "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table = WeightTable.load(out)
    assert table.key_names == ("u_activity",)
    assert table.exploration is not None
    assert table.exploration.scale == (0.05, 0.05, 0.05)
    assert not out.with_suffix(".csv").exists()
    assert cast(Any, table.meta)["ope"]["value_lost"] == pytest.approx(0.25)
    assert cast(Any, table.meta)["fidelity"]["true"]["source"] == "env:envs/sim.toml"
    assert "true value (env:envs/sim.toml): network 2.0000, table 1.7500, lost 0.2500" in (
        result.output
    )
    w = np.array([r.weights for r in table.rows])
    assert np.abs(w - np.array(table.default)).max() <= 0.3 + 1e-12


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--keys", "u_nope"], r"keys: \['u_nope'\] are not state features"),
        (["--explore", "laplace:0.1"], "--explore: expected gaussian:SIGMA or uniform:HALFWIDTH"),
        (["--explore", "gaussian:x"], "--explore: expected a number after 'gaussian:'"),
        (["--edges", "u_activity"], "--edges: expected KEY=e1,e2"),
        (["--keys", "u_activity", "--edges", "u_activity=1,a"], "--edges u_activity: expected"),
        (["--keys", "u_activity", "--edges", "u_activity=2,1"], "export.edges.u_activity"),
        (["--default", "1,2"], r"default \(--default\): expected 3 weights"),
        (["--formula", "logsum", "--beta", "0.1,0.2"], "--beta: expected 1 or 3 offsets"),
        (["--out", "t.csv"], r"--out t\.csv: expected a \.json file"),
        (["--min-support", "-1"], "export.min_support"),
    ],
)
def test_export_errors_are_one_line_exit_2(
    fake: tuple[Path, Path, FakeData], args: list[str], match: str
) -> None:
    policy_dir, ds_dir, _ = fake
    base = ["--formula", "sum"] if "--formula" not in args else []
    result = CliRunner().invoke(
        main, ["export", str(policy_dir), "--dataset", str(ds_dir), *base, *args]
    )
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ")
    assert re.search(match, result.output), result.output


def test_export_needs_dataset_and_formula(fake: tuple[Path, Path, FakeData]) -> None:
    policy_dir, ds_dir, _ = fake
    result = CliRunner().invoke(main, ["export", str(policy_dir), "--formula", "sum"])
    assert result.exit_code == 2
    assert "--dataset: required" in result.output
    result = CliRunner().invoke(main, ["export", str(policy_dir), "--dataset", str(ds_dir)])
    assert result.exit_code == 2
    assert re.search(r"--formula: the dataset \S+ records no fusion", result.output)


def test_fusion_recorded_in_dataset_is_used() -> None:
    @dataclass(frozen=True)
    class SpecWithFusion(FakeSpec):
        fusion: Any = None

    spec = SpecWithFusion(fusion=Fusion("logsum", (0.2, 0.3, 0.4)))
    fusion, line = export_cli._fusion(spec, None, None, "the dataset ds")
    assert fusion == Fusion("logsum", (0.2, 0.3, 0.4))
    assert line == "fusion: logsum, beta click=0.2,longview=0.3,like=0.4 (the dataset ds's)"
    fusion, line = export_cli._fusion(spec, "sum", None, "the dataset ds")
    assert fusion == Fusion("sum")
    assert "override the dataset ds's logsum, beta click=0.2" in line


def test_network_export_without_training_is_a_clear_error(
    fake: tuple[Path, Path, FakeData], tmp_path: Path
) -> None:
    policy_dir, _, _ = fake
    result = CliRunner().invoke(
        main, ["export", str(policy_dir), "--format", "onnx", "--out", str(tmp_path / "p.onnx")]
    )
    assert result.exit_code == 2
    assert "not a policy directory (missing policy.json)" in result.output


def test_help_lists_the_flags() -> None:
    result = CliRunner().invoke(main, ["export", "--help"])
    assert result.exit_code == 0
    for flag in ("--keys", "--buckets", "--edges", "--min-support", "--max-delta", "--explore",
                 "--env", "--format", "--out", "--default"):  # fmt: skip
        assert flag in result.output


def test_export_fidelity_line_quotes_the_lower_bounds(
    fake: tuple[Path, Path, FakeData], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy_dir, ds_dir, _ = fake

    def evaluate(data: Any, policies: list[Any], config: Any) -> Any:
        def rec(policy: Any) -> Recommended:
            if isinstance(policy, FakePolicy):
                return Recommended("dr", 2.0, (1.5, 2.5), "test")
            return Recommended("dr", 1.75, (1.0, 2.5), "test")

        return SimpleNamespace(
            policies=[SimpleNamespace(name=p.name, recommended=rec(p)) for p in policies]
        )

    monkeypatch.setattr(workflow, "evaluate_policies", evaluate)
    out = tmp_path / "t.json"
    result = run(
        str(policy_dir), "--dataset", str(ds_dir), "--keys", "auto", "--n-keys", "1",
        "--formula", "sum", "--no-csv", "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (
        "offline estimate (ope:dr): network 2.0000, table 1.7500, lost 0.2500; "
        "lower bounds: network 1.5000, table 1.0000"
    ) in result.output
    ope = cast(Any, WeightTable.load(out).meta)["ope"]
    assert (ope["network_lower"], ope["table_lower"]) == (1.5, 1.0)


# ---------------------------------------------------------------- the dataset's fusion, for real

QUICK = ["--buckets", "2", "--fqe-steps", "1", "--fqe-fits", "1"]  # the fusion is what is tested


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A dataset built with ``--formula logsum --beta ...`` and a BC policy trained on it."""
    tmp = tmp_path_factory.mktemp("fusion")
    make_logs(n_users=6, sessions_per_user=2).to_parquet(tmp / "logs.parquet")
    reward = tmp / "reward.toml"
    reward.write_text("[reward]\nstickiness = { watch_time = 0.02 }\nactiveness = { like = 1.0 }\n")
    ds, pol = tmp / "ds", tmp / "bc"
    r = CliRunner().invoke(
        main,
        [
            "build-dataset", str(tmp / "logs.parquet"), "--reward", str(reward), "--out", str(ds),
            "--formula", "logsum", "--beta", "like=0.05,click=0.1,longview=0.2",
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "fusion recorded: logsum, beta click=0.1,longview=0.2,like=0.05" in r.output
    assert "default" not in r.output
    r = CliRunner().invoke(
        main,
        [
            "train", str(ds), "--algo", "bc", "--n-steps", "5", "--seed", "0", "--out", str(pol),
            "--set", "n_steps_per_epoch=5", "--set", "hidden_units=[8]", "--no-progress",
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return ds, pol


def test_export_uses_the_fusion_the_dataset_records(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    ds, pol = built
    assert json.loads((ds / "features.json").read_text())["fusion"] == {
        "formula": "logsum",
        "beta": {"click": 0.1, "longview": 0.2, "like": 0.05},
        "source": "given",
    }
    out = tmp_path / "t.json"
    args = ["export", str(pol), "--dataset", str(ds), "--keys", "session_depth", "--out", str(out)]
    r = CliRunner().invoke(main, [*args, *QUICK, "--no-csv"])
    assert r.exit_code == 0, r.output
    assert WeightTable.load(out).fusion == Fusion("logsum", (0.1, 0.2, 0.05))
    assert f"fusion: logsum, beta click=0.1,longview=0.2,like=0.05 (the dataset {ds}'s)" in r.output


def test_a_fusion_flag_overrides_the_dataset_with_a_note(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    ds, pol = built
    out = tmp_path / "t.json"
    args = ["export", str(pol), "--dataset", str(ds), "--keys", "session_depth", "--out", str(out)]
    r = CliRunner().invoke(main, [*args, *QUICK, "--no-csv", "--formula", "sum"])
    assert r.exit_code == 0, r.output
    assert WeightTable.load(out).fusion == Fusion("sum")
    assert (
        f"fusion: sum (--formula/--beta override the dataset {ds}'s logsum, "
        "beta click=0.1,longview=0.2,like=0.05)"
    ) in r.output


def test_a_dataset_written_before_fusion_was_recorded_loads_and_asks_for_the_flag(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    ds, pol = built
    old = tmp_path / "old_ds"
    shutil.copytree(ds, old)
    doc = json.loads((old / "features.json").read_text())
    del doc["fusion"]
    (old / "features.json").write_text(json.dumps(doc))
    data = load_dataset(old)
    assert data.spec.fusion is None and data.spec.fusion_source == ""
    assert "fusion" not in data.spec.to_dict()
    out = tmp_path / "t.json"
    args = ["export", str(pol), "--dataset", str(old), "--keys", "session_depth", "--out", str(out)]
    r = CliRunner().invoke(main, [*args, *QUICK, "--no-csv"])
    assert r.exit_code == 2
    assert r.output.startswith(f"error: --formula: the dataset {old} records no fusion")
    assert r.output.count("\n") == 1 and not out.exists()
    r = CliRunner().invoke(main, [*args, *QUICK, "--no-csv", "--beta", "0.1"])
    assert r.exit_code == 0, r.output
    assert WeightTable.load(out).fusion == Fusion("logsum", (0.1, 0.1, 0.1))
    assert "fusion: logsum, beta 0.1 (--formula/--beta)" in r.output
