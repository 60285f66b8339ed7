"""Learned environments (``make-env``): spec and artefacts, Gymnasium API, determinism, the
replay check against the logs, the leave model, and clear errors for missing artefacts."""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from pathlib import Path

import gymnasium
import numpy as np
import pandas as pd
import pytest
import tomli_w
import torch
from click.testing import CliRunner
from gymnasium.utils.env_checker import check_env

import batchrl_mtf.sim  # noqa: F401  (registers the environments)
from batchrl_mtf.cli import main
from batchrl_mtf.core.fusion import Fusion
from batchrl_mtf.data.build import build_dataset
from batchrl_mtf.data.formats import load_dataset
from batchrl_mtf.errors import ConfigError
from batchrl_mtf.learned import (
    LearnedEnvConfig,
    LeaveModel,
    calibration_table,
    fit_leave_model,
    make_env,
)
from batchrl_mtf.learned.leave import filtered_probability, fit_leave_mixture, log_loss
from batchrl_mtf.learned.leave_model import leave_feature_names, recent_feedback
from batchrl_mtf.sim import (
    SimPolicy,
    World,
    load_spec,
    make_policy,
    run_sessions,
)
from batchrl_mtf.sim.engine import SessionBatch, UserPool

REWARD = Path(__file__).resolve().parents[2] / "envs" / "reward_default.toml"
N_LOGGED = 300

# Replay-check tolerances of a tiny learned env (300 logged sessions, 50 candidates):
# the learned env replays the logged weights from the logged start states.
TOLERANCE = {
    "session_length_mean_rel": 0.25,
    "session_length_tv": 0.30,
    "reward_per_request_rel": 0.30,
    "feedback_rate_click_rel": 0.15,
    "feedback_rate_watch_time_rel": 0.30,
}

# The distilled ranker against the logged pred_<task> of the logged first requests. On 300
# logged sessions (about 40 optimiser steps) the copy is rough: measured correlations 0.58-0.78
# for the five post-click tasks but about 0 for click (its log(p + 0.01) scale varies little),
# means within 22 %. So: the median correlation over tasks, and every mean.
DISTIL_MEDIAN_CORR = 0.5
DISTIL_MEAN_REL = 0.3


def _production(spec_path: Path, sigma: float = 0.1, random_sigma: float = 0.1) -> SimPolicy:
    world = World(load_spec(spec_path))
    return make_policy(
        "production",
        world.tasks,
        world.production,
        world.low,
        world.high,
        sigma,
        random_sigma,
    )


def _simulate(n: int, seed: int) -> pd.DataFrame:
    torch.set_num_threads(1)
    world = World(load_spec())
    ex = world.spec.exploration
    pol = make_policy(
        "mixed",
        world.tasks,
        world.production,
        world.low,
        world.high,
        ex.action_noise_sigma,
        ex.random_sigma,
    )
    _, logs = run_sessions(world, pol, n, seed, record=True)
    assert logs is not None
    return logs


@pytest.fixture(scope="module")
def logs_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("learned_logs") / "logs.parquet"
    _simulate(N_LOGGED, 3).to_parquet(p, index=False)
    return p


