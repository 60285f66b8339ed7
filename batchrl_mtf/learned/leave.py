"""The leave model: a calibrated logistic regression of "the session ends after this request".

Inputs are the state before the request (the foundation's state vector) and the request's
feedback summed over its items (``req_<fb>``); the label is 1 on the last request of a session.
Inputs are standardised with the training mean and standard deviation, and the coefficients
maximise the L2-penalised log-likelihood (Newton's method, penalty ``l2 * ||c||^2 / 2`` on the
coefficients, not on the intercept). Logistic regression fitted by maximum likelihood with an
intercept is calibrated in the large on its training data (mean prediction = observed rate);
:func:`calibration_table` reports it on held-out sessions by decile of the prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from batchrl_mtf.data.split import session_split
from batchrl_mtf.learned.leave_model import (
    LeaveMixture,
    LeaveModel,
    leave_feature_names,
    recent_feedback,
    sigmoid,
)

__all__ = [
    "LeaveData",
    "calibration_table",
    "filtered_probability",
    "fit_leave_mixture",
    "fit_leave_model",
    "fit_leave_on_logs",
    "gate_inputs",
    "log_loss",
    "segment_feedback_pairs",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def fit_leave_model(
    x: FloatArray,
    y: FloatArray,
    names: Sequence[str],
    l2: float = 1.0,
    max_iter: int = 50,
    tol: float = 1e-8,
    pairs: Sequence[tuple[int, int]] = (),
    recency_decay: float | None = None,
    exclude: Sequence[int] = (),
    action_inputs: bool = False,
) -> LeaveModel:
    """Fit the leave model.

    Args:
        x: Inputs, shape (n, d), columns named by ``names``.
        y: Labels in {0, 1}, shape (n,).
        names: Input names, length d.
        l2: L2 penalty on the standardised coefficients (the data term is a sum over rows).
        max_iter: Newton iterations at most.
        tol: Stop when the largest coefficient change is below this.
        pairs: Interactions ``(i, j)``: the products of standardised inputs ``z_i z_j`` are
            extra inputs (penalised like the others).
        recency_decay: The decay the ``recent_<fb>`` inputs of ``x`` were computed with
            (``None``: ``x`` has none); saved with the model so the world computes them alike.
        exclude: Inputs left out of the model (coefficient 0; pairs must not use them). They
            stay in the feature list, so the saved model reads the same inputs.
        action_inputs: ``x`` ends with the request's weights (and their decayed sums), as
            :func:`batchrl_mtf.learned.leave_model.leave_feature_names` with ``tasks``.

    Returns:
        The fitted :class:`LeaveModel`.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std > 1e-9, std, 1.0)
    pair_arr = np.asarray(list(pairs), dtype=np.int64).reshape(-1, 2)
    drop = np.zeros(x.shape[1], dtype=bool)
    drop[np.asarray(list(exclude), dtype=np.int64)] = True
    if len(pair_arr) and drop[pair_arr].any():
        raise ValueError("pairs must not use excluded inputs")
    z_all = LeaveModel(tuple(names), mean, std, np.zeros(0), 0.0, pair_arr).design(x)
    keep = np.concatenate([~drop, np.ones(len(pair_arr), dtype=bool)])
    z = z_all[:, keep]
    n, d = z.shape
    a = np.concatenate([np.ones((n, 1)), z], axis=1)
    rate = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
    theta = np.zeros(d + 1)
    theta[0] = np.log(rate / (1 - rate))
    pen = np.full(d + 1, l2)
    pen[0] = 0.0
    for _ in range(max_iter):
        p = sigmoid(a @ theta)
        grad = a.T @ (p - y) + pen * theta
        wgt = p * (1 - p)
        hess = (a * wgt[:, None]).T @ a + np.diag(pen) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if float(np.max(np.abs(step))) < tol:
            break
    coef = np.zeros(len(keep))
    coef[keep] = theta[1:]
    return LeaveModel(
        tuple(names),
        mean,
        std,
        coef,
        float(theta[0]),
        pair_arr,
        recency_decay,
        action_inputs=action_inputs,
    )


