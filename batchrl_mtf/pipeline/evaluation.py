"""The evaluate and export stages' work: OPE per policy, paired differences, the weight table, and
the policies' weights on a sample of states that the report plots (the report only reads files).

Policies are evaluated with :func:`batchrl_mtf.ope.paired.evaluate_each` (same config, same seed,
same sessions, so the bootstrap intervals stay paired): all in one call with the batched FQE engine
(its fits train as one ensemble), else one at a time and merged, so that a progress bar can follow
them. Differences against production use the per-session values of each estimate
(:func:`batchrl_mtf.ope.paired.bootstrap_difference`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from batchrl_mtf.core.io import atomic_write_bytes, atomic_write_text, dumps_json
from batchrl_mtf.data.transitions import Transitions
from batchrl_mtf.export import ExportConfig, export_table, quantile_edges, select_keys
from batchrl_mtf.ope.evaluate import quoted_ci
from batchrl_mtf.ope.paired import paired_difference
from batchrl_mtf.pipeline.context import (
    check_env_fits,
    fusion,
    load_trained,
    ope_config,
    production_weights,
)
from batchrl_mtf.pipeline.glue import npz_bytes, read_stage_json, rollout_arrays, truth_summary
from batchrl_mtf.policy import Policy, TablePolicy

if TYPE_CHECKING:
    from batchrl_mtf.pipeline.context import Context

__all__ = [
    "MAX_STATES",
    "save_rollouts",
    "save_weights",
    "weight_states",
    "write_export",
]

logger = logging.getLogger("batchrl_mtf.pipeline")

MAX_STATES = 5000
"""Evaluation states (a seeded sample) the report's weight distributions are computed on."""


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


def weight_states(data: Transitions) -> npt.NDArray[np.int64]:
    """Rows of ``data`` (the evaluation split) whose weights the report plots: a seeded sample of
    at most :data:`MAX_STATES`, in row order, shape (m,)."""
    idx = np.arange(len(data), dtype=np.int64)
    if len(idx) > MAX_STATES:
        rng = np.random.default_rng(0)
        idx = np.sort(rng.choice(len(idx), MAX_STATES, replace=False)).astype(np.int64)
    return idx


def save_weights(folder: Path, data: Transitions, policies: Sequence[Policy]) -> None:
    """Write ``weights.npz`` of the evaluate stage: the sampled rows (``index``, of ``data``) and
    each policy's weights there (``actions|<policy>``, shape (m, n_tasks))."""
    idx = weight_states(data)
    states = data.observations[idx]
    arrays: dict[str, np.ndarray] = {"index": idx}
    for policy in policies:
        arrays[f"actions|{policy.name}"] = np.asarray(policy.act(states), dtype=np.float64)
    atomic_write_bytes(folder / "weights.npz", npz_bytes(arrays))


def _segment_feature(
    spec: Any, states: np.ndarray, actions: np.ndarray, keys: Sequence[str]
) -> tuple[str, tuple[float, ...]]:
    """The user feature the learned weights depend on most (R² of a 3-bucket split; else the
    table's first key) and its tertile edges: how the report splits states without segments."""
    names = list(spec.feature_names)
    users = [i for i, n in enumerate(names) if n.startswith("u_")]
    feat = ""
    if users:
        picked = select_keys(
            states[:, users],
            actions,
            [names[i] for i in users],
            spec.action_low,
            spec.action_high,
            ExportConfig(n_auto_keys=1, buckets=3),
        )
        feat = picked[0][0] if picked else ""
    if not feat:
        known = [k for k in keys if k in names]
        feat = known[0] if known else names[0]
    return feat, quantile_edges(states[:, names.index(feat)], 3)


def _bucket_names(feat: str, edges: tuple[float, ...]) -> list[str]:
    b = [f"{e:.3g}" for e in edges]
    if not b:
        return [f"all {feat}"]
    return (
        [f"{feat} < {b[0]}"]
        + [f"{b[i]} ≤ {feat} < {b[i + 1]}" for i in range(len(b) - 1)]
        + [f"{feat} ≥ {b[-1]}"]
    )


def _save_table_weights(ctx: Context, folder: Path, table: TablePolicy) -> None:
    """Write ``weights.npz`` and ``weights.json`` of the export stage: the table's weights on the
    evaluate stage's sampled states, and the tertile bucket of each of those states."""
    cfg = ctx.config
    test = ctx.dataset().select(cfg.evaluate.split)
    with np.load(ctx.folder("evaluate") / "weights.npz") as z:
        idx = z["index"]
        learned = z[f"actions|{cfg.learned}"]
    states = test.observations[idx]
    spec = test.spec
    feat, edges = _segment_feature(spec, states, learned, [k.name for k in table.table.keys])  # type: ignore[attr-defined]
    col = states[:, list(spec.feature_names).index(feat)]
    arrays: dict[str, np.ndarray] = {
        f"actions|{table.name}": np.broadcast_to(
            table.act(states), (len(states), len(spec.tasks))
        ).copy(),
        "cell": np.searchsorted(np.asarray(edges), col, side="right").astype(np.int64),
    }
    atomic_write_bytes(folder / "weights.npz", npz_bytes(arrays))
    doc = {"feature": feat, "edges": list(edges), "buckets": _bucket_names(feat, edges)}
    atomic_write_text(folder / "weights.json", dumps_json(doc))