@pytest.fixture(scope="module")
def learned(logs_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:  # type: ignore[type-arg]
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("learned_env") / "envs" / "tiny.toml"
    res = make_env(
        [logs_path],
        REWARD,
        out,
        # the fusion these tests were tuned with (0.01 was make-env's default before there was
        # one package default, 0.1)
        LearnedEnvConfig(
            n_candidates=50, replay_sessions=N_LOGGED, seed=0, fusion=Fusion("logsum", (0.01,))
        ),
    )
    return res.spec_path, res.report


def test_make_env_writes_a_learned_spec_with_its_artefacts(learned: tuple[Path, dict]) -> None:  # type: ignore[type-arg]
    spec_path, report = learned
    art = spec_path.parent / spec_path.stem
    for f in (
        "catalogue.parquet",
        "start_states.parquet",
        "responses.json",
        "leave_model.json",
        "validation.json",
        "ranker/weights.safetensors",
        "response_model/weights.safetensors",
    ):
        assert (art / f).is_file(), f
    spec = load_spec(spec_path)
    assert spec.world.kind == "learned"
    assert spec.tasks == ("click", "longview", "like", "follow", "comment", "share")
    assert spec.world.n_candidates == 50
    assert spec.world.slate_size == 6
    cat = pd.read_parquet(art / "catalogue.parquet")
    assert spec.world.n_items == len(cat)
    assert (cat["exposures"] > 0).all()
    starts = pd.read_parquet(art / "start_states.parquet")
    assert len(starts) == N_LOGGED == report["start_states"]
    # the response model's parents: every interaction needs a click
    given = {r["name"]: r["given"] for r in report["responses"]}
    assert given["click"] == ""
    assert given["like"] == "click"
    assert given["watch_time"] == "click"
    saved = json.loads((art / "validation.json").read_text())
    assert saved["replay"]["divergence"] == report["replay"]["divergence"]
    # the leave model is reported on held-out sessions, by decile
    calib = report["leave_model"]
    assert len(calib["deciles"]) == 10
    assert abs(calib["mean_predicted"] - calib["observed"]) < 0.03


def test_gymnasium_make_and_check_env(learned: tuple[Path, dict]) -> None:  # type: ignore[type-arg]
    spec_path, _ = learned
    env = gymnasium.make("batchrl_mtf.envs:batchrl_mtf/Fusion-v0", spec=str(spec_path))
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=1)
    assert obs.shape == env.observation_space.shape
    assert info["segment"] == "logged"
    obs, reward, _terminated, _truncated, info = env.step(env.action_space.sample())
    assert len(info["items"]) == 6
    assert float(reward) >= 0
    assert set(info["feedback"]) == set(load_spec(spec_path).feedback)
    # feedback follows the parent structure: no like without a click
    fb = info["feedback"]
    assert np.all(fb["like"] <= fb["click"])
    assert np.all(fb["watch_time"] <= 120.0 + 1e-9)


def _trajectory(spec_path: Path, seed: int) -> tuple[np.ndarray, np.ndarray]:
    env = gymnasium.make("batchrl_mtf.envs:batchrl_mtf/Fusion-v0", spec=str(spec_path))
    obs, _ = env.reset(seed=seed)
    w = np.array([1.0, 0.4, 0.3, 0.1, 0.1, 0.1])
    observations, rewards = [obs], []
    for _ in range(40):
        obs, r, term, trunc, _ = env.step(w)
        observations.append(obs)
        rewards.append(float(r))
        if term or trunc:
            obs, _ = env.reset()
            observations.append(obs)
    return np.array(observations), np.array(rewards)


def test_determinism_under_a_seed(learned: tuple[Path, dict]) -> None:  # type: ignore[type-arg]
    spec_path, _ = learned
    o1, r1 = _trajectory(spec_path, 5)
    o2, r2 = _trajectory(spec_path, 5)
    o3, _r3 = _trajectory(spec_path, 6)
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(r1, r2)
    assert not (o1.shape == o3.shape and np.array_equal(o1, o3))
    world = World(load_spec(spec_path))
    pol = _production(spec_path, 0.2, 0.6)
    a, _ = run_sessions(world, pol, 40, 9)
    b, _ = run_sessions(World(load_spec(spec_path)), pol, 40, 9)
    np.testing.assert_array_equal(a.returns, b.returns)
    np.testing.assert_array_equal(a.length, b.length)


