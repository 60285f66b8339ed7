"""Evaluate several policies with several estimators, pick the recommended estimate, rank.

Recommended-estimate rule (``OPEConfig.recommend_order``, default
``dr, wdr, fqe, cfqe, wpdis, pdis``): walk the order and take the first estimator that was run
and gave a finite value; a pure importance-sampling estimator (``pdis, wpdis``: no model to fall
back on) qualifies only when its effective sample size is at least
``max(min_ess, min_ess_fraction * n_sessions)`` (defaults 30 and 5%). The doubly robust
estimators are not ESS-guarded: as the importance weights vanish (a policy far from the logs)
their correction vanishes and they fall back to their FQE model. But a few huge weights can blow a
DR value up; such a value shows in its interval, so ``dr``/``wdr`` qualify only when their
interval is at most ``dr_max_ci_ratio`` (default 10) times as wide as ``fqe``'s. When none
qualifies, the first finite estimate in the order is taken and the report says so
(``"reason"``). Policies are ranked by their recommended value, best first. The order was chosen on ``bench/ope_accuracy.py``, where DR
ranked the policies best (docs/ope.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from batchrl_mtf.core.threads import usable_cores
from batchrl_mtf.data.box import action_box
from batchrl_mtf.data.transitions import Transitions
from batchrl_mtf.errors import OPEInputError
from batchrl_mtf.ope.base import (
    Estimate,
    Estimator,
    PolicyData,
    check_behavior_logp,
    prepare,
    widen_ci,
)
from batchrl_mtf.ope.config import OPEConfig
from batchrl_mtf.ope.dr import DR, WDR
from batchrl_mtf.ope.fqe import CFQE, FQE, fit_q_many
from batchrl_mtf.ope.importance import PDIS, WPDIS, bandwidth_for
from batchrl_mtf.ope.support import support_diagnostic
from batchrl_mtf.policy.base import LoggingPolicy, Policy

__all__ = [
    "ESS_GUARDED",
    "ESTIMATORS",
    "IMPORTANCE_WEIGHTED",
    "WIDTH_GUARDED",
    "OPEResult",
    "PolicyResult",
    "Recommended",
    "eligible",
    "estimate_policy_value",
    "evaluate_policies",
    "make_estimator",
    "quoted_ci",
    "recommend",
]

logger = logging.getLogger(__name__)

ESTIMATORS: dict[str, type[Estimator]] = {
    "fqe": FQE,
    "cfqe": CFQE,
    "pdis": PDIS,
    "wpdis": WPDIS,
    "dr": DR,
    "wdr": WDR,
}
"""Estimator classes by name."""

IMPORTANCE_WEIGHTED = frozenset({"pdis", "wpdis", "dr", "wdr"})
"""Estimators that need ``behavior_logp`` and report an effective sample size."""

ESS_GUARDED = frozenset({"pdis", "wpdis"})
"""Estimators the recommended-estimate rule takes only above the ESS floor (no model behind)."""

WIDTH_GUARDED = frozenset({"dr", "wdr"})
"""Doubly robust estimators, recommended only with an interval not much wider than FQE's."""

Q_BASED = frozenset({"fqe", "cfqe", "dr", "wdr"})
"""Estimators that use a (C)FQE fit (``cfqe`` the conservative one, the others plain FQE)."""


def make_estimator(name: str, config: OPEConfig | None = None) -> Estimator:
    """The estimator called ``name`` (``fqe``, ``cfqe``, ``pdis``, ``wpdis``, ``dr``, ``wdr``).

    Raises:
        OPEInputError: Unknown name.
    """
    if name not in ESTIMATORS:
        raise OPEInputError(f"estimator: expected one of {', '.join(ESTIMATORS)}, found {name!r}")
    return ESTIMATORS[name](config)


@dataclass(frozen=True)
class Recommended:
    """The recommended estimate of one policy.

    Attributes:
        estimator: The chosen estimator.
        value: Its value.
        ci: The quoted interval: the estimator's own interval widened by the relative model
            error (:func:`quoted_ci`).
        reason: Why it was chosen (the rule's outcome, in words).
        sampling_ci: The estimator's own interval (session sampling and fit-to-fit spread).
        model_error: The relative model error folded into ``ci`` (``OPEConfig.model_error``).
    """

    estimator: str
    value: float
    ci: tuple[float, float] | None
    reason: str
    sampling_ci: tuple[float, float] | None = None
    model_error: float = 0.0

    @property
    def lower(self) -> float | None:
        """The lower end of the interval (quote it next to the value), ``None`` without one."""
        return None if self.ci is None else float(self.ci[0])

    def to_dict(self) -> dict[str, object]:
        """JSON form ``{"estimator", "value", "ci", "lower", "reason", "sampling_ci",
        "model_error"}``."""
        return {
            "estimator": self.estimator,
            "value": float(self.value),
            "ci": _pair(self.ci),
            "lower": self.lower,
            "reason": self.reason,
            "sampling_ci": _pair(self.sampling_ci),
            "model_error": float(self.model_error),
        }


def _pair(ci: tuple[float, float] | None) -> list[float] | None:
    return None if ci is None else [float(ci[0]), float(ci[1])]


