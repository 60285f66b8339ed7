"""Fitted Q Evaluation (``fqe``) and the BatchRL-MTF Conservative-OPEstimator (``cfqe``).

FQE (Le, Voloshin & Yue 2019, "Batch Policy Learning under Constraints") fits
``Q(s, a) ~ r + gamma Q'(s', pi(s'))`` on the logged transitions (``Q'`` a periodically synced
target network) and estimates ``V(pi) = 1/n sum_i Q(s_{i,0}, pi(s_{i,0}))`` over the sessions'
initial states. We use d3rlpy's FQE (``d3rlpy.ope.FQE`` and its torch implementation) with
d3rlpy's observation and action scalers built from the dataset spec
(``StandardObservationScaler(mean, std)``, ``MinMaxActionScaler(action_low, action_high)``).
Because the evaluated policy is deterministic, ``pi(s')`` is computed once for every logged state
and fed through the mini-batch's ``next_actions`` (no policy call per gradient step); the
mini-batches are sampled vectorised from the transition arrays.

Terminal handling: the last request of a session that ended (``terminal``) bootstraps from 0;
the last request of a session cut by the log window (``timeout``) has no next state and is not a
training transition (d3rlpy's convention). So ``gamma = 1`` converges on finite sessions.

Adam's learning rate follows ``OPEConfig.fqe_lr_schedule`` (default: d3rlpy's
``CosineAnnealingLRFactory`` down to 0, so the final Q-function is not one noisy Adam step on a
bootstrapped target), and ``OPEConfig.fqe_n_fits`` independent fits (seeds ``seed..seed+K-1``)
are averaged; the spread of their estimates is the fitting error added to the intervals.

The logging policy (``behavior``) is evaluated SARSA-style: ``pi(s')`` is the next logged action
and ``V = 1/n sum_i Q(s_{i,0}, a_{i,0})``, which converges to the on-policy average.

CFQE (Zhang et al. 2022, "Multi-Task Fusion via Reinforcement Learning for Long-Term User
Satisfaction in Recommender Systems", KDD; the Conservative-OPEstimator) adds a CQL-style
(Kumar et al. 2020) penalty that pushes Q down at the evaluated policy's actions relative to the
logged ones:

.. math::

    L(\\theta) = E_D[(Q_\\theta(s,a) - r - \\gamma Q_{\\theta'}(s', \\pi(s')))^2]
                 + \\alpha E_D[Q_\\theta(s, \\pi(s)) - Q_\\theta(s, a)]

so actions far from the data, where plain FQE extrapolates freely, are valued low: the estimate
is a lower bound in practice. ``alpha`` defaults to 0.5e-3 (``OPEConfig.cfqe_alpha``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, cast

import numpy as np
import numpy.typing as npt

from batchrl_mtf.core.d3rlpy import load_d3rlpy
from batchrl_mtf.core.threads import limit_threads
from batchrl_mtf.ope.base import Estimator, PolicyData, Term
from batchrl_mtf.ope.config import OPEConfig
from batchrl_mtf.ope.fqe_batched import Member, fit_members, fqe_transitions
from batchrl_mtf.ope.fqe_schedule import torch_thread_count

__all__ = ["CFQE", "FQE", "QValues", "fit_q", "fit_q_many", "q_cache_key"]

FloatArray = npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True)
class QValues:
    """A fitted Q-function evaluated at every logged request.

    Attributes:
        q_logged: ``Q(s_t, a_t)`` at the logged action, shape (n,).
        v_policy: ``V(s_t) = Q(s_t, pi(s_t))`` (the logged action for the behaviour policy),
            shape (n,).
        final_loss: Mean TD loss over the last 10% of the gradient steps (mean over fits).
        fits: The individual fits of an ensemble (``OPEConfig.fqe_n_fits`` > 1) whose mean
            ``q_logged`` and ``v_policy`` are; empty for a single fit.
        steps: Gradient steps taken (mean over fits; fewer than the budget after an early
            stop of the batched engine).
    """

    q_logged: FloatArray
    v_policy: FloatArray
    final_loss: float
    fits: tuple[QValues, ...] = ()
    steps: float = 0.0

    def members(self) -> tuple[QValues, ...]:
        """The individual fits (``(self,)`` for a single fit)."""
        return self.fits if self.fits else (self,)


def _build_fqe(
    config: OPEConfig, alpha: float, gamma: float, obs_mean: FloatArray, obs_std: FloatArray,
    low: FloatArray, high: FloatArray,
) -> Any:  # fmt: skip
    """A d3rlpy FQE whose implementation adds the conservative penalty (0 = plain FQE)."""
    d3rlpy = load_d3rlpy()

    fqe_impl_mod = d3rlpy.ope.torch.fqe_impl
    builders = d3rlpy.models.builders

    class ConservativeFQEImpl(fqe_impl_mod.FQEImpl):  # type: ignore[name-defined]
        """d3rlpy's FQE update with precomputed next actions and an optional CQL-style penalty."""

        policy_actions: Any = None
        alpha: float = 0.0

        def inner_update(self, batch: Any, grad_step: int) -> dict[str, float]:
            q_tpn = self.compute_target(batch, batch.next_actions)
            loss = self.compute_loss(batch, q_tpn)
            td = float(loss.detach().cpu().numpy())
            if self.alpha > 0:
                fwd = self._q_func_forwarder
                q_pi = fwd.compute_expected_q(batch.observations, self.policy_actions, "mean")
                q_b = fwd.compute_expected_q(batch.observations, batch.actions, "mean")
                loss = loss + self.alpha * (q_pi - q_b).mean()
            self._modules.optim.zero_grad()
            loss.backward()
            self._modules.optim.step()
            if grad_step % self._target_update_interval == 0:
                self.update_target()
            return {"loss": td}

    class _PolicyAdapter:
        """The ``algo`` d3rlpy's FQE expects; actions come precomputed, so it only marks 'built'."""

        impl = True

    class ConservativeFQE(d3rlpy.ope.FQE):  # type: ignore[name-defined]
        def inner_create_impl(self, observation_shape: Any, action_size: int) -> None:
            cfg = self._config
            q_funcs, fwd = builders.create_continuous_q_function(
                observation_shape, action_size, cfg.encoder_factory, cfg.q_func_factory,
                n_ensembles=cfg.n_critics, device=self._device, enable_ddp=False,
            )  # fmt: skip
            targ_q_funcs, targ_fwd = builders.create_continuous_q_function(
                observation_shape, action_size, cfg.encoder_factory, cfg.q_func_factory,
                n_ensembles=cfg.n_critics, device=self._device, enable_ddp=False,
            )  # fmt: skip
            optim = cfg.optim_factory.create(
                q_funcs.named_modules(), lr=cfg.learning_rate, compiled=False
            )
            modules = fqe_impl_mod.FQEBaseModules(
                q_funcs=q_funcs, targ_q_funcs=targ_q_funcs, optim=optim
            )
            impl = ConservativeFQEImpl(
                observation_shape=observation_shape, action_size=action_size, algo=None,
                modules=modules, q_func_forwarder=fwd, targ_q_func_forwarder=targ_fwd,
                gamma=cfg.gamma, target_update_interval=cfg.target_update_interval,
                device=self._device,
            )  # fmt: skip
            impl.alpha = alpha
            self._impl = impl

    fqe_config = d3rlpy.ope.FQEConfig(
        learning_rate=config.fqe_learning_rate,
        optim_factory=d3rlpy.optimizers.AdamFactory(
            lr_scheduler_factory=(
                d3rlpy.optimizers.CosineAnnealingLRFactory(T_max=config.fqe_n_steps)
                if config.fqe_lr_schedule == "cosine"
                else None
            )
        ),
        encoder_factory=d3rlpy.models.VectorEncoderFactory(
            hidden_units=list(config.fqe_hidden_units), use_layer_norm=config.fqe_layer_norm
        ),
        batch_size=config.fqe_batch_size,
        gamma=gamma,
        n_critics=config.fqe_n_critics,
        target_update_interval=config.fqe_target_update_interval,
        observation_scaler=d3rlpy.preprocessing.StandardObservationScaler(
            mean=obs_mean.astype(np.float32), std=obs_std.astype(np.float32)
        ),
        action_scaler=d3rlpy.preprocessing.MinMaxActionScaler(
            minimum=low.astype(np.float32), maximum=high.astype(np.float32)
        ),
    )
    fqe = ConservativeFQE(algo=_PolicyAdapter(), config=fqe_config, device=False)
    return fqe


