"""The batch engine: fusion equals serving.fuse, history equals UserHistory, the world's design."""

from __future__ import annotations

import numpy as np
import pytest

from batchrl_mtf.data.features import UserHistory
from batchrl_mtf.policy.base import ConstantPolicy
from batchrl_mtf.serving import fuse
from batchrl_mtf.sim import FixedPolicy, SessionBatch, UserPool, World, load_spec, run_sessions


@pytest.fixture(scope="module")
def world() -> World:
    return World(load_spec())


def test_precomputed_fusion_equals_serving_fuse(world: World) -> None:
    rng = np.random.default_rng(0)
    seg = rng.integers(0, 3, size=50)
    cand = rng.integers(0, world.spec.world.n_items, size=(50, 200))
    w = rng.uniform(0, 2, size=(50, 6))
    ref = fuse(world.predict(seg, cand), w, "logsum", world.beta)
    x = np.take(world.fused_features(), seg[:, None] * world.spec.world.n_items + cand, axis=0)
    ours = np.einsum("bck,bk->bc", x, w.astype(np.float32))
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-4)
    same = [set(np.argsort(-ours[i])[:6]) == set(np.argsort(-ref[i])[:6]) for i in range(len(w))]
    assert np.mean(same) >= 0.95


def test_user_pool_history_equals_user_history(world: World) -> None:
    rng = np.random.default_rng(1)
    pool = UserPool(world, world.new_users(1, rng), hist_n=25)
    ref = UserHistory(len(world.feedback), 25)
    for _ in range(4):
        batch = SessionBatch(world, pool, np.zeros(1, dtype=np.int64), rng)
        np.testing.assert_allclose(batch.hist_rates[0], ref.rates(), rtol=1e-12)
        assert batch.hist_sessions[0] == ref.n_sessions
        while batch.active.any():
            res = batch.step(world.production[None, :])
            ref.add_impressions(res.feedback[0])
        batch.finish()
        ref.end_session()
    assert pool.n_sessions[0] == 4


def test_step_only_serves_running_sessions(world: World) -> None:
    rng = np.random.default_rng(2)
    pool = UserPool(world, world.new_users(8, rng), 500)
    batch = SessionBatch(world, pool, np.arange(8, dtype=np.int64), rng)
    n_steps = 0
    while batch.active.any():
        running = np.flatnonzero(batch.active)
        res = batch.step(np.tile(world.production, (len(running), 1)))
        np.testing.assert_array_equal(res.rows, running)
        assert res.items.shape == (len(running), 6)
        n_steps += 1
    assert batch.depth.max() == n_steps
    assert (batch.depth >= 1).all()


def _value(world: World, weights: tuple[float, ...], segment: int) -> float:
    pol = FixedPolicy(ConstantPolicy(weights, world.tasks))
    stats, _ = run_sessions(world, pol, 300, seed=5, segment=segment)
    return float(stats.returns.mean())


def test_segments_want_different_weights(world: World) -> None:
    prod = tuple(world.production)
    longview = (0.2, 2.0, 0.2, 0.0, 0.0, 0.0)
    social = (0.3, 0.3, 1.0, 1.0, 1.5, 1.5)
    watcher = world.segment_names.index("watcher")
    social_seg = world.segment_names.index("social")
    # watchers leave on click-bait: long-view weights are worth much more than production
    assert _value(world, longview, watcher) > 1.5 * _value(world, prod, watcher)
    # social users want interaction weights; casual users do not
    assert _value(world, social, social_seg) > 1.05 * _value(world, prod, social_seg)
    casual = world.segment_names.index("casual")
    assert _value(world, prod, casual) > _value(world, longview, casual)
