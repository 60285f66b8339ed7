"""Tests of batchrl_mtf.training: the algorithm contract, determinism, spec checks, resume, config."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from batchrl_mtf.core.d3rlpy import load_d3rlpy
from batchrl_mtf.data.box import action_box
from batchrl_mtf.data.build import build_dataset
from batchrl_mtf.data.formats import load_dataset
from batchrl_mtf.data.reward import RewardConfig
from batchrl_mtf.data.transitions import Transitions
from batchrl_mtf.errors import ConfigError, DatasetError, OutputError, PolicyError
from batchrl_mtf.export.network import export_network
from batchrl_mtf.training import (
    ALGORITHMS,
    POLICY_FORMAT,
    TrainConfig,
    load_policy,
    resolve_config,
    reuse_mismatch,
    train,
)
from batchrl_mtf.training.checkpoint import load_algo
from tests.logs_factory import make_logs

TINY = {"n_steps": 24, "n_steps_per_epoch": 10, "hidden_units": [16], "batch_size": 16}


def tiny(**extra: object) -> TrainConfig:
    return resolve_config([("test", {**TINY, **extra})])


def _build(tmp: Path, seed: int, **kw: int) -> Transitions:
    logs = make_logs(seed=seed, **kw)
    path = tmp / f"logs{seed}.parquet"
    logs.to_parquet(path)
    reward = RewardConfig(
        stickiness={"watch_time": 0.02, "valid_play": 0.3}, activeness={"like": 1.0}
    )
    build_dataset([path], reward, tmp / f"ds{seed}")
    return load_dataset(tmp / f"ds{seed}")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Transitions:
    return _build(
        tmp_path_factory.mktemp("ds"), 0, n_users=12, sessions_per_user=3, requests_per_session=4
    )


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_every_algorithm_trains_saves_loads_and_acts_within_bounds(
    algo: str, data: Transitions, tmp_path: Path
) -> None:
    d3rlpy = load_d3rlpy()

    out = tmp_path / algo
    result = train(data, out, tiny(algo=algo))
    assert result.n_steps_done == 24
    assert [int(r["step"]) for r in result.metrics] == [10, 20, 24]  # short last epoch
    for name in (
        "model.json",
        "model.safetensors",
        "rng_state.json",
        "config.json",
        "features.json",
        "metrics.csv",
        "policy.json",
        ".batchrl-mtf.json",
    ):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "policy.json").read_text())
    assert manifest["format"] == POLICY_FORMAT
    assert manifest["algo"] == algo
    assert manifest["dataset_hash"] == data.spec.dataset_hash
    assert manifest["feature_names"] == list(data.spec.features.names)
    assert manifest["n_steps_done"] == 24
    assert manifest["complete"] is True
    assert json.loads((out / "config.json").read_text())["gamma"] == data.spec.gamma

    policy = load_policy(out, data.spec)
    assert policy.tasks == data.spec.tasks
    assert policy.feature_names == data.spec.features.names
    # far-out states still give weights inside the recorded bounds
    obs = np.vstack([data.observations, data.observations * 50.0 + 7.0])
    weights = policy.act(obs)
    assert weights.shape == (len(obs), len(data.spec.tasks))
    assert np.isfinite(weights).all()
    assert (weights >= np.asarray(data.spec.action_low) - 1e-9).all()
    assert (weights <= np.asarray(data.spec.action_high) + 1e-9).all()
    # deterministic: the same states give the same weights on every call
    np.testing.assert_array_equal(policy.act(obs[:5]), policy.act(obs[:5]))
    # a function of the state alone (BCQ: fixed latent draws), so a traced network is the policy
    one_by_one = np.vstack([policy.act(o) for o in obs[:3]])
    np.testing.assert_allclose(policy.act(obs[:3]), one_by_one, atol=1e-5)
    for fmt, suffix in (("torchscript", ".pt"), ("onnx", ".onnx")):
        diff = export_network(policy.algo, tmp_path / f"net{suffix}", fmt, data.observations[:64])
        assert diff <= 1e-5 and (tmp_path / f"net{suffix}").is_file(), (fmt, diff)
    # the d3rlpy model is rebuilt from its config (no pickle) and usable on its own (exporters)
    raw = load_algo(out / "model.json", out / "model.safetensors", "cpu:0")
    assert type(raw) is type(policy.algo)
    assert isinstance(raw.config, getattr(d3rlpy.algos, ALGORITHMS[algo].d3rlpy_config))
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert f"action_mean_{data.spec.tasks[0]}" in header
    if ALGORITHMS[algo].has_q:
        assert {"td_error", "initial_state_value"} <= set(header)


def test_same_seed_same_policy_and_other_seed_differs(data: Transitions, tmp_path: Path) -> None:
    acts = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        train(data, tmp_path / name, tiny(seed=seed))
        acts.append(load_policy(tmp_path / name).act(data.observations))
    np.testing.assert_array_equal(acts[0], acts[1])
    assert not np.array_equal(acts[0], acts[2])


def test_resume_continues_to_the_same_policy_as_one_run(data: Transitions, tmp_path: Path) -> None:
    cfg = tiny(algo="td3bc", n_steps=40)
    train(data, tmp_path / "straight", cfg)
    train(data, tmp_path / "resumed", dataclasses.replace(cfg, n_steps=20))
    assert json.loads((tmp_path / "resumed" / "policy.json").read_text())["n_steps_done"] == 20
    result = train(data, tmp_path / "resumed", cfg, resume=True)
    assert result.n_steps_done == 40
    assert [int(r["step"]) for r in result.metrics] == [10, 20, 30, 40]
    a = load_policy(tmp_path / "straight").act(data.observations)
    b = load_policy(tmp_path / "resumed").act(data.observations)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_resume_rejects_changed_settings_and_other_data(data: Transitions, tmp_path: Path) -> None:
    train(data, tmp_path / "p", tiny(algo="bc", n_steps=10))
    with pytest.raises(ConfigError, match=r"batch_size.*differ from the saved config"):
        train(data, tmp_path / "p", tiny(algo="bc", n_steps=20, batch_size=8), resume=True)
    other = _build(tmp_path, 1, n_users=5)
    with pytest.raises(DatasetError, match="the policy was trained on dataset"):
        train(other, tmp_path / "p", tiny(algo="bc", n_steps=20), resume=True)
    with pytest.raises(PolicyError, match="nothing to resume"):
        train(data, tmp_path / "nothing", tiny(algo="bc"), resume=True)


def test_reuse_accepts_only_the_same_training(data: Transitions, tmp_path: Path) -> None:
    """``reuse_mismatch``: ``None`` exactly when the directory is what training ``config`` on
    ``data`` would write now (retraining gives the same bytes), else a reason naming what
    differs."""
    cfg = tiny(algo="bc", n_steps=10)
    out = tmp_path / "p"
    train(data, out, cfg)
    assert reuse_mismatch(out, cfg, data.spec) is None
    train(data, tmp_path / "again", cfg)
    model = "model.safetensors"
    assert (out / model).read_bytes() == (tmp_path / "again" / model).read_bytes()
    assert "batch_size" in str(
        reuse_mismatch(out, tiny(algo="bc", n_steps=10, batch_size=8), data.spec)
    )
    assert "seed" in str(reuse_mismatch(out, tiny(algo="bc", n_steps=10, seed=1), data.spec))
    assert "not complete at 20 steps" in str(
        reuse_mismatch(out, tiny(algo="bc", n_steps=20), data.spec)
    )
    other = _build(tmp_path, 1, n_users=5)
    assert "trained on dataset" in str(reuse_mismatch(out, cfg, other.spec))
    manifest = json.loads((out / "policy.json").read_text())
    manifest["versions"]["torch"] = "0.0"
    (out / "policy.json").write_text(json.dumps(manifest))
    assert "other versions of torch" in str(reuse_mismatch(out, cfg, data.spec))
    assert "no such policy directory" in str(reuse_mismatch(tmp_path / "none", cfg, data.spec))


@pytest.fixture(scope="module")
def trained(data: Transitions, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pol") / "bc"
    train(data, out, tiny(algo="bc", n_steps=5))
    return out


def _renamed(data: Transitions) -> object:
    feats = dataclasses.replace(
        data.spec.features, names=(*data.spec.features.names[:-1], "hour_tan")
    )
    return dataclasses.replace(data.spec, features=feats)


MISMATCHES = [
    (
        "renamed feature",
        _renamed,
        r"feature spec mismatch.*missing \['hour_cos'\], extra \['hour_tan'\]",
    ),
    (
        "reordered",
        lambda d: tuple(reversed(d.spec.features.names)),
        r"feature spec mismatch.*different order",
    ),
    ("fewer features", lambda d: d.spec.features.names[:3], r"feature spec mismatch.*missing"),
    (
        "other tasks",
        lambda d: dataclasses.replace(d.spec, tasks=("click", "like", "longview")),
        r"task mismatch.*\['click', 'longview', 'like'\]",
    ),
]


@pytest.mark.parametrize(("label", "make", "message"), MISMATCHES, ids=[m[0] for m in MISMATCHES])
def test_feature_spec_mismatch_is_a_clear_error(
    label: str, make: object, message: str, data: Transitions, trained: Path
) -> None:
    with pytest.raises(PolicyError, match=message):
        load_policy(trained, make(data))  # type: ignore[operator]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: p / "missing", "no such policy directory"),
        (lambda p: p.parent, "missing policy.json"),
    ],
)
def test_loading_a_non_policy_is_a_clear_error(setup: object, message: str, trained: Path) -> None:
    with pytest.raises(PolicyError, match=message):
        load_policy(setup(trained))  # type: ignore[operator]


def test_act_checks_the_observation_width(data: Transitions, trained: Path) -> None:
    policy = load_policy(trained)
    with pytest.raises(
        PolicyError, match=rf"expected observations of shape \(n, {data.observations.shape[1]}\)"
    ):
        policy.act(data.observations[:, :-1])
    with pytest.raises(PolicyError, match="NaN"):
        policy.act(np.full((1, data.observations.shape[1]), np.nan))


def test_policy_dir_is_picked_up_by_resolve_policy(data: Transitions, trained: Path) -> None:
    from batchrl_mtf.resolve import resolve_policy

    pol = resolve_policy(str(trained), data.spec.tasks, data.spec.features.names)
    assert pol.act(data.observations[:4]).shape == (4, len(data.spec.tasks))
    with pytest.raises(PolicyError, match="feature spec mismatch"):
        resolve_policy(str(trained), data.spec.tasks, data.spec.features.names[:-1])


def test_out_that_is_not_a_policy_is_not_replaced(data: Transitions, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("precious")
    with pytest.raises(OutputError, match="not written by batchrl-mtf"):
        train(data, tmp_path, tiny(algo="bc"))
    assert (tmp_path / "keep.txt").read_text() == "precious"


def test_an_existing_policy_is_replaced_only_with_overwrite(
    data: Transitions, tmp_path: Path
) -> None:
    out = tmp_path / "p"
    train(data, out, tiny(algo="bc", n_steps=5))
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(OutputError, match="pass --overwrite"):
        train(data, out, tiny(algo="bc", n_steps=5, seed=9))
    assert (out / "model.safetensors").read_bytes() == before
    train(data, out, tiny(algo="bc", n_steps=5, seed=9), overwrite=True)
    assert (out / "model.safetensors").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]  # no lock or temp left


def test_non_finite_data_is_refused_and_no_policy_written(
    data: Transitions, tmp_path: Path
) -> None:
    rewards = data.rewards.copy()
    rewards[3] = 1e39  # finite in float64, infinite in float32
    bad = dataclasses.replace(data, rewards=rewards)
    with pytest.raises(DatasetError, match="rewards that are not finite in float32"):
        train(bad, tmp_path / "p", tiny(algo="bc", n_steps=5))
    assert not (tmp_path / "p").exists()


def test_a_diverged_policy_is_never_saved(data: Transitions, tmp_path: Path) -> None:
    huge = dataclasses.replace(data, rewards=np.full_like(data.rewards, 3e38))
    with pytest.raises(PolicyError, match="training diverged at step"):
        train(huge, tmp_path / "p", tiny(algo="td3bc", n_steps=10, reward_scale=1e10))
    assert not (tmp_path / "p").exists()


# --- configuration -------------------------------------------------------------------------------


def test_paper_preset_has_the_batchrl_mtf_settings() -> None:
    cfg = resolve_config([("--set", {"algo": "bcq", "preset": "paper"})])
    assert (cfg.batch_size, cfg.gamma, cfg.hidden_units) == (256, 0.95, ())
    p = cfg.bcq
    assert (p.action_flexibility, p.imitator_learning_rate, p.actor_learning_rate) == (
        0.15,
        1e-3,
        1e-4,
    )
    assert (p.critic_learning_rate, p.tau) == (2e-4, 0.05)
    # later layers win over the preset
    cfg = resolve_config(
        [("--set", {"algo": "bcq", "preset": "paper", "bcq.tau": 0.01, "batch_size": 64})]
    )
    assert (cfg.bcq.tau, cfg.batch_size, cfg.bcq.critic_learning_rate) == (0.01, 64, 2e-4)


def test_default_algorithm_is_td3bc_with_the_measured_cpu_settings() -> None:
    cfg = resolve_config([])
    assert (cfg.algo, cfg.preset, cfg.n_steps, cfg.hidden_units) == (
        "td3bc",
        "default",
        5000,
        (128, 128),
    )
    assert cfg.td3bc.alpha == 10.0
    assert cfg.gamma is None  # the dataset's discount
    # d3rlpy's own TD3+BC settings stay one preset away; later layers still win
    d3 = resolve_config([("--set", {"preset": "d3rlpy"})])
    assert (d3.algo, d3.td3bc.alpha, d3.hidden_units) == ("td3bc", 2.5, ())
    d3 = resolve_config([("--set", {"preset": "d3rlpy", "alpha": 5.0})])
    assert d3.td3bc.alpha == 5.0
    # the BCQ paper preset needs --algo bcq now that the default is TD3+BC
    with pytest.raises(ConfigError, match=r"algorithm 'td3bc' has presets default, d3rlpy"):
        resolve_config([("--set", {"preset": "paper"})])


def test_train_without_algo_trains_td3bc(data: Transitions, tmp_path: Path) -> None:
    out = tmp_path / "default"
    train(data, out, resolve_config([("test", TINY)]))
    manifest = json.loads((out / "policy.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert manifest["algo"] == "td3bc"
    assert config["td3bc"]["alpha"] == 10.0


def test_keys_bare_dotted_and_unknown() -> None:
    cfg = resolve_config([("--set", {"algo": "iql", "expectile": 0.9, "iql.weight_temp": 1.0})])
    assert (cfg.iql.expectile, cfg.iql.weight_temp) == (0.9, 1.0)
    assert "iql" in cfg.to_dict()
    assert "bcq" not in cfg.to_dict()


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({"learning_rte": 1.0}, r"--set: unknown key 'learning_rte'; expected one of .*n_steps"),
        ({"bcq.nope": 1}, r"unknown key\(s\) 'nope'"),
        ({"xyz.tau": 1}, r"unknown key 'xyz.tau'; dotted keys are <algo>.<field>"),
        ({"algo": "ppo"}, r"algo: expected one of bcq, cql"),
        ({"algo": "cql", "preset": "paper"}, r"algorithm 'cql' has presets default"),
        ({"n_steps": 0}, r"n_steps: expected an integer >= 1"),
        ({"n_steps": "many"}, r"'n_steps': expected an integer"),
        ({"device": "gpu"}, r"device: expected cpu, cuda, cuda:N or mps, found 'gpu'"),
        ({"bcq.tau": 2.0}, r"bcq.tau: expected a number in \(0, 1\]"),
    ],
)
def test_config_errors_name_the_key(layer: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_config([("--set", layer)])


def test_cuda_without_a_gpu_is_a_config_error(data: Transitions, tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ConfigError, match="'cuda:0' requested but torch sees no CUDA device"):
        train(data, tmp_path / "p", tiny(device="cuda:0"))


# --- simulator evaluation (--env) ----------------------------------------------------------------


def test_env_evaluation_adds_the_true_return(tmp_path: Path) -> None:
    pytest.importorskip("batchrl_mtf.sim.runner")
    from batchrl_mtf.data.config import DatasetConfig
    from batchrl_mtf.sim.policies import make_policy
    from batchrl_mtf.sim.runner import run_sessions
    from batchrl_mtf.sim.spec import load_spec
    from batchrl_mtf.sim.world import World

    world = World(load_spec(None))
    spec, f, k = world.spec, world.spec.fusion, len(world.tasks)
    behaviour = make_policy(
        "mixed",
        world.tasks,
        f.production,
        [f.low] * k,
        [f.high] * k,
        0.2,
        0.6,
    )
    _stats, logs = run_sessions(world, behaviour, 40, seed=3, record=True)
    assert logs is not None
    logs.to_parquet(tmp_path / "sim.parquet")
    config = DatasetConfig(action_bounds=(f.low, f.high), features=spec.features)
    build_dataset([tmp_path / "sim.parquet"], spec.reward, tmp_path / "ds", config)
    cfg = tiny(algo="bc", n_steps=30, env="short_video", eval_every=2, eval_episodes=20)
    result = train(tmp_path / "ds", tmp_path / "p", cfg)
    evaluated = [r for r in result.metrics if "true_return" in r]
    assert [int(r["step"]) for r in evaluated] == [20, 30]  # every 2nd epoch and the last
    row = evaluated[-1]
    assert row["true_return_low"] <= row["true_return"] <= row["true_return_high"]
    assert row["true_return"] > 0


def test_env_with_other_tasks_is_a_clear_error(data: Transitions, tmp_path: Path) -> None:
    pytest.importorskip("batchrl_mtf.sim.runner")
    with pytest.raises(PolicyError, match=r"--env short_video: task mismatch"):
        train(data, tmp_path / "p", tiny(algo="bc", env="short_video"))


@pytest.mark.parametrize("box", ["q0.2-0.8", "minmax"])
def test_action_bounds_come_from_the_logged_quantile_box(
    box: str, data: Transitions, tmp_path: Path
) -> None:
    out = tmp_path / "boxed"
    train(data, out, tiny(algo="td3bc", action_box=box))
    manifest = json.loads((out / "policy.json").read_text())
    if box == "minmax":  # the dataset's own bounds (the behaviour before the quantile box)
        low, high = np.asarray(data.spec.action_low), np.asarray(data.spec.action_high)
    else:
        low, high = action_box(data.select("train").actions, box)
    assert manifest["action_box"]["rule"] == box
    np.testing.assert_allclose(manifest["action_box"]["low"], low)
    np.testing.assert_allclose(manifest["action_box"]["high"], high)
    acts = load_policy(out).act(data.observations)
    tol = 1e-5 * (high - low)
    assert (acts >= low - tol).all() and (acts <= high + tol).all()
    if box != "minmax":  # strictly inside the raw logged range
        assert (high < np.asarray(data.spec.action_high)).all()


def test_default_action_box_is_the_logged_quantile_box() -> None:
    assert resolve_config([]).action_box == "q0.01-0.99"
    with pytest.raises(ConfigError, match="action_box"):
        resolve_config([("--set", {"action_box": "q1-0"})])


def test_trained_policy_renamed_keeps_its_networks(data: Transitions, trained: Path) -> None:
    policy = load_policy(trained)
    shown = policy.renamed("bc")
    assert shown.name == "bc" and policy.name == str(trained)
    assert type(shown) is type(policy) and shown.algo is policy.algo
    assert shown.feature_names == policy.feature_names and shown.tasks == policy.tasks
    assert shown.manifest == policy.manifest
    obs = data.observations[:8]
    np.testing.assert_array_equal(shown.act(obs), policy.act(obs))