def reward_scale(pdata: PolicyData, config: OPEConfig) -> float:
    """The factor rewards are divided by while fitting (Q is multiplied back).

    ``config.fqe_reward_scale``, or else the mean absolute discounted logged session return, so
    that the network fits values of order 1 (Adam moves each weight by about the learning rate
    per step, so unscaled returns of order 100 would take tens of thousands of steps to reach).
    """
    if config.fqe_reward_scale is not None:
        return float(config.fqe_reward_scale)
    r = pdata.pad(pdata.data.rewards) * pdata.discounts()
    scale = float(np.mean(np.abs(r.sum(axis=1))))
    return scale if scale > 1e-8 else 1.0


def q_cache_key(config: OPEConfig, alpha: float) -> str:
    """Key of a (C)FQE fit in :attr:`PolicyData.cache` (``"q:<alpha>:..."``)."""
    return (
        f"q:{alpha}:{config.fqe_n_steps}:{config.seed}:{config.fqe_n_fits}:{config.fqe_lr_schedule}"
        f":{config.fqe_engine}"
    )


def _ensemble(fits: tuple[QValues, ...]) -> QValues:
    """The mean of ``fits`` (the single fit itself when there is one)."""
    if len(fits) == 1:
        return fits[0]
    return QValues(
        q_logged=np.mean([f.q_logged for f in fits], axis=0),
        v_policy=np.mean([f.v_policy for f in fits], axis=0),
        final_loss=float(np.mean([f.final_loss for f in fits])),
        fits=fits,
        steps=float(np.mean([f.steps for f in fits])),
    )


