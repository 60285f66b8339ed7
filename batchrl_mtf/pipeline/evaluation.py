"""The evaluate and export stages' work: OPE per policy, paired differences, the weight table.

Policies are evaluated with :func:`batchrl_mtf.ope.evaluate_policies` (same config, same seed,
same sessions, so the bootstrap intervals stay paired): all in one call with the batched FQE engine
(its fits train as one ensemble), else one at a time and merged, so that a progress bar can follow
them. Differences against production use the per-session values of
each estimate (:func:`batchrl_mtf.pipeline.glue.bootstrap_difference`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from batchrl_mtf.io import atomic_write_bytes, atomic_write_text, dumps_json

if TYPE_CHECKING:
    from batchrl_mtf.pipeline.stages import Context

__all__ = ["evaluate_each", "export_table", "paired_vs", "save_rollouts"]

logger = logging.getLogger("batchrl_mtf.pipeline")


def evaluate_each(
    data: Any, policies: Sequence[Any], config: Any, progress: bool
) -> tuple[Any, dict[str, np.ndarray]]:
    """Evaluate ``policies`` (together with the batched FQE engine, else one by one) and merge.

    Returns:
        The merged ``OPEResult`` and the per-session values keyed ``"<policy>|<estimator>"``.
    """
    from tqdm.auto import tqdm

    from batchrl_mtf.ope import OPEResult, evaluate_policies

    per_session: dict[str, np.ndarray] = {}
    if config.fqe_engine == "batched":
        parts = [evaluate_policies(data, list(policies), config)]
    else:
        bar = tqdm(policies, desc="evaluate", unit="policy", disable=not progress, leave=False)
        parts = [evaluate_policies(data, [policy], config) for policy in bar]
    for res in parts:
        for p in res.policies:
            for est_name, est in p.estimates.items():
                per_session[f"{p.name}|{est_name}"] = np.asarray(est.per_session, dtype=np.float64)
            if p.recommended is not None:
                logger.info("%s: %s = %.4g", p.name, p.recommended.estimator, p.recommended.value)
    results = tuple(p for r in parts for p in r.policies)
    ranked = sorted(
        results, key=lambda r: -(r.recommended.value if r.recommended is not None else -math.inf)
    )
    first = parts[0]
    merged = OPEResult(
        gamma=first.gamma,
        n_sessions=first.n_sessions,
        n_requests=first.n_requests,
        estimators=first.estimators,
        policies=results,
        ranking=tuple(r.name for r in ranked),
        bandwidth=next((r.bandwidth for r in parts if r.bandwidth is not None), None),
        config=first.config,
    )
    return merged, per_session


def common_estimator(p: Any, base: Any, n_sessions: int, config: Any) -> str | None:
    """The first estimator of ``config.recommend_order`` valid for both policies.

    Valid: eligible for both under the guards of the recommended-estimate rule
    (:func:`batchrl_mtf.ope.evaluate.eligible`: finite, the ESS floor for pure importance
    sampling, the interval-width guard for doubly robust estimators), so a difference never mixes
    a trusted and an untrusted value.
    """
    from batchrl_mtf.ope.evaluate import eligible

    for name in config.recommend_order:
        if all(eligible(name, e.estimates, n_sessions, config) for e in (p, base)):
            return str(name)
    return p.recommended.estimator if p.recommended is not None else None


def paired_vs(
    per_session: dict[str, np.ndarray], base: str, result: Any, config: Any
) -> dict[str, dict[str, Any]]:
    """Per policy: the difference to ``base`` with a paired 95% interval, for every estimator,
    and the estimator to quote (:func:`common_estimator`)."""
    from batchrl_mtf.pipeline.glue import bootstrap_difference

    ref = next(p for p in result.policies if p.name == base)
    out: dict[str, dict[str, Any]] = {}
    for p in result.policies:
        if p.name == base:
            continue
        diffs: dict[str, dict[str, object]] = {}
        for est in p.estimates:
            a, b = per_session.get(f"{p.name}|{est}"), per_session.get(f"{base}|{est}")
            if a is None or b is None or len(a) != len(b):
                continue
            d, lo, hi = bootstrap_difference(a, b, config.n_bootstrap, config.ci_level, config.seed)
            diffs[est] = {"diff": d, "ci": [lo, hi]}
        out[p.name] = {
            "estimator": common_estimator(p, ref, result.n_sessions, config),
            "by_estimator": diffs,
        }
    return out


def save_rollouts(folder: Path, doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write ``values.json`` and ``rollouts.npz`` of the truth stage."""
    from batchrl_mtf.pipeline.glue import npz_bytes

    atomic_write_bytes(folder / "rollouts.npz", npz_bytes(arrays))
    atomic_write_text(folder / "values.json", dumps_json(doc))


def _table_default(ctx: Context) -> tuple[float, ...] | None:
    """The table's default weights: ``[export] default``, else production when simulated."""
    from batchrl_mtf.pipeline.stages import production_weights

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

    from batchrl_mtf.export import (
        ValueComparison,
        fidelity_report,
        tabulate_policy,
        tabulation_gap,
    )
    from batchrl_mtf.pipeline.glue import NamedPolicy, paired_difference, rollout, sim_policy
    from batchrl_mtf.pipeline.stages import check_env_fits, fusion, load_trained, ope_config
    from batchrl_mtf.policy import TablePolicy

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
        from batchrl_mtf.ope import evaluate_policies

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
        ope_cmp = ValueComparison(f"ope:{est}", float(net["value"]), float(tab_est.value))
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
        res_t = rollout(world, sim_policy(world, table_policy), cfg.truth.sessions, cfg.truth.seed)
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
        from batchrl_mtf.pipeline.glue import npz_bytes

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
