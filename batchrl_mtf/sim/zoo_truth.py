"""The truth of a zoo world: production, the best constant (online CEM) and the per-segment oracle.

Every value is the mean undiscounted session return on the same ``eval_sessions`` fresh sessions
(one seed, so common random numbers across policies), with a 95% normal interval. The best
constant is :func:`batchrl_mtf.sim.search_constant` (CEM started at production); the oracle knows
each user's hidden segment and plays, per segment, the better (on that segment's own search
sessions) of a CEM search restricted to the segment and the best constant, so it is never below
the best constant by construction of the search. Results are cached as JSON, keyed by the spec's
TOML text and the search settings.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from batchrl_mtf.core.config import require
from batchrl_mtf.core.io import atomic_write_text, dumps_json, hash_bytes
from batchrl_mtf.policy.base import ConstantPolicy
from batchrl_mtf.sim.policies import FixedPolicy, SegmentPolicy, SimPolicy
from batchrl_mtf.sim.runner import search_constant, true_value
from batchrl_mtf.sim.world import World
from batchrl_mtf.sim.zoo import ZooWorld

__all__ = ["TruthConfig", "policy_returns", "world_truth"]


@dataclass(frozen=True)
class TruthConfig:
    """How hard the truth of a world is searched.

    Attributes:
        cem_sessions: Sessions per candidate of the best-constant CEM.
        cem_iterations: Its iterations.
        cem_population: Its candidates per iteration.
        oracle_sessions: Sessions per candidate of each segment's CEM.
        oracle_iterations: Their iterations.
        oracle_population: Their candidates per iteration.
        eval_sessions: Fresh sessions valuing production, best constant and oracle.
        eval_seed: Seed of those sessions (use the same seed for every other policy's truth).
        seed: Seed of the searches.
    """

    cem_sessions: int = 400
    cem_iterations: int = 6
    cem_population: int = 20
    oracle_sessions: int = 300
    oracle_iterations: int = 5
    oracle_population: int = 16
    eval_sessions: int = 4000
    eval_seed: int = 777
    seed: int = 0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name not in ("eval_seed", "seed"):
                require(value >= 1, f"truth.{name}", f"expected >= 1, found {value}")


def policy_returns(world: World, policy: SimPolicy, sessions: int, seed: int) -> np.ndarray:
    """Per-session returns of ``policy`` (the same users for every policy under one seed)."""
    return np.asarray(true_value(world, policy, sessions, seed).stats.returns, dtype=np.float64)


def _summary(r: np.ndarray) -> dict[str, Any]:
    m = float(r.mean())
    h = 1.96 * float(r.std(ddof=1)) / math.sqrt(len(r))
    return {"mean": m, "ci95": [m - h, m + h]}


def _constant(world: World, w: tuple[float, ...], name: str) -> FixedPolicy:
    return FixedPolicy(ConstantPolicy(tuple(float(x) for x in w), world.tasks, name=name))


def world_truth(
    zw: ZooWorld, config: TruthConfig | None = None, cache_dir: Path | None = None
) -> dict[str, Any]:
    """Production, best constant and oracle of ``zw`` (weights and true values).

    Args:
        zw: The zoo world.
        config: Search and evaluation settings (default :class:`TruthConfig`).
        cache_dir: Directory of the JSON cache (``None``: no cache).

    Returns:
        ``{"production": {...}, "best_constant": {...}, "oracle": {...}, "config": {...}}``;
        each entry has ``weights`` (per segment for the oracle), ``mean`` and ``ci95``.
    """
    cfg = config or TruthConfig()
    key = hash_bytes((zw.to_toml() + json.dumps(asdict(cfg), sort_keys=True)).encode())[:16]
    path = None if cache_dir is None else Path(cache_dir) / f"truth-{zw.name}-{key}.json"
    if path is not None and path.is_file():
        cached: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return cached
    world = World(zw.spec())
    best = search_constant(
        world,
        sessions=cfg.cem_sessions,
        iterations=cfg.cem_iterations,
        population=cfg.cem_population,
        elite=max(2, cfg.cem_population // 4),
        eval_sessions=cfg.oracle_sessions * 2,
        seed=cfg.seed,
    )
    per_segment: list[tuple[float, ...]] = []
    for g in range(len(world.segment_names)):
        seg = search_constant(
            world,
            sessions=cfg.oracle_sessions,
            iterations=cfg.oracle_iterations,
            population=cfg.oracle_population,
            elite=max(2, cfg.oracle_population // 4),
            eval_sessions=cfg.oracle_sessions * 2,
            seed=cfg.seed + 101 + g,
            segment=g,
        )
        # pick on the segment's own fresh search sessions, never on the evaluation sessions
        probe = cfg.seed + 5003 + g
        n = cfg.oracle_sessions * 2
        v_seg = true_value(world, _constant(world, seg.weights, "seg"), n, probe, segment=g)
        v_best = true_value(world, _constant(world, best.weights, "best"), n, probe, segment=g)
        better = v_seg.mean >= v_best.mean
        per_segment.append(seg.weights if better else best.weights)
    n, s = cfg.eval_sessions, cfg.eval_seed
    prod = tuple(float(x) for x in world.production)
    doc: dict[str, Any] = {
        "world": zw.name,
        "production": {
            "weights": list(prod),
            **_summary(policy_returns(world, _constant(world, prod, "production"), n, s)),
        },
        "best_constant": {
            "weights": list(best.weights),
            **_summary(policy_returns(world, _constant(world, best.weights, "best"), n, s)),
        },
        "oracle": {
            "weights": {
                name: list(w) for name, w in zip(world.segment_names, per_segment, strict=True)
            },
            **_summary(policy_returns(world, SegmentPolicy(tuple(per_segment)), n, s)),
        },
        "config": asdict(cfg),
    }
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, dumps_json(doc))
    return doc
