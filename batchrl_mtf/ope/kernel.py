"""Kernel importance weights for a deterministic policy on a continuous action space.

A deterministic evaluation policy ``pi`` puts all its mass on ``pi(s)``, so the ratio
``pi(a|s) / pi_b(a|s)`` is zero almost surely. Following Kallus & Zhou (2018, "Policy Evaluation
and Optimization with Continuous Treatments") and SCOPE-RL (Kiyohara et al. 2023), the point mass
is smoothed by a Gaussian kernel on the action space:

.. math::

    \\rho_t = \\frac{K_h(u(a_t) - u(\\pi(s_t))) / \\prod_k (high_k - low_k)}
                   {\\exp(\\text{behavior\\_logp}_t)},
    \\qquad K_h(x) = (2\\pi h^2)^{-k/2} \\exp(-\\lVert x \\rVert^2 / (2h^2))

where ``u(a) = (a - low) / (high - low)`` maps each weight to [0, 1] by the dataset's action
bounds (so every task counts alike) and the Jacobian ``prod_k (high_k - low_k)`` turns the
kernel back into a density over raw weights, the unit of ``behavior_logp``.

**Boundary correction** (``OPEConfig.kernel_boundary = "renormalise"``, the default since
2026-12-04): the logged actions live in the box ``[low, high]``, but a Gaussian kernel centred at
a policy action on or near the box's edge puts part of its mass outside it, where no logged action
can fall. The smoothed target policy is then no density on the action space (a policy at the lower
bound of ``m`` tasks keeps only ``2**-m`` of its mass), and every importance-weighted estimate of
it shrinks by that factor per step: PDIS and the correction terms of DR vanish for such policies
and DR falls back to its model. Production weights of 0 on tasks it does not use sit exactly
there. The renormalised kernel (Jones 1993, "Simple boundary correction for kernel density
estimation"; the truncated-kernel form of Kallus & Zhou's smoothing) divides by the kernel's mass
inside the box:

.. math::

    K^b_h(x; c) = K_h(x) / \\prod_k [\\Phi((1 - c_k) / h) - \\Phi(-c_k / h)],
    \\qquad c = \\mathrm{clip}(u(\\pi(s_t)), 0, 1)

so that it integrates to 1 over the box (the policy's action clipped into the box, so a policy
outside it is not given weights larger than one on the edge). ``"none"`` restores the plain
kernel.

Bandwidth rule (Scott 1992): ``h = sigma * n ** (-1 / (k + 4))`` where ``sigma`` is the root
mean per-task variance of the normalised logged actions, ``n`` the number of logged requests and
``k`` the number of tasks; overridable with ``OPEConfig.bandwidth`` / ``--bandwidth``. A smaller
``h`` lowers the smoothing bias and raises the variance (fewer effective samples).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import numpy.typing as npt
from scipy.special import log_ndtr

__all__ = [
    "MIN_BANDWIDTH",
    "log_box_mass",
    "log_kernel_ratio",
    "normalise_actions",
    "scott_bandwidth",
]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

MIN_BANDWIDTH = 1e-3
"""Floor of the automatic bandwidth (logged actions that barely vary)."""


def normalise_actions(actions: FloatArray, low: FloatArray, high: FloatArray) -> FloatArray:
    """Map weights to [0, 1] per task by the action bounds; shape (n, k) -> (n, k)."""
    return (np.asarray(actions, np.float64) - low) / (high - low)


def scott_bandwidth(actions: FloatArray, low: FloatArray, high: FloatArray) -> float:
    """Scott's rule on the normalised logged actions: ``sigma * n ** (-1 / (k + 4))``.

    Args:
        actions: Logged actions, shape (n, k).
        low: Lower action bounds, shape (k,).
        high: Upper action bounds, shape (k,).
    """
    u = normalise_actions(actions, low, high)
    n, k = u.shape
    sigma = math.sqrt(float(np.mean(u.var(axis=0)))) if n > 1 else 0.0
    h = sigma * n ** (-1.0 / (k + 4))
    if h < MIN_BANDWIDTH:
        logger.warning(
            "logged actions barely vary (sigma %.3g); kernel bandwidth floored at %g",
            sigma,
            MIN_BANDWIDTH,
        )
        h = MIN_BANDWIDTH
    return h


def log_box_mass(centres: FloatArray, bandwidth: float) -> FloatArray:
    """Log of the Gaussian kernel's mass inside the unit box, per row.

    ``sum_k log(Phi((1 - c_k) / h) - Phi(-c_k / h))`` with ``c`` clipped to [0, 1] (module
    docstring), computed from ``log_ndtr`` so that narrow kernels stay exact.

    Args:
        centres: Kernel centres in normalised action units, shape (n, k).
        bandwidth: Kernel bandwidth ``h``.

    Returns:
        Shape (n,), each in ``[k log(1/2) - small, 0]``.
    """
    c = np.clip(np.asarray(centres, dtype=np.float64), 0.0, 1.0)
    upper = log_ndtr((1.0 - c) / bandwidth)  # log Phi((1 - c) / h)
    lower = log_ndtr(-c / bandwidth)  # log Phi(-c / h)
    # log(e^upper - e^lower) = upper + log1p(-e^(lower - upper)); lower < upper as c <= 1, h > 0
    return np.asarray(np.sum(upper + np.log1p(-np.exp(lower - upper)), axis=1), np.float64)


def log_kernel_ratio(
    actions: FloatArray,
    policy_actions: FloatArray,
    behavior_logp: FloatArray,
    low: FloatArray,
    high: FloatArray,
    bandwidth: float,
    boundary: str = "renormalise",
) -> FloatArray:
    """Per-request log importance ratio ``log rho_t`` (see the module docstring).

    Args:
        actions: Logged actions, shape (n, k).
        policy_actions: The evaluated policy's actions at the logged states, shape (n, k).
        behavior_logp: Log-density of the logged action under the logging policy, shape (n,).
        low: Lower action bounds, shape (k,).
        high: Upper action bounds, shape (k,).
        bandwidth: Kernel bandwidth ``h`` in normalised action units.
        boundary: One of :data:`batchrl_mtf.ope.config.KERNEL_BOUNDARIES`.

    Returns:
        Shape (n,).
    """
    k = actions.shape[1]
    u_pi = normalise_actions(policy_actions, low, high)
    d = normalise_actions(actions, low, high) - u_pi
    log_k = -0.5 * np.sum(d * d, axis=1) / bandwidth**2 - 0.5 * k * math.log(
        2.0 * math.pi * bandwidth**2
    )
    if boundary == "renormalise":
        log_k = log_k - log_box_mass(u_pi, bandwidth)
    log_jacobian = float(np.sum(np.log(high - low)))
    return np.asarray(log_k - log_jacobian - behavior_logp, dtype=np.float64)
