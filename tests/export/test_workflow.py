"""`batchrl_mtf.export_table`: the one export workflow, used by ``batchrl-mtf export`` and the
pipeline's export stage, end to end on a small simulated dataset."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import batchrl_mtf
from batchrl_mtf.cli import main
from batchrl_mtf.data.formats import load_dataset
from batchrl_mtf.data.transitions import Transitions
from batchrl_mtf.export import ExportConfig, ExportResult, export_table
from batchrl_mtf.ope import OPEConfig
from batchrl_mtf.pipeline import parse_pipeline
from batchrl_mtf.pipeline.context import Context
from batchrl_mtf.pipeline.evaluation import save_weights, write_export
from batchrl_mtf.policy import ConstantPolicy
from batchrl_mtf.serving import Fusion, WeightTable
from batchrl_mtf.sim import World, load_spec
from batchrl_mtf.training import load_policy

REPO = Path(__file__).resolve().parents[2]
FAST_OPE = OPEConfig(estimators=("fqe",), fqe_n_steps=30, fqe_n_fits=1, n_bootstrap=0)
CONFIG = ExportConfig(keys=("session_depth",), buckets=2, min_support=0)


def _ok(args: list[str]) -> str:
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output + repr(r.exception)
    return r.output


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Simulated logs, their dataset and a briefly trained BC policy."""
    tmp = tmp_path_factory.mktemp("workflow")
    logs, ds, pol = tmp / "logs.parquet", tmp / "ds", tmp / "bc"
    _ok(["simulate", "--sessions", "80", "--policy", "mixed", "--seed", "0", "--out", str(logs)])
    reward = str(REPO / "envs" / "reward_default.toml")
    _ok(["build-dataset", str(logs), "--reward", reward, "--out", str(ds)])
    _ok(
        ["train", str(ds), "--algo", "bc", "--n-steps", "20", "--seed", "0", "--out", str(pol),
         "--no-progress", "--set", "n_steps_per_epoch=20"]
    )  # fmt: skip
    return logs, ds, pol


@pytest.fixture(scope="module")
def world() -> World:
    return World(load_spec("short_video"))


def _fusion(world: World) -> Fusion:
    f = world.spec.fusion
    return Fusion(f.formula, tuple(f.beta))


def _production(world: World) -> ConstantPolicy:
    return ConstantPolicy(tuple(float(w) for w in world.production), world.tasks, "production")


def test_is_public() -> None:
    assert batchrl_mtf.export_table is export_table
    assert batchrl_mtf.ExportResult is ExportResult


def test_a_constant_policy_tabulates_without_loss(
    made: tuple[Path, Path, Path], world: World, tmp_path: Path
) -> None:
    data = load_dataset(made[1])
    policy = _production(world)
    result = export_table(
        policy,
        data,
        CONFIG,
        _fusion(world),
        ope=FAST_OPE,
        env="short_video",
        world=world,
        true_sessions=40,
        true_seed=3,
    )
    table = result.table
    assert table.key_names == ("session_depth",)
    for row in table.rows:
        assert row.weights == pytest.approx(policy.weights)
    assert result.gap["mean_abs_scaled"] == pytest.approx(0.0, abs=1e-12)
    assert result.ope is not None and result.true is not None
    assert result.ope.source == "ope:fqe"
    assert result.ope.value_lost == pytest.approx(0.0, abs=1e-9)  # same actions, same fit
    assert result.true.source == "env:short_video"
    assert result.true.value_lost == 0.0  # same weights, same users
    assert result.table_truth is not None and result.table_truth.sessions == 40
    assert result.table_offline is not None and result.table_offline.name == "table"
    assert table.meta["fidelity"] == result.fidelity  # type: ignore[index]
    assert table.meta["ope"] == result.ope.to_dict()  # type: ignore[index]
    assert table.meta["policy"] == "production"  # type: ignore[index]
    assert result.csv == table.to_csv()
    json_path, csv_path = result.save(tmp_path / "t.json")
    assert csv_path == tmp_path / "t.csv" and csv_path.read_text() == result.csv
    assert WeightTable.load(json_path).rows == table.rows
    assert result.save(tmp_path / "only.json", csv=False) == (tmp_path / "only.json",)
    assert not (tmp_path / "only.csv").exists()


