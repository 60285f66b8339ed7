"""Choose an ``evaluate`` setting on tuning worlds: the bench's 9 policies, re-estimated.

``bench/zoo.py`` runs, per world, ``batchrl-mtf evaluate`` of 9 policies (production, best
constant, the default table and network, ...) whose true values it rolls out, and records both
(``WORK/<world>/commands.log``, ``WORK/<half>.json``). This script runs the same ``evaluate``
command again with extra flags per variant (``--variant NAME='--flag value ...'``; the run
without extra flags is read from the bench's own ``ope.json``) and prints, per variant, what
``bench/zoo.py`` prints of the recommended estimate (median Spearman with the truth, median
relative error, 95% coverage) and the same for every estimator's own value, so that an
estimator-level change (e.g. ``--kernel-boundary``) is seen where it acts. Run it on tuning
worlds only (``docs/zoo.md``, the halves).

Usage::

    python bench/zoo.py --worlds f01,f02 --jobs 2 --work runs/zoof
    python bench/ope_variants.py runs/zoof/tuning.json --work runs/zoof \\
        --variant 'plain=--kernel-boundary none' --variant 'renorm=--kernel-boundary renormalise' \\
        [--jobs 2] [--json runs/zoof/ope_variants.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from zoo_report import spearman  # noqa: E402


def evaluate_command(wdir: Path) -> list[str]:
    """The bench's ``evaluate`` command of one world (from its ``commands.log``)."""
    lines = [
        ln[2:] for ln in (wdir / "commands.log").read_text().splitlines() if " evaluate " in ln
    ]
    if not lines or not lines[-1].startswith("/"):
        raise SystemExit(f"{wdir}/commands.log: no evaluate command")
    return shlex.split(lines[-1])


def _with_out(cmd: list[str], out: Path, extra: list[str]) -> list[str]:
    i = cmd.index("--out")
    return [*cmd[:i], "--out", str(out), *cmd[i + 2 :], *extra]


def score(doc: dict[str, Any], truths: list[float]) -> dict[str, Any]:
    """Recommended and per-estimator accuracy of one ``evaluate`` report against the truths
    (the report's policies in the bench's ``--policy`` order)."""

    def figures(values: list[dict[str, Any] | None]) -> dict[str, Any]:
        est, tru, cov, rel = [], [], [], []
        for e, t in zip(values, truths, strict=True):
            if e is None or e.get("value") is None or not math.isfinite(e["value"]):
                continue
            est.append(e["value"])
            tru.append(t)
            if e.get("ci"):
                cov.append(bool(e["ci"][0] <= t <= e["ci"][1]))
            rel.append(abs(e["value"] - t) / abs(t) if t else math.nan)
        return {
            "spearman": spearman(est, tru) if len(est) > 2 else None,
            "median_rel_error": float(np.median(rel)) if rel else None,
            "covered": int(sum(cov)),
            "n": len(est),
        }

    pols = doc["policies"]
    out = {"recommended": figures([p.get("recommended") for p in pols])}
    for name in doc["estimators"]:
        out[name] = figures([p["estimates"].get(name) for p in pols])
    out["recommended_by"] = [
        (p.get("recommended") or {}).get("estimator") for p in pols
    ]  # which estimator the rule quoted
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, help="bench/zoo.py JSON (raw results, truths)")
    parser.add_argument("--work", type=Path, required=True, help="its --work directory")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME='extra evaluate flags' (repeatable); 'bench' is the bench's own run",
    )
    parser.add_argument("--worlds", default=None, help="Comma-separated (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="Worlds evaluated at once")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    raws = json.loads(args.results.read_text())["raw"]
    if args.worlds:
        keep = set(args.worlds.split(","))
        raws = [r for r in raws if r["world"]["name"] in keep]
    variants = {"bench": []}
    for v in args.variant:
        name, _, flags = v.partition("=")
        variants[name] = shlex.split(flags)
    threads = str(max(1, (os.cpu_count() or 2) // max(1, args.jobs)))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}

    def run_world(raw: dict[str, Any]) -> dict[str, Any]:
        name = raw["world"]["name"]
        wdir = args.work / name
        truths = [raw["true_values"][k]["mean"] for k in raw["estimates"]]
        per: dict[str, Any] = {}
        for vname, extra in variants.items():
            out = wdir / ("ope.json" if vname == "bench" else f"ope_{vname}.json")
            if vname != "bench" and not out.is_file():
                cmd = _with_out(evaluate_command(wdir), out, extra)
                with (wdir / "commands.log").open("a") as log:
                    log.write("$ " + shlex.join(cmd) + "\n")
                    log.flush()
                    subprocess.run(cmd, check=True, stdout=log, stderr=log, env=env)
            per[vname] = score(json.loads(out.read_text()), truths)
        print(f"{name}: " + ", ".join(
            f"{v}: rho {_f(s['recommended']['spearman'])} cov {s['recommended']['covered']}"
            f"/{s['recommended']['n']}" for v, s in per.items()
        ), flush=True)  # fmt: skip
        return {"world": name, "variants": per}

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        rows = list(pool.map(run_world, raws))
    print(f"\n{len(rows)} worlds: {', '.join(r['world'] for r in rows)}")
    print(f"{'variant':10} {'estimator':12} {'med rho':>8} {'med rel':>8} {'coverage':>9}")
    keys = ["recommended", *next(iter(rows[0]["variants"].values())).keys()]
    for vname in variants:
        for key in dict.fromkeys(k for k in keys if k != "recommended_by"):
            fig = [r["variants"][vname][key] for r in rows]
            rhos = [f["spearman"] for f in fig if f["spearman"] is not None]
            rels = [f["median_rel_error"] for f in fig if f["median_rel_error"] is not None]
            cov, n = sum(f["covered"] for f in fig), sum(f["n"] for f in fig)
            print(
                f"{vname:10} {key:12} {_f(float(np.median(rhos)) if rhos else None):>8} "
                f"{_f(float(np.median(rels)) if rels else None):>8} "
                f"{cov:>4}/{n:<4}"
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def _f(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.3f}"


if __name__ == "__main__":
    main()
