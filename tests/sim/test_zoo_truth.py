"""The truth of a zoo world: production, best constant, per-segment oracle; cached JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from batchrl_mtf.errors import ConfigError
from batchrl_mtf.policy.base import ConstantPolicy
from batchrl_mtf.sim import World
from batchrl_mtf.sim.policies import FixedPolicy, SegmentPolicy
from batchrl_mtf.sim.zoo import get_world
from batchrl_mtf.sim.zoo_truth import TruthConfig, policy_returns, world_truth

TINY = TruthConfig(
    cem_sessions=12,
    cem_iterations=1,
    cem_population=3,
    oracle_sessions=8,
    oracle_iterations=1,
    oracle_population=2,
    eval_sessions=40,
)


def test_truth_values_are_the_policies_returns_on_the_evaluation_sessions(tmp_path: Path) -> None:
    zw = get_world("h05")
    doc = world_truth(zw, TINY, tmp_path)
    world = World(zw.spec())
    assert doc["production"]["weights"] == list(world.production)
    assert set(doc["oracle"]["weights"]) == set(world.segment_names)
    prod = ConstantPolicy(tuple(world.production), world.tasks, name="p")
    r = policy_returns(world, FixedPolicy(prod), TINY.eval_sessions, TINY.eval_seed)
    assert doc["production"]["mean"] == pytest.approx(r.mean())
    lo, hi = doc["production"]["ci95"]
    assert lo < r.mean() < hi
    weights = tuple(tuple(doc["oracle"]["weights"][g]) for g in world.segment_names)
    ro = policy_returns(world, SegmentPolicy(weights), TINY.eval_sessions, TINY.eval_seed)
    assert doc["oracle"]["mean"] == pytest.approx(ro.mean())
    best = np.asarray(doc["best_constant"]["weights"])
    assert ((best >= world.low) & (best <= world.high)).all()


def test_truth_is_cached_by_spec_and_settings(tmp_path: Path) -> None:
    zw = get_world("h05")
    doc = world_truth(zw, TINY, tmp_path)
    (path,) = tmp_path.glob("truth-h05-*.json")
    cached = json.loads(path.read_text())
    cached["production"]["mean"] = -123.0  # a cached file is read, not recomputed
    path.write_text(json.dumps(cached))
    assert world_truth(zw, TINY, tmp_path)["production"]["mean"] == -123.0
    other = TruthConfig(**{**TINY.__dict__, "eval_sessions": 41})
    assert world_truth(zw, other, tmp_path)["production"]["mean"] != -123.0
    assert len(list(tmp_path.glob("truth-h05-*.json"))) == 2
    assert world_truth(zw, TINY, None) == doc  # deterministic without a cache too


def test_truth_config_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"truth\.eval_sessions"):
        TruthConfig(eval_sessions=0)