def test_make_env_reads_the_logs_as_build_dataset_does(
    learned: tuple[Path, dict],  # type: ignore[type-arg]
    logs_path: Path,
    tmp_path: Path,
) -> None:
    """make-env and build-dataset share one logs -> transitions path: on the same logs, the start
    states are the dataset's first states and the accounting is the dataset report's."""
    spec_path, report = learned
    ds_report = build_dataset([logs_path], REWARD, tmp_path / "ds")
    data = load_dataset(tmp_path / "ds")
    assert report["accounting"] == ds_report["accounting"]
    starts = pd.read_parquet(spec_path.parent / spec_path.stem / "start_states.parquet")
    first = data.episode_starts()
    assert len(starts) == len(first) == data.n_sessions == N_LOGGED
    np.testing.assert_array_equal(starts["session_id"], data.session_id[first].astype(str))
    np.testing.assert_array_equal(starts["ts"], data.ts_ms[first])
    names = data.spec.features.names
    for col in starts.columns.drop(["session_id", "user_id", "ts"]):
        np.testing.assert_array_equal(starts[col], data.observations[first, names.index(col)])
    # the replay check's logged side is the dataset's sessions and rewards
    logged = report["replay"]["logged"]
    assert logged["session_length_mean"] == pytest.approx(len(data) / data.n_sessions)
    assert logged["reward_per_request"] == pytest.approx(float(data.rewards.mean()))


def test_replay_statistics_match_the_logs(learned: tuple[Path, dict]) -> None:  # type: ignore[type-arg]
    _, report = learned
    replay = report["replay"]
    assert replay["sessions"] == N_LOGGED
    div = replay["divergence"]
    for key, tol in TOLERANCE.items():
        assert div[key] <= tol, (key, div[key], replay["logged"], replay["learned"])
    # the logged side is the logs themselves: every logged session, replayed once
    assert replay["logged"]["sessions"] == replay["learned"]["sessions"] == N_LOGGED
    assert replay["logged"]["session_length_mean"] > 1.0


def test_replay_check_detects_a_broken_leave_model(
    learned: tuple[Path, dict],  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    """The replay check fails (session lengths diverge) when leaving is mis-modelled."""
    spec_path, _ = learned
    copy = _copy_env(spec_path, tmp_path)
    leave = copy.parent / copy.stem / "leave_model.json"
    doc = json.loads(leave.read_text())
    doc["intercept"] = doc["intercept"] + 3.0  # users leave far too early
    leave.write_text(json.dumps(doc))
    env = gymnasium.make("batchrl_mtf.envs:batchrl_mtf/Fusion-v0", spec=str(copy))
    lengths = []
    env.reset(seed=0)
    for _ in range(30):
        n = 0
        while True:
            _, _, term, trunc, _ = env.step(np.ones(6))
            n += 1
            if term or trunc:
                break
        lengths.append(n)
        env.reset()
    logged_mean = learned[1]["replay"]["logged"]["session_length_mean"]
    assert np.mean(lengths) < 0.5 * logged_mean


def test_fit_leave_model_recovers_coefficients_and_is_calibrated() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20000, 3)) * np.array([1.0, 2.0, 0.5]) + 1.0
    logit = -2.0 + 0.8 * x[:, 0] - 0.5 * x[:, 1]
    y = (rng.random(20000) < 1 / (1 + np.exp(-logit))).astype(float)
    model = fit_leave_model(x, y, ("a", "b", "c"), l2=0.0)
    raw = model.coef / model.std
    np.testing.assert_allclose(raw, [0.8, -0.5, 0.0], atol=0.06)
    p = model.probability(x)
    assert abs(p.mean() - y.mean()) < 1e-6
    table = calibration_table(p, y)
    assert len(table) == 10
    for row in table:
        assert abs(row["mean_predicted"] - row["observed"]) < 0.04