def test_known_values_of_the_policy_are_not_measured_again(
    made: tuple[Path, Path, Path], world: World
) -> None:
    data = load_dataset(made[1])
    result = export_table(
        _production(world),
        data,
        CONFIG,
        _fusion(world),
        table_name="table:production",
        ope=FAST_OPE,
        network_offline=("fqe", 123.0),
        env="short_video",
        world=world,
        true_sessions=40,
        network_true=7.0,
    )
    assert result.ope is not None and result.ope.network == 123.0
    assert result.table_offline is not None and result.table_offline.name == "table:production"
    assert result.true is not None and result.true.network == 7.0
    assert result.table_truth is not None
    assert result.true.table == result.table_truth.mean


def test_without_ope_and_env_only_the_action_gap(made: tuple[Path, Path, Path]) -> None:
    data = load_dataset(made[1])
    policy = load_policy(made[2])
    result = export_table(policy, data, CONFIG, Fusion("sum"))
    assert result.ope is None and result.true is None
    assert result.table_offline is None and result.table_truth is None
    assert result.fidelity["ope"] is None and result.fidelity["true"] is None
    assert result.gap["mean_abs_scaled"] > 0  # a state-dependent policy loses detail
    assert result.table.meta["policy"] == str(made[2])  # type: ignore[index]


def _pipeline_export(made: tuple[Path, Path, Path], out: Path, data: Transitions) -> WeightTable:
    """The pipeline's export stage on the same dataset and policy (copied into a run folder)."""
    logs, ds, pol = made
    doc = {
        "data": {"logs": [str(logs)]},
        "reward": {"file": str(REPO / "envs" / "reward_default.toml")},
        "train": {"algos": ["bc"]},
        "export": {
            "formula": "logsum",
            "beta": [0.1],
            "keys": ["session_depth", "u_activity"],
            "buckets": 2,
            "min_support": 10,
            "ope": False,
        },
    }
    config = parse_pipeline(doc, "test", REPO)
    shutil.copytree(ds, out / "dataset")
    shutil.copytree(pol, out / "train" / "bc")
    ctx = Context(config=config, out=out, progress=False)
    trained = load_policy(out / "train" / "bc").renamed("bc")
    (out / "evaluate").mkdir()
    save_weights(out / "evaluate", ctx.dataset().select(config.evaluate.split), [trained])
    write_export(ctx, out / "export", "bc")
    return WeightTable.load(out / "export" / "weight_table.json")


def test_cli_and_pipeline_give_the_same_table(
    made: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    data = load_dataset(made[1])
    from_pipeline = _pipeline_export(made, tmp_path / "run", data)
    out = tmp_path / "cli.json"
    _ok(
        ["export", str(tmp_path / "run" / "train" / "bc"), "--dataset", str(made[1]),
         "--keys", "session_depth,u_activity", "--buckets", "2", "--min-support", "10",
         "--formula", "logsum", "--beta", "0.1", "--fqe-steps", "20", "--fqe-fits", "1",
         "--out", str(out)]
    )  # fmt: skip
    from_cli = WeightTable.load(out)
    assert from_cli.key_names == from_pipeline.key_names == ("session_depth", "u_activity")
    assert from_cli.keys == from_pipeline.keys
    assert from_cli.rows == from_pipeline.rows
    assert from_cli.default == from_pipeline.default
    assert from_cli.fusion == from_pipeline.fusion
    assert from_cli.to_csv() == from_pipeline.to_csv()
    cli_meta, pipe_meta = dict(from_cli.meta), dict(from_pipeline.meta)  # type: ignore[call-overload]
    assert cli_meta["policy"] == pipe_meta["policy"]
    assert cli_meta["fidelity"]["action_gap"] == pipe_meta["fidelity"]["action_gap"]
    assert pipe_meta["ope"] is None and cli_meta["ope"]["source"].startswith("ope:")
    # the export stage also wrote what the report plots: the table's weights on sampled states
    with np.load(tmp_path / "run" / "export" / "weights.npz") as z:
        assert z["actions|table:bc"].shape[1] == len(data.spec.tasks)
        assert len(z["cell"]) == len(z["actions|table:bc"])
