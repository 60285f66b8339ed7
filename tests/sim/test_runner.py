"""`batchrl_mtf.sim.true_value`: the simulator's value of any policy, measured in one place."""

from __future__ import annotations

import numpy as np
import pytest

from batchrl_mtf.errors import PolicyError
from batchrl_mtf.policy.base import ConstantPolicy
from batchrl_mtf.resolve import resolve_sim_policy
from batchrl_mtf.sim import FixedPolicy, World, load_spec, rollout_summary, run_sessions, true_value

TASKS = ("click", "longview", "like", "follow", "comment", "share")
PROD = (1.0, 0.4, 0.3, 0.1, 0.1, 0.1)


def test_true_value_is_the_mean_session_return_and_reproducible() -> None:
    policy = ConstantPolicy(PROD, TASKS, name="production")
    v1 = true_value(None, policy, seed=3, sessions=200)
    v2 = true_value(None, policy, seed=3, sessions=200)
    assert v1.mean == v2.mean
    np.testing.assert_array_equal(v1.returns, v2.returns)
    world = World(load_spec(None))
    stats, _ = run_sessions(world, FixedPolicy(policy), 200, 3)
    assert v1.mean == pytest.approx(float(np.mean(stats.returns)))
    assert v1.summary == rollout_summary(world, stats)
    assert v1.ci95 == tuple(v1.summary["return"]["ci95"])  # type: ignore[index]
    assert v1.policy == "production" and v1.sessions == 200 and v1.seed == 3
    other = ConstantPolicy((0.0, 0.0, 0.0, 0.0, 0.0, 2.0), TASKS, name="share-only")
    assert true_value(world, other, seed=3, sessions=200).mean != v1.mean


def test_true_value_records_the_weights_per_hidden_segment() -> None:
    world = World(load_spec(None))
    value = true_value(world, ConstantPolicy(PROD, TASKS), sessions=60, seed=1)
    assert set(value.weights_by_segment) <= set(world.segment_names)
    for seg, weights in value.weights_by_segment.items():
        assert weights == pytest.approx({f"w_{t}": w for t, w in zip(TASKS, PROD, strict=True)})
        assert len(value.samples[seg]) == min(value.requests_by_segment[seg], 2000)
    assert sum(value.requests_by_segment.values()) == int(value.stats.length.sum())


def test_true_value_of_a_sampling_policy() -> None:
    world = World(load_spec(None))
    mixed = resolve_sim_policy(world, "mixed")
    value = true_value(world, mixed, sessions=40, seed=2)
    stats, _ = run_sessions(world, resolve_sim_policy(world, "mixed"), 40, 2)
    np.testing.assert_array_equal(value.returns, stats.returns)
    spread = np.concatenate([s for s in value.samples.values() if len(s)]).std(axis=0)
    assert (spread > 0).all()  # the logging policy sampled its weights


def test_true_value_rejects_other_tasks() -> None:
    with pytest.raises(
        PolicyError, match=r"policy tasks \['click', 'buy'\] differ from the world's"
    ):
        true_value(None, ConstantPolicy((1.0, 1.0), ("click", "buy")), sessions=10)
