"""Fusion policies: the :class:`Policy` protocol every policy implements, constant and table
policies, and the :class:`LoggingPolicy` marker for the policy that wrote the logs."""

from __future__ import annotations

from batchrl_mtf.policy.base import (
    LOGGING_NAMES,
    ConstantPolicy,
    FloatArray,
    LoggingPolicy,
    Policy,
    RenamedPolicy,
    TablePolicy,
)

__all__ = [
    "LOGGING_NAMES",
    "ConstantPolicy",
    "FloatArray",
    "LoggingPolicy",
    "Policy",
    "RenamedPolicy",
    "TablePolicy",
]
