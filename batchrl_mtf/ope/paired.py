"""Paired differences of two policies' values measured on the same sessions.

Every estimator of :func:`batchrl_mtf.ope.evaluate_policies` returns per-session values
(``Estimate.per_session``, shape (n_sessions,)); two policies evaluated with the same config on the
same split have them on the same sessions, so the difference ``a - b`` of two policies is a mean
over paired sessions and its interval is much narrower than the two intervals side by side (the
shared noise of the sessions cancels).

* :func:`paired_difference`: mean of ``a - b`` with a normal-approximation interval.
* :func:`bootstrap_difference`: the same with a percentile bootstrap over sessions (both policies
  resampled together).
* :func:`evaluate_each` and :func:`merge_results`: evaluate policies (together with the batched
  FQE engine, else one at a time) or merge separate evaluations (a time budget), keeping the
  per-session values the differences need.
* :func:`common_estimator` and :func:`paired_vs`: per policy, the difference to a base policy for
  every estimator, and the estimator to quote (valid for both under the recommended-estimate rule).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm.auto import tqdm

from batchrl_mtf.data.transitions import Transitions
from batchrl_mtf.ope.config import OPEConfig
from batchrl_mtf.ope.evaluate import OPEResult, eligible, evaluate_policies
from batchrl_mtf.policy.base import LoggingPolicy, Policy

__all__ = [
    "bootstrap_difference",
    "common_estimator",
    "evaluate_each",
    "merge_results",
    "paired_difference",
    "paired_vs",
    "per_session_values",
]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]


def _z(level: float) -> float:
    return NormalDist().inv_cdf(0.5 + level / 2.0)


def paired_difference(
    a: Sequence[float] | FloatArray, b: Sequence[float] | FloatArray, level: float = 0.95
) -> tuple[float, float, float]:
    """Mean of ``a - b`` over paired sessions and its normal-approximation interval.

    Args:
        a: Per-session values of the first policy, shape (n,).
        b: Per-session values of the second policy on the same sessions, shape (n,).
        level: Coverage of the interval.

    Returns:
        ``(difference, low, high)`` (``low``/``high`` NaN with fewer than 2 sessions).
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    m = float(d.mean()) if d.size else math.nan
    if d.size < 2:
        return m, math.nan, math.nan
    h = _z(level) * float(d.std(ddof=1)) / math.sqrt(d.size)
    return m, m - h, m + h


