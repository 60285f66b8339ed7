"""The Gymnasium fusion environment: registration, check_env, determinism, logs round trip."""

from __future__ import annotations

import subprocess
import sys

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import batchrl_mtf.sim
from batchrl_mtf.data.build import build_dataset_from_frame
from batchrl_mtf.data.config import DatasetConfig
from batchrl_mtf.logs.schema import LogFrame, read_logs
from batchrl_mtf.sim import ENV_IDS, World, load_spec, make_policy, run_sessions


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env_on_every_registered_env(env_id: str) -> None:
    env = gymnasium.make(f"batchrl_mtf.envs:{env_id}")
    check_env(env.unwrapped, skip_render_check=True)
    assert env.observation_space.shape == (len(env.unwrapped.feature_names),)
    assert env.action_space.shape == (len(env.unwrapped.tasks),)


def test_importing_the_package_registers_nothing() -> None:
    code = (
        "import gymnasium, batchrl_mtf, batchrl_mtf.sim\n"
        "ids = [i for i in gymnasium.registry if i.startswith('batchrl_mtf/')]\n"
        "print(len(ids))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"


def test_make_with_spec_path_and_module_prefix() -> None:
    path = batchrl_mtf.sim.default_spec_path("ecommerce")
    batchrl_mtf.sim.register_envs()
    env = gymnasium.make("batchrl_mtf/Fusion-v0", spec=str(path))
    assert env.unwrapped.tasks == ("click", "cart", "buy")
    env2 = gymnasium.make("batchrl_mtf.envs:batchrl_mtf/ShortVideo-v0")
    assert len(env2.unwrapped.tasks) == 6


def _episode(env: gymnasium.Env, seed: int) -> list[tuple[np.ndarray, float, bool, bool]]:
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    out = [(obs, 0.0, False, False)]
    done = False
    while not done:
        obs, r, te, tr, _ = env.step(env.action_space.sample())
        out.append((obs, float(r), te, tr))
        done = te or tr
    return out


def test_same_seed_same_episode_and_other_seed_differs() -> None:
    env = gymnasium.make("batchrl_mtf.envs:batchrl_mtf/ShortVideo-v0")
    a, b, c = _episode(env, 5), _episode(env, 5), _episode(env, 6)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x[0], y[0])
        assert x[1:] == y[1:]
    assert len(a) != len(c) or any(x[1] != y[1] for x, y in zip(a, c, strict=False))


def test_episode_ends_and_info() -> None:
    env = gymnasium.make("batchrl_mtf.envs:batchrl_mtf/ShortVideo-v0")
    env.reset(seed=0)
    _, r, _, _, info = env.step(env.unwrapped.world.production)
    assert info["items"].shape == (6,)
    assert set(info["feedback"]) == {
        "click",
        "watch_time",
        "longview",
        "like",
        "follow",
        "comment",
        "share",
    }
    assert r == pytest.approx(info["stickiness"] + info["activeness"])
    cap = env.unwrapped.platform.session.max_requests
    lengths, truncs = [], 0
    for _ in range(40):
        env.reset()
        n, done = 0, False
        while not done:
            _, _, te, tr, _ = env.step(env.unwrapped.world.production)
            n += 1
            done = te or tr
            truncs += tr
            assert not (te and tr)
        lengths.append(n)
    assert max(lengths) <= cap
    assert min(lengths) < cap  # users do leave
    with pytest.raises(gymnasium.error.ResetNeeded):
        env.step(env.unwrapped.world.production)


def _dataset(frame, spec):  # type: ignore[no-untyped-def]
    frame = frame.copy()
    frame["__file"] = np.int16(0)
    data, _ = build_dataset_from_frame(
        LogFrame(frame, ("<sim>",)), spec.reward, DatasetConfig(features=spec.features)
    )
    return data


def test_env_logs_round_trip_through_build_dataset() -> None:
    env = gymnasium.make("batchrl_mtf.envs:batchrl_mtf/ShortVideo-v0", record_logs=True)
    rng = np.random.default_rng(0)
    obs_by_req, act_by_req, rew_by_req, end_by_req = {}, {}, {}, {}
    obs, _ = env.reset(seed=11)
    for _ in range(14):  # 14 sessions = 4 users with history carried across sessions
        done = False
        while not done:
            a = rng.uniform(0.0, 2.0, size=6)
            nxt, r, te, tr, info = env.step(a)
            req = info["request_id"]
            obs_by_req[req], act_by_req[req], rew_by_req[req] = obs, a, r
            end_by_req[req] = te or tr
            obs, done = nxt, te or tr
        obs, _ = env.reset()
    data = _dataset(env.unwrapped.logs(), env.unwrapped.platform)
    assert data.spec.features.names == env.unwrapped.feature_names
    assert len(data) == len(obs_by_req)
    assert data.observations[:, -4].max() > 0  # hist_sessions: users came back
    for i, req in enumerate(data.request_id):
        np.testing.assert_allclose(data.observations[i], obs_by_req[int(req)], rtol=1e-9, atol=1e-9)
        np.testing.assert_array_equal(data.actions[i], act_by_req[int(req)])
        assert data.rewards[i] == pytest.approx(rew_by_req[int(req)], rel=1e-12, abs=1e-12)
        assert bool(data.terminals[i] or data.timeouts[i]) == end_by_req[int(req)]


def test_simulate_logs_round_trip_through_parquet(tmp_path) -> None:  # type: ignore[no-untyped-def]
    spec = load_spec()
    world = World(spec)
    pol = make_policy(
        "mixed",
        world.tasks,
        world.production,
        world.low,
        world.high,
        0.2,
        0.6,
    )
    stats, logs = run_sessions(world, pol, 60, seed=3, record=True, max_batch=7)
    assert logs is not None
    path = tmp_path / "logs.parquet"
    logs.to_parquet(path, index=False)
    frame = read_logs([path])
    data, report = build_dataset_from_frame(
        frame, spec.reward, DatasetConfig(features=spec.features)
    )
    assert report["accounting"]["rows"]["dropped"] == {}  # type: ignore[index]
    assert data.n_sessions == 60
    starts = data.episode_starts()
    returns = np.add.reduceat(data.rewards, starts)
    np.testing.assert_allclose(np.sort(returns), np.sort(stats.returns), rtol=1e-9)
    assert np.isfinite(data.behavior_logp).all()