def segment_feedback_pairs(names: Sequence[str], feedback: Sequence[str]) -> list[tuple[int, int]]:
    """Interactions of the inputs that reveal who the user is (``u_*``, ``hist_<fb>_rate``) with
    the session's and the request's feedback (``session_<fb>``, ``req_<fb>``, ``recent_<fb>``),
    the decayed weights (``recent_w_<task>``) and depth, so leaving can depend on feedback and on
    the weights served differently for different users."""
    col = {n: i for i, n in enumerate(names)}
    who = [i for n, i in col.items() if n.startswith("u_")]
    who += [col[f"hist_{c}_rate"] for c in feedback if f"hist_{c}_rate" in col]
    what = [
        col[f"{p}_{c}"] for p in ("req", "session", "recent") for c in feedback if f"{p}_{c}" in col
    ]
    what += [i for n, i in col.items() if n.startswith("recent_w_")]
    if "session_depth" in col:
        what.append(col["session_depth"])
    return [(i, j) for i in who for j in what]


def log_loss(p: FloatArray, y: FloatArray) -> float:
    """Mean binary log-loss."""
    q = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def calibration_table(p: FloatArray, y: FloatArray, bins: int = 10) -> list[dict[str, float]]:
    """Mean predicted vs observed rate by quantile bin (decile) of the prediction.

    Args:
        p: Predicted probabilities, shape (n,).
        y: Labels, shape (n,).
        bins: Number of quantile bins.

    Returns:
        One entry per non-empty bin: ``n``, ``mean_predicted``, ``observed``.
    """
    if len(p) == 0:
        return []
    order = np.argsort(p, kind="stable")
    out = []
    for part in np.array_split(order, bins):
        if len(part):
            out.append(
                {
                    "n": float(len(part)),
                    "mean_predicted": float(p[part].mean()),
                    "observed": float(y[part].mean()),
                }
            )
    return out


def gate_inputs(names: Sequence[str]) -> list[int]:
    """Inputs of a mixture's gate: the state features that say who the user is and do not change
    within a session (``u_*``, ``hist_*``)."""
    return [i for i, n in enumerate(names) if n.startswith(("u_", "hist_"))]


def _weighted_logistic(
    a: FloatArray, y: FloatArray, w: FloatArray, theta: FloatArray, pen: FloatArray, steps: int
) -> FloatArray:
    """``steps`` Newton steps of the L2-penalised logistic regression with row weights ``w``."""
    for _ in range(steps):
        p = sigmoid(a @ theta)
        grad = a.T @ (w * (p - y)) + pen * theta
        hess = (a * (w * p * (1 - p))[:, None]).T @ a + np.diag(pen) + 1e-9 * np.eye(len(theta))
        theta = theta - np.linalg.solve(hess, grad)
    return theta


def _softmax(logits: FloatArray) -> FloatArray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)


def _session_loglik(
    a: FloatArray, y: FloatArray, thetas: FloatArray, session: IntArray, n_s: int
) -> FloatArray:
    """Log-likelihood of every session's leave/stay sequence under every class, (n_s, K)."""
    out = np.zeros((n_s, len(thetas)))
    for k, th in enumerate(thetas):
        p = np.clip(sigmoid(a @ th), 1e-12, 1 - 1e-12)
        out[:, k] = np.bincount(session, y * np.log(p) + (1 - y) * np.log(1 - p), minlength=n_s)
    return out


