"""Settings of off-policy selection (``batchrl-mtf select``): the portfolio, budget and OPE.

The portfolio is ``algorithms x conservativeness x seeds``, each trained policy exported as a
weight table at every trust-region step:

* **algorithms** (``SelectConfig.algorithms``, default ``td3bc, bc``): TD3+BC, the toolkit's
  default learner, and behaviour cloning (the logged policy's mean weights per state: the most
  conservative learned candidate, a safe improvement over production when the logging policy
  explored around better weights).
* **conservativeness** (``SelectConfig.conservativeness``): per algorithm, the values of the
  hyper-parameter named in :data:`CONSERVATIVENESS_FIELD` (TD3+BC ``alpha``: the weight of the
  Q-term against behaviour cloning, *larger = bolder*; CQL ``conservative_weight``, IQL
  ``expectile``, BCQ ``action_flexibility``, AWAC ``lam``); an algorithm without an entry is
  trained once at its default. Default: TD3+BC alpha 10 (the toolkit's default), then 2.5
  (d3rlpy's and the paper's, more conservative). Order matters when the time budget binds (the
  first candidate always runs): on the tuning worlds t11 and t02 alpha 10's table was truly better
  than alpha 2.5's (117.8 vs 107.7, 78.7 vs 72.0, export settings differing too;
  docs/selection.md).
* **seeds** (``SelectConfig.seeds``, default ``0``).
* **trust-region steps** (``SelectConfig.trust_steps``): each policy's table is also exported with
  every weight kept within ``step x`` (the median task width of the logged quantile box) of
  production (the export's ``max_delta``, with production as the table's default); ``0`` = the
  unconstrained table. Default ``0, 0.5, 0.25``.

Every candidate is estimated with the same OPE settings (``SelectConfig.ope``) on the dataset's
held-out ``test`` split, paired with production.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from batchrl_mtf.core.config import config_from_mapping, config_to_dict, merge_layer, require
from batchrl_mtf.data.box import DEFAULT_ACTION_BOX, parse_action_box
from batchrl_mtf.errors import ConfigError
from batchrl_mtf.ope import OPEConfig
from batchrl_mtf.selection.rule import BASELINES, BOUNDS
from batchrl_mtf.training import ALGORITHMS

__all__ = [
    "CONSERVATIVENESS_FIELD",
    "DEFAULT_SELECT_OPE",
    "CandidateSpec",
    "SelectConfig",
    "portfolio",
    "resolve_select_config",
]

CONSERVATIVENESS_FIELD: dict[str, str] = {
    "td3bc": "alpha",
    "cql": "conservative_weight",
    "iql": "expectile",
    "bcq": "action_flexibility",
    "awac": "lam",
}
"""The hyper-parameter each algorithm's conservativeness values set (``bc`` has none)."""

DEFAULT_SELECT_OPE = OPEConfig(
    estimators=("fqe", "dr", "wdr"),
    gamma=1.0,
    n_bootstrap=200,
    fqe_n_steps=2000,
    fqe_n_fits=1,
    model_error=0.08,
)
"""The OPE settings of ``select``: undiscounted session return (the quantity an A/B test
measures), FQE and the doubly robust estimators on one 2,000-step fit each, 200 paired bootstrap
resamples. Without ``behavior_logp`` in the logs only ``fqe`` runs. The candidates' value
intervals (and so ``chosen.lower``) carry a relative model error of 0.08: the smallest whose
lower ends were at or below the truth for 95% of 150 candidate tables and constants of the zoo's
tuning block ``h`` at these settings (``bench/fqe_budget.py``, docs/selection.md). The paired
gains the rule ranks by are not widened (on the same worlds a model-error term on them changed
no choice that the 2% margin had not already made). The importance ratios use the
renormalised kernel, as ``evaluate``'s do (under the recommended-estimator rule it chose worse
on ``f02`` and ``f05``; under the FQE bound it changes no choice on ``f01``-``f12``, only the DR
estimates quoted: docs/selection.md)."""


