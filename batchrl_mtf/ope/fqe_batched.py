"""Batched (C)FQE: every fit of one evaluation trained together as one vectorised Q-ensemble.

The estimator is the one of :mod:`batchrl_mtf.ope.fqe` (FQE, Le, Voloshin & Yue 2019, and the
BatchRL-MTF Conservative-OPEstimator, Zhang et al. 2022): each *member* ``j`` (one policy, one
seed, one conservative weight ``alpha_j``) minimises, on its own mini-batch stream,

.. math::

    L_j(\\theta_j) = \\frac{1}{B} \\sum_b (Q_{\\theta_j}(s_b, a_b) - r_b
                     - \\gamma (1 - d_b) Q_{\\theta'_j}(s'_b, \\pi_j(s'_b)))^2
                     + \\alpha_j \\frac{1}{B} \\sum_b (Q_{\\theta_j}(s_b, \\pi_j(s_b))
                     - Q_{\\theta_j}(s_b, a_b))

with the network of d3rlpy's FQE (``VectorEncoderWithAction``: per hidden layer
``Linear -> ReLU -> LayerNorm``, then ``Linear(., 1)``), d3rlpy's observation and action scalers
(``(s - mean) / (std + 1e-3)``, actions min-max to [-1, 1]), a hard target update after steps
``0, I, 2I, ...`` (``OPEConfig.fqe_target_update_interval``), Adam (torch's update formula) and
the cosine learning-rate schedule. A member with seed ``s`` starts from exactly the weights
d3rlpy builds under ``torch.manual_seed(s)`` and draws the same mini-batch indices
(``numpy.random.default_rng(s)``), so on a fixed seed both engines fit the same function up to
floating-point rounding (tests/ope/test_fqe_batched.py).

The members' weights are stacked along a leading axis and every layer is one ``torch.baddbmm``;
the total loss is the sum of the members' losses, so each member's gradient (and Adam, which is
elementwise) is exactly its own. Members sharing a seed share their mini-batch indices.

Step budget and early stopping (this engine only; the d3rlpy engine runs exactly
``fqe_n_steps``): see :func:`step_budget` and :class:`~batchrl_mtf.ope.fqe_schedule.Plateau`.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from batchrl_mtf.core.threads import limit_threads
from batchrl_mtf.ope.base import PolicyData
from batchrl_mtf.ope.config import OPEConfig
from batchrl_mtf.ope.fqe_schedule import Plateau, step_budget, torch_thread_count

if TYPE_CHECKING:
    import torch

__all__ = [
    "FQETransitions",
    "Member",
    "MemberFit",
    "fit_members",
    "fqe_transitions",
]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]

_OBS_EPS = 1e-3  # d3rlpy's StandardObservationScaler eps
_LN_EPS = 1e-5  # torch.nn.LayerNorm's default eps
_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8
_PREDICT_ROWS = 8192  # rows per member evaluated at once after fitting


@dataclass(frozen=True)
class FQETransitions:
    """The training transitions of (C)FQE for one policy (shared by both engines).

    A session's last request bootstraps from 0 when the session ended (``terminal``) and is no
    transition when the log window cut it (``timeout``, d3rlpy's convention).

    Attributes:
        rows: Row of each transition in the dataset, shape (m,).
        next_obs: Next observation (0 after a terminal), shape (m, d).
        next_act: The policy's action at the next state (the next logged action for the
            behaviour policy; any finite value after a terminal), shape (m, k).
        terminals: 1.0 where the transition ends its session, shape (m,).
    """

    rows: npt.NDArray[np.int64]
    next_obs: F32
    next_act: F32
    terminals: F32


def fqe_transitions(pdata: PolicyData) -> FQETransitions:
    """The (C)FQE training transitions of ``pdata`` (see :class:`FQETransitions`)."""
    rows, nxt, term_rows = _transition_rows(pdata)
    return FQETransitions(
        rows,
        _next_observations(pdata, nxt, term_rows),
        _next_actions(pdata, rows, nxt, term_rows),
        term_rows.astype(np.float32),
    )


def _next_observations(
    pdata: PolicyData, nxt: npt.NDArray[np.int64], term_rows: npt.NDArray[np.bool_]
) -> F32:
    """Each transition's next state, zeros after a terminal, shape (m, d)."""
    obs = pdata.data.observations
    return np.where(term_rows[:, None], 0.0, obs[nxt]).astype(np.float32)