def _production_diff(per: Path, key: str, values: np.ndarray) -> dict[str, Any] | None:
    """Paired difference of ``values`` to the production entry ``key`` of the npz ``per``."""
    with np.load(per) as z:
        base = z.get(key)
        if base is None or len(base) != len(values):
            return None
        d, lo, hi = paired_difference(values, base)
    return {"diff": d, "ci": [lo, hi]}


def write_export(ctx: Context, folder: Path, algo: str) -> dict[str, Any]:
    """Tabulate the trained policy ``algo`` (:func:`batchrl_mtf.export.export_table`); measure the
    table offline and, with ``[truth]``, online.

    Writes ``weight_table.json``, ``weight_table.csv``, ``fidelity.json``, ``weights.npz`` and
    ``weights.json`` (for the report) into ``folder`` (and with ``[truth]`` ``rollouts.npz``).

    Returns:
        The stage summary.
    """
    cfg = ctx.config
    data = ctx.dataset()
    label = f"table:{algo}"
    table_cfg = cfg.export.table
    default = _table_default(ctx)
    if default is not None:
        table_cfg = dataclasses.replace(table_cfg, default=default)
    ope = None
    network_offline = None
    network_lower: float | None = None
    if cfg.export.ope:
        base = ope_config(ctx)
        est = "fqe" if "fqe" in base.estimators else base.estimators[0]
        ope = dataclasses.replace(base, estimators=(est,))
        report = read_stage_json(ctx.folder("evaluate") / "ope.json")
        net = next(p for p in report["policies"] if p["name"] == algo)["estimates"][est]
        network_offline = (est, float(net["value"]))
        network_lower = None if net.get("ci") is None else float(net["ci"][0])
    truth: dict[str, Any] = {}
    if cfg.truth is not None:
        env = cfg.truth_env
        world = ctx.world(env)
        check_env_fits(ctx, world, env)
        values = read_stage_json(ctx.folder("truth") / "values.json")
        truth = {
            "env": env,
            "world": world,
            "true_sessions": cfg.truth.sessions,
            "true_seed": cfg.truth.seed,
            "network_true": float(values["policies"][algo]["return"]["mean"]),
        }
    result = export_table(
        load_trained(ctx, algo),
        data,
        table_cfg,
        fusion(ctx),
        policy_name=str(ctx.folder(f"train:{algo}")),
        table_name=label,
        ope=ope,
        ope_split=cfg.evaluate.split,
        network_offline=network_offline,
        network_lower=network_lower,
        **truth,
    )
    table = result.table
    facts: dict[str, Any] = {"policy": algo, "table": label, "keys": list(table.key_names)}
    if result.table_offline is not None and network_offline is not None:
        est = network_offline[0]
        tab_est = result.table_offline.estimates[est]
        facts["ope_table"] = {"estimator": est, **tab_est.to_dict()}
        if ope is not None:  # the interval quoted with it, with the calibrated model error
            quoted = quoted_ci(tab_est, ope)
            facts["ope_table"]["quoted_ci"] = None if quoted is None else list(quoted)
        diff = _production_diff(
            ctx.folder("evaluate") / "per_session.npz", f"production|{est}", tab_est.per_session
        )
        if diff is not None:
            facts["ope_table_vs_production"] = {"estimator": est, **diff}
    folder.mkdir(parents=True, exist_ok=True)
    if result.table_truth is not None:
        facts["truth_table"] = truth_summary(result.table_truth)
        diff = _production_diff(
            ctx.folder("truth") / "rollouts.npz", "returns|production", result.table_truth.returns
        )
        if diff is not None:
            facts["truth_table_vs_production"] = diff
        arrays = rollout_arrays(label, result.table_truth)
        atomic_write_bytes(folder / "rollouts.npz", npz_bytes(arrays))
    result.save(folder / "weight_table.json", csv=True)
    atomic_write_text(folder / "fidelity.json", dumps_json({**facts, "fidelity": result.fidelity}))
    _save_table_weights(ctx, folder, TablePolicy(table, data.spec.feature_names, label))
    logger.info(
        "table: %d rows over keys %s; action gap (mean |dw|/range) %.4f",
        len(table.rows),
        ", ".join(table.key_names) or "(none)",
        result.gap["mean_abs_scaled"],
    )
    return {
        "rows": len(table.rows),
        "keys": list(table.key_names),
        "mean_abs_scaled": result.gap["mean_abs_scaled"],
    }