@dataclass(frozen=True)
class SelectConfig:
    """How ``batchrl-mtf select`` builds and judges its candidates (module docstring).

    Attributes:
        algorithms: Algorithms of the portfolio (``--algo`` names), in training order.
        conservativeness: Per algorithm, values of its :data:`CONSERVATIVENESS_FIELD`.
        seeds: Training seeds.
        n_steps: Gradient steps per trained candidate (the step budget).
        trust_steps: Trust-region steps per trained policy (0 = no trust region).
        action_box: Action bounds of the trained candidates (``TrainConfig.action_box``).
        keys: Export keys (``("auto",)`` or feature names).
        buckets: Export quantile buckets per key.
        min_support: Export shrinkage: buckets with fewer states shrink toward production.
        budget_minutes: Wall-clock budget; candidates whose projected cost (mean time of the
            candidates so far) would pass it are skipped and listed as such; 0 = no budget.
        n_threads: torch CPU threads of training and FQE.
        parallel: Worker processes that train candidates at the same time (each with
            ``n_threads``; 0 = one per CPU core, 1 = one after another in this process). The
            trained policies are the same either way; with a budget that binds, more candidates
            fit in it.
        require_support: Leave out candidates the support diagnostic flags (more than
            ``ope.support_max_outside`` of their actions outside the logged quantile box).
        bound: The lower bound the rule ranks candidates by (``fqe``, default since
            2026-12-04: FQE's paired bound for every candidate; ``recommended``: the recommended
            estimator's paired bound, which may differ between candidates; ``all-estimators``:
            the lowest over every estimator valid for both policies;
            :mod:`batchrl_mtf.selection.rule`). ``fqe`` was chosen on the tuning worlds
            ``f01``-``f12`` (docs/selection.md, "One estimator for every candidate"): 0 worlds
            below production against 1, 5 at or above the best constant against 4.
        margin: A candidate is chosen only when that bound is above ``margin`` times
            production's estimated value (0 = above zero). Default 0.02, chosen on the tuning
            worlds (docs/selection.md, "Choosing the rule"): a single FQE fit's bootstrap
            interval does not hold the fitted Q-function's error, and on the production-optimal
            tuning world h11 the chosen table's bound was +1.8% of production's estimate while
            its true gain was -16%.
        baseline: What the gains are measured against (:data:`~batchrl_mtf.selection.rule.
            BASELINES`): ``production``; or ``auto`` (default): production, unless the support
            diagnostic flags production itself (its weights leave the logged quantile box, so
            its estimate extrapolates as a flagged candidate's would), then the logging
            policy, whose value the held-out sessions measure directly. Production is the
            fallback either way. Not chosen on data: no zoo world measured so far has
            production outside its logs' box, so no bench figure depends on it
            (docs/selection.md, "Production outside the logged support").
        ope: The OPE settings of every estimate.
        seed: Seed of the export's auto-key sample.
    """

    algorithms: tuple[str, ...] = ("td3bc", "bc")
    conservativeness: Mapping[str, tuple[float, ...]] = field(
        default_factory=lambda: {"td3bc": (10.0, 2.5)}
    )
    seeds: tuple[int, ...] = (0,)
    n_steps: int = 5000
    trust_steps: tuple[float, ...] = (0.0, 0.5, 0.25)
    action_box: str = DEFAULT_ACTION_BOX
    keys: tuple[str, ...] = ("auto",)
    buckets: int = 3
    min_support: int = 200
    budget_minutes: float = 10.0
    n_threads: int = 1
    parallel: int = 0
    require_support: bool = True
    bound: str = "fqe"
    margin: float = 0.02
    baseline: str = "auto"
    ope: OPEConfig = DEFAULT_SELECT_OPE
    seed: int = 0

    def __post_init__(self) -> None:
        require(len(self.algorithms) > 0, "algorithms", "expected at least one algorithm")
        for algo in self.algorithms:
            require(
                algo in ALGORITHMS,
                "algorithms",
                f"expected names among {', '.join(ALGORITHMS)}, found {algo!r}",
            )
        for algo, values in self.conservativeness.items():
            require(
                algo in CONSERVATIVENESS_FIELD,
                "conservativeness",
                f"expected keys among {', '.join(CONSERVATIVENESS_FIELD)}, found {algo!r}",
            )
            require(len(values) > 0, f"conservativeness.{algo}", "expected at least one value")
        require(len(self.seeds) > 0, "seeds", "expected at least one seed")
        require(self.n_steps >= 1, "n_steps", f"expected >= 1, found {self.n_steps}")
        require(len(self.trust_steps) > 0, "trust_steps", "expected at least one step")
        for s in self.trust_steps:
            require(s >= 0, "trust_steps", f"expected steps >= 0 (0 = none), found {s}")
        parse_action_box(self.action_box)
        require(self.buckets >= 1, "buckets", f"expected >= 1, found {self.buckets}")
        require(self.min_support >= 0, "min_support", f"expected >= 0, found {self.min_support}")
        require(
            self.budget_minutes >= 0,
            "budget_minutes",
            f"expected >= 0 (0 = no budget), found {self.budget_minutes}",
        )
        require(self.n_threads >= 0, "n_threads", f"expected >= 0, found {self.n_threads}")
        require(
            self.parallel >= 0,
            "parallel",
            f"expected >= 0 (0 = one per core), found {self.parallel}",
        )
        require(
            self.bound in BOUNDS,
            "bound",
            f"expected one of {', '.join(BOUNDS)}, found {self.bound!r}",
        )
        require(self.margin >= 0, "margin", f"expected >= 0, found {self.margin}")
        require(
            self.bound != "fqe" or "fqe" in self.ope.estimators,
            "bound",
            "bound = 'fqe' ranks by FQE's paired bound: expected 'fqe' among ope.estimators, "
            f"found {list(self.ope.estimators)}",
        )
        require(
            self.baseline in BASELINES,
            "baseline",
            f"expected one of {', '.join(BASELINES)}, found {self.baseline!r}",
        )
        require(
            self.ope.n_bootstrap > 0,
            "ope.n_bootstrap",
            "expected > 0 (the choice needs paired intervals)",
        )

    def to_dict(self) -> dict[str, object]:
        """Plain mapping of the resolved settings (``selection.json`` ``config``)."""
        return config_to_dict(self)