def quoted_ci(est: Estimate, config: OPEConfig) -> tuple[float, float] | None:
    """The interval quoted with ``est``: its own interval with the relative model error
    ``config.model_error`` added in quadrature to each half-width
    (:func:`batchrl_mtf.ope.base.widen_ci` with standard error ``model_error * |value|``);
    ``None`` without an interval."""
    if est.ci is None or config.model_error <= 0 or not math.isfinite(est.value):
        return est.ci
    return widen_ci(est.value, est.ci, config.model_error * abs(est.value), config.ci_level)


@dataclass(frozen=True)
class PolicyResult:
    """Every estimate of one policy.

    Attributes:
        name: The policy's name (the ``--policy`` argument as given).
        estimates: Estimates by estimator name.
        recommended: The recommended estimate (``None`` when no estimate is finite).
        fqe_loss: Final TD loss of the FQE fits by estimator (diagnostic).
        fqe_steps: Gradient steps of the FQE fits by estimator (mean over fits; diagnostic).
        support: The support diagnostic (:func:`batchrl_mtf.ope.support.support_diagnostic`:
            share of the policy's actions outside the logged quantile box, and whether that
            flags it); ``None`` for the logging policy itself.
    """

    name: str
    estimates: dict[str, Estimate]
    recommended: Recommended | None
    fqe_loss: dict[str, float] = field(default_factory=dict)
    fqe_steps: dict[str, float] = field(default_factory=dict)
    support: dict[str, object] | None = None


@dataclass(frozen=True)
class OPEResult:
    """An evaluation of several policies on one dataset split.

    Attributes:
        gamma: Discount factor used.
        n_sessions: Sessions evaluated on.
        n_requests: Requests evaluated on.
        estimators: Estimators run, in order.
        policies: One result per policy, in the order given.
        ranking: Policy names by recommended value, best first.
        bandwidth: Kernel bandwidth used by the importance-weighted estimators (or ``None``).
        config: The evaluation config.
    """

    gamma: float
    n_sessions: int
    n_requests: int
    estimators: tuple[str, ...]
    policies: tuple[PolicyResult, ...]
    ranking: tuple[str, ...]
    bandwidth: float | None
    config: OPEConfig


def _ci_ratio(est: Estimate, fqe: Estimate | None) -> float | None:
    """Width of ``est``'s interval over ``fqe``'s (``None`` when either is missing or empty)."""
    if fqe is None or est.ci is None or fqe.ci is None:
        return None
    ref = fqe.ci[1] - fqe.ci[0]
    width = est.ci[1] - est.ci[0]
    if not (math.isfinite(ref) and math.isfinite(width)) or ref <= 0:
        return None
    return width / ref


def eligible(name: str, estimates: dict[str, Estimate], n_sessions: int, config: OPEConfig) -> bool:
    """Whether ``estimates[name]`` may be quoted under the recommended-estimate rule's guards:
    finite, above the ESS floor for pure importance sampling, and for doubly robust estimators an
    interval at most ``config.dr_max_ci_ratio`` times as wide as ``fqe``'s."""
    est = estimates.get(name)
    if est is None or not math.isfinite(est.value):
        return False
    if name in ESS_GUARDED:
        min_ess = max(config.min_ess, config.min_ess_fraction * n_sessions)
        return est.ess is not None and est.ess >= min_ess
    ratio = _ci_ratio(est, estimates.get("fqe"))
    if name in WIDTH_GUARDED and config.dr_max_ci_ratio is not None and ratio is not None:
        return ratio <= config.dr_max_ci_ratio
    return True


def recommend(
    estimates: dict[str, Estimate], n_sessions: int, config: OPEConfig
) -> Recommended | None:
    """Apply the recommended-estimate rule (module docstring) to one policy's estimates."""
    min_ess = max(config.min_ess, config.min_ess_fraction * n_sessions)
    fallback: Estimate | None = None
    for name in config.recommend_order:
        est = estimates.get(name)
        if est is None or not math.isfinite(est.value):
            continue
        if fallback is None:
            fallback = est
        if not eligible(name, estimates, n_sessions, config):
            continue
        ratio = _ci_ratio(est, estimates.get("fqe"))
        reason = f"first in order {','.join(config.recommend_order)}"
        if name in ESS_GUARDED:
            reason += f" with ESS {est.ess:.1f} >= {min_ess:.1f}"
        if name in WIDTH_GUARDED and ratio is not None:
            reason += f" with an interval {ratio:.2g}x as wide as fqe's"
        return Recommended(
            name, est.value, quoted_ci(est, config), reason, est.ci, config.model_error
        )
    if fallback is None:
        return None
    return Recommended(
        fallback.estimator,
        fallback.value,
        quoted_ci(fallback, config),
        f"no estimate passed the ESS guard (>= {min_ess:.1f}) or the DR width guard; "
        "first finite in order",
        fallback.ci,
        config.model_error,
    )


def _estimate(est: Estimator, pdata: PolicyData) -> Estimate:
    logger.info("evaluating %s with %s", pdata.policy.name, est.name)
    return est.estimate(pdata)