def _next_actions(
    pdata: PolicyData,
    rows: npt.NDArray[np.int64],
    nxt: npt.NDArray[np.int64],
    term_rows: npt.NDArray[np.bool_],
) -> F32:
    """Each transition's next action under ``pdata``'s policy (the logged one for the logging
    policy; the transition's own action after a terminal, where it is masked), shape (m, k)."""
    data = pdata.data
    source = data.actions if pdata.is_behavior else pdata.policy_actions
    return np.where(term_rows[:, None], data.actions[rows], source[nxt]).astype(np.float32)


def _transition_rows(
    pdata: PolicyData,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """``(rows, next_rows, terminal)`` of the transitions: each one's row, the row of its next
    request (clipped into the data after a terminal) and whether it ends its session; they
    depend on the sessions only, not on the policy."""
    data = pdata.data
    n = len(data)
    last = np.zeros(n, dtype=bool)
    last[pdata.starts + pdata.lengths - 1] = True
    terminal = last & ~np.asarray(data.timeouts, dtype=bool)
    rows = np.flatnonzero(~last | terminal).astype(np.int64)
    return rows, np.minimum(rows + 1, n - 1), terminal[rows]


@dataclass(frozen=True)
class Member:
    """One fit of the ensemble.

    Attributes:
        policy: Index of the policy (into ``fit_members``' ``pdatas``).
        seed: Seed of its initial weights and mini-batch indices.
        alpha: Conservative penalty weight (0 = plain FQE).
    """

    policy: int
    seed: int
    alpha: float


@dataclass(frozen=True)
class MemberFit:
    """A fitted member evaluated at every logged request (Q in reward units).

    Attributes:
        q_logged: ``Q(s_t, a_t)``, shape (n,).
        v_policy: ``Q(s_t, pi(s_t))`` (``q_logged`` for the behaviour policy), shape (n,).
        final_loss: Mean TD loss over the last 10% of its steps.
        steps: Gradient steps it took (fewer than the budget after an early stop).
    """

    q_logged: FloatArray
    v_policy: FloatArray
    final_loss: float
    steps: int


def _init_weights(seed: int, sizes: list[int], k: int) -> list[tuple[F32, F32]]:
    """The (weight, bias) of each Linear layer exactly as d3rlpy creates them under ``seed``.

    After ``torch.manual_seed(seed)`` d3rlpy builds the encoder ``Linear(d+k, h1), ...,
    Linear(h_{L-1}, h_L)`` (LayerNorm starts at weight 1, bias 0), draws a dummy input
    ``rand(2, d), rand(2, k)`` to measure its output size, then builds ``Linear(h_L, 1)``.
    Weights are returned transposed, shape (in, out).
    """
    import torch

    pairs = list(itertools.pairwise(sizes))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        layers = [torch.nn.Linear(a, b) for a, b in pairs[:-1]]
        torch.rand(2, sizes[0] - k)
        torch.rand(2, k)
        layers.append(torch.nn.Linear(*pairs[-1]))
    return [
        (lin.weight.detach().T.contiguous().numpy(), lin.bias.detach().numpy()) for lin in layers
    ]


def fit_members(
    pdatas: list[PolicyData], members: list[Member], config: OPEConfig, scale: float
) -> list[MemberFit]:
    """Fit every member as one batched ensemble and evaluate it at every logged request.

    Args:
        pdatas: The evaluated policies, all on the same sessions (``pdatas[i].data``) and gamma.
        members: The fits, each naming its policy, seed and conservative weight.
        config: Network, optimiser, schedule, budget and early-stopping settings.
        scale: Rewards are divided by it while fitting; Q is multiplied back.

    Returns:
        One fit per member, in the order of ``members``.
    """
    import torch

    data = pdatas[0].data
    spec = data.spec
    d = data.observations.shape[1]
    rows, nxt, term_rows = _transition_rows(pdatas[0])  # the same for every policy
    m = len(rows)
    gamma = pdatas[0].gamma
    horizon = max(p.horizon for p in pdatas)
    budget = step_budget(config, m, horizon)
    low = np.asarray(spec.action_low, dtype=np.float32)
    high = np.asarray(spec.action_high, dtype=np.float32)
    mean = np.asarray(spec.features.mean, dtype=np.float64)
    std = np.asarray(spec.features.std, dtype=np.float64)
    obs_raw = data.observations.astype(np.float32)
    if mean.shape != (d,) or std.shape != (d,):
        mean, std = obs_raw.mean(axis=0).astype(np.float64), obs_raw.std(axis=0).astype(np.float64)
    std = np.where(std > 1e-8, std, 1.0)

    mean32, std32 = mean.astype(np.float32), std.astype(np.float32)

    def s_obs(x: F32) -> torch.Tensor:  # d3rlpy's StandardObservationScaler
        return torch.from_numpy(((x - mean32) / (std32 + _OBS_EPS)).astype(np.float32))

    def s_act(a: F32) -> torch.Tensor:  # d3rlpy's MinMaxActionScaler, to [-1, 1]
        return torch.from_numpy((((a - low) / (high - low)) * 2.0 - 1.0).astype(np.float32))

    threads = torch_thread_count(config, len(members))
    with limit_threads(1 if config.fqe_member_groups else threads):
        # fqe_transitions' arrays (next states once: they do not depend on the policy), scaled
        obs, act = s_obs(obs_raw), s_act(data.actions.astype(np.float32))
        pis = torch.stack([s_act(p.policy_actions.astype(np.float32)) for p in pdatas])
        rows_t = torch.from_numpy(rows)
        next_obs = s_obs(_next_observations(pdatas[0], nxt, term_rows))
        next_act = torch.stack([s_act(_next_actions(p, rows, nxt, term_rows)) for p in pdatas])
        inp = _Inputs(
            obs=obs,
            act=act,
            x_logged=torch.cat([obs, act], dim=-1),
            pis=pis,
            next_obs=next_obs,
            next_act=next_act,
            rewards=torch.from_numpy((data.rewards[rows] / scale).astype(np.float32)),
            terms=torch.from_numpy(term_rows.astype(np.float32)),
            rows=rows_t,
            behavior=np.array([p.is_behavior for p in pdatas], dtype=bool),
        )
        fits = _train_groups(members, config, budget, horizon, gamma, inp, threads)
        out: list[MemberFit | None] = [None] * len(members)
        for j, (q_logged, v_policy, loss, steps) in enumerate(fits):
            behavior = pdatas[members[j].policy].is_behavior
            out[j] = MemberFit(
                scale * q_logged, scale * (q_logged if behavior else v_policy), loss, steps
            )
    return [f for f in out if f is not None]


def _shapes(sizes: list[int]) -> list[tuple[int, int]]:
    """Per-member shapes of the parameters :func:`_forward` takes, in order.

    Per hidden layer ``W (in, out), b (1, out), ln_w (1, out), ln_b (1, out)``, then the output
    layer's ``W (h, 1), b (1, 1)``.
    """
    out: list[tuple[int, int]] = []
    n_layers = len(sizes) - 1
    for li in range(n_layers):
        out += [(sizes[li], sizes[li + 1]), (1, sizes[li + 1])]
        if li < n_layers - 1:
            out += [(1, sizes[li + 1]), (1, sizes[li + 1])]
    return out


def _split(flat: torch.Tensor, shapes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """The members' flat vectors ``flat`` (M, n_params) as one tensor per parameter, each
    (M, in, out) in the order of :func:`_shapes` (copies: every parameter is its own leaf, so
    autograd writes each gradient once instead of scattering it into the flat vector)."""
    out, lo = [], 0
    for a, b in shapes:
        out.append(flat[:, lo : lo + a * b].reshape(-1, a, b).clone())
        lo += a * b
    return out


def _forward(
    params: list[torch.Tensor], x: torch.Tensor, act: torch.Tensor | None = None
) -> torch.Tensor:
    """Q-values of stacked members (parameters from :func:`_split`): ``x`` (M, B, d+k) -> (M, B).

    With ``act`` (M, B, k), ``x`` is the observations only (M, B, d) and the first layer is
    ``x W[:d] + act W[d:] + b``: the same product as on the concatenation, without building it.
    Each layer norm's affine ``LN(h) * g + beta`` is folded into the layer after it:
    ``(LN(h) * g + beta) W + b = LN(h) (g^T * W) + (beta W + b)``, computed on the parameters
    ((M, h, out) tensors) instead of the (M, B, h) activations; the same function, and autograd
    gives ``g`` and ``beta`` the same gradients (up to rounding).
    """
    import torch
    from torch.nn.functional import layer_norm

    w, b = params[0], params[1]
    if act is None:
        h = torch.baddbmm(b, x, w)
    else:
        d = x.shape[-1]
        h = torch.baddbmm(torch.baddbmm(b, x, w[:, :d]), act, w[:, d:])
    for i in range((len(params) - 2) // 4):
        if i > 0:
            h = torch.baddbmm(b, h, w)
        width = h.shape[-1]  # an explicit unit affine: torch's faster CPU kernel (2x, measured)
        h = layer_norm(h.relu_(), (width,), torch.ones(width), torch.zeros(width), eps=_LN_EPS)
        g, beta = params[4 * i + 2], params[4 * i + 3]
        w_next, b_next = params[4 * i + 4], params[4 * i + 5]
        w = g.transpose(1, 2) * w_next
        b = torch.baddbmm(b_next, beta, w_next)
    return torch.baddbmm(b, h, w).squeeze(-1)


def _rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a 2-D ``table`` (N, c) and any ``index`` shape -> (*index, c)
    (``index_select``: measured 2-3x faster than advanced indexing for these gathers)."""
    return table.index_select(0, index.reshape(-1)).view(*index.shape, table.shape[-1])


def _flat_init(seeds: list[int], sizes: list[int], k: int) -> torch.Tensor:
    """The members' initial parameters as flat vectors, shape (M, n_params)."""
    import torch

    rows = []
    for s in seeds:
        parts: list[F32] = []
        layers = _init_weights(s, sizes, k)
        for li, (w, b) in enumerate(layers):
            parts += [w.ravel(), b.ravel()]
            if li < len(layers) - 1:
                parts += [np.ones(len(b), np.float32), np.zeros(len(b), np.float32)]
        rows.append(np.concatenate(parts))
    return torch.from_numpy(np.stack(rows).astype(np.float32))


@dataclass
class _Inputs:
    """The scaled training tensors shared by every member (see :func:`fit_members`)."""

    obs: torch.Tensor  # (n, d) every logged state
    act: torch.Tensor  # (n, k) every logged action
    x_logged: torch.Tensor  # (n, d + k) both, concatenated
    pis: torch.Tensor  # (P, n, k) each policy's action at every logged state
    next_obs: torch.Tensor  # (m, d) per transition
    next_act: torch.Tensor  # (P, m, k) per policy and transition
    rewards: torch.Tensor  # (m,) scaled
    terms: torch.Tensor  # (m,)
    rows: torch.Tensor  # (m,) row of each transition
    behavior: npt.NDArray[np.bool_]  # (P,) whether the policy is the logging policy


def _train_groups(
    members: list[Member], config: OPEConfig, budget: int, horizon: int, gamma: float,
    inp: _Inputs, threads: int,
) -> list[tuple[FloatArray, FloatArray, float, int]]:  # fmt: skip
    """Train ``members`` as ``threads`` ensembles at once, one per thread, or as one ensemble.

    With ``config.fqe_member_groups`` (and more than one thread) member ``j`` of the ensemble
    order (plain fits first, then conservative ones) goes to group ``j % threads``, so the groups
    cost alike; each group is trained by :func:`_train` in its own thread with one torch thread
    (torch releases the GIL inside its kernels). Without it, one ensemble uses ``threads``
    intra-op threads. A member's fit does not depend on the others (its own loss, gradient,
    Adam state and mini-batch stream), so the fits are the same either way up to the rounding of
    the batched kernels.

    Returns per member, in the order of ``members``, ``(q_logged, v_policy, final_loss, steps)``.
    """
    order = sorted(range(len(members)), key=lambda j: (members[j].alpha > 0, j))
    n_groups = threads if config.fqe_member_groups else 1
    groups = [order[g::n_groups] for g in range(n_groups) if order[g::n_groups]]

    d, k = inp.obs.shape[1], inp.act.shape[1]
    # initial weights here, before any thread starts: d3rlpy's initialisation seeds torch's
    # global generator (threads drawing from it at once would get each other's numbers)
    init = _flat_init([mb.seed for mb in members], [d + k, *config.fqe_hidden_units, 1], k)

    def run(group: list[int]) -> list[tuple[FloatArray, FloatArray, float, int]]:
        rows = [members[j] for j in group]
        return _train(rows, config, budget, horizon, gamma, inp, init[group])

    if len(groups) <= 1:
        groups = [order]
        results = [run(order)]
    else:
        with ThreadPoolExecutor(max_workers=len(groups)) as pool:
            results = list(pool.map(run, groups))
    out: list[tuple[FloatArray, FloatArray, float, int] | None] = [None] * len(members)
    for group, fits in zip(groups, results, strict=True):
        for j, fit in zip(group, fits, strict=True):
            out[j] = fit
    return [f for f in out if f is not None]


def _train(
    members: list[Member], config: OPEConfig, budget: int, horizon: int, gamma: float,
    inp: _Inputs, init: torch.Tensor,
) -> list[tuple[FloatArray, FloatArray, float, int]]:  # fmt: skip
    """Train ``members`` (plain ones first, then conservative ones) from their initial
    parameters ``init`` (:func:`_flat_init`, one row per member) and evaluate them.

    Returns per member ``(q_logged, v_policy, final_loss, steps)`` with Q in scaled units.
    """
    import torch

    started = time.perf_counter()
    big_m = len(members)
    m = len(inp.rows)
    n_rows, d = inp.obs.shape
    k = inp.act.shape[1]
    sizes = [d + k, *config.fqe_hidden_units, 1]
    shapes = _shapes(sizes)
    params = [p.requires_grad_(True) for p in _split(init, shapes)]
    targ = [p.detach().clone() for p in params]
    avg = [torch.zeros_like(p) for p in targ]
    avg_sq = [torch.zeros_like(p) for p in targ]
    seeds = sorted({mb.seed for mb in members})
    rngs = [np.random.default_rng(s) for s in seeds]
    seed_of = np.array([seeds.index(mb.seed) for mb in members])
    pol_of = np.array([mb.policy for mb in members], dtype=np.int64)
    alpha_of = np.array([mb.alpha for mb in members])
    active = np.arange(big_m)
    plateau = Plateau(config, budget, horizon, big_m)
    loss_buf = np.zeros((budget, big_m), dtype=np.float64)
    finals: dict[int, list[torch.Tensor]] = {}
    steps_of = np.zeros(big_m, dtype=np.int64)
    b1, b2 = _ADAM_BETAS
    bs = config.fqe_batch_size
    block = 256
    idx_block = np.zeros((len(seeds), 0, bs), dtype=np.int64)
    for step in range(budget if m > 0 else 0):
        j = step % block
        if j == 0:  # the same stream as one rng.integers(0, m, size=bs) call per step
            size = min(block, budget - step)
            idx_block = np.stack([r.integers(0, m, size=(size, bs)) for r in rngs])
        idx = torch.from_numpy(idx_block[seed_of[active], j])  # (M, B)
        pol = torch.from_numpy(pol_of[active])
        src = inp.rows[idx]
        x_b = _rows(inp.x_logged, src)  # (M, B, d + k)
        with torch.no_grad():
            n_act = _rows(inp.next_act.view(-1, k), pol[:, None] * m + idx)
            q_next = _forward(targ, _rows(inp.next_obs, idx), n_act)
            y = inp.rewards[idx] + gamma * q_next * (1.0 - inp.terms[idx])
        q_b = _forward(params, x_b)
        td = ((q_b - y) ** 2).mean(dim=1)
        loss = td.sum()
        c0 = int(np.sum(alpha_of[active] <= 0))
        if c0 < len(active):
            alphas = torch.from_numpy(alpha_of[active][c0:].astype(np.float32))
            pi_act = _rows(inp.pis.view(-1, k), pol[c0:, None] * n_rows + src[c0:])
            q_pi = _forward([p[c0:] for p in params], x_b[c0:, :, :d], pi_act)
            loss = loss + (alphas * (q_pi.mean(dim=1) - q_b[c0:].mean(dim=1))).sum()
        for p in params:
            p.grad = None
        loss.backward()
        phase = plateau.phase(step)
        lr = config.fqe_learning_rate * (
            (1.0 + np.cos(np.pi * phase)) / 2.0
            if config.fqe_lr_schedule == "cosine"
            else np.ones(len(active))
        )
        t = step + 1
        with torch.no_grad():  # torch.optim.Adam's update, with a learning rate per member
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            torch._foreach_lerp_(avg, grads, 1.0 - b1)
            torch._foreach_mul_(avg_sq, b2)
            torch._foreach_addcmul_(avg_sq, grads, grads, value=1.0 - b2)
            denom = torch._foreach_sqrt(avg_sq)
            torch._foreach_div_(denom, math.sqrt(1.0 - b2**t))
            torch._foreach_add_(denom, _ADAM_EPS)
            step_size = torch.from_numpy((lr / (1.0 - b1**t)).astype(np.float32))[:, None, None]
            upd = torch._foreach_div(avg, denom)
            torch._foreach_mul_(upd, [step_size] * len(upd))
            torch._foreach_sub_(params, upd)
            if step % config.fqe_target_update_interval == 0:
                torch._foreach_copy_(targ, params)
        loss_buf[step, active] = td.detach().numpy()
        if (step + 1) % config.fqe_plateau_window == 0:
            window = loss_buf[step + 1 - config.fqe_plateau_window : step + 1, active]
            plateau.observe(step, window.mean(axis=0))
        done = step + 1 >= plateau.end
        if done.any():
            for pos in np.flatnonzero(done):
                finals[int(active[pos])] = [p.detach()[pos].clone() for p in params]
                steps_of[active[pos]] = step + 1
            keep = np.flatnonzero(~done)
            kt = torch.from_numpy(keep)
            params = [p.detach()[kt].clone().requires_grad_(True) for p in params]
            targ = [p[kt] for p in targ]
            avg = [p[kt] for p in avg]
            avg_sq = [p[kt] for p in avg_sq]
            plateau.select(keep)
            active = active[keep]
    for row, left in enumerate(active):  # only when m == 0: never trained
        finals[int(left)] = [p.detach()[row].clone() for p in params]
    trained = time.perf_counter()
    stacked = [torch.stack([finals[g][i] for g in range(big_m)]) for i in range(len(shapes))]
    q_logged, v_policy = _predict(stacked, inp, pol_of, inp.behavior[pol_of])
    out = []
    for g_idx in range(big_m):
        steps = int(steps_of[g_idx])
        tail = loss_buf[max(0, steps - max(1, steps // 10)) : steps, g_idx]
        final_loss = float(np.mean(tail)) if steps > 0 else float("nan")
        out.append((q_logged[g_idx], v_policy[g_idx], final_loss, steps))
    if big_m:
        logger.info(
            "batched FQE: %d fits, budget %d steps, stopped after %d-%d; "
            "trained in %.1f s, evaluated at %d requests in %.1f s",
            big_m, budget, int(steps_of.min()), int(steps_of.max()),
            trained - started, len(inp.obs), time.perf_counter() - trained,
        )  # fmt: skip
    return out


def _predict_one(per: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Q-values of one member (its parameters, each (in, out) as in :func:`_shapes`) at the rows
    ``x`` (R, d+k) -> (R,): the arithmetic of :func:`_forward` with the layer norm's affine fused
    into one kernel (no (M, R, h) intermediates: rows of one member stay in cache)."""
    import torch
    from torch.nn.functional import layer_norm

    h = x
    for i in range((len(per) - 2) // 4):
        w, b, g, beta = per[4 * i : 4 * i + 4]
        h = torch.addmm(b, h, w).relu_()
        h = layer_norm(h, (h.shape[-1],), g[0], beta[0], eps=_LN_EPS)
    return torch.addmm(per[-1], h, per[-2]).squeeze(-1)


def _predict(
    params: list[torch.Tensor],
    inp: _Inputs,
    pol_of: npt.NDArray[np.int64],
    behavior: npt.NDArray[np.bool_],
) -> tuple[FloatArray, FloatArray]:
    """``Q(s_t, a_t)`` and ``Q(s_t, pi(s_t))`` of every member at every row, each (M, n).

    Member by member, ``_PREDICT_ROWS`` rows at a time (measured 7x faster on 2 cores than the
    stacked (M, R, h) forward of training, whose intermediates spill the caches and are
    allocated anew per chunk). A behaviour-policy member's ``v_policy`` is its ``q_logged``
    (``pis`` is the logged action there), so its second pass is skipped.
    """
    import torch

    n = inp.obs.shape[0]
    big_m = len(pol_of)
    q_logged = np.zeros((big_m, n), dtype=np.float64)
    v_policy = np.zeros((big_m, n), dtype=np.float64)
    with torch.no_grad():
        x_logged = inp.x_logged
        x_pol, x_pi = -1, x_logged  # the policy whose (obs, pi(obs)) rows x_pi holds: one at a time
        for j in range(big_m):
            per = [p[j] for p in params]
            pol = int(pol_of[j])
            if not behavior[j] and pol != x_pol:
                x_pol, x_pi = pol, torch.cat([inp.obs, inp.pis[pol]], dim=-1)
            for lo in range(0, n, _PREDICT_ROWS):
                hi = min(n, lo + _PREDICT_ROWS)
                q_logged[j, lo:hi] = _predict_one(per, x_logged[lo:hi]).numpy()
                if not behavior[j]:
                    v_policy[j, lo:hi] = _predict_one(per, x_pi[lo:hi]).numpy()
            if behavior[j]:
                v_policy[j] = q_logged[j]
    return q_logged, v_policy
