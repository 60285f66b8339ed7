"""The "best constant" baseline: the constant weight vector an offline estimator rates best.

Neighbourhood rule: the candidates are (1) the mean of the logged actions, (2) their per-task
median, and (3) ``n_candidates - 2`` logged action vectors drawn uniformly (without replacement,
seeded) from the logged requests. Every candidate is clipped to the dataset's action bounds.
Drawing whole logged vectors keeps every candidate where the logs have support (also jointly
across tasks), which is where the offline estimators can be trusted; candidates far from the
data would be rated by extrapolation alone.

Each candidate is evaluated with one estimator (``fqe`` by default; ``wpdis`` is much faster)
on the given sessions, and the best value wins (first candidate on ties).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from batchrl_mtf.core.fusion import Fusion
from batchrl_mtf.data.transitions import Transitions
from batchrl_mtf.errors import FusionError, OPEInputError
from batchrl_mtf.ope.base import Estimate, prepare
from batchrl_mtf.ope.config import OPEConfig
from batchrl_mtf.ope.evaluate import Q_BASED, make_estimator
from batchrl_mtf.ope.fqe import fit_q_many
from batchrl_mtf.policy import ConstantPolicy
from batchrl_mtf.serving import WeightTable

__all__ = ["BestConstant", "best_constant", "best_constant_table", "constant_candidates"]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class BestConstant:
    """The winner of :func:`best_constant`.

    Attributes:
        weights: The best constant weight vector, in task order.
        tasks: Task names.
        estimator: The estimator used.
        estimate: The winner's estimate.
        candidates: Every candidate and its value, in candidate order.
    """

    weights: tuple[float, ...]
    tasks: tuple[str, ...]
    estimator: str
    estimate: Estimate
    candidates: tuple[tuple[tuple[float, ...], float], ...]


def constant_candidates(data: Transitions, n_candidates: int, seed: int = 0) -> FloatArray:
    """Candidate constant weight vectors by the neighbourhood rule (module docstring).

    Args:
        data: The dataset whose logged actions define the neighbourhood.
        n_candidates: How many (at least 1; the first two are the mean and the median).
        seed: Seed of the draw.

    Returns:
        Shape (n_candidates, n_tasks).
    """
    if n_candidates < 1:
        raise OPEInputError(f"n_candidates: expected >= 1, found {n_candidates}")
    if len(data) == 0:
        raise OPEInputError("best constant: expected logged actions, found no request")
    acts = np.asarray(data.actions, dtype=np.float64)
    rows = [acts.mean(axis=0), np.median(acts, axis=0)]
    extra = n_candidates - 2
    if extra > 0:
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(acts), size=min(extra, len(acts)), replace=False)
        rows.extend(acts[np.sort(pick)])
    low = np.asarray(data.spec.action_low)
    high = np.asarray(data.spec.action_high)
    return np.clip(np.asarray(rows[:n_candidates]), low, high)


def best_constant(
    data: Transitions,
    estimator: str = "fqe",
    n_candidates: int = 16,
    seed: int = 0,
    config: OPEConfig | None = None,
) -> BestConstant:
    """Pick the constant weight vector that ``estimator`` rates best among the candidates.

    Args:
        data: Sessions to estimate on (candidates come from their logged actions).
        estimator: Estimator name (``fqe``, ``cfqe``, ``pdis``, ``wpdis``, ``dr``, ``wdr``).
        n_candidates: Number of candidates (see :func:`constant_candidates`).
        seed: Seed of the candidate draw.
        config: Evaluation settings (bootstrap, FQE steps, ...).

    Raises:
        OPEInputError: Unknown estimator, no data, or no candidate with a finite value.
    """
    config = config or OPEConfig()
    est = make_estimator(estimator, config)
    tasks = tuple(data.spec.tasks)
    cands = constant_candidates(data, n_candidates, seed)
    best: tuple[int, Estimate] | None = None
    values: list[tuple[tuple[float, ...], float]] = []
    pdatas = []
    for c in cands:
        w = tuple(float(x) for x in c)
        name = "constant:" + ",".join(f"{x:.6g}" for x in w)
        pdatas.append(prepare(data, ConstantPolicy(w, tasks, name=name), config.gamma))
    if estimator in Q_BASED:  # every candidate's fits at once (one ensemble when batched)
        fit_q_many(pdatas, config, (config.cfqe_alpha if estimator == "cfqe" else 0.0,))
    for i, pdata in enumerate(pdatas):
        w = tuple(float(x) for x in cands[i])
        name = pdata.policy.name
        e = est.estimate(pdata)
        values.append((w, float(e.value)))
        logger.info("candidate %d/%d %s: %s = %.4g", i + 1, len(cands), name, estimator, e.value)
        if math.isfinite(e.value) and (best is None or e.value > best[1].value):
            best = (i, e)
    if best is None:
        raise OPEInputError(f"best constant: no candidate got a finite {estimator} value")
    return BestConstant(
        weights=values[best[0]][0],
        tasks=tasks,
        estimator=estimator,
        estimate=best[1],
        candidates=tuple(values),
    )


def best_constant_table(
    result: BestConstant,
    data: Transitions,
    fusion: Fusion | None = None,
) -> object:
    """The winner as a key-less weight table (``keys: []``, no rows, the weights as ``default``).

    Args:
        result: The output of :func:`best_constant`.
        data: The dataset it was chosen on (action bounds, hash).
        fusion: The fusion the weights are meant for; ``None``: the one ``data`` records.

    Returns:
        A :class:`batchrl_mtf.serving.WeightTable`.

    Raises:
        FusionError: ``fusion`` is ``None`` and the dataset records no fusion, or its offsets do
            not fit the tasks.
    """

    tasks = result.tasks
    fusion = fusion if fusion is not None else data.spec.fusion
    if fusion is None:
        raise FusionError(
            "fusion: the dataset records no fusion (built before datasets recorded it); "
            "give one (best-constant --formula/--beta)"
        )
    est = result.estimate
    return WeightTable(
        tasks=tasks,
        fusion=fusion.for_tasks(tasks),
        action_low=tuple(float(x) for x in data.spec.action_low),
        action_high=tuple(float(x) for x in data.spec.action_high),
        keys=(),
        default=result.weights,
        rows=(),
        meta={
            "policy": "best-constant",
            "estimator": result.estimator,
            "ope": {
                "estimator": result.estimator,
                "value": float(est.value),
                "ci": None if est.ci is None else [float(est.ci[0]), float(est.ci[1])],
                "n_sessions": est.n_sessions,
            },
            "n_candidates": len(result.candidates),
            "dataset_hash": data.spec.dataset_hash,
        },
    )