def evaluate_policies(
    data: Transitions, policies: Sequence[Policy | LoggingPolicy], config: OPEConfig | None = None
) -> OPEResult:
    """Estimate the value of each policy with each of ``config.estimators``.

    The FQE fit of a policy is shared by ``fqe``, ``dr`` and ``wdr``; every estimator uses the
    same bootstrap resamples (same seed), so intervals of different policies are paired. With
    ``config.fqe_engine = "batched"`` the (C)FQE fits of all policies are trained together first,
    as one ensemble (:func:`batchrl_mtf.ope.fqe.fit_q_many`), while a second thread computes the
    estimators that need no model (``pdis``, ``wpdis``); the results do not depend on that
    order.

    Args:
        data: The sessions to evaluate on (typically the held-out ``test`` split).
        policies: Policies (the :class:`~batchrl_mtf.policy.LoggingPolicy` marker for the
            logging policy itself: the on-policy average).
        config: Estimators and their settings.

    Raises:
        OPEInputError: No policy, duplicate names, or invalid inputs (see the estimators).
    """
    config = config or OPEConfig()
    if not policies:
        raise OPEInputError("policies: expected at least one policy to evaluate, found none")
    names = [p.name for p in policies]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise OPEInputError(f"policies: expected distinct names, found {dupes} more than once")
    estimators = [make_estimator(n, config) for n in config.estimators]
    results = []
    gamma = data.spec.gamma if config.gamma is None else config.gamma
    bandwidth: float | None = None
    pdatas = [prepare(data, policy, gamma) for policy in policies]
    for pdata in pdatas:
        for est in estimators:
            if est.needs_behavior_logp:
                check_behavior_logp(pdata, est.name)  # fail before any fitting
    alphas = tuple(
        dict.fromkeys(
            config.cfqe_alpha if name == "cfqe" else 0.0
            for name in config.estimators
            if name in Q_BASED
        )
    )
    with ThreadPoolExecutor(max_workers=1) as pool:
        # the model-free estimators (numpy, which releases the GIL) run beside the FQE fits
        free = {
            (i, est.name): pool.submit(_estimate, est, pdata)
            for i, pdata in enumerate(pdatas)
            for est in estimators
            if est.name not in Q_BASED
        }
        if alphas:
            fit_q_many(pdatas, config, alphas)
        done = {key: future.result() for key, future in free.items()}
    with ThreadPoolExecutor(max_workers=usable_cores()) as pool:
        # the model-based estimators (fits cached above), policies side by side
        based = {
            (i, est.name): pool.submit(_estimate, est, pdata)
            for i, pdata in enumerate(pdatas)
            for est in estimators
            if est.name in Q_BASED
        }
        done.update({key: future.result() for key, future in based.items()})
    bounds = action_box(data.actions, config.support_box)
    for i, (policy, pdata) in enumerate(zip(policies, pdatas, strict=True)):
        estimates = {est.name: done[(i, est.name)] for est in estimators}
        if bandwidth is None and any(n in IMPORTANCE_WEIGHTED for n in config.estimators):
            bandwidth = bandwidth_for(pdata, config)
        fits = {
            ("fqe" if float(key.split(":")[1]) == 0 else "cfqe"): v
            for key, v in pdata.cache.items()
            if key.startswith("q:")
        }
        losses = {k: float(getattr(v, "final_loss", float("nan"))) for k, v in fits.items()}
        steps = {k: float(getattr(v, "steps", float("nan"))) for k, v in fits.items()}
        results.append(
            PolicyResult(
                name=policy.name,
                estimates=estimates,
                recommended=recommend(estimates, pdata.n_sessions, config),
                fqe_loss=losses,
                fqe_steps=steps,
                support=None
                if pdata.is_behavior
                else support_diagnostic(
                    pdata.policy_actions,
                    data.actions,
                    data.spec.tasks,
                    config.support_box,
                    config.support_max_outside,
                    bounds,
                ),
            )
        )
    ranked = sorted(
        results,
        key=lambda r: -(r.recommended.value if r.recommended is not None else -math.inf),
    )
    return OPEResult(
        gamma=gamma,
        n_sessions=data.n_sessions,
        n_requests=len(data),
        estimators=tuple(config.estimators),
        policies=tuple(results),
        ranking=tuple(r.name for r in ranked),
        bandwidth=bandwidth,
        config=config,
    )


def estimate_policy_value(
    policy: Policy | LoggingPolicy, data: Transitions, config: OPEConfig | None = None
) -> Recommended:
    """The recommended offline estimate of one policy on a dataset's held-out sessions.

    Uses the ``test`` split when the dataset has one (else every session) and the documented
    recommended-estimate rule over ``config.estimators``.

    Raises:
        OPEInputError: No finite estimate, or invalid inputs (see the estimators).
    """
    has_test = bool(np.any(data.split == "test"))
    split = data.select("test") if has_test else data
    result = evaluate_policies(split, [policy], config)
    rec = result.policies[0].recommended
    if rec is None:
        raise OPEInputError(f"policy {policy.name!r}: no estimator gave a finite value")
    return rec
