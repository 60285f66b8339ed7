"""What every estimator shares: input validation, per-session terms, bootstrap intervals.

Every estimator in this package writes its estimate as a sum of *ratio terms* over sessions
``i = 1..n`` and within-session steps ``t = 0..T-1`` (sessions are padded to the longest one):

.. math::

    \\hat V = \\sum_m \\sum_t \\frac{\\sum_i A^{(m)}_{i,t}}{\\sum_i B^{(m)}_{i,t}}

Plain averages (FQE, PDIS, DR) have ``B = 1`` so each term is a mean over sessions; the
self-normalised estimators (WPDIS, WDR) divide by the summed importance weights of step ``t``.
The same form gives

* per-session values ``v_i = sum_m sum_t n A_{i,t} / sum_j B_{j,t}`` whose mean is the estimate;
* the bootstrap: resampling sessions with replacement (counts ``c``) and recomputing
  ``sum_m sum_t (c·A_t) / (c·B_t)``, i.e. self-normalised estimators bootstrap the ratio, not
  the per-session values.

Sessions that ended before step ``t`` are absorbing: reward 0, Q 0, and they keep their last
cumulative importance weight (their weight still counts in the denominators of WPDIS and WDR).
"""

from __future__ import annotations

import functools
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from batchrl_mtf.data.transitions import Transitions
from batchrl_mtf.errors import OPEInputError
from batchrl_mtf.ope.config import OPEConfig
from batchrl_mtf.policy.base import LoggingPolicy, Policy

__all__ = [
    "Estimate",
    "Estimator",
    "PolicyData",
    "Term",
    "bootstrap_ci",
    "combine_terms",
    "fit_standard_error",
    "prepare",
    "widen_ci",
]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_BOOTSTRAP_CELLS = 4_000_000  # resample counts held in memory at once
_CACHED_CELLS = 32_000_000  # resample counts kept for the next call (int32: 128 MB) at most


@dataclass(frozen=True)
class Term:
    """One ratio term ``sum_t (sum_i numer[i, t]) / (sum_i denom[i, t])``.

    Attributes:
        numer: Shape (n_sessions, T), discount already applied.
        denom: Shape (n_sessions, T); ``None`` = all ones (a plain mean over sessions).
    """

    numer: FloatArray
    denom: FloatArray | None = None


@dataclass(frozen=True)
class Estimate:
    """One estimator's estimate of one policy's value.

    Attributes:
        estimator: Estimator name (``"fqe"``, ``"wpdis"``, ...).
        value: The estimated policy value (expected discounted session return).
        ci: Bootstrap percentile interval ``(low, high)``; ``None`` when not computed.
        ess: Effective sample size of the importance weights (Kish, on the sessions' full
            trajectory weights); ``None`` for model-based estimators.
        per_session: Per-session values, shape (n_sessions,); their mean is ``value``.
        n_sessions: Sessions the estimate is based on.
        fit_se: Standard error of ``value`` from fitting (the between-fit standard deviation
            over ``sqrt(K)`` of an ensemble of ``K >= 2`` FQE fits), already folded into ``ci``;
            ``None`` when the estimate has no fitted model or a single fit.
        fit_values: The estimate recomputed with each fit of the ensemble, shape (K,); empty
            when the estimate has no fitted model.
    """

    estimator: str
    value: float
    ci: tuple[float, float] | None
    ess: float | None
    per_session: FloatArray = field(repr=False)
    n_sessions: int = 0
    fit_se: float | None = None
    fit_values: FloatArray = field(default_factory=lambda: np.zeros(0), repr=False)

    def to_dict(self) -> dict[str, object]:
        """The report's JSON form: ``{"value", "ci"[, "ess"][, "fit_se"]}``."""
        out: dict[str, object] = {"value": float(self.value)}
        out["ci"] = None if self.ci is None else [float(self.ci[0]), float(self.ci[1])]
        if self.ess is not None:
            out["ess"] = float(self.ess)
        if self.fit_se is not None:
            out["fit_se"] = float(self.fit_se)
        return out


