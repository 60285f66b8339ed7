"""Simulated recommender platforms: specs, the Gymnasium fusion environment, logging policies.

Importing this package registers the Gymnasium environments ``batchrl_mtf/ShortVideo-v0``,
``batchrl_mtf/ECommerce-v0`` and ``batchrl_mtf/Fusion-v0`` (``spec=`` a TOML path). Without
importing it first, ``gymnasium.make("batchrl_mtf.sim:batchrl_mtf/ShortVideo-v0")`` imports it.
Importing this package is light (gymnasium only); the names below load on first use.
See ``docs/simulator.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchrl_mtf.sim.engine import LogRecorder, SessionBatch, StepResult, UserPool
    from batchrl_mtf.sim.policies import (
        NAMED_POLICIES,
        FixedPolicy,
        GaussianPolicy,
        MixedPolicy,
        PolicyContext,
        SegmentPolicy,
        SimPolicy,
        make_policy,
        truncnorm_logpdf,
        world_policy,
    )
    from batchrl_mtf.sim.runner import (
        SearchResult,
        SessionStats,
        feature_names_of,
        rollout_summary,
        run_sessions,
        search_constant,
        true_value,
    )
    from batchrl_mtf.sim.spec import PlatformSpec, default_spec_path, load_spec, parse_spec
    from batchrl_mtf.sim.world import Users, World

__all__ = [
    "ENV_IDS",
    "NAMED_POLICIES",
    "FixedPolicy",
    "GaussianPolicy",
    "LogRecorder",
    "MixedPolicy",
    "PlatformSpec",
    "PolicyContext",
    "SearchResult",
    "SegmentPolicy",
    "SessionBatch",
    "SessionStats",
    "SimPolicy",
    "StepResult",
    "UserPool",
    "Users",
    "World",
    "default_spec_path",
    "feature_names_of",
    "load_spec",
    "make_policy",
    "parse_spec",
    "register_envs",
    "rollout_summary",
    "run_sessions",
    "search_constant",
    "true_value",
    "truncnorm_logpdf",
    "world_policy",
]

_LAZY = {
    "LogRecorder": "batchrl_mtf.sim.engine",
    "SessionBatch": "batchrl_mtf.sim.engine",
    "StepResult": "batchrl_mtf.sim.engine",
    "UserPool": "batchrl_mtf.sim.engine",
    "NAMED_POLICIES": "batchrl_mtf.sim.policies",
    "FixedPolicy": "batchrl_mtf.sim.policies",
    "GaussianPolicy": "batchrl_mtf.sim.policies",
    "MixedPolicy": "batchrl_mtf.sim.policies",
    "PolicyContext": "batchrl_mtf.sim.policies",
    "SegmentPolicy": "batchrl_mtf.sim.policies",
    "SimPolicy": "batchrl_mtf.sim.policies",
    "make_policy": "batchrl_mtf.sim.policies",
    "truncnorm_logpdf": "batchrl_mtf.sim.policies",
    "world_policy": "batchrl_mtf.sim.policies",
    "SearchResult": "batchrl_mtf.sim.runner",
    "SessionStats": "batchrl_mtf.sim.runner",
    "feature_names_of": "batchrl_mtf.sim.runner",
    "rollout_summary": "batchrl_mtf.sim.runner",
    "run_sessions": "batchrl_mtf.sim.runner",
    "search_constant": "batchrl_mtf.sim.runner",
    "true_value": "batchrl_mtf.sim.runner",
    "PlatformSpec": "batchrl_mtf.sim.spec",
    "default_spec_path": "batchrl_mtf.sim.spec",
    "load_spec": "batchrl_mtf.sim.spec",
    "parse_spec": "batchrl_mtf.sim.spec",
    "Users": "batchrl_mtf.sim.world",
    "World": "batchrl_mtf.sim.world",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'batchrl_mtf.sim' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


ENV_IDS = ("batchrl_mtf/ShortVideo-v0", "batchrl_mtf/ECommerce-v0", "batchrl_mtf/Fusion-v0")


def register_envs() -> None:
    """Register the Gymnasium environments (idempotent)."""
    import gymnasium

    entry = "batchrl_mtf.sim.env:FusionEnv"
    kwargs: dict[str, dict[str, object]] = {
        ENV_IDS[0]: {"spec": "short_video"},
        ENV_IDS[1]: {"spec": "ecommerce"},
        ENV_IDS[2]: {},
    }
    for env_id, kw in kwargs.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry, kwargs=kw)


register_envs()
