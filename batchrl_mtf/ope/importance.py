"""Per-decision importance sampling for variable-length sessions: ``pdis`` and ``wpdis``.

With per-step ratios ``rho_t`` (kernel ratios for a deterministic policy, see
:mod:`batchrl_mtf.ope.kernel`; exactly 1 for the logging policy) and cumulative weights
``w_{i,t} = prod_{tau<=t} rho_{i,tau}``:

* PDIS (Precup, Sutton & Singh 2000): ``V = 1/n sum_i sum_t gamma^t w_{i,t} r_{i,t}``.
* WPDIS, its self-normalised form (Precup et al. 2000; Thomas 2015, "Safe Reinforcement
  Learning", sec. 3.9): ``V = sum_t gamma^t (sum_i w_{i,t} r_{i,t}) / (sum_i w_{i,t})``.

Variable-length sessions: after its last request a session is absorbing (reward 0, ratio 1), so
its weight stays ``w_{i,L_i-1}`` and still counts in WPDIS's denominators for later steps. This
keeps WPDIS consistent when session length depends on the policy (it does: users leave earlier
under a worse policy), at the usual self-normalisation bias of order 1/n.
"""

from __future__ import annotations

from typing import ClassVar, cast

import numpy as np
import numpy.typing as npt

from batchrl_mtf.ope.base import Estimator, PolicyData, Term
from batchrl_mtf.ope.config import OPEConfig
from batchrl_mtf.ope.kernel import log_kernel_ratio, scott_bandwidth

__all__ = ["PDIS", "WPDIS", "bandwidth_for", "cumulative_log_weights", "kish_ess"]

FloatArray = npt.NDArray[np.float64]
_MAX_LOG_WEIGHT = 700.0  # exp(700) ~ 1e304: larger weights are clipped there (then inf follows)


def bandwidth_for(pdata: PolicyData, config: OPEConfig) -> float:
    """The kernel bandwidth: ``config.bandwidth`` or Scott's rule on the logged actions."""
    if config.bandwidth is not None:
        return float(config.bandwidth)
    spec = pdata.data.spec
    return scott_bandwidth(
        pdata.data.actions, np.asarray(spec.action_low), np.asarray(spec.action_high)
    )


def cumulative_log_weights(pdata: PolicyData, config: OPEConfig) -> FloatArray:
    """``log w_{i,t}``, shape (n_sessions, T), absorbing after each session's end (cached)."""
    key = f"log_w:{config.bandwidth}:{config.kernel_boundary}"
    if key in pdata.cache:
        return cast(FloatArray, pdata.cache[key])
    if pdata.is_behavior:
        log_rho = np.zeros(len(pdata.data), dtype=np.float64)
    else:
        spec = pdata.data.spec
        log_rho = log_kernel_ratio(
            pdata.data.actions,
            pdata.policy_actions,
            np.asarray(pdata.data.behavior_logp, dtype=np.float64),
            np.asarray(spec.action_low),
            np.asarray(spec.action_high),
            bandwidth_for(pdata, config),
            config.kernel_boundary,
        )
    log_w = np.cumsum(pdata.pad(log_rho, 0.0), axis=1)
    pdata.cache[key] = log_w
    return log_w


def plain_weights(log_w: FloatArray) -> FloatArray:
    """``exp(log_w)`` clipped at ``exp(700)`` (for plain, not self-normalised, averages)."""
    return np.exp(np.minimum(log_w, _MAX_LOG_WEIGHT))


def column_scaled_weights(log_w: FloatArray) -> FloatArray:
    """``exp(log_w - max_i log_w[:, t])``: per-step ratios are unchanged, overflow is avoided."""
    return np.exp(log_w - log_w.max(axis=0, keepdims=True))


def kish_ess(log_w: FloatArray) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` of the trajectory weights.

    Args:
        log_w: Cumulative log-weights, shape (n_sessions, T); the last column holds each
            session's full trajectory weight.
    """
    last = log_w[:, -1]
    w = np.exp(last - last.max())
    return float(w.sum() ** 2 / np.sum(w * w))


class PDIS(Estimator):
    """Per-decision importance sampling (Precup, Sutton & Singh 2000).

    ``V = 1/n sum_i sum_t gamma^t w_{i,t} r_{i,t}`` with ``w_{i,t} = prod_{tau<=t} rho_{i,tau}``.
    Unbiased (up to the kernel's smoothing bias) but high-variance for long sessions.
    """

    name: ClassVar[str] = "pdis"
    needs_behavior_logp: ClassVar[bool] = True

    def terms(self, pdata: PolicyData) -> list[Term]:
        """One plain-mean term."""
        w = plain_weights(cumulative_log_weights(pdata, self.config))
        r = pdata.pad(pdata.data.rewards)
        return [Term(numer=pdata.discounts() * w * r)]

    def ess(self, pdata: PolicyData) -> float | None:
        """Kish ESS of the trajectory weights."""
        return kish_ess(cumulative_log_weights(pdata, self.config))


class WPDIS(PDIS):
    """Weighted (self-normalised) per-decision importance sampling (Precup et al. 2000).

    ``V = sum_t gamma^t (sum_i w_{i,t} r_{i,t}) / (sum_i w_{i,t})``. Biased (consistent) but far
    lower variance than PDIS; always inside the range of the observed per-step rewards.
    """

    name: ClassVar[str] = "wpdis"

    def terms(self, pdata: PolicyData) -> list[Term]:
        """One ratio term normalised per step."""
        w = column_scaled_weights(cumulative_log_weights(pdata, self.config))
        r = pdata.pad(pdata.data.rewards)
        return [Term(numer=pdata.discounts() * w * r, denom=w)]