def fit_q_many(pdatas: list[PolicyData], config: OPEConfig, alphas: tuple[float, ...]) -> None:
    """Fit (C)FQE for every policy and every ``alpha`` into each :attr:`PolicyData.cache`.

    With ``config.fqe_engine = "batched"`` every fit not yet cached (policies x alphas x
    ``fqe_n_fits`` seeds) is trained in one vectorised ensemble per dataset
    (:mod:`batchrl_mtf.ope.fqe_batched`); with ``"d3rlpy"`` they are fitted one after another.
    """
    todo = [(p, a) for p in pdatas for a in alphas if q_cache_key(config, a) not in p.cache]
    if config.fqe_engine != "batched":
        for p, a in todo:
            fit_q(p, config, a)
        return
    groups: dict[tuple[int, float, float], list[tuple[PolicyData, float]]] = {}
    for p, a in todo:
        groups.setdefault((id(p.data), p.gamma, reward_scale(p, config)), []).append((p, a))
    for (_, _, scale), pairs in groups.items():
        group = list(dict.fromkeys(p for p, _ in pairs))
        members = [
            Member(group.index(p), config.seed + j, a)
            for p, a in pairs
            for j in range(config.fqe_n_fits)
        ]
        fits = iter(fit_members(group, members, config, scale))
        for p, a in pairs:
            one = tuple(
                QValues(f.q_logged, f.v_policy, f.final_loss, steps=float(f.steps))
                for f in (next(fits) for _ in range(config.fqe_n_fits))
            )
            p.cache[q_cache_key(config, a)] = _ensemble(one)


def fit_q(pdata: PolicyData, config: OPEConfig, alpha: float = 0.0) -> QValues:
    """Fit (C)FQE for ``pdata.policy`` on ``pdata.data`` and evaluate it at every request (cached).

    With ``config.fqe_n_fits = K > 1`` the policy is fitted K times (seeds ``seed .. seed+K-1``)
    and the result holds the mean of their Q-values and every fit in :attr:`QValues.fits`.

    Args:
        pdata: Prepared data and policy.
        config: Network sizes, steps, learning rate, seed, number of fits, torch threads.
        alpha: Conservative penalty weight (0 = plain FQE).
    """
    key = q_cache_key(config, alpha)
    if key in pdata.cache:
        return cast(QValues, pdata.cache[key])
    if config.fqe_engine == "batched":
        fit_q_many([pdata], config, (alpha,))
        return cast(QValues, pdata.cache[key])
    fits = tuple(_fit_one(pdata, config, alpha, config.seed + j) for j in range(config.fqe_n_fits))
    result = _ensemble(fits)
    pdata.cache[key] = result
    return result


