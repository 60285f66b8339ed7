"""Fusion policies: the :class:`Policy` protocol every policy implements, constant and table policies."""

from __future__ import annotations

from batchrl_mtf.policy.base import ConstantPolicy, FloatArray, Policy, TablePolicy

__all__ = ["ConstantPolicy", "FloatArray", "Policy", "TablePolicy"]
