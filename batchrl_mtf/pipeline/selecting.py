"""The select stage's work: off-policy selection among the pipeline's trained policies.

``OUT/select/`` is what ``batchrl-mtf select`` writes (``table.json``, ``selection.json``,
``selection.md``, ``candidates/``; the ``batchrl-mtf/selection@1`` contract of
``docs/selection.md``), with the ``[train]`` algorithms as the candidates
(:func:`batchrl_mtf.selection.select_among`: each one's table at every trust-region step, and
production, judged on the held-out ``test`` split with the ``[evaluate]`` OPE settings). With
``[truth]`` the stage also rolls the chosen table out in the simulator on the truth stage's
sessions and writes ``truth.json``: its true value, its paired true difference to production, and
whether the offline lower bound was below the truth (what ``bench/zoo.py`` checks across worlds).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from batchrl_mtf.core.io import atomic_write_text, dumps_json
from batchrl_mtf.errors import ConfigError
from batchrl_mtf.ope.paired import paired_difference
from batchrl_mtf.pipeline.context import (
    check_env_fits,
    fusion,
    load_trained,
    ope_config,
    production_weights,
)
from batchrl_mtf.pipeline.glue import (
    load_npz,
    read_stage_json,
    stage_json_or_none,
    truth_summary,
)
from batchrl_mtf.policy import TablePolicy
from batchrl_mtf.resolve import resolve_sim_policy
from batchrl_mtf.selection import PRODUCTION, select_among
from batchrl_mtf.selection.rule import ranked_gain
from batchrl_mtf.sim import true_value

if TYPE_CHECKING:
    from batchrl_mtf.pipeline.context import Context

__all__ = ["OUTPUTS", "run_selection", "selection_lines"]

logger = logging.getLogger("batchrl_mtf.pipeline")

OUTPUTS = ("table.json", "selection.json", "selection.md")
"""Files of the select stage that must exist for its cache to be used."""


def run_selection(ctx: Context, folder: Path) -> dict[str, Any]:
    """Select among the trained policies' tables into ``folder``; with ``[truth]`` value the
    chosen table in the simulator (``truth.json``).

    Returns:
        The stage summary (chosen candidate, reason, and its true difference to production).

    Raises:
        ConfigError: The dataset has no ``test`` split to judge the candidates on.
    """
    cfg = ctx.config
    assert cfg.select is not None  # the stage is planned only with [select] enabled
    data = ctx.dataset()
    if not bool(np.any(data.split == "test")):
        raise ConfigError(
            f"{cfg.source} [select]: the dataset has no test split to judge the candidates on; "
            "set [data] test_fraction > 0, or [select] enabled = false"
        )
    config = dataclasses.replace(cfg.select, ope=ope_config(ctx))
    prod, _ = production_weights(ctx)
    policies = [(a, load_trained(ctx, a)) for a in cfg.train.algos]
    result = select_among(data, policies, folder, config, fusion=fusion(ctx), production=prod)
    chosen = result.chosen
    summary: dict[str, Any] = {"chosen": chosen.name, "reason": result.choice.reason}
    logger.info("select: %s (%s)", chosen.name, result.choice.reason)
    if cfg.truth is None:
        return summary
    env = cfg.truth_env
    world = ctx.world(env)
    check_env_fits(ctx, world, env)
    prod_returns = load_npz(ctx.folder("truth") / "rollouts.npz").get("returns|production")
    if chosen.name == PRODUCTION and prod_returns is not None:
        returns = prod_returns
        value: dict[str, Any] = _values(ctx, "production")
    else:
        table = TablePolicy(chosen.table, data.spec.feature_names, name=chosen.name)
        res = true_value(
            world, resolve_sim_policy(world, table), cfg.truth.sessions, cfg.truth.seed
        )
        returns = res.returns
        value = truth_summary(res)
    doc: dict[str, Any] = {
        "env": env,
        "sessions": cfg.truth.sessions,
        "seed": cfg.truth.seed,
        "chosen": chosen.name,
        "true": value,
    }
    est = chosen.estimate or {}
    if est.get("lower") is not None:
        doc["lower_below_truth"] = bool(est["lower"] <= value["return"]["mean"])
    if prod_returns is not None and len(prod_returns) == len(returns):
        d, lo, hi = paired_difference(np.asarray(returns), prod_returns)
        doc["vs_production"] = {"diff": d, "ci": [lo, hi]}
        summary["true_vs_production"] = doc["vs_production"]
        gain = ranked_gain(chosen.rule_gain, config.bound) or {}
        if gain.get("lower") is not None:
            doc["gain_lower_below_true_gain"] = bool(gain["lower"] <= d)
    atomic_write_text(folder / "truth.json", dumps_json(doc))
    return summary


def _values(ctx: Context, name: str) -> dict[str, Any]:
    doc = read_stage_json(ctx.folder("truth") / "values.json")
    entry = dict(doc["policies"][name])
    entry.pop("key", None)
    return entry


def _fmt(x: Any) -> str:
    return "–" if x is None else f"{float(x):+.3g}"


def selection_lines(ctx: Context) -> list[str]:
    """The report's lines about the selection (empty without a select stage)."""
    if ctx.config.select is None:
        return []
    folder = ctx.folder("select")
    doc = stage_json_or_none(folder / "selection.json")
    if doc is None:
        return []
    ch = doc["chosen"]
    over = "the logging policy" if ch.get("baseline_gain") else "production"
    bound = (doc.get("config") or {}).get("bound", "recommended")
    gain = ranked_gain(ch.get("baseline_gain") or ch.get("gain"), bound) or {}
    lines = [
        f"**Selection** (`{folder / 'table.json'}`): `{ch['name']}`, because {ch['reason']}. "
        + (
            f"Its estimated gain over {over} is {_fmt(gain.get('gain'))}, lower bound "
            f"{_fmt(gain.get('lower'))} ({gain.get('estimator')}, paired 95% interval)."
            if gain
            else "Production is kept: no candidate's lower bound of its gain is above zero."
        )
    ]
    truth = stage_json_or_none(folder / "truth.json")
    if truth is not None and "vs_production" in truth:
        vs = truth["vs_production"]
        lo, hi = vs["ci"]
        word = "beats" if lo > 0 else ("does worse than" if hi < 0 else "does not beat")
        checks = []
        if "lower_below_truth" in truth:
            checks.append(
                "the lower bound of its value was "
                + ("below its true value" if truth["lower_below_truth"] else "ABOVE its true value")
            )
        if "gain_lower_below_true_gain" in truth:
            checks.append(
                "the lower bound of its gain was "
                + (
                    "below the true gain"
                    if truth["gain_lower_below_true_gain"]
                    else "ABOVE the true gain (the gain was overstated)"
                )
            )
        lines.append(
            f"In the simulator the selected table **{word} production**: true difference "
            f"{vs['diff']:+.3g} [{lo:+.3g}, {hi:+.3g}]"
            + ("; " + "; ".join(checks) if checks else "")
            + "."
        )
    return lines