def bootstrap_difference(
    a: FloatArray, b: FloatArray, n_bootstrap: int, level: float, seed: int
) -> tuple[float, float, float]:
    """Mean of ``a - b`` (per-session values of two estimates) with a percentile bootstrap.

    Sessions are resampled with replacement together for both policies (a paired interval). With
    ``n_bootstrap = 0`` the normal approximation is used (:func:`paired_difference`).

    Args:
        a: Per-session values of the first policy, shape (n,).
        b: Per-session values of the second policy on the same sessions, shape (n,).
        n_bootstrap: Bootstrap resamples.
        level: Coverage of the interval.
        seed: Seed of the resamples.

    Returns:
        ``(difference, low, high)``.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if n_bootstrap <= 0 or d.size < 2:
        return paired_difference(a, b, level)
    rng = np.random.default_rng(seed)
    n = d.size
    means = np.empty(n_bootstrap)
    chunk = max(1, 2_000_000 // n)
    for lo in range(0, n_bootstrap, chunk):
        size = min(chunk, n_bootstrap - lo)
        idx = rng.integers(0, n, size=(size, n))
        means[lo : lo + size] = d[idx].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(d.mean()), float(low), float(high)


def common_estimator(p: Any, base: Any, n_sessions: int, config: Any) -> str | None:
    """The first estimator of ``config.recommend_order`` valid for both policies.

    Valid: eligible for both under the guards of the recommended-estimate rule
    (:func:`batchrl_mtf.ope.evaluate.eligible`: finite, the ESS floor for pure importance
    sampling, the interval-width guard for doubly robust estimators), so a difference never mixes
    a trusted and an untrusted value.

    Args:
        p: A :class:`~batchrl_mtf.ope.PolicyResult`.
        base: The base policy's :class:`~batchrl_mtf.ope.PolicyResult`.
        n_sessions: Sessions evaluated on.
        config: The :class:`~batchrl_mtf.ope.OPEConfig` of the evaluation.
    """
    for name in config.recommend_order:
        if all(eligible(name, e.estimates, n_sessions, config) for e in (p, base)):
            return str(name)
    return p.recommended.estimator if p.recommended is not None else None


def paired_vs(
    per_session: dict[str, FloatArray], base: str, result: Any, config: Any
) -> dict[str, dict[str, Any]]:
    """Per policy: the difference to ``base`` with a paired interval, for every estimator.

    Args:
        per_session: Per-session values keyed ``"<policy>|<estimator>"``, each shape (n_sessions,).
        base: Name of the base policy (e.g. ``"production"``).
        result: The :class:`~batchrl_mtf.ope.OPEResult` holding every policy.
        config: Its :class:`~batchrl_mtf.ope.OPEConfig` (bootstrap size, level, seed).

    Returns:
        ``{policy: {"estimator": <to quote, :func:`common_estimator`>,
        "by_estimator": {est: {"diff": d, "ci": [lo, hi]}}}}`` for every policy but ``base``.
    """
    ref = next(p for p in result.policies if p.name == base)
    out: dict[str, dict[str, Any]] = {}
    for p in result.policies:
        if p.name == base:
            continue
        diffs: dict[str, dict[str, object]] = {}
        for est in p.estimates:
            a, b = per_session.get(f"{p.name}|{est}"), per_session.get(f"{base}|{est}")
            if a is None or b is None or len(a) != len(b):
                continue
            d, lo, hi = bootstrap_difference(a, b, config.n_bootstrap, config.ci_level, config.seed)
            diffs[est] = {"diff": d, "ci": [lo, hi]}
        out[p.name] = {
            "estimator": common_estimator(p, ref, result.n_sessions, config),
            "by_estimator": diffs,
        }
    return out


def evaluate_each(
    data: Transitions,
    policies: Sequence[Policy | LoggingPolicy],
    config: OPEConfig,
    progress: bool = False,
) -> tuple[OPEResult, dict[str, FloatArray]]:
    """Evaluate ``policies`` (same config, seed and sessions) and merge the results.

    With the batched FQE engine (``config.fqe_engine == "batched"``) every policy is evaluated in
    one call (its fits train as one ensemble); else one at a time, so a progress bar can follow.

    Returns:
        The merged ``OPEResult`` and the per-session values keyed ``"<policy>|<estimator>"``,
        each shape (n_sessions,).
    """
    if config.fqe_engine == "batched":
        parts = [evaluate_policies(data, list(policies), config)]
    else:
        bar = tqdm(policies, desc="evaluate", unit="policy", disable=not progress, leave=False)
        parts = [evaluate_policies(data, [policy], config) for policy in bar]
    per_session: dict[str, FloatArray] = {}
    for res in parts:
        per_session.update(per_session_values(res))
        for p in res.policies:
            if p.recommended is not None:
                logger.info("%s: %s = %.4g", p.name, p.recommended.estimator, p.recommended.value)
    return merge_results(parts), per_session


def per_session_values(result: OPEResult) -> dict[str, FloatArray]:
    """Per-session values of every estimate of ``result``, keyed ``"<policy>|<estimator>"``."""
    return {
        f"{p.name}|{name}": np.asarray(est.per_session, dtype=np.float64)
        for p in result.policies
        for name, est in p.estimates.items()
    }


def merge_results(parts: Sequence[OPEResult]) -> OPEResult:
    """One ``OPEResult`` of evaluations run separately with the same config on the same split
    (policies in order, ranking by recommended value, best first)."""
    results = tuple(p for r in parts for p in r.policies)
    ranked = sorted(
        results, key=lambda r: -(r.recommended.value if r.recommended is not None else -math.inf)
    )
    first = parts[0]
    return OPEResult(
        gamma=first.gamma,
        n_sessions=first.n_sessions,
        n_requests=first.n_requests,
        estimators=first.estimators,
        policies=results,
        ranking=tuple(r.name for r in ranked),
        bandwidth=next((r.bandwidth for r in parts if r.bandwidth is not None), None),
        config=first.config,
    )
