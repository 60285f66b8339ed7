"""Choose ``select``'s rule on the tuning half: every rule variant on the same candidates.

``bench/zoo.py --select-only`` (or ``--candidate-truth``) records, per world, ``select``'s
``selection.json`` (every candidate table's paired gain over production, by every estimator) and
every candidate table's true value. The rule only reads the estimates, so each variant of
:func:`batchrl_mtf.selection.rule.choose` (which lower bound, how large a margin over production)
can be applied afterwards to the same candidates and scored against the truth, without training
anything again. Run it on the tuning half to choose; the held-out half's figures come from
``bench/zoo.py`` with the chosen defaults.

Usage::

    python bench/zoo.py --half tuning --select-only --jobs 2 --work runs/zoo \\
        --out runs/zoo/tuning_select.json
    python bench/select_rules.py runs/zoo/tuning_select.json [--json runs/zoo/rules.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from zoo_report import _diff  # noqa: E402

from batchrl_mtf.selection.rule import (  # noqa: E402
    BASELINES,
    BOUNDS,
    PRODUCTION,
    Gain,
    choose,
    gain_from_doc,
    margin_gain,
    value_lower,
)

MARGINS = (0.0, 0.01, 0.02, 0.05)
"""Margins over the baseline tried, as a share of its estimated value."""

BASELINE_VARIANTS = BASELINES
"""``auto``: the selection's own baseline (the logging policy where production's weights leave
the logged support, when ``select`` ran with ``baseline = "auto"``); ``production``: production
always (every ``selection.json`` has the gains over production)."""


def gains_of(
    selection: dict[str, Any], baseline: str = "auto"
) -> tuple[list[Gain], dict[str, Any], str, float | None]:
    """The rule's inputs from a ``selection.json`` document: the gains over the baseline,
    candidates by name, the baseline's name and its estimated value (the margin's reference)."""
    by_name = {c["name"]: c for c in selection["candidates"]}
    base = (selection.get("baseline") or {}).get("name", PRODUCTION)
    if baseline == "production" or base == PRODUCTION:
        base, key = PRODUCTION, "gain"
        base_value = (by_name[PRODUCTION].get("estimate") or {}).get("value")
    else:
        key = "baseline_gain"
        base_value = (selection["baseline"].get("estimate") or {}).get("value")
    gains = [
        gain_from_doc(c["name"], c[key], c.get("support"))
        for c in selection["candidates"]
        if c["name"] != PRODUCTION and not c.get("skipped") and c.get(key) is not None
    ]
    return gains, by_name, base, base_value


def score_world(
    raw: dict[str, Any], bound: str, margin: float, baseline: str = "auto"
) -> dict[str, Any]:
    """The choice of one variant on one world, against the truth."""
    sel, truth, ctruth = raw["selection"], raw["truth"], raw["candidate_truth"] or {}
    gains, by_name, base, base_value = gains_of(sel, baseline)
    choice = choose(gains, True, bound, margin_gain(margin, base_value), base)
    prod, best, oracle = truth["production"], truth["best_constant"], truth["oracle"]
    chosen_true = prod if choice.name == PRODUCTION else ctruth[choice.name]
    chosen = by_name[choice.name]
    rule_gain = chosen.get("gain") if base == PRODUCTION else chosen.get("baseline_gain")
    gain_lower = (rule_gain or {}).get("lower", math.nan)
    lower = value_lower((chosen.get("estimate") or {}).get("lower"), gain_lower, choice.lower)
    d_prod, h_prod = _diff(chosen_true, prod)
    d_best, h_best = _diff(chosen_true, best)
    gap, gap_h = _diff(oracle, prod)
    return {
        "world": raw["world"]["name"],
        "chosen": choice.name,
        "true": chosen_true["mean"],
        "production": prod["mean"],
        "best_constant": best["mean"],
        "worse_than_production": d_prod < -h_prod,
        "at_or_above_best": d_best >= -h_best,
        "gap_closed": (chosen_true["mean"] - prod["mean"]) / gap if gap > gap_h else None,
        "lower": lower,
        "lower_below_truth": None if lower is None else bool(lower <= chosen_true["mean"]),
        "kept_production": choice.name == PRODUCTION,
        "baseline": base,
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    gaps = [r["gap_closed"] for r in rows if r["gap_closed"] is not None]
    lows = [r["lower_below_truth"] for r in rows if r["lower_below_truth"] is not None]
    return {
        "worlds": len(rows),
        "worse_than_production": sum(r["worse_than_production"] for r in rows),
        "at_or_above_best": sum(r["at_or_above_best"] for r in rows),
        "median_gap_closed": float(np.median(gaps)) if gaps else math.nan,
        "lower_below_truth": f"{sum(lows)}/{len(lows)}",
        "kept_production": sum(r["kept_production"] for r in rows),
    }


def from_work(work: Path) -> list[dict[str, Any]]:
    """Raw results of the finished worlds under a ``bench/zoo.py --work`` directory."""
    out = []
    for stages in sorted(work.glob("*/stages.json")):
        done = json.loads(stages.read_text())
        if "candidate-truth" not in done or "truth" not in done:
            continue
        wdir = stages.parent
        out.append(
            {
                "world": {"name": wdir.name},
                "selection": json.loads((wdir / "select" / "selection.json").read_text()),
                "truth": done["truth"]["result"],
                "candidate_truth": done["candidate-truth"]["result"],
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, nargs="*", help="bench/zoo.py JSON with raw results")
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="Read the worlds' stage caches under this bench/zoo.py --work directory instead "
        "(every world whose select and candidate-truth stages finished; a run in progress).",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    raws = []
    for path in args.results:
        raws += [r for r in json.loads(path.read_text())["raw"] if r.get("selection")]
    if args.work is not None:
        raws += from_work(args.work)
    print(f"{len(raws)} worlds: {', '.join(r['world']['name'] for r in raws)}")
    out: dict[str, Any] = {}
    print(
        f"\n{'baseline':10} {'bound':16} {'margin':>6} {'worse':>5} {'>=best':>6} {'gap':>6} "
        f"{'low<=true':>9} {'kept':>4}"
    )
    for baseline in BASELINE_VARIANTS:
        for bound in BOUNDS:
            for margin in MARGINS:
                rows = [score_world(r, bound, margin, baseline) for r in raws]
                s = summarise(rows)
                out[f"{baseline}/{bound}@{margin:g}"] = {"summary": s, "worlds": rows}
                print(
                    f"{baseline:10} {bound:16} {margin:6.2f} {s['worse_than_production']:5d} "
                    f"{s['at_or_above_best']:6d} {s['median_gap_closed']:6.2f} "
                    f"{s['lower_below_truth']:>9} {s['kept_production']:4d}"
                )
    print("\nper world (chosen candidate, true value; production, best constant):")
    for i in range(len(raws)):
        cells = []
        for key, v in out.items():
            w = v["worlds"][i]
            cells.append(
                f"{key}: {w['chosen']} {w['true']:.2f}{' WORSE' if w['worse_than_production'] else ''}"
            )
        w0 = out[next(iter(out))]["worlds"][i]
        print(f"{w0['world']} (prod {w0['production']:.2f}, best {w0['best_constant']:.2f})")
        for c in cells:
            print("   " + c)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
