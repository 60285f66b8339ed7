"""The evaluate and export stages' work: OPE per policy, paired differences, the weight table.

Policies are evaluated one at a time (:func:`batchrl_mtf.ope.paired.evaluate_each`: same config,
same seed, same sessions, so the bootstrap intervals stay paired). Differences against production
use the per-session values of each estimate (:func:`batchrl_mtf.ope.paired.bootstrap_difference`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from batchrl_mtf.core.io import atomic_write_bytes, atomic_write_text, dumps_json
from batchrl_mtf.export import ValueComparison, fidelity_report, tabulate_policy, tabulation_gap
from batchrl_mtf.ope import evaluate_policies
from batchrl_mtf.ope.paired import paired_difference
from batchrl_mtf.pipeline.context import (
    check_env_fits,
    fusion,
    load_trained,
    ope_config,
    production_weights,
)
from batchrl_mtf.pipeline.glue import NamedPolicy, npz_bytes, rollout
from batchrl_mtf.policy.base import TablePolicy
from batchrl_mtf.resolve import resolve_sim_policy

if TYPE_CHECKING:
    from batchrl_mtf.pipeline.context import Context

__all__ = ["export_table", "save_rollouts"]

logger = logging.getLogger("batchrl_mtf.pipeline")


def save_rollouts(folder: Path, doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write ``values.json`` and ``rollouts.npz`` of the truth stage."""

    atomic_write_bytes(folder / "rollouts.npz", npz_bytes(arrays))
    atomic_write_text(folder / "values.json", dumps_json(doc))


def _table_default(ctx: Context) -> tuple[float, ...] | None:
    """The table's default weights: ``[export] default``, else production when simulated."""

    cfg = ctx.config
    if cfg.export.table.default is not None:
        return None  # ExportConfig already holds it
    if cfg.data.simulate is None:
        return None  # build_weight_table takes the logged actions' centre
    weights, _ = production_weights(ctx)
    return weights


def export_table(ctx: Context, folder: Path, algo: str) -> dict[str, Any]:
    """Tabulate the trained policy ``algo``; measure the table offline and, with ``[truth]``, online.

    Writes ``weight_table.json``, ``weight_table.csv`` and ``fidelity.json`` (and with ``[truth]``
    ``rollouts.npz``) into ``folder``.

    Returns:
        The stage summary.
    """
    import json

    cfg = ctx.config
    data = ctx.dataset()
    spec = data.spec
    names = tuple(spec.feature_names)
    network = load_trained(ctx, algo)
    obs = data.observations
    table_cfg = cfg.export.table
    default = _table_default(ctx)
    if default is not None:
        table_cfg = dataclasses.replace(table_cfg, default=default)
    table, actions = tabulate_policy(
        network, data, table_cfg, fusion(ctx), str(ctx.folder(f"train:{algo}"))
    )
    label = f"table:{algo}"
    table_policy = NamedPolicy(TablePolicy(table, names, name=label), label)
    table_actions = table_policy.act(obs)
    gap = tabulation_gap(actions, table_actions, spec.tasks, spec.action_low, spec.action_high)
    facts: dict[str, Any] = {"policy": algo, "table": label, "keys": list(table.key_names)}

    ope_cmp = None
    if cfg.export.ope:
        ope = ope_config(ctx)
        est = "fqe" if "fqe" in ope.estimators else ope.estimators[0]
        res = evaluate_policies(
            data.select(cfg.evaluate.split),
            [table_policy],
            dataclasses.replace(ope, estimators=(est,)),
        )
        tab_est = res.policies[0].estimates[est]
        report = json.loads((ctx.folder("evaluate") / "ope.json").read_text(encoding="utf-8"))
        net = next(p for p in report["policies"] if p["name"] == algo)["estimates"][est]
        ope_cmp = ValueComparison(
            f"ope:{est}",
            float(net["value"]),
            float(tab_est.value),
            network_lower=None if net.get("ci") is None else float(net["ci"][0]),
            table_lower=None if tab_est.ci is None else float(tab_est.ci[0]),
        )
        facts["ope_table"] = {
            "estimator": est,
            **tab_est.to_dict(),
        }
        per = ctx.folder("evaluate") / "per_session.npz"
        with np.load(per) as z:
            base = z.get(f"production|{est}")
            if base is not None and len(base) == len(tab_est.per_session):
                d, lo, hi = paired_difference(tab_est.per_session, base)
                facts["ope_table_vs_production"] = {"estimator": est, "diff": d, "ci": [lo, hi]}

    true_cmp = None
    if cfg.truth is not None:
        env = cfg.truth_env
        world = ctx.world(env)
        check_env_fits(ctx, world, env)
        values = json.loads((ctx.folder("truth") / "values.json").read_text(encoding="utf-8"))
        res_t = rollout(
            world, resolve_sim_policy(world, table_policy), cfg.truth.sessions, cfg.truth.seed
        )
        net_true = values["policies"][algo]["return"]["mean"]
        table_true = res_t.summary["return"]["mean"]  # type: ignore[index]
        true_cmp = ValueComparison(f"env:{env}", float(net_true), float(table_true))
        facts["truth_table"] = res_t.summary
        with np.load(ctx.folder("truth") / "rollouts.npz") as z:
            if "returns|production" in z.files:
                d, lo, hi = paired_difference(res_t.returns, z["returns|production"])
                facts["truth_table_vs_production"] = {"diff": d, "ci": [lo, hi]}
        arrays: dict[str, np.ndarray] = {
            f"returns|{label}": res_t.returns,
            f"segment|{label}": res_t.segment,
        }
        for seg, sample in res_t.samples.items():
            arrays[f"weights|{seg}|{label}"] = sample

        atomic_write_bytes(folder / "rollouts.npz", npz_bytes(arrays))

    fid = fidelity_report(gap, ope_cmp, true_cmp)
    meta = {**table.meta, "fidelity": fid, "ope": None if ope_cmp is None else ope_cmp.to_dict()}
    table = dataclasses.replace(table, meta=meta)
    folder.mkdir(parents=True, exist_ok=True)
    table.save(folder / "weight_table.json")
    table.save_csv(folder / "weight_table.csv")
    atomic_write_text(folder / "fidelity.json", dumps_json({**facts, "fidelity": fid}))
    logger.info(
        "table: %d rows over keys %s; action gap (mean |dw|/range) %.4f",
        len(table.rows),
        ", ".join(table.key_names) or "(none)",
        gap["mean_abs_scaled"],
    )
    return {
        "rows": len(table.rows),
        "keys": list(table.key_names),
        "mean_abs_scaled": gap["mean_abs_scaled"],
    }
