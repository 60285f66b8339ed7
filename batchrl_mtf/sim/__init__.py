"""Simulated recommender platforms: specs, the Gymnasium fusion environment, logging policies.

The Gymnasium environments ``batchrl_mtf/ShortVideo-v0``, ``batchrl_mtf/ECommerce-v0`` and
``batchrl_mtf/Fusion-v0`` (``spec=`` a TOML path) are registered by :func:`register_envs`, or by
Gymnasium itself through the module prefix:
``gymnasium.make("batchrl_mtf.envs:batchrl_mtf/ShortVideo-v0")``. Importing this
package registers nothing. See ``docs/simulator.md``.
"""

from __future__ import annotations

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
from batchrl_mtf.sim.registration import ENV_IDS, register_envs
from batchrl_mtf.sim.runner import (
    SearchResult,
    SegmentRecorder,
    SessionStats,
    TrueValue,
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
    "SegmentRecorder",
    "SessionBatch",
    "SessionStats",
    "SimPolicy",
    "StepResult",
    "TrueValue",
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