class PolicyData:
    """A dataset split and an evaluated policy, validated once and shared by the estimators.

    Attributes:
        data: The evaluated sessions.
        policy: The evaluated policy, or the :class:`~batchrl_mtf.policy.LoggingPolicy` marker.
        gamma: Discount factor used.
        is_behavior: Whether the policy is the logging policy (the marker).
        starts: First row of each session, shape (n_sessions,).
        lengths: Requests per session, shape (n_sessions,).
        session: Session index of each row, shape (n,).
        t: Position of each row within its session, shape (n,).
        policy_actions: The policy's action at every logged state, shape (n, n_tasks) (the
            logged actions for the behaviour policy).
        cache: Shared intermediate results (FQE fits, log-weights), keyed by name.
    """

    def __init__(self, data: Transitions, policy: Policy | LoggingPolicy, gamma: float) -> None:
        self.data = data
        self.policy = policy
        self.gamma = gamma
        self.is_behavior = isinstance(policy, LoggingPolicy)
        starts = np.flatnonzero(np.asarray(data.step) == 0).astype(np.int64)
        self.starts = starts
        self.lengths = np.diff(np.append(starts, len(data))).astype(np.int64)
        self.session = np.repeat(np.arange(len(starts), dtype=np.int64), self.lengths)
        self.t = np.arange(len(data), dtype=np.int64) - starts[self.session]
        self.policy_actions = (
            data.actions if isinstance(policy, LoggingPolicy) else _policy_actions(data, policy)
        )
        self.cache: dict[str, object] = {}

    @property
    def n_sessions(self) -> int:
        """Number of sessions."""
        return len(self.starts)

    @property
    def horizon(self) -> int:
        """Length of the longest session (the padded width T)."""
        return int(self.lengths.max())

    def pad(self, values: FloatArray, fill: float = 0.0) -> FloatArray:
        """Per-row values as a (n_sessions, T) matrix; steps after a session's end get ``fill``."""
        out = np.full((self.n_sessions, self.horizon), fill, dtype=np.float64)
        out[self.session, self.t] = values
        return out

    def discounts(self) -> FloatArray:
        """``gamma ** t`` for ``t = 0..T-1``, shape (T,)."""
        return np.power(self.gamma, np.arange(self.horizon, dtype=np.float64))