@dataclass(frozen=True)
class CandidateSpec:
    """One trained policy of the portfolio.

    Attributes:
        name: ``<algo>[-<field><value>]-s<seed>`` (e.g. ``td3bc-alpha2.5-s0``).
        algo: The algorithm.
        overrides: Training settings (``resolve_config`` keys).
    """

    name: str
    algo: str
    overrides: Mapping[str, object]


def _fmt(value: float) -> str:
    return f"{value:g}"


def portfolio(config: SelectConfig) -> list[CandidateSpec]:
    """The trained policies of ``config``, in training order (algorithm, value, seed)."""
    out = []
    for algo in config.algorithms:
        fld = CONSERVATIVENESS_FIELD.get(algo)
        values: tuple[float | None, ...] = tuple(config.conservativeness.get(algo, ())) or (None,)
        for value in values:
            for seed in config.seeds:
                over: dict[str, object] = {
                    "algo": algo,
                    "n_steps": config.n_steps,
                    "seed": seed,
                    "n_threads": config.n_threads,
                    "action_box": config.action_box,
                }
                tag = algo
                if value is not None and fld is not None:
                    over[f"{algo}.{fld}"] = value
                    tag += f"-{fld}{_fmt(value)}"
                out.append(CandidateSpec(f"{tag}-s{seed}", algo, over))
    return out


def resolve_select_config(
    layers: list[tuple[str, Mapping[str, object]]], base: SelectConfig | None = None
) -> SelectConfig:
    """A :class:`SelectConfig` from ``base`` (default ``SelectConfig()``) with ``layers`` on top.

    Keys are fields (``n_steps``), dotted OPE fields (``ope.fqe_n_steps``; every
    :class:`~batchrl_mtf.ope.OPEConfig` field passes through) or ``conservativeness.<algo>``.

    Raises:
        ConfigError: An unknown key or an invalid value, naming it.
    """
    doc = (base or SelectConfig()).to_dict()
    for where, layer in layers:
        nested: dict[str, object] = {}
        for key, value in layer.items():
            head, dot, tail = key.partition(".")
            if dot and head in ("ope", "conservativeness") and "." not in tail:
                merge_layer(nested, {head: {tail: value}})
            elif dot:
                raise ConfigError(
                    f"{where}: unknown key {key!r}; dotted keys are ope.<field> or "
                    "conservativeness.<algo>"
                )
            else:
                merge_layer(nested, {key: value})
        merge_layer(doc, nested)
    try:
        return config_from_mapping(SelectConfig, doc, "select config")
    except TypeError as exc:  # a dataclass rejecting a key the mapping coercion let through
        raise ConfigError(f"select config: {exc}") from None