def fit_leave_mixture(
    x: FloatArray,
    y: FloatArray,
    session: IntArray,
    names: Sequence[str],
    n_classes: int,
    l2: float = 1.0,
    pairs: Sequence[tuple[int, int]] = (),
    recency_decay: float | None = None,
    exclude: Sequence[int] = (),
    gate: Sequence[int] = (),
    n_iter: int = 40,
    seed: int = 0,
    action_inputs: bool = False,
) -> tuple[LeaveModel, float]:
    """Fit a leave model with latent user classes by expectation-maximisation.

    Each session ``s`` has a hidden class ``k`` with prior ``softmax(G_s W)_k`` (``G_s``: the
    standardised ``gate`` inputs of its rows, constant within a session, and a 1) and each class a
    logistic hazard ``sigmoid(b_k + c_k . design(x))`` of leaving after a request. The E-step
    computes every session's class posterior from its whole leave/stay sequence, the M-step
    refits the hazards (weighted Newton steps) and the gate (Newton steps of the soft-target
    multinomial logistic regression), both with L2 penalty ``l2``. A finite mixture of logistic
    regressions (McLachlan & Peel, *Finite Mixture Models*, 2000) with concomitant variables in the
    gate: it lets leaving respond to feedback differently for users whose type the state shows
    only noisily.

    Args:
        x: Inputs, shape (n, d), rows of one session contiguous or not.
        y: Labels in {0, 1}, shape (n,).
        session: Session index of every row in ``[0, n_sessions)``, shape (n,).
        names: Input names, length d.
        n_classes: Number of classes ``K`` (>= 2).
        l2: L2 penalty of the hazards' and the gate's coefficients.
        pairs: Interactions, as :func:`fit_leave_model`.
        recency_decay: As :func:`fit_leave_model`.
        exclude: Inputs left out of the hazards, as :func:`fit_leave_model`.
        gate: Indices of the gate's inputs (:func:`gate_inputs`).
        n_iter: EM iterations.
        seed: Seed of the initial class posteriors.
        action_inputs: As :func:`fit_leave_model`.

    Returns:
        The model and the training log-likelihood per session.
    """
    base = fit_leave_model(
        x, y, names, l2=l2, pairs=pairs, recency_decay=recency_decay, exclude=exclude
    )
    session = np.asarray(session, dtype=np.int64)
    y = np.asarray(y, dtype=np.float64)
    n_s = int(session.max()) + 1
    z_all = base.design(x)
    keep = np.concatenate([np.ones(len(names), dtype=bool), np.ones(len(base.pairs), dtype=bool)])
    keep[np.asarray(list(exclude), dtype=np.int64)] = False
    a = np.concatenate([np.ones((len(y), 1)), z_all[:, keep]], axis=1)
    gi = np.asarray(list(gate), dtype=np.int64)
    first = np.full(n_s, -1, dtype=np.int64)
    first[session[::-1]] = np.arange(len(session))[::-1]
    g = np.concatenate([np.ones((n_s, 1)), z_all[np.maximum(first, 0)][:, gi]], axis=1)
    k = n_classes
    rng = np.random.default_rng(seed)
    resp = rng.dirichlet(np.ones(k), size=n_s)
    theta0 = np.concatenate([[base.intercept], base.coef[keep[: len(base.coef)]]])
    thetas = np.tile(theta0, (k, 1))
    pen = np.full(a.shape[1], l2)
    pen[0] = 0.0
    gw = np.zeros((k, g.shape[1]))
    gpen = np.full(g.shape[1], l2)
    gpen[0] = 0.0
    ll = 0.0
    for _ in range(n_iter):
        for j in range(k):  # M-step: hazards
            thetas[j] = _weighted_logistic(a, y, resp[session, j], thetas[j], pen, 2)
        for _ in range(2):  # M-step: gate (Newton on the soft-target multinomial logit)
            p = _softmax(g @ gw.T)
            grad = ((p - resp)[:, :, None] * g[:, None, :]).reshape(n_s, -1).sum(axis=0)
            grad += np.tile(gpen, k) * gw.reshape(-1)
            cov = np.einsum("sk,kl->skl", p, np.eye(k)) - np.einsum("sk,sl->skl", p, p)
            hess = np.einsum("skl,sa,sb->kalb", cov, g, g).reshape(k * g.shape[1], -1)
            hess += np.diag(np.tile(gpen, k)) + 1e-6 * np.eye(len(hess))
            gw = gw - np.linalg.solve(hess, grad).reshape(k, -1)
        # E-step
        log_prior = np.log(np.clip(_softmax(g @ gw.T), 1e-300, None))
        joint = log_prior + _session_loglik(a, y, thetas, session, n_s)
        top = joint.max(axis=1, keepdims=True)
        ll = float(np.mean(top[:, 0] + np.log(np.exp(joint - top).sum(axis=1))))
        resp = np.exp(joint - top)
        resp /= resp.sum(axis=1, keepdims=True)
    coef = np.zeros((k, len(keep)))
    coef[:, keep] = thetas[:, 1:]
    share = _softmax(g @ gw.T).mean(axis=0)
    mixture = LeaveMixture(gi, gw, coef, thetas[:, 0].copy())
    model = LeaveModel(
        tuple(names),
        base.mean,
        base.std,
        share @ coef,
        float(share @ thetas[:, 0]),
        base.pairs,
        recency_decay,
        mixture,
        action_inputs,
    )
    return model, ll