def _fit_one(pdata: PolicyData, config: OPEConfig, alpha: float, seed: int) -> QValues:
    """One (C)FQE fit with seed ``seed`` (network initialisation and mini-batches)."""
    import torch

    d3rlpy = load_d3rlpy()

    data = pdata.data
    spec = data.spec
    d = data.observations.shape[1]
    k = data.actions.shape[1]
    obs = data.observations.astype(np.float32)
    act = data.actions.astype(np.float32)
    pi = pdata.policy_actions.astype(np.float32)
    trans = fqe_transitions(pdata)
    rows, next_obs, next_act = trans.rows, trans.next_obs, trans.next_act
    low = np.asarray(spec.action_low, dtype=np.float64)
    high = np.asarray(spec.action_high, dtype=np.float64)
    mean = np.asarray(spec.features.mean, dtype=np.float64)
    std = np.asarray(spec.features.std, dtype=np.float64)
    if mean.shape != (d,) or std.shape != (d,):
        mean, std = obs.mean(axis=0).astype(np.float64), obs.std(axis=0).astype(np.float64)
    std = np.where(std > 1e-8, std, 1.0)
    scale = reward_scale(pdata, config)
    m = len(rows)
    losses: list[float] = []
    mini = d3rlpy.dataset.TransitionMiniBatch
    with limit_threads(torch_thread_count(config)), torch.random.fork_rng():
        torch.manual_seed(seed)
        fqe = _build_fqe(config, alpha, pdata.gamma, mean, std, low, high)
        fqe.create_impl((d,), k)
        impl = fqe.impl
        rng = np.random.default_rng(seed)
        bs = config.fqe_batch_size
        ones = np.ones((bs, 1), dtype=np.float32)
        rewards = (data.rewards[rows] / scale).astype(np.float32).reshape(-1, 1)
        terms = trans.terminals.reshape(-1, 1)
        for _step in range(config.fqe_n_steps):
            if m == 0:
                break
            idx = rng.integers(0, m, size=bs)
            src = rows[idx]
            batch = mini(
                observations=obs[src], actions=act[src], rewards=rewards[idx],
                next_observations=next_obs[idx], next_actions=next_act[idx],
                terminals=terms[idx], intervals=ones, transitions=[],
            )  # fmt: skip
            if alpha > 0:
                scaled = fqe._config.action_scaler.transform_numpy(pi[src])
                impl.policy_actions = torch.from_numpy(np.asarray(scaled, dtype=np.float32))
            losses.append(fqe.update(batch)["loss"])
        q_logged = scale * np.asarray(fqe.predict_value(obs, act), dtype=np.float64).reshape(-1)
        v_policy = (
            q_logged
            if pdata.is_behavior
            else scale * np.asarray(fqe.predict_value(obs, pi), dtype=np.float64).reshape(-1)
        )
    tail = losses[-max(1, len(losses) // 10) :]
    loss = float(np.mean(tail)) if tail else float("nan")
    return QValues(q_logged, v_policy, loss, steps=float(len(losses)))


class FQE(Estimator):
    """Fitted Q Evaluation (Le, Voloshin & Yue 2019) with d3rlpy's FQE.

    ``V = 1/n sum_i Q(s_{i,0}, pi(s_{i,0}))`` with ``Q`` the mean of ``OPEConfig.fqe_n_fits`` fits;
    the interval bootstraps these initial-state values over sessions and, with two fits or more,
    is widened by the between-fit standard error (:func:`batchrl_mtf.ope.base.widen_ci`).
    """

    name: ClassVar[str] = "fqe"
    alpha_field: ClassVar[str] = ""

    def alpha(self) -> float:
        """The conservative penalty weight (0 for plain FQE)."""
        return 0.0

    def terms(self, pdata: PolicyData) -> list[Term]:
        """One plain-mean term over the initial states."""
        q = fit_q(pdata, self.config, self.alpha())
        return [Term(numer=q.v_policy[pdata.starts].reshape(-1, 1))]

    def fit_values(self, pdata: PolicyData) -> FloatArray | None:
        """Each fit's mean initial-state value (one per ``OPEConfig.fqe_n_fits``)."""
        q = fit_q(pdata, self.config, self.alpha())
        return np.array([float(np.mean(f.v_policy[pdata.starts])) for f in q.members()])


class CFQE(FQE):
    """The BatchRL-MTF Conservative-OPEstimator: FQE plus ``alpha E[Q(s, pi(s)) - Q(s, a)]``.

    See the module docstring; ``alpha = OPEConfig.cfqe_alpha``.
    """

    name: ClassVar[str] = "cfqe"

    def alpha(self) -> float:
        """``config.cfqe_alpha``."""
        return self.config.cfqe_alpha
