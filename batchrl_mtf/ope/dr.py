"""Doubly robust estimators with the FQE model: ``dr`` and ``wdr``.

With cumulative importance weights ``w_{i,t}`` (``w_{i,-1} = 1``, see
:mod:`batchrl_mtf.ope.importance`) and the FQE model ``Q`` (``V(s) = Q(s, pi(s))``), fitted on
the same sessions (:mod:`batchrl_mtf.ope.fqe`):

* DR, per-decision doubly robust (Jiang & Li 2016, "Doubly Robust Off-policy Value Evaluation
  for Reinforcement Learning", ICML):

  ``V = 1/n sum_i sum_t gamma^t [ w_{i,t} (r_{i,t} - Q(s_{i,t}, a_{i,t})) + w_{i,t-1} V(s_{i,t}) ]``

* WDR, weighted doubly robust (Thomas & Brunskill 2016, "Data-Efficient Off-Policy Policy
  Evaluation for Reinforcement Learning", ICML): the same with each step's weights
  self-normalised, ``w_{i,t} -> w_{i,t} / (1/n sum_j w_{j,t})``.

Both equal the model's estimate plus an importance-weighted correction of its errors; they are
consistent when either the weights or the model are right. Ended sessions are absorbing (zero
reward, zero Q) and keep their last weight in WDR's denominators. With an FQE ensemble
(``OPEConfig.fqe_n_fits``) the model is the fits' mean; both estimators are linear in ``Q``, so
the estimate is the mean of the per-fit estimates, whose spread widens the interval. For the logging policy
``V(s_t) = Q(s_t, a_t)`` and all weights are 1, so both equal the on-policy average exactly.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from batchrl_mtf.ope.base import Estimator, PolicyData, Term, combine_terms
from batchrl_mtf.ope.fqe import QValues, fit_q
from batchrl_mtf.ope.importance import (
    column_scaled_weights,
    cumulative_log_weights,
    kish_ess,
    plain_weights,
)

__all__ = ["DR", "WDR"]


class DR(Estimator):
    """Per-decision doubly robust (Jiang & Li 2016) with the FQE model (see module docstring)."""

    name: ClassVar[str] = "dr"
    needs_behavior_logp: ClassVar[bool] = True

    def _parts(
        self, pdata: PolicyData, q: QValues | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(log w_t, log w_{t-1}, gamma^t (r_t - Q_t), gamma^t V_t)``, each (n_sessions, T).

        ``q`` = the model (default: the FQE fit, the mean of an ensemble).
        """
        q = fit_q(pdata, self.config, 0.0) if q is None else q
        log_w = cumulative_log_weights(pdata, self.config)
        log_w_prev = np.concatenate([np.zeros((pdata.n_sessions, 1)), log_w[:, :-1]], axis=1)
        disc = pdata.discounts()
        resid = disc * pdata.pad(pdata.data.rewards - q.q_logged)
        value = disc * pdata.pad(q.v_policy)
        return log_w, log_w_prev, resid, value

    def terms(self, pdata: PolicyData) -> list[Term]:
        """Two plain-mean terms: weighted residuals and the model's values."""
        return self._terms(pdata, None)

    def _terms(self, pdata: PolicyData, q: QValues | None) -> list[Term]:
        log_w, log_w_prev, resid, value = self._parts(pdata, q)
        return [
            Term(numer=plain_weights(log_w) * resid),
            Term(numer=plain_weights(log_w_prev) * value),
        ]

    def fit_values(self, pdata: PolicyData) -> np.ndarray | None:
        """The estimate with each FQE fit of the ensemble as the model, shape (K,)."""
        members = fit_q(pdata, self.config, 0.0).members()
        return np.array(
            [combine_terms(self._terms(pdata, m), pdata.n_sessions)[0] for m in members]
        )

    def ess(self, pdata: PolicyData) -> float | None:
        """Kish ESS of the trajectory weights."""
        return kish_ess(cumulative_log_weights(pdata, self.config))


class WDR(DR):
    """Weighted doubly robust (Thomas & Brunskill 2016) with the FQE model."""

    name: ClassVar[str] = "wdr"

    def _terms(self, pdata: PolicyData, q: QValues | None) -> list[Term]:
        """Two ratio terms normalised per step."""
        log_w, log_w_prev, resid, value = self._parts(pdata, q)
        w = column_scaled_weights(log_w)
        w_prev = column_scaled_weights(log_w_prev)
        return [Term(numer=w * resid, denom=w), Term(numer=w_prev * value, denom=w_prev)]
