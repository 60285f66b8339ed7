"""Choose FQE's step budget on tuning worlds: every candidate table of ``select``, re-estimated.

``bench/zoo.py --select-only`` leaves, per world, ``select``'s candidate tables
(``W/select/candidates/*.json``) and each table's true value (``stages.json``,
``candidate-truth``). This script estimates those tables again on the same held-out sessions
with variants of the OPE settings (``--variant NAME=JSON``, fields of
:class:`batchrl_mtf.ope.OPEConfig` over ``select``'s :data:`DEFAULT_SELECT_OPE`, or over
``evaluate``'s defaults for a variant named ``evaluate*``) and scores each
variant against the truth: per world the Spearman correlation of the recommended estimate with
the truth over the tables, the median relative error of the values, the error of the paired
gains over production, the coverage of the 95% intervals, and the wall time of the evaluation.
Run it on tuning worlds only (``docs/zoo.md``, the halves).

Usage::

    python bench/zoo.py --worlds h01,h02 --select-only --jobs 2 --work runs/zooh
    python bench/fqe_budget.py runs/zooh --variant 'long={"fqe_n_steps": 20000}' \\
        --variant 'evaluate={}' --json runs/zooh/fqe_budget.json
    python bench/fqe_budget.py --summarise runs/zooh/fqe_budget.json [more.json ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from zoo import ope_policies, rollout  # noqa: E402

from batchrl_mtf.data.formats import load_dataset  # noqa: E402
from batchrl_mtf.ope import Estimate, OPEConfig, evaluate_policies, quoted_ci  # noqa: E402
from batchrl_mtf.ope.paired import paired_vs, per_session_values  # noqa: E402
from batchrl_mtf.resolve import resolve_ope_policy  # noqa: E402
from batchrl_mtf.selection.config import DEFAULT_SELECT_OPE  # noqa: E402
from batchrl_mtf.sim.zoo import get_world  # noqa: E402
from batchrl_mtf.sim.zoo_truth import TruthConfig  # noqa: E402

PRODUCTION = "production"


def world_tables(wdir: Path) -> tuple[list[str], dict[str, float]]:
    """The candidate tables ``select`` estimated in ``wdir`` and their true values."""
    stages = json.loads((wdir / "stages.json").read_text())
    cand = stages["candidate-truth"]["result"]
    truth = {PRODUCTION: stages["truth"]["result"]["production"]["mean"]}
    truth.update({k: v["mean"] for k, v in cand.items()})
    names = [PRODUCTION, *sorted(k for k in cand if k != PRODUCTION)]
    return names, truth


def bench_constants(wdir: Path, log: Path) -> tuple[dict[str, str], dict[str, float]]:
    """The constant policies ``bench/zoo.py`` values offline besides the tables (best constant,
    box centre, half-way, two perturbations of production) and their true values (rolled out as
    ``bench/zoo.py`` does, cached in ``W/true_<name>.json``)."""
    stages = json.loads((wdir / "stages.json").read_text())
    truth = stages["truth"]["result"]
    zw = get_world(wdir.name)
    pols = ope_policies(zw, truth, wdir)
    keep = {k: v for k, v in pols.items() if v.startswith("constant:") and k != PRODUCTION}
    tcfg = TruthConfig()
    values = {
        k: rollout(
            wdir / "spec.toml", v, tcfg.eval_sessions, tcfg.eval_seed, wdir / f"true_{k}.json", log
        )["mean"]
        for k, v in keep.items()
    }
    return keep, values


def estimate_world(wdir: Path, overrides: dict[str, Any], base: OPEConfig) -> dict[str, Any]:
    """Every candidate of one world (and the bench's constant policies) estimated with ``base``
    plus ``overrides``."""
    names, truth = world_tables(wdir)
    consts, const_truth = bench_constants(wdir, wdir / "commands.log")
    truth.update(const_truth)
    full = load_dataset(wdir / "ds")
    data = full.select("test")
    spec = full.spec
    config = dataclasses.replace(base, **overrides)
    tables = [str(wdir / "select" / "candidates" / f"{n}.json") for n in names]
    tables += list(consts.values())
    names = names + list(consts)
    policies = [resolve_ope_policy(t, spec.tasks, spec.feature_names) for t in tables]
    t0 = time.perf_counter()
    result = evaluate_policies(data, policies, config)
    seconds = time.perf_counter() - t0
    by_path = dict(zip(tables, names, strict=True))
    renamed = dataclasses.replace(
        result,
        policies=tuple(dataclasses.replace(p, name=by_path[p.name]) for p in result.policies),
    )
    per_session = per_session_values(renamed)
    gains = paired_vs(per_session, PRODUCTION, renamed, config)
    rows = []
    for p in renamed.policies:
        rec = p.recommended
        g = gains.get(p.name)
        est = g["estimator"] if g else (rec.estimator if rec else None)
        d = g["by_estimator"].get(est) if g and est else None
        rows.append(
            {
                "name": p.name,
                "truth": truth[p.name],
                "estimator": rec.estimator if rec else None,
                "value": rec.value if rec else math.nan,
                # the estimator's own interval (before any model error: the summary sizes it)
                "ci": list(rec.sampling_ci) if rec and rec.sampling_ci else None,
                "by_estimator": {k: v.value for k, v in p.estimates.items()},
                "gain": None if d is None else d["diff"],
                "gain_ci": None if d is None else d["ci"],
                "true_gain": truth[p.name] - truth[PRODUCTION],
                "steps": p.fqe_steps,
            }
        )
    return {"world": wdir.name, "seconds": seconds, "rows": rows}


def score(world: dict[str, Any]) -> dict[str, float]:
    """Accuracy figures of one world's estimates against the truth."""
    rows = world["rows"]
    v = np.array([r["value"] for r in rows])
    t = np.array([r["truth"] for r in rows])
    cover = [r["ci"] is not None and r["ci"][0] <= r["truth"] <= r["ci"][1] for r in rows]
    g = [r for r in rows if r["gain"] is not None]
    gerr = [r["gain"] - r["true_gain"] for r in g]
    gcover = [r["gain_ci"][0] <= r["true_gain"] <= r["gain_ci"][1] for r in g]
    rho = spearmanr(v, t).statistic if len(set(t.round(6))) > 1 else math.nan
    return {
        "spearman": float(rho),
        "med_abs_rel_err": float(np.median(np.abs(v - t) / np.abs(t))),
        "coverage": float(np.mean(cover)),
        "gain_err_median": float(np.median(gerr)) if gerr else math.nan,
        "gain_abs_err_median": float(np.median(np.abs(gerr))) if gerr else math.nan,
        "gain_true_share": float(
            np.median([r["gain"] / r["true_gain"] for r in g if abs(r["true_gain"]) > 1e-9])
        )
        if g
        else math.nan,
        "gain_coverage": float(np.mean(gcover)) if gcover else math.nan,
        "seconds": world["seconds"],
    }


def _widened(r: dict[str, Any], config: OPEConfig) -> tuple[float, float]:
    """``r``'s recommended interval widened by ``config``'s relative model error
    (:func:`batchrl_mtf.ope.quoted_ci`)."""
    est = Estimate("x", r["value"], (r["ci"][0], r["ci"][1]), None, np.zeros(1), 1)
    return quoted_ci(est, config) or (math.nan, math.nan)


def _covers(rows: list[dict[str, Any]], kappa: float) -> tuple[float, float]:
    """Share of ``rows`` whose interval widened by the relative model error ``kappa`` covers the
    truth, and whose lower end is at or below it."""
    config = OPEConfig(model_error=kappa)  # one config per kappa, not one per row
    ok = [r for r in rows if r["ci"] is not None and math.isfinite(r["value"])]
    ends = [(_widened(r, config), r["truth"]) for r in ok]
    cover = [lo <= t <= hi for (lo, hi), t in ends]
    below = [lo <= t for (lo, _), t in ends]
    return float(np.mean(cover)), float(np.mean(below))


def model_error_for(rows: list[dict[str, Any]], target: float, one_sided: bool = False) -> float:
    """The smallest relative model error (grid of 0.005) whose widened recommended intervals
    cover the truth (``one_sided``: whose lower ends are at or below it) in at least ``target``
    of ``rows``."""
    for kappa in np.arange(0.0, 1.0001, 0.005):
        if _covers(rows, float(kappa))[1 if one_sided else 0] >= target:
            return float(kappa)
    return math.inf


KAPPAS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
"""Relative model errors whose coverage the summary prints."""


def summarise(out: dict[str, Any]) -> None:
    """Print the per-variant medians and the model error each coverage target needs."""
    print(
        f"\n{'variant':10} {'worlds':>6} {'pairs':>5} {'spearman':>8} {'rel err':>7} "
        f"{'|gain err|':>10} {'gain share':>10} {'seconds':>7}   (medians over worlds; "
        "seconds summed)"
    )
    for vname, res in out.items():
        ss = [score(w) for w in res["worlds"].values()]
        med = {k: float(np.nanmedian([s[k] for s in ss])) for k in ss[0]}
        n = sum(len(w["rows"]) for w in res["worlds"].values())
        print(
            f"{vname:10} {len(ss):6d} {n:5d} {med['spearman']:8.2f} "
            f"{med['med_abs_rel_err']:7.3f} {med['gain_abs_err_median']:10.2f} "
            f"{med['gain_true_share']:10.2f} {sum(s['seconds'] for s in ss):7.0f}"
        )
    print(
        "\ncoverage / lower end <= truth of the recommended 95% intervals widened by the "
        "relative model error kappa (OPEConfig.model_error), over every (world, policy) pair:"
    )
    print(f"{'variant':10} " + " ".join(f"{'k=' + format(k, 'g'):>11}" for k in KAPPAS))
    for vname, res in out.items():
        rows = [r for w in res["worlds"].values() for r in w["rows"]]
        cells = [_covers(rows, k) for k in KAPPAS]
        print(f"{vname:10} " + " ".join(f"{c:.2f} / {b:.2f}".rjust(11) for c, b in cells))
    print("\nsmallest kappa for a target (grid 0.005):")
    for vname, res in out.items():
        rows = [r for w in res["worlds"].values() for r in w["rows"]]
        cells = []
        for target, one in ((0.8, False), (0.9, False), (0.9, True), (0.95, True)):
            k = model_error_for(rows, target, one)
            what = "lower <= truth" if one else "coverage"
            cells.append(f"{what} {target:.0%}: {k:.3f}")
        print(f"{vname:10} " + "; ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "work", type=Path, nargs="?", help="bench/zoo.py --select-only --work directory"
    )
    parser.add_argument(
        "--summarise",
        type=Path,
        nargs="+",
        default=None,
        help="Only print the summary of saved --json files (merged: their worlds together)",
    )
    parser.add_argument("--worlds", default=None, help="Comma-separated (default: all finished)")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME=JSON of OPEConfig fields over the base settings (repeatable); NAME=evaluate "
        "runs evaluate's defaults at gamma 1 (OPEConfig(gamma=1.0)) plus JSON instead of "
        "select's; 'select' (select's settings, no overrides) always runs first",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.summarise:
        merged: dict[str, Any] = {}
        for path in args.summarise:
            for vname, res in json.loads(path.read_text()).items():
                merged.setdefault(vname, {"overrides": res["overrides"], "worlds": {}})
                merged[vname]["worlds"].update(res["worlds"])
        summarise(merged)
        return
    if args.work is None:
        parser.error("expected a work directory (or --summarise)")
    variants: dict[str, dict[str, Any]] = {"select": {}}
    for v in args.variant:
        name, _, body = v.partition("=")
        variants[name] = json.loads(body)
    bases = {
        n: OPEConfig(gamma=1.0) if n.startswith("evaluate") else DEFAULT_SELECT_OPE
        for n in variants
    }
    dirs = sorted(p.parent for p in args.work.glob("*/stages.json"))
    dirs = [d for d in dirs if "candidate-truth" in json.loads((d / "stages.json").read_text())]
    if args.worlds:
        keep = set(args.worlds.split(","))
        dirs = [d for d in dirs if d.name in keep]
    out: dict[str, Any] = {}
    if args.json and args.json.is_file():
        out = json.loads(args.json.read_text())
    for vname, overrides in variants.items():
        res = out.setdefault(vname, {"overrides": overrides, "worlds": {}})
        for d in dirs:
            if d.name not in res["worlds"]:
                res["worlds"][d.name] = estimate_world(d, overrides, bases[vname])
                if args.json:
                    args.json.write_text(json.dumps(out, indent=1))
            s = score(res["worlds"][d.name])
            print(
                f"{vname:10} {d.name}: spearman {s['spearman']:+.2f} rel err "
                f"{s['med_abs_rel_err']:.3f} cover {s['coverage']:.2f} gain err "
                f"{s['gain_err_median']:+.2f} (share of true {s['gain_true_share']:.2f}, cover "
                f"{s['gain_coverage']:.2f}) {s['seconds']:.0f}s",
                flush=True,
            )
    summarise(out)


if __name__ == "__main__":
    sys.exit(main())