def filtered_probability(model: LeaveModel, x: FloatArray, step: IntArray) -> FloatArray:
    """Predictive leave probability of every request given that its session lasted so far:
    the class posterior after surviving the earlier requests, ``P(k | G, survived) ~ pi_k(G)
    prod_{t' < t} (1 - h_k(t'))``, times each class's hazard. Rows must be whole sessions,
    contiguous and in request order (``step`` 0 first). Without classes, the plain hazard.

    Args:
        model: The leave model.
        x: Inputs, shape (n, d).
        step: Request position in its session, shape (n,).

    Returns:
        Shape (n,).
    """
    if model.mixture is None:
        return model.probability(x)
    m = model.mixture
    step = np.asarray(step, dtype=np.int64)
    k = m.n_classes
    h = np.column_stack([model.probability(x, np.full(len(x), j)) for j in range(k)])
    prior = model.class_probabilities(x)
    log_surv = np.zeros_like(h)
    logs = np.log(np.clip(1 - h, 1e-300, None))
    for t in range(1, int(step.max()) + 1 if len(step) else 0):
        rows = np.flatnonzero(step == t)
        log_surv[rows] = log_surv[rows - 1] + logs[rows - 1]
    w = prior * np.exp(log_surv - log_surv.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    return np.asarray((w * h).sum(axis=1), dtype=np.float64)


@dataclass(frozen=True)
class LeaveData:
    """The logged requests a leave model learns from, sessions contiguous and in request order.

    Attributes:
        obs: State before every request, shape (n, n_state).
        fb_req: Feedback summed over every request's items, log feedback order, shape (n, F).
        actions: Logged weights of every request, shape (n, n_tasks).
        step: Position of every request in its session, shape (n,).
        session_id: Session of every request, shape (n,).
        last: Whether the request is its session's last, shape (n,).
        censored: Last requests that are not leaves (sessions cut by the request cap), (n,).
    """

    obs: FloatArray
    fb_req: FloatArray
    actions: FloatArray
    step: IntArray
    session_id: npt.NDArray[np.generic]
    last: npt.NDArray[np.bool_]
    censored: npt.NDArray[np.bool_]


def fit_leave_on_logs(
    data: LeaveData,
    state_names: Sequence[str],
    feedback: Sequence[str],
    order: Sequence[str],
    tasks: Sequence[str],
    *,
    recency_decay: float,
    action_inputs: bool,
    session_sums: bool,
    interactions: bool,
    n_classes: int,
    l2: float | None,
    holdout: float,
    em_iterations: int,
    seed: int,
    l2_grid: Sequence[float] = (1.0, 10.0, 100.0, 1000.0),
) -> tuple[LeaveModel, dict[str, object], list[tuple[int, int]], list[str]]:
    """Build the leave model's inputs from logged sessions, fit it on ``1 - holdout`` of the
    sessions (``make-env``'s options, :class:`batchrl_mtf.learned.LearnedEnvConfig`) and report
    its calibration on the others.

    Args:
        data: The logged requests.
        state_names: Names of the state features (columns of ``data.obs``).
        feedback: Feedback columns of ``data.fb_req``.
        order: Feedback columns in the world's order (root first).
        tasks: Tasks (columns of ``data.actions``).
        recency_decay: Decay of the ``recent_*`` inputs; 0 = none.
        action_inputs: Add the weights ``w_<task>`` (and their decayed sums).
        session_sums: Keep ``session_<fb>``, ``prev_<fb>``, ``session_elapsed_s``.
        interactions: Add the user x feedback pairs (:func:`segment_feedback_pairs`).
        n_classes: Latent classes (1: one logistic regression).
        l2: L2 penalty; ``None``: the value of ``l2_grid`` with the lowest log-loss on a
            validation part of the training sessions (a quarter of them, by the same session hash),
            each candidate a one-class model fitted on the rest.
        l2_grid: Candidate penalties when ``l2`` is ``None``.
        holdout: Share of sessions held out for the calibration report.
        em_iterations: EM iterations of a mixture.
        seed: Seed of a mixture's initial posteriors.

    Returns:
        The model, its held-out calibration report, its pairs and the excluded input names.
    """
    decay = recency_decay or None
    parts = [data.obs, data.fb_req]
    if decay is not None:
        parts.append(recent_feedback(data.fb_req, data.step, decay))
    if action_inputs:
        parts.append(data.actions)
        if decay is not None:
            parts.append(recent_feedback(data.actions, data.step, decay))
    x = np.concatenate(parts, axis=1)
    y = data.last.astype(np.float64)
    names = leave_feature_names(
        state_names, feedback, recency=decay is not None, tasks=tasks if action_inputs else ()
    )
    split = session_split(data.session_id, holdout)
    train_rows = (~data.censored) & (split == "train")
    test_rows = (~data.censored) & (split == "test")
    if not train_rows.any():
        train_rows = ~data.censored
    excluded = (
        []
        if session_sums
        else [
            i
            for i, n in enumerate(names)
            if n.startswith(("session_", "prev_")) and n != "session_depth"
        ]
    )
    pairs = segment_feedback_pairs(names, order) if interactions else []
    pairs = [(i, j) for i, j in pairs if i not in excluded and j not in excluded]
    grid_loss: dict[str, float] = {}

    def fit(rows: npt.NDArray[np.bool_], penalty: float) -> LeaveModel:
        """The single leave model on ``rows`` with L2 penalty ``penalty``."""
        return fit_leave_model(
            x[rows],
            y[rows],
            names,
            l2=penalty,
            pairs=pairs,
            recency_decay=decay,
            exclude=excluded,
            action_inputs=action_inputs,
        )

    if l2 is None:
        split_share = holdout + 0.25 * (1 - holdout)
        inner_val = train_rows & (session_split(data.session_id, split_share) == "test")
        inner_fit = train_rows & ~inner_val
        if not inner_val.any() or not inner_fit.any():
            inner_val = inner_fit = train_rows
        for cand in l2_grid:
            m = fit(inner_fit, cand)
            grid_loss[f"{cand:g}"] = log_loss(m.probability(x[inner_val]), y[inner_val])
        l2 = float(min(l2_grid, key=lambda c: grid_loss[f"{c:g}"]))
    if n_classes == 1:
        leave = fit(train_rows, l2)
    else:
        _, sess_idx = np.unique(data.session_id[train_rows], return_inverse=True)
        leave, _ = fit_leave_mixture(
            x[train_rows],
            y[train_rows],
            sess_idx.astype(np.int64),
            names,
            n_classes,
            l2=l2,
            pairs=pairs,
            recency_decay=decay,
            exclude=excluded,
            gate=gate_inputs(names),
            n_iter=em_iterations,
            seed=seed,
            action_inputs=action_inputs,
        )
    p_test = filtered_probability(leave, x[test_rows], data.step[test_rows])
    y_test = y[test_rows]
    base = float(y[train_rows].mean())
    nan = float("nan")
    calib: dict[str, object] = {
        "held_out_requests": int(test_rows.sum()),
        "held_out_share_of_sessions": holdout,
        "mean_predicted": float(p_test.mean()) if len(p_test) else nan,
        "observed": float(y_test.mean()) if len(y_test) else nan,
        "log_loss": log_loss(p_test, y_test) if len(p_test) else nan,
        "log_loss_constant": log_loss(np.full(len(y_test), base), y_test) if len(y_test) else nan,
        "deciles": calibration_table(p_test, y_test),
        "l2": l2,
        "l2_validation_log_loss": grid_loss,
    }
    return leave, calib, pairs, [names[i] for i in excluded]
