"""`batchrl_mtf.sim.true_value`: the simulator's value of any deterministic policy."""

from __future__ import annotations

import numpy as np
import pytest

from batchrl_mtf.errors import PolicyError
from batchrl_mtf.policy.base import ConstantPolicy
from batchrl_mtf.sim import FixedPolicy, World, load_spec, run_sessions, true_value

TASKS = ("click", "longview", "like", "follow", "comment", "share")


def test_true_value_is_the_mean_session_return_and_reproducible() -> None:
    policy = ConstantPolicy((1.0, 0.4, 0.3, 0.1, 0.1, 0.1), TASKS, name="production")
    v1 = true_value(None, policy, seed=3, sessions=200)
    v2 = true_value(None, policy, seed=3, sessions=200)
    assert v1 == v2
    stats, _ = run_sessions(World(load_spec(None)), FixedPolicy(policy), 200, 3)
    assert v1 == pytest.approx(float(np.mean(stats.returns)))
    other = ConstantPolicy((0.0, 0.0, 0.0, 0.0, 0.0, 2.0), TASKS, name="share-only")
    assert true_value(None, other, seed=3, sessions=200) != v1


def test_true_value_rejects_other_tasks() -> None:
    with pytest.raises(
        PolicyError, match=r"policy tasks \['click', 'buy'\] differ from the world's"
    ):
        true_value(None, ConstantPolicy((1.0, 1.0), ("click", "buy")), sessions=10)
