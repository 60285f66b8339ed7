"""The weight-table export workflow: tabulate a policy, measure the table, return everything.

:func:`export_table` is the one implementation behind ``batchrl-mtf export --format table`` and the
pipeline's export stage. It tabulates the policy over the dataset's states
(:func:`~batchrl_mtf.export.builder.tabulate_policy`), measures how far the table is from the
policy (the action gap on every state), and optionally how much value the tabulation costs:

* offline, with :func:`batchrl_mtf.ope.evaluate_policies` on the held-out sessions (the recommended
  estimate of the policy and of its table);
* in a simulated world, with :func:`batchrl_mtf.sim.true_value` (the true value of both).

The values go into the table's ``meta.fidelity`` (``docs/weight-table.md``); the caller decides
where the table is written (:meth:`ExportResult.save`) and what is printed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from batchrl_mtf.core.fusion import Fusion
from batchrl_mtf.data.spec import DatasetSpec
from batchrl_mtf.data.transitions import Transitions
from batchrl_mtf.errors import OPEInputError
from batchrl_mtf.export.builder import (
    ExportConfig,
    ValueComparison,
    fidelity_report,
    tabulate_policy,
    tabulation_gap,
)
from batchrl_mtf.ope import OPEConfig, PolicyResult, Recommended, evaluate_policies
from batchrl_mtf.policy import Policy, TablePolicy
from batchrl_mtf.serving import WeightTable
from batchrl_mtf.sim import TrueValue, World, true_value

__all__ = ["TRUE_SESSIONS", "ExportResult", "export_table", "offline_config"]

TRUE_SESSIONS = 4000
"""Fresh simulated sessions per true value (``export --env``), as ``batchrl-mtf rollout``."""


def offline_config(
    spec: DatasetSpec,
    fqe_steps: int = 5000,
    fqe_fits: int = 3,
    seed: int = 0,
    fqe_engine: str | None = None,
    model_error: float | None = None,
    kernel_boundary: str | None = None,
) -> OPEConfig:
    """The OPE settings of an export's offline values.

    The recommended estimate over ``fqe`` and, when the logs carry ``behavior_logp``, ``dr`` and
    ``wdr`` (``cfqe`` is a lower bound and pure importance sampling is rarely usable with
    continuous weights, so neither is fitted here; ``batchrl-mtf evaluate`` runs them all).

    Args:
        spec: The dataset's spec (``has_behavior_logp``).
        fqe_steps: Gradient steps per FQE fit.
        fqe_fits: Independent FQE fits averaged per estimate.
        seed: Seed of the fits and the bootstrap.
        fqe_engine: ``"batched"`` or ``"d3rlpy"`` (``None``: :class:`OPEConfig`'s default).
        model_error: Relative model error of the quoted intervals (``None``: :class:`OPEConfig`'s
            default).
        kernel_boundary: The importance ratios' kernel at the action box's edge (``None``:
            :class:`OPEConfig`'s default).
    """
    config = OPEConfig(
        estimators=("dr", "wdr", "fqe") if spec.has_behavior_logp else ("fqe",),
        fqe_n_steps=fqe_steps,
        fqe_n_fits=fqe_fits,
        seed=seed,
    )
    if model_error is not None:
        config = dataclasses.replace(config, model_error=model_error)
    if kernel_boundary is not None:
        config = dataclasses.replace(config, kernel_boundary=kernel_boundary)
    return config if fqe_engine is None else dataclasses.replace(config, fqe_engine=fqe_engine)


@dataclass(frozen=True)
class ExportResult:
    """A policy's weight table and how faithful it is.

    Attributes:
        table: The table, with ``meta.fidelity`` and ``meta.ope`` filled in.
        csv: The table's CSV twin (``WeightTable.to_csv``).
        gap: Action gap between table and policy on every dataset state
            (:func:`~batchrl_mtf.export.builder.tabulation_gap`).
        ope: Offline values of the policy and the table (``None``: not measured).
        true: True values of the policy and the table in the simulated world (``None``: no world).
        table_offline: The table's estimates, with per-session values (``None``: not measured).
        table_truth: The table's true value, with per-session returns (``None``: no world).
    """

    table: WeightTable
    csv: str = field(repr=False)
    gap: dict[str, Any]
    ope: ValueComparison | None = None
    true: ValueComparison | None = None
    table_offline: PolicyResult | None = field(default=None, repr=False)
    table_truth: TrueValue | None = field(default=None, repr=False)

    @property
    def fidelity(self) -> dict[str, object]:
        """The ``meta.fidelity`` block: action gap, offline and true values."""
        return fidelity_report(self.gap, self.ope, self.true)

    def save(self, path: str | Path, csv: bool = True) -> tuple[Path, ...]:
        """Write the table to ``path`` (JSON) and, with ``csv``, its CSV twin beside it.

        Returns:
            The files written (the JSON first).
        """
        target = Path(path)
        written = [self.table.save(target)]
        if csv:
            written.append(self.table.save_csv(target.with_suffix(".csv")))
        return tuple(written)


def _offline_values(
    policy: Policy,
    table_policy: TablePolicy,
    data: Transitions,
    ope: OPEConfig,
    split: str | None,
    network_offline: tuple[str, float] | None,
    network_lower: float | None,
) -> tuple[ValueComparison, PolicyResult]:
    """The recommended offline estimates of ``policy`` and its table on the held-out sessions."""
    if split is None:
        split = "test" if bool(np.any(data.split == "test")) else None
    sessions = data if split is None else data.select(split)
    evaluated = [table_policy] if network_offline is not None else [policy, table_policy]
    result = evaluate_policies(sessions, evaluated, ope)
    recommended: list[Recommended] = []
    for r in result.policies:
        if r.recommended is None:
            raise OPEInputError(f"policy {r.name!r}: no estimator gave a finite value")
        recommended.append(r.recommended)
    if network_offline is None:
        network_offline = (recommended[0].estimator, float(recommended[0].value))
        network_lower = recommended[0].lower
    est, net_value = network_offline
    cmp = ValueComparison(
        f"ope:{est}",
        float(net_value),
        float(recommended[-1].value),
        network_lower=network_lower,
        table_lower=recommended[-1].lower,
    )
    return cmp, result.policies[-1]


def export_table(
    policy: Policy,
    data: Transitions,
    config: ExportConfig,
    fusion: Fusion,
    *,
    policy_name: str | None = None,
    table_name: str = "table",
    ope: OPEConfig | None = None,
    ope_split: str | None = None,
    network_offline: tuple[str, float] | None = None,
    network_lower: float | None = None,
    env: str | None = None,
    world: World | None = None,
    true_sessions: int = TRUE_SESSIONS,
    true_seed: int | None = None,
    network_true: float | None = None,
) -> ExportResult:
    """Tabulate ``policy`` over ``data``'s states and measure the table against it.

    Args:
        policy: The policy to tabulate (a trained network, or any :class:`Policy`).
        data: The dataset whose states are bucketed (all of them) and whose held-out sessions
            give the offline values.
        config: How to bucket and shrink (:class:`~batchrl_mtf.export.builder.ExportConfig`).
        fusion: The fusion the weights are for.
        policy_name: Recorded as ``meta.policy`` (default: the policy's name).
        table_name: The table's name in the offline evaluation (distinct from the policy's).
        ope: Offline values with these settings (``None``: none; :func:`offline_config` gives the
            command's). Each value is the recommended estimate.
        ope_split: Sessions of the offline values (``None``: ``test`` when the dataset has it,
            else every session).
        network_offline: ``(estimator, value)`` of the policy when already estimated with ``ope``
            on the same sessions (the pipeline's evaluate stage): it is not estimated again.
        network_lower: The lower end of that estimate's interval (quoted next to it in
            ``meta.ope``); with ``network_offline`` ``None`` it comes from the fit here.
        env: A simulated world (platform spec path or shipped name): also the true values of the
            policy and its table (``None``: none).
        world: The world of ``env`` when already built.
        true_sessions: Fresh sessions per true value.
        true_seed: Their seed (``None``: ``config.seed``); the same users for both policies.
        network_true: The policy's true value when already measured with these sessions.

    Returns:
        The table (not written) with its fidelity.

    Raises:
        ExportError: Bad keys, edges or defaults for this dataset.
        OPEInputError: No offline estimate is finite.
        PolicyError: The world does not fit the dataset's tasks or the table's fusion.
    """
    spec = data.spec
    names = tuple(spec.feature_names)
    name = policy.name if policy_name is None else policy_name
    table, actions = tabulate_policy(policy, data, config, fusion, name)
    table_policy = TablePolicy(table, names, name=table_name)
    gap = tabulation_gap(
        actions, table_policy.act(data.observations), spec.tasks, spec.action_low, spec.action_high
    )
    # the world first: a world that does not fit fails before the offline fits
    true_cmp: ValueComparison | None = None
    table_truth: TrueValue | None = None
    if env is not None:
        where: World | str = world if world is not None else env
        seed = config.seed if true_seed is None else true_seed
        table_truth = true_value(where, table_policy, true_sessions, seed)
        if network_true is None:
            network_true = true_value(where, policy, true_sessions, seed).mean
        true_cmp = ValueComparison(f"env:{env}", float(network_true), table_truth.mean)
    ope_cmp: ValueComparison | None = None
    table_offline: PolicyResult | None = None
    if ope is not None:
        ope_cmp, table_offline = _offline_values(
            policy, table_policy, data, ope, ope_split, network_offline, network_lower
        )
    fid = fidelity_report(gap, ope_cmp, true_cmp)
    meta = {**table.meta, "fidelity": fid, "ope": None if ope_cmp is None else ope_cmp.to_dict()}
    table = dataclasses.replace(table, meta=meta)
    return ExportResult(
        table=table,
        csv=table.to_csv(),
        gap=dict(gap),
        ope=ope_cmp,
        true=true_cmp,
        table_offline=table_offline,
        table_truth=table_truth,
    )
