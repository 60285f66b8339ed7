"""The action box: per-task weight bounds taken from the logged support.

A box is named by a string:

* ``"qLO-HI"`` (e.g. ``"q0.01-0.99"``, the default :data:`DEFAULT_ACTION_BOX`): per task, the
  ``LO`` and ``HI`` quantiles of the logged weights. A few extreme logged actions (heavy-tailed
  exploration) do not stretch it, so a policy trained inside it stays where the logs have data;
* ``"minmax"``: the raw per-task minimum and maximum of the logged weights (the dataset's
  ``action_low``/``action_high``).

Training uses the box as its action bounds (``TrainConfig.action_box``); evaluation reports the
share of a policy's actions outside it (``support`` in the evaluate report).
"""

from __future__ import annotations

import re

import numpy as np
import numpy.typing as npt

from batchrl_mtf.errors import ConfigError

__all__ = ["DEFAULT_ACTION_BOX", "action_box", "outside_box", "parse_action_box"]

FloatArray = npt.NDArray[np.float64]

DEFAULT_ACTION_BOX = "q0.01-0.99"
"""The default box: the 1% and 99% quantiles of the logged weights, per task."""

_BOX = re.compile(r"^q(?P<lo>\d*\.?\d+)-(?P<hi>\d*\.?\d+)$")


def parse_action_box(text: str, where: str = "action_box") -> tuple[float, float] | None:
    """The quantile pair of a box name, or ``None`` for ``"minmax"``.

    Raises:
        ConfigError: Not ``minmax`` or ``qLO-HI`` with ``0 <= LO < HI <= 1``.
    """
    if text == "minmax":
        return None
    m = _BOX.match(text)
    if m is None:
        raise ConfigError(
            f"{where}: expected 'minmax' or 'qLO-HI' (e.g. 'q0.01-0.99'), found {text!r}"
        )
    lo, hi = float(m["lo"]), float(m["hi"])
    if not 0.0 <= lo < hi <= 1.0:
        raise ConfigError(f"{where}: expected quantiles 0 <= LO < HI <= 1, found {text!r}")
    return lo, hi


def action_box(
    actions: npt.ArrayLike, box: str = DEFAULT_ACTION_BOX
) -> tuple[FloatArray, FloatArray]:
    """Per-task bounds of the logged weights under the box rule ``box`` (module docstring).

    Args:
        actions: Logged weights, shape (n, n_tasks).
        box: ``"qLO-HI"`` or ``"minmax"``.

    Returns:
        ``(low, high)``, each shape (n_tasks,), with ``high > low`` (a task whose quantiles
        coincide is widened to its raw min/max, and a constant task by 1e-6 either side).

    Raises:
        ConfigError: A bad box name, or no logged action.
    """
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        raise ConfigError(f"action_box: expected logged actions of shape (n, k), found {a.shape}")
    q = parse_action_box(box)
    raw_lo, raw_hi = a.min(axis=0), a.max(axis=0)
    if q is None:
        lo, hi = raw_lo, raw_hi
    else:
        lo, hi = np.quantile(a, q[0], axis=0), np.quantile(a, q[1], axis=0)
        flat = hi <= lo
        lo, hi = np.where(flat, raw_lo, lo), np.where(flat, raw_hi, hi)
    flat = hi <= lo
    lo, hi = np.where(flat, lo - 1e-6, lo), np.where(flat, hi + 1e-6, hi)
    return lo.astype(np.float64), hi.astype(np.float64)


def outside_box(
    actions: npt.ArrayLike, low: npt.ArrayLike, high: npt.ArrayLike, tol: float = 1e-9
) -> tuple[float, FloatArray]:
    """Share of actions with any weight outside ``[low, high]``, and the share per task.

    Args:
        actions: Weights, shape (n, n_tasks).
        low: Lower bounds, shape (n_tasks,).
        high: Upper bounds, shape (n_tasks,).
        tol: Slack relative to each task's box width.

    Returns:
        ``(share_any, share_per_task)``; share_per_task has shape (n_tasks,).
    """
    a = np.asarray(actions, dtype=np.float64)
    lo, hi = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    slack = tol * np.maximum(hi - lo, 1e-12)
    out = (a < lo - slack) | (a > hi + slack)
    if a.shape[0] == 0:
        return 0.0, np.zeros(a.shape[1] if a.ndim == 2 else 0)
    return float(out.any(axis=1).mean()), out.mean(axis=0).astype(np.float64)
