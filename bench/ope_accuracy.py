"""How accurate is offline policy evaluation in the default simulated world?

Generates logs with the ``mixed`` logging policy, builds a dataset, defines policies (production,
constants near and far from the data, the offline best constant, trained BCQ/CQL/IQL/BC, a
weight table exported from BCQ, and the logging policy itself), measures their true values by
rollout (undiscounted session return, every policy on the same simulated users), estimates each
offline on the held-out ``test`` split with every estimator (``gamma = 1``) and prints per
estimator: median relative error, Spearman rank correlation with the truth, regret of picking
the top policy, interval coverage, and the bias on the policies far from the data.

The truth is itself a Monte-Carlo estimate, so the bench also prints its precision: each true
value's 95% interval and the Spearman correlation between the truth and paired bootstrap
resamples of it (resampling rollout sessions, the same ones for every policy). That is the
ceiling any estimator's Spearman can be told apart from.

Every stage is cached in ``--out`` (logs, dataset, best constant, trained policies, weight
table, per-session rollout returns, offline estimates keyed by the OPE settings); with
``--reuse`` a stage whose artefact exists is loaded instead of recomputed, so comparisons of OPE
settings run against the same policies and truth. ``--ope-set KEY=VALUE`` (repeatable, JSON
values) overrides :class:`batchrl_mtf.ope.OPEConfig` fields.

Usage::

    python bench/ope_accuracy.py --out runs/ope_bench                # full run (~50-60 min)
    python bench/ope_accuracy.py --out runs/ope_bench --reuse        # reuse cached stages
    python bench/ope_accuracy.py --out runs/ope_bench --reuse --ope-set fqe_n_fits=1
    python bench/ope_accuracy.py --quick                             # smoke run (~5 min)

Targets (issue 5): some estimator reaches Spearman >= 0.9 and median relative error <= 10%,
and ``cfqe`` does not overestimate the policies far from the data.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from batchrl_mtf.core.config import config_from_mapping, config_to_dict
from batchrl_mtf.core.io import atomic_write_text, dumps_json
from batchrl_mtf.data.build import build_dataset
from batchrl_mtf.data.config import DatasetConfig
from batchrl_mtf.data.formats import load_dataset
from batchrl_mtf.ope import (
    Estimate,
    OPEConfig,
    best_constant,
    best_constant_table,
    evaluate_policies,
    recommend,
)
from batchrl_mtf.resolve import resolve_ope_policy, resolve_policy, resolve_sim_policy
from batchrl_mtf.sim import (
    World,
    load_spec,
    run_sessions,
    true_value,
)

ROOT = Path(__file__).resolve().parents[1]
FAR = ("far-high", "far-low")
TRUTH_BOOTSTRAP = 2000
RULE_FIELDS = ("min_ess", "min_ess_fraction", "dr_max_ci_ratio", "recommend_order")


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman rank correlation (average ranks on ties)."""
    from scipy.stats import spearmanr

    if len(x) < 3:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def _stage(work: Path, name: str, key: dict[str, Any], reuse: bool) -> bool:
    """Whether stage ``name`` can be reused: ``--reuse`` and its recorded key matches."""
    path = work / f"stage_{name}.json"
    if not reuse or not path.exists():
        return False
    return bool(json.loads(path.read_text()) == json.loads(dumps_json(key)))