def test_leave_model_interactions_are_fitted_and_saved() -> None:
    """Pairs ``z_i z_j`` let leaving depend on feedback differently per user; the JSON round
    trip keeps them, and a linear ``batchrl-mtf-leave@1`` document still loads."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40000, 3))
    logit = -1.5 + 0.5 * x[:, 0] + 0.8 * x[:, 0] * x[:, 1]
    y = (rng.random(40000) < 1 / (1 + np.exp(-logit))).astype(float)
    names = ("a", "b", "c")
    linear = fit_leave_model(x, y, names, l2=0.0)
    inter = fit_leave_model(x, y, names, l2=0.0, pairs=[(0, 1), (0, 2)])
    assert inter.coef.shape == (5,)
    # coefficients of standardised inputs: z_a z_b carries the interaction, z_a z_c nothing
    assert abs(inter.coef[3] * inter.std[0] * inter.std[1] - 0.8) < 0.08
    assert abs(inter.coef[4]) < 0.05
    assert log_loss(inter.probability(x), y) < log_loss(linear.probability(x), y) - 0.01
    assert abs(inter.probability(x).mean() - y.mean()) < 1e-6
    back = LeaveModel.from_json(json.loads(json.dumps(inter.to_json({}))), "t")
    np.testing.assert_allclose(back.probability(x[:50]), inter.probability(x[:50]))
    v1 = {k: v for k, v in linear.to_json({}).items() if k != "pairs"}
    v1["format"] = "batchrl-mtf-leave@1"
    np.testing.assert_allclose(
        LeaveModel.from_json(v1, "t").probability(x[:50]), linear.probability(x[:50])
    )
    bad = inter.to_json({})
    bad["pairs"] = [[0, 7]]
    bad["coef"] = bad["coef"][:4]
    with pytest.raises(ConfigError, match="pairs must index"):
        LeaveModel.from_json(bad, "t")


def test_distilled_ranker_copies_the_logged_predictor(
    learned: tuple[Path, dict],  # type: ignore[type-arg]
    logs_path: Path,
) -> None:
    """By default the ranker is fitted to the logged pred_<task> (the platform's own predictor),
    and the learned world ranks with probabilities close to the logged ones."""
    spec_path, report = learned
    assert report["predictors"]["ranker"]["targets"].startswith("logged pred_")
    art = spec_path.parent / spec_path.stem
    scale = json.loads((art / "responses.json").read_text())["ranker_scale"]
    assert scale == {t: 0.01 for t in load_spec(spec_path).tasks}
    assert report["fusion"]["source"] == "given"
    model = World(load_spec(spec_path)).learned
    logs = pd.read_parquet(logs_path)
    logs["session_id"] = logs["session_id"].astype(str)
    first = logs[logs["ts"] == logs.groupby("session_id")["ts"].transform("min")]
    start_row = pd.Series(np.arange(len(model.starts)), index=model.starts["session_id"])
    item_row = pd.Series(
        np.arange(len(model.catalogue)), index=model.catalogue["item_id"].astype(str)
    )
    s = start_row[first["session_id"]].to_numpy()
    i = item_row[first["item_id"].astype(str)].to_numpy()
    got = model.rank(s, model.user_matrix[s], i[:, None])[:, 0, :]
    corr = []
    for k, t in enumerate(load_spec(spec_path).tasks):
        want = first[f"pred_{t}"].to_numpy()
        corr.append(np.corrcoef(got[:, k], want)[0, 1])
        assert abs(got[:, k].mean() / want.mean() - 1) < DISTIL_MEAN_REL, t
    assert np.median(corr) > DISTIL_MEDIAN_CORR, corr


def _copy_env(spec_path: Path, dest: Path) -> Path:
    out = dest / spec_path.name
    shutil.copy(spec_path, out)
    shutil.copytree(spec_path.parent / spec_path.stem, dest / spec_path.stem)
    return out


def _delete(rel: str):  # type: ignore[no-untyped-def]
    def apply(spec: Path) -> None:
        p = spec.parent / spec.stem / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink()

    return apply


def _edit_spec(key: str, value: object):  # type: ignore[no-untyped-def]
    def apply(spec: Path) -> None:
        doc = tomllib.loads(spec.read_text())
        table, name = key.split(".")
        if value is None:
            doc[table].pop(name)
        else:
            doc[table][name] = value
        spec.write_text(tomli_w.dumps(doc))

    return apply


def _drop_table(name: str):  # type: ignore[no-untyped-def]
    def apply(spec: Path) -> None:
        doc = tomllib.loads(spec.read_text())
        doc.pop(name)
        spec.write_text(tomli_w.dumps(doc))

    return apply


def _corrupt(rel: str, text: str):  # type: ignore[no-untyped-def]
    def apply(spec: Path) -> None:
        (spec.parent / spec.stem / rel).write_text(text)

    return apply


MISSING = [
    (_delete("catalogue.parquet"), r"learned.catalogue: .*catalogue.parquet: file not found"),
    (
        _delete("start_states.parquet"),
        r"learned.start_states: .*start_states.parquet: file not found",
    ),
    (_delete("responses.json"), r"learned.responses: .*responses.json: file not found"),
    (_delete("leave_model.json"), r"learned.leave_model: .*leave_model.json: file not found"),
    (_delete("ranker"), r"predictor.path: .*ranker: not a predictor artefact directory"),
    (
        _delete("response_model"),
        r"learned.response_model: .*response_model: not a predictor artefact directory",
    ),
    (_delete("response_model/weights.safetensors"), r"missing predictor artefact file"),
    (_corrupt("leave_model.json", "{not json"), r"learned.leave_model: .*not valid JSON"),
    (_corrupt("responses.json", "{}"), r"learned.responses: .*expected format"),
    (_edit_spec("learned.catalogue", None), r"learned: missing path\(s\) for \['catalogue'\]"),
    (_edit_spec("world.n_items", 20000), r"world.n_items = 20000 but learned.catalogue"),
    (_drop_table("learned"), r"world.kind = 'learned' needs a \[learned\] table"),
]


@pytest.mark.parametrize(("mutate", "match"), MISSING)
def test_spec_with_missing_artefacts_is_a_clear_error(
    learned: tuple[Path, dict],  # type: ignore[type-arg]
    tmp_path: Path,
    mutate,  # type: ignore[no-untyped-def]
    match: str,
) -> None:
    spec = _copy_env(learned[0], tmp_path)
    mutate(spec)
    with pytest.raises(ConfigError, match=match):
        gymnasium.make("batchrl_mtf.envs:batchrl_mtf/Fusion-v0", spec=str(spec))


def test_simulated_world_refuses_a_learned_table() -> None:
    from batchrl_mtf.sim import default_spec_path, parse_spec

    doc = tomllib.loads(default_spec_path().read_text())
    doc["learned"] = {"catalogue": "x.parquet"}
    with pytest.raises(ConfigError, match=r"\[learned\] is only allowed with world.kind"):
        parse_spec(doc, "x.toml")


def test_cli_make_env_then_rollout_and_simulate(logs_path: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    runner = CliRunner()
    out = tmp_path / "envs" / "cli.toml"
    res = runner.invoke(
        main,
        [
            "make-env",
            str(logs_path),
            "--reward",
            str(REWARD),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--n-candidates",
            "30",
            "--replay-sessions",
            "100",
            "--candidates",
            "exposure",
            "--beta",
            "0.05,0.05,0.01,0.005,0.005,0.005",
            "--action-bounds",
            "0,2",
            "--ranker-targets",
            "labels",
            "--catalogue-size",
            "100000",
        ],
    )
    assert res.exit_code == 0, res.output
    assert re.search(r"fusion of the ranker: logsum, beta \w+=0.05,\w+=0.05,\w+=0.01,", res.output)
    assert "(default" not in res.output
    assert "replay check (100 logged sessions" in res.output
    assert "session length (mean)" in res.output
    assert "leave model (held-out sessions)" in res.output
    assert (tmp_path / "envs" / "cli" / "validation.json").is_file()
    spec = load_spec(out)
    assert spec.learned is not None
    assert spec.learned.candidates == "exposure"
    assert spec.fusion.beta == (0.05, 0.05, 0.01, 0.005, 0.005, 0.005)
    assert (spec.fusion.low, spec.fusion.high) == (0.0, 2.0)
    # unlogged items never win: 30 candidates of 100,000 items, the logged share competes
    assert spec.world.n_candidates == max(round(30 * spec.world.n_items / 100000), 6)
    resp = json.loads((tmp_path / "envs" / "cli" / "responses.json").read_text())
    assert "ranker_scale" not in resp  # the labels ranker predicts probabilities
    roll = runner.invoke(
        main, ["rollout", "--env", str(out), "--policy", "production", "--sessions", "20"]
    )
    assert roll.exit_code == 0, roll.output
    doc = json.loads(roll.output)
    assert doc["sessions"] == 20
    assert doc["return"]["mean"] > 0
    logs_out = tmp_path / "from_learned.parquet"
    sim = runner.invoke(
        main,
        [
            "simulate",
            "--env",
            str(out),
            "--sessions",
            "10",
            "--policy",
            "mixed",
            "--out",
            str(logs_out),
        ],
    )
    assert sim.exit_code == 0, sim.output
    assert set(pd.read_parquet(logs_out)["user_id"])
    assert len(pd.read_parquet(logs_out)) > 0


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--out", "x.json"], r"--out x.json: expected a .toml file name"),
        (["--beta", "0.1,0.2"], r"--beta: expected 1 or 6 offsets"),
        (["--action-bounds", "0"], r"--action-bounds: expected LO,HI"),
        (["--predictor", "nope"], r"--predictor: nope: not a predictor artefact directory"),
        (["--leave-l2", "1,2"], r"--leave-l2: expected 'auto' or one number"),
    ],
)
def test_cli_errors_are_one_line(
    logs_path: Path, tmp_path: Path, args: list[str], match: str
) -> None:
    runner = CliRunner()
    base = ["make-env", str(logs_path), "--reward", str(REWARD)]
    if "--out" not in args:
        base += ["--out", str(tmp_path / "e.toml")]
    res = runner.invoke(main, [*base, *args])
    assert res.exit_code == 2, res.output
    import re

    assert re.search(match, res.output), res.output


# ----------------------------------------------------------- leave-model inputs (issue 9 follow-up)


def test_recent_feedback_is_a_decayed_sum_that_restarts_with_each_session() -> None:
    fb = np.array([[1.0, 0.0], [2.0, 1.0], [0.0, 4.0], [5.0, 5.0], [1.0, 0.0]])
    step = np.array([0, 1, 2, 0, 1])
    got = recent_feedback(fb, step, 0.5)
    want = np.array([[1.0, 0.0], [2.5, 1.0], [1.25, 4.5], [5.0, 5.0], [3.5, 2.5]])
    np.testing.assert_allclose(got, want)
    np.testing.assert_allclose(recent_feedback(fb, step, 0.0), fb)


def test_leave_feature_names_add_recency_and_weights_in_order() -> None:
    names = leave_feature_names(("s",), ("click", "like"), recency=True, tasks=("click",))
    assert names == (
        "s",
        "req_click",
        "req_like",
        "recent_click",
        "recent_like",
        "w_click",
        "recent_w_click",
    )
    assert leave_feature_names(("s",), ("click",)) == ("s", "req_click")


def test_leave_model_recency_and_action_inputs_round_trip_and_old_formats_load() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5000, 3))
    y = (rng.random(5000) < 1 / (1 + np.exp(1.5 - 0.7 * x[:, 2]))).astype(float)
    names = ("a", "req_click", "w_click")
    m = fit_leave_model(x, y, names, l2=0.0, recency_decay=0.85, action_inputs=True, exclude=[0])
    assert m.coef[0] == 0.0  # an excluded input has no effect
    doc = json.loads(json.dumps(m.to_json({})))
    assert doc["format"] == "batchrl-mtf-leave@3"
    back = LeaveModel.from_json(doc, "t")
    assert back.recency_decay == 0.85 and back.action_inputs
    np.testing.assert_allclose(back.probability(x[:50]), m.probability(x[:50]))
    old = {k: v for k, v in doc.items() if k not in ("recency_decay", "action_inputs")}
    old["format"] = "batchrl-mtf-leave@2"
    v2 = LeaveModel.from_json(old, "t")
    assert v2.recency_decay is None and not v2.action_inputs
    bad = dict(doc, recency_decay=1.5)
    with pytest.raises(ConfigError, match="recency_decay in"):
        LeaveModel.from_json(bad, "t")


def _two_class_sessions(n_sessions: int, seed: int) -> tuple[np.ndarray, ...]:
    """Sessions whose hidden class (shown noisily by input 0) decides how leaving responds to
    input 1: class 1 leaves when input 1 is high, class 0 when it is low."""
    rng = np.random.default_rng(seed)
    xs, ys, sess, steps = [], [], [], []
    for s in range(n_sessions):
        cls = rng.random() < 0.4
        hint = (1.0 if cls else -1.0) + 0.8 * rng.standard_normal()
        for t in range(30):
            f = rng.standard_normal()
            logit = -2.5 + (1.5 * f if cls else -1.5 * f)
            xs.append([hint, f])
            sess.append(s)
            steps.append(t)
            left = rng.random() < 1 / (1 + np.exp(-logit))
            ys.append(float(left))
            if left:
                break
    return np.array(xs), np.array(ys), np.array(sess), np.array(steps)


def test_leave_mixture_finds_hidden_classes_and_is_calibrated() -> None:
    x, y, sess, _ = _two_class_sessions(3000, 4)
    names = ("u_hint", "req_f")
    single = fit_leave_model(x, y, names)
    mix, _ = fit_leave_mixture(x, y, sess, names, 2, gate=[0], n_iter=40, seed=0)
    assert mix.mixture is not None and mix.mixture.n_classes == 2
    # the two classes respond to the feedback input in opposite directions
    slopes = mix.mixture.coef[:, 1] / mix.std[1]
    assert slopes.min() < -0.8 and slopes.max() > 0.8
    xt, yt, _, st = _two_class_sessions(2000, 5)
    p_mix = filtered_probability(mix, xt, st)
    assert log_loss(p_mix, yt) < log_loss(single.probability(xt), yt) - 0.005
    assert abs(p_mix.mean() - yt.mean()) < 0.01
    # classes drawn from the gate follow its probabilities; the JSON round trip keeps them
    gate = mix.class_probabilities(xt)
    draws = mix.draw_classes(xt, np.random.default_rng(0))
    np.testing.assert_allclose(
        np.bincount(draws, minlength=2) / len(draws), gate.mean(axis=0), atol=0.02
    )
    back = LeaveModel.from_json(json.loads(json.dumps(mix.to_json({}))), "t")
    np.testing.assert_allclose(
        back.probability(xt[:40], draws[:40]), mix.probability(xt[:40], draws[:40])
    )
    with pytest.raises(ValueError, match="needs each row's class"):
        mix.probability(xt[:5])
    broken = mix.to_json({})
    broken["mixture"] = dict(broken["mixture"], intercept=[0.0])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="mixture"):
        LeaveModel.from_json(broken, "t")


def test_learned_env_feeds_decayed_sums_and_weights_to_its_leave_model(
    learned: tuple[Path, dict],  # type: ignore[type-arg]
) -> None:
    spec_path, _ = learned
    world = World(load_spec(spec_path))
    model = world.learned
    assert model is not None
    leave = model.leave
    assert leave.recency_decay == LearnedEnvConfig().leave_recency_decay
    assert leave.action_inputs
    assert {"recent_click", "w_click", "recent_w_longview"} <= set(leave.features)
    # the running state of a batch: recent = decay * recent + this request's sums
    users = model.users_at(np.arange(8, dtype=np.int64))
    pool = UserPool(world, users, world.spec.features.hist_n)
    batch = SessionBatch(world, pool, np.arange(8, dtype=np.int64), np.random.default_rng(0))
    w1 = np.full((8, 6), 0.5)
    w2 = np.tile(np.array([2.0, 0.0, 0.0, 0.0, 0.0, 0.0]), (8, 1))
    r1 = batch.step(w1, np.arange(8, dtype=np.int64))
    alive = np.flatnonzero(batch.active)
    assert len(alive)
    r2 = batch.step(w2[alive], alive)
    d = leave.recency_decay
    assert d is not None
    want = d * r1.feedback.sum(axis=1)[alive] + r2.feedback.sum(axis=1)
    np.testing.assert_allclose(batch.recent_sums[alive], want)
    np.testing.assert_allclose(batch.recent_actions[alive], d * w1[alive] + w2[alive])
    # the weights reach the leave probability
    obs = batch.observe(alive)
    fb = r2.feedback.sum(axis=1)
    cls = np.zeros(len(alive), dtype=np.int64)
    p_a = model.leave_probability(
        obs, fb, batch.recent_sums[alive], cls, w2[alive], batch.recent_actions[alive]
    )
    p_b = model.leave_probability(
        obs, fb, batch.recent_sums[alive], cls, w1[alive], d * w1[alive] + w1[alive]
    )
    assert np.abs(p_a - p_b).max() > 1e-4
    with pytest.raises(ValueError, match="weights"):
        model.leave_probability(obs, fb, batch.recent_sums[alive], cls)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("leave_recency_decay", 1.0, "leave_recency_decay"),
        ("leave_recency_decay", -0.1, "leave_recency_decay"),
        ("leave_classes", 0, "leave_classes"),
        ("leave_em_iterations", 0, "leave_em_iterations"),
        ("n_threads", -1, "n_threads"),
    ],
)
def test_leave_options_are_validated(field: str, value: float, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        LearnedEnvConfig(**{field: value})  # type: ignore[arg-type]


def test_cli_leave_options_reach_the_saved_leave_model(logs_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "envs" / "opts.toml"
    args = ["make-env", str(logs_path), "--reward", str(REWARD), "--out", str(out)]
    args += ["--n-candidates", "30", "--replay-sessions", "50", "--no-leave-actions"]
    args += ["--leave-recency", "0", "--leave-l2", "5", "--leave-classes", "2"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "l2 5" in res.output
    # logs do not say how the platform fused: the default is used, and said to be
    assert "fusion of the ranker: logsum, beta 0.1 (default: no --formula/--beta given)" in (
        res.output
    )
    validation = json.loads((tmp_path / "envs" / "opts" / "validation.json").read_text())
    assert validation["fusion"]["source"] == "default"
    assert set(validation["fusion"]["beta"].values()) == {0.1}
    assert load_spec(out).fusion.beta == (0.1,) * len(validation["fusion"]["beta"])
    doc = json.loads((tmp_path / "envs" / "opts" / "leave_model.json").read_text())
    assert doc["recency_decay"] is None
    assert doc["action_inputs"] is False
    assert doc["l2"] == 5.0
    assert len(doc["mixture"]["intercept"]) == 2
    assert not any(f.startswith(("recent_", "w_")) for f in doc["features"])
    # the mixture world steps (classes drawn at the start of each session)
    stats, _ = run_sessions(World(load_spec(out)), _production(out), 20, 0)
    assert len(stats.returns) == 20


def test_make_env_runs_with_its_thread_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import batchrl_mtf.learned.fit as fit_mod

    seen: list[int] = []
    monkeypatch.setattr(fit_mod, "_make_env", lambda *a: seen.append(torch.get_num_threads()))
    torch.set_num_threads(2)
    make_env([], REWARD, "x.toml", LearnedEnvConfig(n_threads=1))
    make_env([], REWARD, "x.toml", LearnedEnvConfig(n_threads=0))
    assert seen == [1, 2]
    assert torch.get_num_threads() == 2


def test_cli_n_threads_reaches_the_config(
    logs_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import batchrl_mtf.cli.learned as cli_mod

    seen: list[LearnedEnvConfig] = []

    def fake(*args: object, **kwargs: object) -> None:
        seen.append(args[3])  # type: ignore[arg-type]
        raise ConfigError("stop here")

    monkeypatch.setattr(cli_mod, "make_env", fake)
    base = ["make-env", str(logs_path), "--reward", str(REWARD)]
    for extra, want in (([], LearnedEnvConfig().n_threads), (["--n-threads", "0"], 0)):
        res = CliRunner().invoke(main, [*base, "--out", str(tmp_path / f"e{want}.toml"), *extra])
        assert res.exit_code == 2, res.output
    assert [c.n_threads for c in seen] == [1, 0]
