"""The support diagnostic: how far a policy's actions leave the logged data.

Every offline estimator extrapolates where the logs have no action near the policy's: FQE's
Q-network is queried at actions it never saw, importance weights vanish, and doubly robust
estimators fall back to that model. So an estimate of a policy whose weights leave the logged
support says little, whatever its interval. The diagnostic reports, on the evaluation states, the
share of the policy's actions with a weight outside the logged per-task quantile box
(:func:`batchrl_mtf.data.box.action_box`, ``OPEConfig.support_box``, default ``q0.01-0.99``) and
flags the policy when that share exceeds ``OPEConfig.support_max_outside`` (default 5%). By
construction about 2% of the logged actions themselves fall outside a ``q0.01-0.99`` box per task.
A weight within :data:`SUPPORT_TOLERANCE` (1%) of the box's width beyond an edge counts as inside:
the edges are estimates, and a logger truncated at a hard bound (production at weight 0, logged
weights in ``[0, 2]``) puts its 1% quantile a hair inside that bound.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from batchrl_mtf.data.box import action_box, outside_box

__all__ = ["SUPPORT_TOLERANCE", "support_diagnostic"]

SUPPORT_TOLERANCE = 0.01
"""Slack beyond the box's edges, as a share of each task's box width."""


def support_diagnostic(
    policy_actions: npt.ArrayLike,
    logged_actions: npt.ArrayLike,
    tasks: Sequence[str],
    box: str,
    max_outside: float,
    bounds: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
) -> dict[str, object]:
    """The ``support`` entry of a policy in the evaluate report.

    Args:
        policy_actions: The policy's weights on the evaluation states, shape (n, n_tasks).
        logged_actions: The logged weights on the same states, shape (n, n_tasks).
        tasks: Task names in weight order.
        box: Box rule of the logged support (``"q0.01-0.99"``, ``"minmax"``).
        max_outside: Flag the policy when more than this share of its actions leave the box.
        bounds: ``action_box(logged_actions, box)`` when already computed (several policies on
            the same logs), each shape (n_tasks,).

    Returns:
        ``{"box": rule, "low": [...], "high": [...], "outside_share": s,
        "outside_by_task": {"w_<task>": s_k}, "flag": bool}``.
    """
    low, high = action_box(logged_actions, box) if bounds is None else bounds
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    share, by_task = outside_box(
        np.asarray(policy_actions, dtype=np.float64), low, high, SUPPORT_TOLERANCE
    )
    return {
        "box": box,
        "low": [float(x) for x in low],
        "high": [float(x) for x in high],
        "outside_share": share,
        "outside_by_task": {f"w_{t}": float(s) for t, s in zip(tasks, by_task, strict=True)},
        "flag": bool(share > max_outside),
    }