def _done(work: Path, name: str, key: dict[str, Any]) -> None:
    atomic_write_text(work / f"stage_{name}.json", dumps_json(key))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sessions", type=int, default=8000, help="logged sessions (mixed policy)")
    ap.add_argument("--true-sessions", type=int, default=20000, help="rollout sessions per policy")
    ap.add_argument("--train-steps", type=int, default=2000, help="gradient steps per algorithm")
    ap.add_argument("--fqe-steps", type=int, default=5000, help="gradient steps per FQE fit")
    ap.add_argument("--n-bootstrap", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--algos", default="bcq,cql,iql,bc")
    ap.add_argument(
        "--ope-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an OPEConfig field (JSON value), e.g. fqe_n_fits=3",
    )
    ap.add_argument(
        "--more-fits",
        action="append",
        default=[],
        metavar="FILE",
        help="estimates_<tag>.json of a run with other FQE seeds (e.g. --ope-set seed=3): print "
        "the ranking quality over every subset of the pooled fits",
    )
    ap.add_argument("--reuse", action="store_true", help="reuse cached stages found in --out")
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    ap.add_argument("--out", type=Path, default=None, help="keep artefacts here")
    args = ap.parse_args()
    if args.quick:
        args.sessions, args.true_sessions, args.train_steps = 2000, 2000, 500
        args.fqe_steps, args.n_bootstrap, args.algos = 1500, 100, "bcq,bc"
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    t0 = time.time()
    work = args.out or Path(tempfile.mkdtemp(prefix="ope_bench_"))
    work.mkdir(parents=True, exist_ok=True)

    # 1. logs and dataset ------------------------------------------------------------------
    world = World(load_spec(None))

    def sim_policy(arg: str) -> object:
        return resolve_sim_policy(world, arg)

    lo, hi = float(np.min(world.low)), float(np.max(world.high))
    data_key = {"sessions": args.sessions, "seed": args.seed}
    if not _stage(work, "data", data_key, args.reuse):
        _stats, logs = run_sessions(
            world, sim_policy("mixed"), args.sessions, args.seed, record=True
        )
        assert logs is not None
        logs.to_parquet(work / "logs.parquet", index=False)
        build_dataset(
            [work / "logs.parquet"],
            ROOT / "envs" / "reward_default.toml",
            work / "ds",
            DatasetConfig(action_bounds=(lo, hi)),
        )
        _done(work, "data", data_key)
    data = load_dataset(work / "ds")
    spec = data.spec
    test = data.select("test")
    print(
        f"logs: {args.sessions} sessions, {len(data)} requests; test split {test.n_sessions} "
        f"sessions [{time.time() - t0:.0f}s]"
    )

    # 2. policies --------------------------------------------------------------------------
    prod = np.asarray(world.production, dtype=np.float64)
    k = len(prod)
    rng = np.random.default_rng(args.seed)
    near = np.clip(prod + rng.normal(0, 0.15, size=k), lo, hi)
    args_by_name: dict[str, str] = {
        "production": "constant:" + ",".join(f"{x:g}" for x in prod),
        "near": "constant:" + ",".join(f"{x:.3f}" for x in near),
        "far-high": "constant:" + ",".join(["2"] * k),
        "far-low": "constant:" + ",".join(["0.05"] + ["1.8"] * (k - 1)),
    }
    train_split = data.select("train")
    bc_key = {**data_key, "fqe_steps": args.fqe_steps}
    if not _stage(work, "best_constant", bc_key, args.reuse):
        bc_cfg = OPEConfig(
            estimators=("fqe",),
            gamma=1.0,
            n_bootstrap=0,
            fqe_n_steps=max(500, args.fqe_steps // 2),
            seed=args.seed,
        )
        best = best_constant(train_split, "fqe", n_candidates=8, seed=args.seed, config=bc_cfg)
        table = best_constant_table(best, data, world.fusion)
        table.save(work / "best_constant.json")  # type: ignore[attr-defined]
        _done(work, "best_constant", bc_key)
    default = json.loads((work / "best_constant.json").read_text())["default"]
    best_w = [float(default[f"w_{t}"]) for t in spec.tasks]
    # evaluated as a constant: the weights of the key-less table's default row
    args_by_name["best-constant"] = "constant:" + ",".join(f"{x:.6g}" for x in best_w)
    print(f"best constant {best_w} [{time.time() - t0:.0f}s]")

    from batchrl_mtf.training import resolve_config, train

    for algo in [a for a in args.algos.split(",") if a]:
        tr_key = {**data_key, "algo": algo, "train_steps": args.train_steps}
        if not _stage(work, f"train_{algo}", tr_key, args.reuse):
            cfg = resolve_config(
                [
                    (
                        "bench",
                        {
                            "algo": algo,
                            "n_steps": args.train_steps,
                            "n_steps_per_epoch": args.train_steps,
                            "seed": args.seed,
                            "n_threads": 1,
                        },
                    )
                ]
            )
            train(data, work / algo, cfg)
            _done(work, f"train_{algo}", tr_key)
            print(f"trained {algo} [{time.time() - t0:.0f}s]")
        args_by_name[algo] = str(work / algo)
    if "bcq" in args_by_name:
        tab_key = {**data_key, "train_steps": args.train_steps}
        if not _stage(work, "bcq_table", tab_key, args.reuse):
            from batchrl_mtf.export import ExportConfig, build_weight_table

            pol = resolve_policy(args_by_name["bcq"], spec.tasks, spec.feature_names)
            tab = build_weight_table(
                train_split.observations,
                pol.act(train_split.observations),
                spec.feature_names,
                spec.tasks,
                spec.action_low,
                spec.action_high,
                world.fusion,
                ExportConfig(),
                logged_actions=train_split.actions,
            )
            tab.save(work / "bcq_table.json")
            _done(work, "bcq_table", tab_key)
        args_by_name["bcq-table"] = str(work / "bcq_table.json")

    # 3. true values by rollout (same users for every policy) ------------------------------
    returns: dict[str, np.ndarray] = {}
    for name, arg in [*args_by_name.items(), ("behavior", "mixed")]:
        t_key = {
            **data_key,
            "train_steps": args.train_steps,
            "true_sessions": args.true_sessions,
            "policy": arg.replace(str(work), "<work>"),
        }
        path = work / f"truth_{name}.npy"
        if not _stage(work, f"truth_{name}", t_key, args.reuse) or not path.exists():
            value = true_value(world, sim_policy(arg), args.true_sessions, args.seed + 1000)
            np.save(path, value.returns)
            _done(work, f"truth_{name}", t_key)
        returns[name] = np.load(path)
    truth = {n: float(r.mean()) for n, r in returns.items()}
    print(f"true values measured [{time.time() - t0:.0f}s]")

    # 4. offline estimates on the test split (cached by the OPE settings) ------------------
    overrides: dict[str, Any] = {}
    for item in args.ope_set:
        key, _, val = item.partition("=")
        try:
            overrides[key] = json.loads(val)
        except json.JSONDecodeError:
            overrides[key] = val
    base = {"gamma": 1.0, "n_bootstrap": args.n_bootstrap, "fqe_n_steps": args.fqe_steps}
    cfg = config_from_mapping(OPEConfig, {**base, "seed": args.seed, **overrides}, "--ope-set")
    cfg_doc = config_to_dict(cfg)
    # the recommended-estimate rule does not change the estimates: not part of the cache key
    est_doc = {k: v for k, v in cfg_doc.items() if k not in RULE_FIELDS}
    tag = hashlib.sha256(
        dumps_json({"cfg": est_doc, **data_key, "train_steps": args.train_steps}).encode()
    ).hexdigest()[:10]
    est_path = work / f"estimates_{tag}.json"
    est_cache: dict[str, Any] = json.loads(est_path.read_text()) if est_path.exists() else {}
    names = [*args_by_name, "behavior"]
    todo = [n for n in names if n not in est_cache or not args.reuse]
    if todo:
        policies: list[object] = []
        for name in todo:
            arg = "behavior" if name == "behavior" else args_by_name[name]
            p = resolve_ope_policy(arg, spec.tasks, spec.feature_names)
            policies.append(p.renamed(name))
        # d3rlpy engine: one at a time, so an interrupted run keeps what it finished; batched:
        # all at once (their fits train as one ensemble)
        groups = [policies] if cfg.fqe_engine == "batched" else [[p] for p in policies]
        results = (evaluate_policies(test, g, cfg) for g in groups)  # type: ignore[arg-type]
        for pr in (pr for res in results for pr in res.policies):
            est_cache[pr.name] = {
                "estimates": {
                    e: {
                        **est.to_dict(),
                        "n_sessions": est.n_sessions,
                        "fit_values": [float(v) for v in est.fit_values],
                    }
                    for e, est in pr.estimates.items()
                },
                "fqe_loss": pr.fqe_loss,
            }
            est_cache["_config"] = cfg_doc
            atomic_write_text(est_path, dumps_json(est_cache))
            print(f"  estimated {pr.name} [{time.time() - t0:.0f}s]")
    estimates = {
        n: {e: _estimate(e, d) for e, d in est_cache[n]["estimates"].items()} for n in names
    }
    recommended = {n: recommend(estimates[n], test.n_sessions, cfg) for n in names}
    print(f"offline estimates done ({est_path.name}) [{time.time() - t0:.0f}s]")

    # 5. accuracy --------------------------------------------------------------------------
    true_v = [truth[n] for n in names]
    mat = np.stack([returns[n] for n in names])  # (policies, rollout sessions), paired
    boot_rng = np.random.default_rng(args.seed + 7)
    n_roll = mat.shape[1]
    boot_truth = np.stack(
        [mat[:, boot_rng.integers(0, n_roll, n_roll)].mean(axis=1) for _ in range(TRUTH_BOOTSTRAP)]
    )
    truth_sp = np.array([spearman(list(b), true_v) for b in boot_truth])
    half = {n: 1.96 * float(returns[n].std(ddof=1)) / math.sqrt(n_roll) for n in names}
    rows: dict[str, dict[str, Any]] = {}
    # "<est>@1": the same estimator with the ensemble's first FQE fit only (no interval)
    single = [
        e
        for e in cfg.estimators
        if all(len(est_cache[n]["estimates"][e].get("fit_values", [])) > 1 for n in names)
    ]
    for est_name in [*cfg.estimators, "recommended", *[f"{e}@1" for e in single]]:
        vals, cis = [], []
        for n in names:
            if est_name.endswith("@1"):
                fv = est_cache[n]["estimates"][est_name[:-2]]["fit_values"]
                vals.append(float(fv[0]))
                cis.append(None)
                continue
            rec = recommended[n]
            e = rec if est_name == "recommended" else estimates[n].get(est_name)
            vals.append(float(e.value) if e is not None else float("nan"))
            cis.append(e.ci if e is not None else None)
        fin = [i for i, v in enumerate(vals) if math.isfinite(v)]
        rel = [abs(vals[i] - true_v[i]) / abs(true_v[i]) for i in fin]
        pick = max(fin, key=lambda i: vals[i]) if fin else None
        cover = [cis[i][0] <= true_v[i] <= cis[i][1] for i in fin if cis[i] is not None]
        far_bias = [vals[i] - true_v[i] for i in fin if names[i] in FAR]
        rows[est_name] = {
            "median_rel_error": float(np.median(rel)) if rel else float("nan"),
            "spearman": spearman([vals[i] for i in fin], [true_v[i] for i in fin]),
            "regret": max(true_v) - true_v[pick] if pick is not None else float("nan"),
            "coverage": float(np.mean(cover)) if cover else float("nan"),
            "far_bias": far_bias,
            "picked": names[pick] if pick is not None else None,
            "values": dict(zip(names, vals, strict=True)),
        }
    print(
        f"\ntrue values (undiscounted session return over {n_roll} rollout sessions, the same "
        "users for every policy; 95% half-width; estimates):"
    )
    for i, n in enumerate(names):
        ests = "  ".join(
            f"{e}={rows[e]['values'][n]:.1f}" for e in ("fqe", "cfqe", "dr", "wdr") if e in rows
        )
        rec = recommended[n]
        print(
            f"  {n:<14} {true_v[i]:8.2f} +- {half[n]:.2f}   {ests}   "
            f"rec={rec.estimator if rec else None}"
        )
    print(
        f"truth self-consistency: Spearman(truth, paired bootstrap of the truth) median "
        f"{np.median(truth_sp):.3f}, 5th percentile {np.percentile(truth_sp, 5):.3f}"
    )
    print(
        f"\n{'estimator':<12} {'med.rel.err':>11} {'spearman':>9} {'regret':>8} "
        f"{'coverage':>9}  far-policy bias (est - true)   picked"
    )
    for est_name, r in rows.items():
        fb = ", ".join(f"{b:+.2f}" for b in r["far_bias"])
        print(
            f"{est_name:<12} {r['median_rel_error']:>11.3f} {r['spearman']:>9.3f} "
            f"{r['regret']:>8.3f} {r['coverage']:>9.2f}  {fb:<28}  {r['picked']}"
        )
    subsets = _fit_subsets(est_cache, args.more_fits, names, true_v)
    doc = {
        "fit_subsets": subsets,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "ope_config": cfg_doc,
        "truth": {n: [truth[n], half[n]] for n in names},
        "truth_spearman_bootstrap": {
            "median": float(np.median(truth_sp)),
            "p5": float(np.percentile(truth_sp, 5)),
        },
        "estimates": {n: est_cache[n]["estimates"] for n in names},
        "recommended": {n: (r.to_dict() if r else None) for n, r in recommended.items()},
        "accuracy": rows,
        "seconds": time.time() - t0,
    }
    atomic_write_text(work / f"ope_accuracy_{tag}.json", dumps_json(doc))
    print(f"\nwritten {work / f'ope_accuracy_{tag}.json'} [{time.time() - t0:.0f}s]")


def _fit_subsets(
    est_cache: dict[str, Any], more: list[str], names: list[str], true_v: list[float]
) -> dict[str, Any]:
    """Ranking quality of the model-based estimators over every subset of the pooled FQE fits.

    The estimators are linear in Q, so the estimate of an ensemble of fits is the mean of the
    fits' estimates: pooling the ``fit_values`` of runs with different seeds gives every
    ensemble size ``k`` and every choice of ``k`` fits without refitting.
    """
    if not more:
        return {}
    others = [json.loads(Path(f).read_text()) for f in more]
    tv = np.asarray(true_v)
    out: dict[str, Any] = {}
    print("\nensembles drawn from the pooled FQE fits (Spearman over every subset of k fits):")
    for e in ("fqe", "cfqe", "dr", "wdr"):
        if not all(e in o.get(names[0], {}).get("estimates", {}) for o in [est_cache, *others]):
            continue
        fits = {
            n: [v for o in [est_cache, *others] for v in o[n]["estimates"][e]["fit_values"]]
            for n in names
        }
        m = min(len(f) for f in fits.values())
        for k in range(1, m + 1):
            sps, rels = [], []
            for sub in itertools.combinations(range(m), k):
                v = np.array([np.mean([fits[n][j] for j in sub]) for n in names])
                sps.append(spearman(list(v), list(tv)))
                rels.append(float(np.median(np.abs(v - tv) / np.abs(tv))))
            sp = np.asarray(sps)
            hit = int(np.sum(sp >= 0.9 - 1e-12))
            out[f"{e}:{k}"] = {
                "spearman_mean": float(sp.mean()),
                "spearman_min": float(sp.min()),
                "spearman_max": float(sp.max()),
                "reach_0.9": [hit, len(sp)],
                "median_rel_error_mean": float(np.mean(rels)),
            }
            print(
                f"  {e:<5} k={k}: {len(sp):>3} subsets  Spearman mean {sp.mean():.3f} "
                f"[{sp.min():.3f}, {sp.max():.3f}]  >= 0.9 in {hit}/{len(sp)}  "
                f"med.rel.err {np.mean(rels):.3f}"
            )
    return out


def _estimate(name: str, d: dict[str, Any]) -> Estimate:
    """An :class:`Estimate` back from its cached JSON form (no per-session values)."""
    ci = d.get("ci")
    return Estimate(
        estimator=name,
        value=float(d["value"]) if d["value"] is not None else float("nan"),
        ci=None if ci is None else (float(ci[0]), float(ci[1])),
        ess=d.get("ess"),
        per_session=np.zeros(0),
        n_sessions=int(d.get("n_sessions", 0)),
        fit_se=d.get("fit_se"),
    )


if __name__ == "__main__":
    main()
