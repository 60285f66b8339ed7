"""Configuration of off-policy evaluation (``batchrl-mtf evaluate``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from batchrl_mtf.core.config import require
from batchrl_mtf.data.box import DEFAULT_ACTION_BOX, parse_action_box

__all__ = ["ESTIMATOR_NAMES", "FQE_ENGINES", "KERNEL_BOUNDARIES", "OPEConfig"]

ESTIMATOR_NAMES = ("fqe", "cfqe", "pdis", "wpdis", "dr", "wdr")
"""Every estimator name, in the order reports list them."""

FQE_LR_SCHEDULES = ("constant", "cosine")
"""Learning-rate schedules of the FQE fits (``OPEConfig.fqe_lr_schedule``)."""

FQE_ENGINES = ("batched", "d3rlpy")
"""Engines of the (C)FQE fits (``OPEConfig.fqe_engine``)."""

KERNEL_BOUNDARIES = ("renormalise", "none")
"""Boundary treatments of the importance ratios' kernel (``OPEConfig.kernel_boundary``,
:mod:`batchrl_mtf.ope.kernel`): divide it by its mass inside the logged action box, or not."""

DEFAULT_RECOMMEND_ORDER = ("dr", "wdr", "fqe", "cfqe", "wpdis", "pdis")


@dataclass(frozen=True)
class OPEConfig:
    """How policies are evaluated offline.

    Attributes:
        estimators: Estimator names to run (subset of ``fqe, cfqe, pdis, wpdis, dr, wdr``).
        gamma: Discount factor; ``None`` = the dataset's; ``1.0`` = undiscounted session return.
        n_bootstrap: Bootstrap resamples of sessions for the 95% intervals (0 = no interval).
        ci_level: Coverage of the bootstrap percentile intervals.
        seed: Seed of the bootstrap, the FQE networks and the FQE mini-batches.
        bandwidth: Gaussian-kernel bandwidth on the [0, 1]-normalised action space; ``None`` =
            Scott's rule on the logged actions (see :func:`batchrl_mtf.ope.kernel.scott_bandwidth`).
        kernel_boundary: ``"renormalise"`` (default): the kernel of the importance ratios is
            divided by its mass inside the logged action box, so that a policy on the box's
            edge (production's weight 0 on a task it does not use) keeps its full weight;
            ``"none"``: the plain kernel, whose weights shrink by half per task at the edge
            (:mod:`batchrl_mtf.ope.kernel`; chosen on the zoo's tuning worlds, docs/ope.md).
        fqe_n_steps: Gradient steps of each FQE fit.
        fqe_batch_size: FQE mini-batch size (transitions).
        fqe_learning_rate: Adam learning rate of FQE.
        fqe_hidden_units: Hidden layer sizes of the FQE Q-network.
        fqe_target_update_interval: Steps between hard target-network updates.
        fqe_layer_norm: Layer normalisation in the Q-network (keeps TD from diverging on actions
            far from the data, where the network extrapolates).
        fqe_n_critics: Q-networks in the FQE ensemble (their mean is the estimate).
        fqe_reward_scale: Rewards are divided by this while fitting FQE (Q multiplied back);
            ``None`` = the mean absolute discounted logged session return.
        fqe_lr_schedule: Learning-rate schedule of each FQE fit: ``"cosine"`` (d3rlpy's
            ``CosineAnnealingLRFactory`` down to 0 over ``fqe_n_steps``, so the final network is
            not a noisy last Adam step) or ``"constant"``.
        fqe_n_fits: Independent FQE fits per policy (seeds ``seed, seed+1, ...``); ``fqe``,
            ``cfqe``, ``dr`` and ``wdr`` use the mean of their Q-functions, and their intervals are
            widened by the between-fit standard error (fitting error).
        cfqe_alpha: Weight of the conservative penalty of ``cfqe`` (BatchRL-MTF uses 0.5e-3).
        fqe_engine: ``"batched"`` (default): every (C)FQE fit of one evaluation (policies x
            fits x {fqe, cfqe}) trained together as one vectorised ensemble
            (:mod:`batchrl_mtf.ope.fqe_batched`), with the step budget and early stopping below;
            ``"d3rlpy"``: one d3rlpy FQE after another, exactly ``fqe_n_steps`` steps each (the
            reference implementation, kept for comparison). Both fit the same estimator.
        fqe_budget_epochs: Batched engine: the step budget is
            ``min(fqe_n_steps, max(fqe_min_steps, P, ceil(fqe_budget_epochs * m /
            fqe_batch_size)))`` for ``m`` training transitions, with the propagation floor
            ``P = ceil(fqe_propagations * H * fqe_target_update_interval)`` for sessions of up
            to ``H`` requests (:func:`batchrl_mtf.ope.fqe_schedule.step_budget`); ``None`` =
            ``fqe_n_steps``.
        fqe_min_steps: Batched engine: the smallest step budget (see ``fqe_budget_epochs``).
        fqe_propagations: Batched engine: each hard target update carries the value one request
            back, so a session of ``H`` requests needs ``H`` updates before its first request's
            value is fitted at all; neither the step budget nor an early stop go below this many
            times ``H * fqe_target_update_interval`` steps (``docs/ope.md``: at 1x the early
            stop cut the fits of a 30,000-session dataset to 2,000 steps and FQE of the logging
            policy sat 3.1 above its truth, three times the fits' spread).
        fqe_early_stop: Batched engine: stop a fit on a TD-loss plateau, after a compressed
            cosine tail (:class:`batchrl_mtf.ope.fqe_schedule.Plateau`).
        fqe_plateau_window: Steps per TD-loss window of the plateau test.
        fqe_plateau_tol: A window is flat unless its mean TD loss is this much (relative) below
            the best earlier window.
        fqe_plateau_patience: Flat windows in a row that start the tail.
        fqe_tail_fraction: Length of the annealing tail after a plateau, as a fraction of the
            step budget.
        torch_threads: Torch CPU threads while fitting (restored afterwards); 0 = automatic:
            one per 12 fits trained together by the batched engine, at most one per available
            core (so 10 policies x 6 fits use 2 cores, one policy's 6 fits one thread); one for
            the d3rlpy engine, which fits one network at a time.
        fqe_member_groups: Batched engine with more than one thread: train the fits as one
            ensemble per thread, each thread running its ensemble on one core
            (:func:`batchrl_mtf.ope.fqe_batched.fit_members`), instead of one ensemble whose
            products are split over the threads. The fits are the same either way.
        min_ess_fraction: A pure importance-sampling estimate (``pdis``, ``wpdis``) is eligible
            as the recommended one only when its effective sample size is at least this
            fraction of the sessions.
        min_ess: ... and at least this many sessions.
        dr_max_ci_ratio: A doubly robust estimate (``dr``, ``wdr``) is eligible as the recommended
            one only when its interval is at most this many times as wide as ``fqe``'s (when
            ``fqe`` was run): a DR value blown up by a few huge importance weights is not
            quoted; ``None`` = no such guard.
        recommend_order: Preference order of the recommended-estimate rule.
        support_box: Box of the logged support for the ``support`` diagnostic
            (:mod:`batchrl_mtf.ope.support`; ``"qLO-HI"`` quantiles or ``"minmax"``).
        support_max_outside: A policy is flagged when more than this share of its actions on the
            evaluation states leave that box.
        model_error: Relative model error of a quoted estimate: the recommended estimate's
            interval (and ``select``'s value intervals) widen each half-width ``h`` to
            ``sqrt(h**2 + (z * model_error * |value|)**2)`` (:func:`batchrl_mtf.ope.base.widen_ci`,
            ``z`` the normal quantile of ``ci_level``), for the estimators' bias that neither the
            bootstrap nor the fit-to-fit spread contains. The default 0.13 is the smallest
            value whose widened intervals covered the truth in 85% of 150 (world, policy) pairs
            of the zoo's tuning block ``h`` with these defaults (``bench/fqe_budget.py``;
            ``docs/ope.md``, Calibrated intervals); 0 = the estimator's own interval.
    """

    estimators: tuple[str, ...] = ESTIMATOR_NAMES
    gamma: float | None = None
    n_bootstrap: int = 500
    ci_level: float = 0.95
    seed: int = 0
    bandwidth: float | None = None
    kernel_boundary: str = "renormalise"
    fqe_n_steps: int = 5000
    fqe_batch_size: int = 256
    fqe_learning_rate: float = 1e-3
    fqe_hidden_units: tuple[int, ...] = (64, 64)
    fqe_target_update_interval: int = 50
    fqe_layer_norm: bool = True
    fqe_n_critics: int = 1
    fqe_reward_scale: float | None = None
    fqe_lr_schedule: str = "cosine"
    fqe_n_fits: int = 3
    cfqe_alpha: float = 0.5e-3
    fqe_engine: str = "batched"
    fqe_budget_epochs: float | None = 50.0
    fqe_min_steps: int = 1000
    fqe_propagations: float = 2.0
    fqe_early_stop: bool = True
    fqe_plateau_window: int = 250
    fqe_plateau_tol: float = 0.02
    fqe_plateau_patience: int = 2
    fqe_tail_fraction: float = 0.1
    torch_threads: int = 0
    fqe_member_groups: bool = True
    min_ess_fraction: float = 0.05
    min_ess: float = 30.0
    dr_max_ci_ratio: float | None = 10.0
    recommend_order: tuple[str, ...] = DEFAULT_RECOMMEND_ORDER
    support_box: str = DEFAULT_ACTION_BOX
    support_max_outside: float = 0.05
    model_error: float = 0.13

    def __post_init__(self) -> None:
        require(len(self.estimators) > 0, "estimators", "expected at least one estimator")
        for name in (*self.estimators, *self.recommend_order):
            require(
                name in ESTIMATOR_NAMES,
                "estimators",
                f"expected names among {', '.join(ESTIMATOR_NAMES)}, found {name!r}",
            )
        require(
            len(set(self.estimators)) == len(self.estimators),
            "estimators",
            f"expected no duplicates, found {list(self.estimators)}",
        )
        if self.gamma is not None:
            require(
                0.0 <= self.gamma <= 1.0,
                "gamma",
                f"expected a number in [0, 1], found {self.gamma}",
            )
        require(self.n_bootstrap >= 0, "n_bootstrap", f"expected >= 0, found {self.n_bootstrap}")
        require(0.0 < self.ci_level < 1.0, "ci_level", f"expected in (0, 1), found {self.ci_level}")
        if self.bandwidth is not None:
            require(
                math.isfinite(self.bandwidth) and self.bandwidth > 0,
                "bandwidth",
                f"expected a number > 0, found {self.bandwidth}",
            )
        require(
            self.kernel_boundary in KERNEL_BOUNDARIES,
            "kernel_boundary",
            f"expected one of {', '.join(KERNEL_BOUNDARIES)}, found {self.kernel_boundary!r}",
        )
        require(self.fqe_n_steps >= 1, "fqe_n_steps", f"expected >= 1, found {self.fqe_n_steps}")
        require(
            self.fqe_batch_size >= 1,
            "fqe_batch_size",
            f"expected >= 1, found {self.fqe_batch_size}",
        )
        require(
            self.fqe_learning_rate > 0,
            "fqe_learning_rate",
            f"expected > 0, found {self.fqe_learning_rate}",
        )
        require(
            len(self.fqe_hidden_units) > 0 and all(u >= 1 for u in self.fqe_hidden_units),
            "fqe_hidden_units",
            f"expected positive layer sizes, found {list(self.fqe_hidden_units)}",
        )
        require(
            self.fqe_target_update_interval >= 1,
            "fqe_target_update_interval",
            f"expected >= 1, found {self.fqe_target_update_interval}",
        )
        require(
            self.fqe_n_critics >= 1, "fqe_n_critics", f"expected >= 1, found {self.fqe_n_critics}"
        )
        if self.fqe_reward_scale is not None:
            require(
                math.isfinite(self.fqe_reward_scale) and self.fqe_reward_scale > 0,
                "fqe_reward_scale",
                f"expected a number > 0, found {self.fqe_reward_scale}",
            )
        require(
            self.fqe_lr_schedule in FQE_LR_SCHEDULES,
            "fqe_lr_schedule",
            f"expected one of {', '.join(FQE_LR_SCHEDULES)}, found {self.fqe_lr_schedule!r}",
        )
        require(self.fqe_n_fits >= 1, "fqe_n_fits", f"expected >= 1, found {self.fqe_n_fits}")
        require(self.cfqe_alpha >= 0, "cfqe_alpha", f"expected >= 0, found {self.cfqe_alpha}")
        require(
            self.fqe_engine in FQE_ENGINES,
            "fqe_engine",
            f"expected one of {', '.join(FQE_ENGINES)}, found {self.fqe_engine!r}",
        )
        require(
            self.fqe_engine != "batched" or self.fqe_n_critics == 1,
            "fqe_n_critics",
            f"expected 1 with fqe_engine 'batched' (use 'd3rlpy'), found {self.fqe_n_critics}",
        )
        if self.fqe_budget_epochs is not None:
            require(
                math.isfinite(self.fqe_budget_epochs) and self.fqe_budget_epochs > 0,
                "fqe_budget_epochs",
                f"expected a number > 0 or None, found {self.fqe_budget_epochs}",
            )
        require(
            math.isfinite(self.fqe_propagations) and self.fqe_propagations >= 0,
            "fqe_propagations",
            f"expected a number >= 0, found {self.fqe_propagations}",
        )
        for name in ("fqe_min_steps", "fqe_plateau_window", "fqe_plateau_patience"):
            value = getattr(self, name)
            require(value >= 1, name, f"expected >= 1, found {value}")
        require(
            0.0 <= self.fqe_plateau_tol < 1.0,
            "fqe_plateau_tol",
            f"expected in [0, 1), found {self.fqe_plateau_tol}",
        )
        require(
            0.0 < self.fqe_tail_fraction <= 1.0,
            "fqe_tail_fraction",
            f"expected in (0, 1], found {self.fqe_tail_fraction}",
        )
        require(
            self.torch_threads >= 0, "torch_threads", f"expected >= 0, found {self.torch_threads}"
        )
        require(
            0.0 <= self.min_ess_fraction <= 1.0,
            "min_ess_fraction",
            f"expected in [0, 1], found {self.min_ess_fraction}",
        )
        require(self.min_ess >= 0, "min_ess", f"expected >= 0, found {self.min_ess}")
        if self.dr_max_ci_ratio is not None:
            require(
                self.dr_max_ci_ratio > 0,
                "dr_max_ci_ratio",
                f"expected a number > 0 or None, found {self.dr_max_ci_ratio}",
            )
        parse_action_box(self.support_box, "support_box")
        require(
            0.0 <= self.support_max_outside <= 1.0,
            "support_max_outside",
            f"expected in [0, 1], found {self.support_max_outside}",
        )
        require(
            math.isfinite(self.model_error) and self.model_error >= 0,
            "model_error",
            f"expected a number >= 0, found {self.model_error}",
        )
