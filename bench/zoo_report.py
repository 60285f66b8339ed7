"""Per-world figures, aggregates and the printed tables of ``bench/zoo.py``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation (average ranks for ties); NaN with fewer than 3 pairs."""
    if len(a) < 3:
        return float("nan")

    def ranks(x: list[float]) -> np.ndarray:
        v = np.asarray(x, dtype=np.float64)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=np.float64)
        for u in np.unique(v):
            m = v == u
            r[m] = r[m].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _half(v: dict[str, Any]) -> float:
    lo, hi = v["ci95"]
    return (hi - lo) / 2


def _diff(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float]:
    """``a - b`` and the half-width of its 95% interval (independent-interval approximation)."""
    return a["mean"] - b["mean"], math.hypot(_half(a), _half(b))


def _median(x: list[float]) -> float | None:
    y = [v for v in x if v is not None and math.isfinite(v)]
    return float(np.median(y)) if y else None


def _selected(raw: dict[str, Any], row: dict[str, Any]) -> dict[str, Any] | None:
    """Issue 16's figures of the table ``select`` chose (``None`` without a select stage)."""
    tv, truth, sel = raw["true_values"], raw["truth"], raw.get("selection")
    chosen = tv.get("selected")
    if chosen is None:
        return None
    prod, best, oracle = truth["production"], truth["best_constant"], truth["oracle"]
    gap, gap_h = _diff(oracle, prod)
    d_prod, h_prod = _diff(chosen, prod)
    d_best, h_best = _diff(chosen, best)
    ch = (sel or {}).get("chosen") or {}
    lower = ch.get("lower")
    return {
        "chosen": ch.get("name"),
        "value": chosen,
        "gap_closed": (chosen["mean"] - prod["mean"]) / gap if gap > gap_h and gap > 0 else None,
        "minus_production": d_prod,
        "significantly_worse_than_production": d_prod < -h_prod,
        "minus_best": d_best,
        "at_or_above_best": d_best >= -h_best,
        "above_byhand": chosen["mean"] > raw["byhand"]["mean"],
        "lower": lower,
        "lower_below_truth": None if lower is None else bool(lower <= chosen["mean"]),
    }


