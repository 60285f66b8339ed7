"""Batch-RL training of fusion policies on d3rlpy (BCQ as in BatchRL-MTF, CQL, IQL, TD3+BC, AWAC, BC).

Public API::

    from batchrl_mtf.training import ALGORITHMS, TrainConfig, load_policy, resolve_config, train

    result = train("runs/ds", "runs/policy", resolve_config([("--set", {"n_steps": 5000})]))
    policy = load_policy("runs/policy")
    weights = policy.act(observations)  # (n, n_features) raw states -> (n, n_tasks) weights
"""

from __future__ import annotations

from batchrl_mtf.training.config import (
    ALGORITHMS,
    AlgoSpec,
    AWACParams,
    BCParams,
    BCQParams,
    CQLParams,
    IQLParams,
    TD3BCParams,
    TrainConfig,
    resolve_config,
)
from batchrl_mtf.training.policy import POLICY_FORMAT, TrainedPolicy, load_policy, read_manifest
from batchrl_mtf.training.trainer import (
    TrainResult,
    build_algo,
    config_for_resume,
    reuse_mismatch,
    train,
)

__all__ = [
    "ALGORITHMS",
    "POLICY_FORMAT",
    "AWACParams",
    "AlgoSpec",
    "BCParams",
    "BCQParams",
    "CQLParams",
    "IQLParams",
    "TD3BCParams",
    "TrainConfig",
    "TrainResult",
    "TrainedPolicy",
    "build_algo",
    "config_for_resume",
    "load_policy",
    "read_manifest",
    "resolve_config",
    "reuse_mismatch",
    "train",
]
