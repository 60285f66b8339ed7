"""The step budget, early stopping and threads of the batched (C)FQE engine.

:func:`step_budget` sizes each fit (at most ``fqe_budget_epochs`` passes over the data, never
fewer steps than the value needs to propagate through the longest session, at most
``fqe_n_steps``); :class:`Plateau` stops a member early on a TD-loss plateau after a compressed
cosine tail; :func:`torch_thread_count` picks torch's threads for an ensemble
(:mod:`batchrl_mtf.ope.fqe_batched`, ``docs/ope.md``).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from batchrl_mtf.core.threads import usable_cores
from batchrl_mtf.ope.config import OPEConfig

__all__ = ["Plateau", "propagation_steps", "step_budget", "torch_thread_count"]

FloatArray = npt.NDArray[np.float64]

_FITS_PER_THREAD = 12  # automatic torch threads: one per this many ensemble members


def torch_thread_count(config: OPEConfig, n_fits: int = 1) -> int:
    """Torch threads for ``n_fits`` fits trained together: ``config.torch_threads``, or (0) one
    per ``_FITS_PER_THREAD`` fits, at least 1 and at most one per available core (one small
    network's products are too small to split; two threads for it were measured much slower on a
    busy machine)."""
    if config.torch_threads > 0:
        return config.torch_threads
    return max(1, min(usable_cores(), n_fits // _FITS_PER_THREAD))


def propagation_steps(config: OPEConfig, horizon: int) -> int:
    """The propagation floor ``ceil(fqe_propagations * horizon * fqe_target_update_interval)``:
    steps whose hard target updates carry a session's value back to its first request
    ``fqe_propagations`` times over (sessions of up to ``horizon`` requests)."""
    return math.ceil(config.fqe_propagations * horizon * config.fqe_target_update_interval)


def step_budget(config: OPEConfig, n_transitions: int, horizon: int = 1) -> int:
    """Gradient steps of each batched fit: the cosine schedule's horizon ``T``.

    ``T = min(fqe_n_steps, max(fqe_min_steps, P, ceil(fqe_budget_epochs * m / fqe_batch_size)))``
    for ``m`` training transitions and the propagation floor ``P`` (:func:`propagation_steps`)
    of sessions of up to ``horizon`` requests: at most ``fqe_budget_epochs`` passes over a
    small dataset (more passes only refit the same bootstrapped targets), but never fewer steps
    than its longest session needs for its value to propagate, and ``fqe_n_steps`` on a large
    one. ``fqe_budget_epochs = None`` gives ``fqe_n_steps`` exactly (the d3rlpy engine's budget).
    """
    if config.fqe_budget_epochs is None:
        return config.fqe_n_steps
    scaled = math.ceil(config.fqe_budget_epochs * n_transitions / config.fqe_batch_size)
    floor = max(config.fqe_min_steps, propagation_steps(config, horizon))
    return max(1, min(config.fqe_n_steps, max(floor, scaled)))


class Plateau:
    """Early stopping on a TD-loss plateau, per member.

    Every ``W = fqe_plateau_window`` steps a member's mean TD loss over the window is compared
    with its best earlier window; a window that is not at least ``fqe_plateau_tol`` (relative)
    below it counts as flat. After ``fqe_plateau_patience`` flat windows in a row, and no earlier
    than :func:`propagation_steps` (each hard target update carries the value one request back,
    so the longest session needs ``horizon`` updates; ``fqe_propagations`` times that), the
    member's cosine schedule is compressed: from its current phase ``p`` it anneals to 0 over the next
    ``ceil(fqe_tail_fraction * T)`` steps (or the steps left, if fewer) and then stops. The final
    network is thus never a large-learning-rate Adam step, as with the full schedule.
    """

    def __init__(self, config: OPEConfig, budget: int, horizon: int, n_members: int) -> None:
        self.enabled = config.fqe_early_stop
        self.window = config.fqe_plateau_window
        self.tol = config.fqe_plateau_tol
        self.patience = config.fqe_plateau_patience
        self.min_steps = min(budget, propagation_steps(config, horizon))
        self.tail = max(1, math.ceil(config.fqe_tail_fraction * budget))
        self.budget = budget
        self.best = np.full(n_members, np.inf)
        self.flat = np.zeros(n_members, dtype=np.int64)
        self.tail_start = np.full(n_members, -1, dtype=np.int64)  # step the tail began
        self.tail_phase = np.zeros(n_members)  # schedule phase when it began
        self.end = np.full(n_members, budget, dtype=np.int64)  # step after the last one

    def phase(self, step: int) -> FloatArray:
        """Each member's schedule phase in [0, 1] at ``step`` (the cosine's argument / pi)."""
        plain = np.full(len(self.end), step / self.budget)
        in_tail = self.tail_start >= 0
        span = np.maximum(self.end - self.tail_start, 1)
        tail = self.tail_phase + (1.0 - self.tail_phase) * (step - self.tail_start) / span
        return np.where(in_tail, np.minimum(tail, 1.0), plain)

    def observe(self, step: int, window_loss: FloatArray) -> None:
        """Record the mean TD loss of the window that ended after ``step`` (0-based)."""
        if not self.enabled:
            return
        improved = window_loss < (1.0 - self.tol) * self.best
        self.flat = np.where(improved, 0, self.flat + 1)
        self.best = np.minimum(self.best, window_loss)
        start = (self.tail_start < 0) & (self.flat >= self.patience) & (step + 1 >= self.min_steps)
        for j in np.flatnonzero(start):
            self.tail_phase[j] = (step + 1) / self.budget
            self.tail_start[j] = step + 1
            self.end[j] = min(self.budget, step + 1 + self.tail)

    def select(self, keep: npt.NDArray[np.int64]) -> None:
        """Keep only the members ``keep`` (after others finished)."""
        for name in ("best", "flat", "tail_start", "tail_phase", "end"):
            setattr(self, name, getattr(self, name)[keep])