def world_metrics(raw: dict[str, Any]) -> dict[str, Any]:
    """The figures of one world from :func:`bench_world`'s raw results."""
    w, truth, tv = raw["world"], raw["truth"], raw["true_values"]
    prod, best, oracle = truth["production"], truth["best_constant"], truth["oracle"]
    table, hand = tv["default-table"], raw["byhand"]
    gap, gap_h = _diff(oracle, prod)
    closed = (table["mean"] - prod["mean"]) / gap if gap > gap_h and gap > 0 else None
    d_best, h_best = _diff(table, best)
    d_prod, h_prod = _diff(table, prod)
    row: dict[str, Any] = {
        "world": w["name"],
        "half": w["half"],
        "kind": w["kind"],
        "sessions": w["sessions"],
        "production": prod,
        "best_constant": best,
        "oracle": oracle,
        "default_table": table,
        "default_network": tv["default-network"],
        "byhand": hand,
        "selected": tv.get("selected"),
        "gap_closed": closed,
        "table_minus_best": d_best,
        "table_at_or_above_best": d_best >= -h_best,
        "table_minus_production": d_prod,
        "table_significantly_worse_than_production": d_prod < -h_prod,
        "table_above_byhand": table["mean"] > hand["mean"],
    }
    est, truths, covered, rel = [], [], [], []
    for k, e in raw["estimates"].items():
        if e is None or e.get("value") is None or not math.isfinite(e["value"]):
            continue
        t = tv[k]["mean"]
        est.append(e["value"])
        truths.append(t)
        lo, hi = e["ci"]
        covered.append(bool(lo <= t <= hi))
        rel.append(abs(e["value"] - t) / abs(t) if t else float("nan"))
    te = raw["estimates"].get("default-table")
    row["ope"] = {
        "policies": len(est),
        "spearman": spearman(est, truths),
        "median_rel_error": _median(rel),
        "coverage": float(np.mean(covered)) if covered else None,
        "covered": int(sum(covered)),
        "table_estimate": te["value"] if te else None,
        "table_estimator": te["estimator"] if te else None,
        "table_over_truth": te["value"] - table["mean"] if te else None,
        "table_over_truth_rel": (te["value"] - table["mean"]) / abs(table["mean"])
        if te and table["mean"]
        else None,
    }
    lr = raw.get("learned")
    if lr:
        names = [k for k in lr["values"] if k in tv]
        env_v = [lr["values"][k]["mean"] for k in names]
        true_v = [tv[k]["mean"] for k in names]
        row["learned_env"] = {
            "replay_return_rel": lr["replay_return_env"] / lr["replay_return_logs"] - 1,
            "replay_length_rel": lr["replay_length_rel"],
            "spearman": spearman(env_v, true_v),
            "median_rel_error": _median(
                [(e - t) / abs(t) for e, t in zip(env_v, true_v, strict=True) if t]
            ),
        }
    else:
        row["learned_env"] = None
    row["select"] = _selected(raw, row)
    row["seconds"] = raw["seconds"]
    row["wall_s"] = raw["wall_s"]
    return row


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Aggregates over worlds (medians, counts)."""
    n = len(rows)
    if not n:
        return {"worlds": 0}
    ope = [r["ope"] for r in rows]
    le = [r["learned_env"] for r in rows if r["learned_env"]]
    n_pairs = sum(o["policies"] for o in ope)
    sel = [r["select"] for r in rows if r.get("select")]
    lows = [x["lower_below_truth"] for x in sel if x["lower_below_truth"] is not None]
    select_agg = {
        "worlds": len(sel),
        "significantly_worse_than_production": sum(
            x["significantly_worse_than_production"] for x in sel
        ),
        "at_or_above_best": sum(x["at_or_above_best"] for x in sel),
        "above_byhand": sum(x["above_byhand"] for x in sel),
        "median_gap_closed": _median([x["gap_closed"] for x in sel]),
        "lower_below_truth": sum(lows),
        "with_lower": len(lows),
        "kept_production": sum(x["chosen"] == "production" for x in sel),
    }
    return {
        "select": select_agg,
        "worlds": n,
        "median_gap_closed": _median([r["gap_closed"] for r in rows]),
        "worlds_with_gap": sum(r["gap_closed"] is not None for r in rows),
        "table_at_or_above_best": sum(r["table_at_or_above_best"] for r in rows),
        "table_significantly_worse_than_production": sum(
            r["table_significantly_worse_than_production"] for r in rows
        ),
        "table_above_byhand": sum(r["table_above_byhand"] for r in rows),
        "median_table_minus_best": _median([r["table_minus_best"] for r in rows]),
        "median_table_minus_production": _median([r["table_minus_production"] for r in rows]),
        "ope_median_spearman": _median([o["spearman"] for o in ope]),
        "ope_coverage": sum(o["covered"] for o in ope) / n_pairs if n_pairs else None,
        "ope_pairs": n_pairs,
        "ope_median_rel_error": _median([o["median_rel_error"] for o in ope]),
        "ope_median_table_over_truth_rel": _median([o["table_over_truth_rel"] for o in ope]),
        "env_median_replay_return_rel": _median([e["replay_return_rel"] for e in le]),
        "env_median_spearman": _median([e["spearman"] for e in le]),
        "env_median_rel_error": _median([e["median_rel_error"] for e in le]),
    }


def _f(x: Any, nd: int = 2, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{100 * x:+.0f}%" if pct else f"{x:.{nd}f}"


def _v(v: dict[str, Any] | None) -> str:
    return "n/a" if v is None else f"{v['mean']:.2f} ± {_half(v):.2f}"


def print_report(rows: list[dict[str, Any]], agg: dict[str, Any]) -> None:
    """One markdown row per world, then the aggregates."""
    print(
        "| world | kind | sessions | production | best constant | oracle | default table | "
        "by-hand d3rlpy | gap closed | OPE Spearman | OPE med rel err | OPE coverage | "
        "table est - truth | env replay return | env Spearman | env med rel err |"
    )
    print("|" + "---|" * 16)
    for r in rows:
        o, e = r["ope"], r["learned_env"] or {}
        print(
            f"| {r['world']} | {r['kind']} | {r['sessions']} | {_v(r['production'])} | "
            f"{_v(r['best_constant'])} | {_v(r['oracle'])} | {_v(r['default_table'])} | "
            f"{_v(r['byhand'])} | {_f(r['gap_closed'], pct=True)} | {_f(o['spearman'])} | "
            f"{_f(o['median_rel_error'], pct=True)} | {o['covered']}/{o['policies']} | "
            f"{_f(o['table_over_truth'])} ({_f(o['table_over_truth_rel'], pct=True)}) | "
            f"{_f(e.get('replay_return_rel'), pct=True)} | {_f(e.get('spearman'))} | "
            f"{_f(e.get('median_rel_error'), pct=True)} |"
        )
    if any(r.get("select") for r in rows):
        print(
            "\n| world | selected (select) | truth | - production | - best constant | "
            "gap closed | > by-hand | its lower bound | lower <= truth |"
        )
        print("|" + "---|" * 9)
        for r in rows:
            x = r.get("select")
            if not x:
                continue
            print(
                f"| {r['world']} | {x['chosen']} | {_v(x['value'])} | "
                f"{_f(x['minus_production'])} | {_f(x['minus_best'])} | "
                f"{_f(x['gap_closed'], pct=True)} | {'yes' if x['above_byhand'] else 'no'} | "
                f"{_f(x['lower'])} | {x['lower_below_truth']} |"
            )
    a, n = agg, agg["worlds"]
    print(f"\naggregate over {n} worlds:")
    if not n:
        return
    sa = a.get("select") or {}
    if sa.get("worlds"):
        m = sa["worlds"]
        print(
            f"- select (issue 16 targets on this half): significantly below production in "
            f"{sa['significantly_worse_than_production']}/{m} (target 0); at or above the best "
            f"constant in {sa['at_or_above_best']}/{m} (target >= 90%); median gap closed "
            f"{_f(sa['median_gap_closed'], pct=True)} (target >= 75%); above the by-hand script "
            f"in {sa['above_byhand']}/{m} (target >= 80%); its lower bound below its truth in "
            f"{sa['lower_below_truth']}/{sa['with_lower']} (target >= 90%); kept production in "
            f"{sa['kept_production']}/{m}"
        )
    print(
        f"- median share of the production->oracle gap closed by the default table: "
        f"{_f(a['median_gap_closed'], pct=True)} (over the {a['worlds_with_gap']} worlds with a gap)"
    )
    print(
        f"- default table at or above the best constant (within 95%): {a['table_at_or_above_best']}/{n}"
    )
    print(
        f"- default table significantly below production: "
        f"{a['table_significantly_worse_than_production']}/{n}"
    )
    print(f"- default table above the by-hand d3rlpy script: {a['table_above_byhand']}/{n}")
    print(
        f"- median (table - best constant): {_f(a['median_table_minus_best'])}; "
        f"median (table - production): {_f(a['median_table_minus_production'])}"
    )
    print(
        f"- OPE (recommended estimate): median Spearman {_f(a['ope_median_spearman'])}, "
        f"95% coverage {_f(a['ope_coverage'], pct=False)} of {a['ope_pairs']} (world, policy) "
        f"pairs, median relative error {_f(a['ope_median_rel_error'], pct=True)}, "
        f"default table's estimate above its truth by {_f(a['ope_median_table_over_truth_rel'], pct=True)} (median)"
    )
    print(
        f"- learned env (make-env): replayed logged weights' return vs logs "
        f"{_f(a['env_median_replay_return_rel'], pct=True)} (median), sim-to-real Spearman "
        f"{_f(a['env_median_spearman'])}, median relative error {_f(a['env_median_rel_error'], pct=True)}"
    )


def main() -> None:
    """Re-print the tables and aggregates of a ``bench/zoo.py`` JSON from its raw results
    (``python bench/zoo_report.py runs/zoo/heldout.json [--work runs/zoo]``); ``--work`` adds each
    world's ``select/selection.json`` when the JSON predates its record."""
    import argparse
    import json
    from pathlib import Path

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("json", type=Path)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    doc = json.loads(args.json.read_text())
    raws = doc["raw"]
    for raw in raws:
        sel = args.work / raw["world"]["name"] / "select" / "selection.json" if args.work else None
        if raw.get("selection") is None and sel is not None and sel.is_file():
            raw["selection"] = json.loads(sel.read_text())
    rows = [world_metrics(r) for r in raws]
    print_report(rows, aggregate(rows))


if __name__ == "__main__":
    main()