def _policy_actions(data: Transitions, policy: Policy) -> FloatArray:
    k = len(data.spec.tasks)
    try:
        actions = np.asarray(policy.act(data.observations), dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise OPEInputError(
            f"policy {policy.name!r}: cannot act on the dataset's states ({exc})"
        ) from None
    if actions.shape != (len(data), k):
        raise OPEInputError(
            f"policy {policy.name!r}: expected actions of shape ({len(data)}, {k}) "
            f"(one weight per task {', '.join(data.spec.tasks)}), found {actions.shape}"
        )
    if not np.isfinite(actions).all():
        bad = int(np.flatnonzero(~np.isfinite(actions).all(axis=1))[0])
        raise OPEInputError(
            f"policy {policy.name!r}: expected finite actions, found {actions[bad].tolist()} "
            f"at request_id {data.request_id[bad]}"
        )
    return actions


def prepare(
    data: Transitions, policy: Policy | LoggingPolicy, gamma: float | None = None
) -> PolicyData:
    """Validate a dataset split and a policy for evaluation.

    Args:
        data: The sessions to evaluate on (for example ``load_dataset(d).select("test")``).
        policy: A :class:`~batchrl_mtf.policy.Policy`, or the
            :class:`~batchrl_mtf.policy.LoggingPolicy` marker for the logging policy itself.
        gamma: Discount factor; ``None`` = the dataset's.

    Raises:
        OPEInputError: No session, sessions not starting at step 0, non-finite observations or
            rewards, task mismatch, or policy actions of the wrong shape or not finite.
    """
    if len(data) == 0:
        raise OPEInputError(f"{data.path or 'dataset'}: expected at least one session, found none")
    g = data.spec.gamma if gamma is None else float(gamma)
    if not 0.0 <= g <= 1.0:
        raise OPEInputError(f"gamma: expected a number in [0, 1], found {g}")
    if int(np.asarray(data.step)[0]) != 0:
        raise OPEInputError(
            f"{data.path or 'dataset'}: expected the first row to start a session (step 0), "
            f"found step {int(np.asarray(data.step)[0])}"
        )
    for name, arr in (("observations", data.observations), ("rewards", data.rewards)):
        if not np.isfinite(arr).all():
            raise OPEInputError(f"{data.path or 'dataset'}: expected finite {name}, found NaN/inf")
    k = len(data.spec.tasks)
    if data.actions.ndim != 2 or data.actions.shape[1] != k:
        raise OPEInputError(
            f"{data.path or 'dataset'}: expected logged actions of shape (n, {k}), "
            f"found {data.actions.shape}"
        )
    tasks = tuple(policy.tasks)
    if tasks != tuple(data.spec.tasks):
        raise OPEInputError(
            f"policy {policy.name!r}: tasks {list(tasks)} differ from the dataset's "
            f"{list(data.spec.tasks)}"
        )
    return PolicyData(data, policy, g)


def combine_terms(terms: list[Term], n_sessions: int) -> tuple[float, FloatArray]:
    """The estimate and per-session values of a list of ratio terms (see the module docstring)."""
    value = 0.0
    per_session = np.zeros(n_sessions, dtype=np.float64)
    for term in terms:
        num = term.numer.sum(axis=0)
        den = (
            np.full(num.shape, float(n_sessions)) if term.denom is None else term.denom.sum(axis=0)
        )
        ok = den > 0
        safe = np.where(ok, den, 1.0)
        value += float(np.sum(np.where(ok, num / safe, 0.0)))
        per_session += (term.numer * np.where(ok, n_sessions / safe, 0.0)).sum(axis=1)
    return value, per_session


def bootstrap_ci(
    terms: list[Term], n_sessions: int, n_bootstrap: int, level: float, seed: int
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the ratio-term estimate, resampling whole sessions.

    Returns:
        ``(low, high)``, or ``None`` when ``n_bootstrap`` is 0.
    """
    if n_bootstrap <= 0:
        return None
    values = np.zeros(n_bootstrap, dtype=np.float64)
    for lo, counts in _resamples(n_sessions, n_bootstrap, seed):
        size = len(counts)
        out = np.zeros(size, dtype=np.float64)
        for term in terms:
            num = counts @ term.numer
            den = (
                np.full(num.shape, float(n_sessions)) if term.denom is None else counts @ term.denom
            )
            ok = den > 0
            out += np.where(ok, num / np.where(ok, den, 1.0), 0.0).sum(axis=1)
        values[lo : lo + size] = out
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def _resamples(
    n_sessions: int, n_bootstrap: int, seed: int
) -> list[tuple[int, FloatArray]] | Iterator[tuple[int, FloatArray]]:
    """The bootstrap's session counts in chunks ``(first resample, counts (size, n_sessions))``.

    Every estimator of every policy resamples with the same seed, so the counts are drawn once
    and kept (:func:`_cached_resamples`) unless they would exceed ``_CACHED_CELLS`` cells.
    """
    if n_sessions * n_bootstrap <= _CACHED_CELLS:
        return _cached_resamples(n_sessions, n_bootstrap, seed)
    return _draw_resamples(n_sessions, n_bootstrap, seed)


@functools.lru_cache(maxsize=1)
def _cached_resamples(n_sessions: int, n_bootstrap: int, seed: int) -> list[tuple[int, FloatArray]]:
    return [(lo, c.astype(np.int32)) for lo, c in _draw_resamples(n_sessions, n_bootstrap, seed)]


def _draw_resamples(
    n_sessions: int, n_bootstrap: int, seed: int
) -> Iterator[tuple[int, FloatArray]]:
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOTSTRAP_CELLS // max(n_sessions, 1))
    probs = np.full(n_sessions, 1.0 / n_sessions)
    for lo in range(0, n_bootstrap, chunk):
        size = min(chunk, n_bootstrap - lo)
        yield lo, rng.multinomial(n_sessions, probs, size=size).astype(np.float64)


def fit_standard_error(fit_values: FloatArray | None) -> float | None:
    """Standard error of the mean of ``K`` fits' estimates: ``std(ddof=1) / sqrt(K)``.

    Returns:
        ``None`` when there are fewer than two fits.
    """
    if fit_values is None or len(fit_values) < 2:
        return None
    vals = np.asarray(fit_values, dtype=np.float64)
    return float(np.std(vals, ddof=1) / np.sqrt(len(vals)))


def widen_ci(
    value: float, ci: tuple[float, float], fit_se: float, level: float
) -> tuple[float, float]:
    """Add the fitting error to a sampling interval, side by side in quadrature.

    Each half-width ``h`` (from ``value`` to an end of ``ci``) becomes
    ``sqrt(h**2 + (z * fit_se)**2)`` with ``z`` the normal quantile of ``level`` (1.96 at 95%),
    treating the bootstrap's session-sampling error and the fit-to-fit error as independent.
    """
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    extra = (z * fit_se) ** 2
    low = value - float(np.sqrt(max(value - ci[0], 0.0) ** 2 + extra))
    high = value + float(np.sqrt(max(ci[1] - value, 0.0) ** 2 + extra))
    return low, high


class Estimator(ABC):
    """Base class of the off-policy estimators.

    Subclasses set :attr:`name` and implement :meth:`terms`; :meth:`estimate` validates the
    inputs once, combines the terms into the estimate and per-session values and bootstraps the
    interval.

    Args:
        config: Evaluation settings (bootstrap, bandwidth, FQE networks, ...).
    """

    name: ClassVar[str] = ""
    needs_behavior_logp: ClassVar[bool] = False

    def __init__(self, config: OPEConfig | None = None) -> None:
        self.config = config or OPEConfig()

    def estimate(
        self,
        data: Transitions | PolicyData,
        policy: Policy | LoggingPolicy | None = None,
        gamma: float | None = None,
    ) -> Estimate:
        """Estimate the value of ``policy`` on ``data``.

        Args:
            data: The sessions (an :class:`Transitions`), or a :class:`PolicyData` already prepared
                by :func:`prepare` (then ``policy`` and ``gamma`` are ignored and intermediate
                results such as FQE fits are shared between estimators).
            policy: The evaluated policy (required with an :class:`Transitions`).
            gamma: Discount factor; ``None`` = ``config.gamma`` or else the dataset's.

        Raises:
            OPEInputError: Invalid inputs (see :func:`prepare` and each estimator).
        """
        if isinstance(data, PolicyData):
            pdata = data
        else:
            if policy is None:
                raise OPEInputError(f"{self.name}: expected a policy to evaluate, found None")
            pdata = prepare(data, policy, self.config.gamma if gamma is None else gamma)
        if self.needs_behavior_logp:
            check_behavior_logp(pdata, self.name)
        terms = self.terms(pdata)
        value, per_session = combine_terms(terms, pdata.n_sessions)
        ci = bootstrap_ci(
            terms, pdata.n_sessions, self.config.n_bootstrap, self.config.ci_level, self.config.seed
        )
        fit_values = self.fit_values(pdata)
        fit_se = fit_standard_error(fit_values)
        if ci is not None and fit_se is not None:
            ci = widen_ci(value, ci, fit_se, self.config.ci_level)
        return Estimate(
            estimator=self.name,
            value=value,
            ci=ci,
            ess=self.ess(pdata),
            per_session=per_session,
            n_sessions=pdata.n_sessions,
            fit_se=fit_se,
            fit_values=np.zeros(0) if fit_values is None else np.asarray(fit_values, dtype=float),
        )

    @abstractmethod
    def terms(self, pdata: PolicyData) -> list[Term]:
        """The estimate as ratio terms (see the module docstring)."""

    def fit_values(self, pdata: PolicyData) -> FloatArray | None:
        """The estimate recomputed with each fitted model of an ensemble, shape (K,).

        ``None`` for estimators without a fitted model; model-based estimators return one value
        per FQE fit (``OPEConfig.fqe_n_fits``).
        """
        return None

    def ess(self, pdata: PolicyData) -> float | None:
        """Effective sample size, for importance-weighted estimators (``None`` otherwise)."""
        return None


def check_behavior_logp(pdata: PolicyData, who: str) -> None:
    """Raise :class:`OPEInputError` unless every row has a finite ``behavior_logp``."""
    data = pdata.data
    where = data.path or "dataset"
    if not data.spec.has_behavior_logp:
        raise OPEInputError(
            f"{who}: {where} has no behavior_logp (the logs did not carry the logging policy's "
            "log-probability); importance sampling and doubly robust estimators need it — use "
            "--estimators fqe,cfqe, or log behavior_logp"
        )
    logp = np.asarray(data.behavior_logp, dtype=np.float64)
    bad = ~np.isfinite(logp)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise OPEInputError(
            f"{who}: {where}: expected a finite behavior_logp on every request, found "
            f"{int(bad.sum())} NaN/inf (e.g. request_id {data.request_id[i]}: {logp[i]})"
        )
