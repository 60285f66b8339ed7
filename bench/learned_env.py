"""Sim-to-real check of a learned environment (``docs/learned_env.md``).

1. Simulate logs of the default world (``envs/short_video.toml``) with the ``mixed`` logging policy.
2. Learn an environment from them with ``make-env`` (ranker and response model fitted, leave model).
3. Value at least 6 policies by rolling them out in both the true simulator and the learned env
   (the same seed, so the same users, for every policy in each world).
4. Print both values, relative errors, and the Spearman rank correlation (target >= 0.8).

Usage::

    python bench/learned_env.py [--sessions 20000] [--sim-sessions 4000] [--env-sessions 2000]
        [--ranker-targets auto|pred|labels] [--catalogue-size 20000|0] [--candidates uniform]
        [--epochs 3] [--linear-leave] [--workdir runs/learned_bench] [--out runs/learned_bench.json]

Quick iteration: ``--sessions 5000 --sim-sessions 2000 --env-sessions 1000``. True values are
cached in ``WORKDIR/truth_<sim-sessions>_<seed>.json`` (they do not depend on the logs).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from batchrl_mtf.learned import LearnedEnvConfig, make_env
from batchrl_mtf.policy import ConstantPolicy
from batchrl_mtf.sim import (
    FixedPolicy,
    PolicyContext,
    World,
    feature_names_of,
    load_spec,
    make_policy,
    run_sessions,
)

CONSTANTS = {
    "production": (1.0, 0.4, 0.3, 0.1, 0.1, 0.1),
    "best-constant": (0.342, 0.975, 0.704, 0.426, 0.506, 0.812),
    "casual-optimum": (1.206, 0.351, 0.571, 0.412, 0.4, 0.097),
    "watcher-optimum": (0.125, 1.42, 0.699, 0.035, 0.023, 0.0),
    "click-only": (2.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    "all-ones": (1.0, 1.0, 1.0, 1.0, 1.0, 1.0),
    "social-heavy": (0.2, 0.2, 0.5, 1.5, 1.5, 1.5),
}


@dataclass(frozen=True)
class HandRule:
    """The visible-feature rule of docs/simulator.md: watcher weights when ``u_age > 0.3``, else
    the best constant when ``u_social > 0.4``, else the casual weights."""

    age: int
    social: int
    name: str = "hand-rule"

    @property
    def stochastic(self) -> bool:
        return False

    def act(self, observations: np.ndarray, ctx: PolicyContext) -> tuple[np.ndarray, None]:
        obs = np.asarray(observations)
        w = np.tile(np.asarray(CONSTANTS["casual-optimum"]), (len(obs), 1))
        w[obs[:, self.social] > 0.4] = CONSTANTS["best-constant"]
        w[obs[:, self.age] > 0.3] = CONSTANTS["watcher-optimum"]
        return w, None


def policies(world: World) -> dict[str, object]:
    names = feature_names_of(world)
    out: dict[str, object] = {
        k: FixedPolicy(ConstantPolicy(v, world.tasks, name=k)) for k, v in CONSTANTS.items()
    }
    out["hand-rule"] = HandRule(names.index("u_age"), names.index("u_social"))
    return out


def value(world: World, pol: object, n: int, seed: int) -> tuple[float, float]:
    stats, _ = run_sessions(world, pol, n, seed)  # type: ignore[arg-type]
    r = stats.returns
    return float(r.mean()), float(1.96 * r.std(ddof=1) / np.sqrt(len(r)))


def spearman(a: list[float], b: list[float]) -> float:
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sessions", type=int, default=20000, help="logged sessions")
    ap.add_argument("--sim-sessions", type=int, default=4000, help="sessions per policy (truth)")
    ap.add_argument("--env-sessions", type=int, default=2000, help="sessions per policy (learned)")
    ap.add_argument("--seed", type=int, default=12345, help="seed of the evaluation users")
    ap.add_argument("--ranker-targets", default="auto", choices=["auto", "pred", "labels"])
    ap.add_argument(
        "--catalogue-size",
        type=int,
        default=-1,
        help="make-env --catalogue-size; -1 = the true world's n_items, 0 = logged items only",
    )
    ap.add_argument("--candidates", default="uniform", choices=["uniform", "exposure"])
    ap.add_argument("--linear-leave", action="store_true", help="leave model without interactions")
    ap.add_argument("--epochs", type=int, default=3, help="epochs of each fitted predictor")
    ap.add_argument("--workdir", default="runs/learned_bench")
    ap.add_argument("--out", default="runs/learned_bench.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    sim = World(load_spec())
    ex = sim.spec.exploration
    mixed = make_policy(
        "mixed",
        sim.tasks,
        feature_names_of(sim),
        sim.production,
        sim.low,
        sim.high,
        ex.action_noise_sigma,
        ex.random_sigma,
    )
    _, logs = run_sessions(sim, mixed, args.sessions, 1, record=True)
    assert logs is not None
    logs_path = work / "logs.parquet"
    logs.to_parquet(logs_path, index=False)
    t_sim = time.perf_counter() - t0
    print(f"simulated {args.sessions} sessions, {len(logs)} impressions in {t_sim:.0f} s")
    t1 = time.perf_counter()
    res = make_env(
        [logs_path],
        "envs/reward_default.toml",
        work / "envs" / "learned_short_video.toml",
        LearnedEnvConfig(
            candidates=args.candidates,
            ranker_targets=args.ranker_targets,
            catalogue_size=(
                sim.spec.world.n_items if args.catalogue_size < 0 else args.catalogue_size or None
            ),
            n_epochs=args.epochs,
            leave_interactions=not args.linear_leave,
            beta=tuple(sim.spec.fusion.beta),
            action_bounds=(sim.spec.fusion.low, sim.spec.fusion.high),
            production=tuple(sim.spec.fusion.production),
        ),
    )
    t_fit = time.perf_counter() - t1
    print(f"make-env in {t_fit:.0f} s")
    print(res.replay_text)
    learned = World(load_spec(res.spec_path))
    rows = []
    t2 = time.perf_counter()
    truth_path = work / f"truth_{args.sim_sessions}_{args.seed}.json"
    truth = json.loads(truth_path.read_text()) if truth_path.is_file() else {}
    for (name, p_sim), p_env in zip(policies(sim).items(), policies(learned).values(), strict=True):
        if name not in truth:
            truth[name] = value(sim, p_sim, args.sim_sessions, args.seed)
            truth_path.write_text(json.dumps(truth))
        v_sim, h_sim = truth[name]
        v_env, h_env = value(learned, p_env, args.env_sessions, args.seed)
        rows.append(
            {
                "policy": name,
                "true": v_sim,
                "true_ci95": h_sim,
                "learned": v_env,
                "learned_ci95": h_env,
                "rel_error": (v_env - v_sim) / v_sim,
            }
        )
        print(
            f"  {name:<16} true {v_sim:8.2f} ± {h_sim:5.2f}   learned {v_env:8.2f} ± {h_env:5.2f}"
        )
    t_eval = time.perf_counter() - t2
    rho = spearman([r["true"] for r in rows], [r["learned"] for r in rows])
    print()
    print("| policy | true value (sim) | learned env | relative error |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['policy']} | {r['true']:.2f} ± {r['true_ci95']:.2f} | "
            f"{r['learned']:.2f} ± {r['learned_ci95']:.2f} | {r['rel_error']:+.3f} |"
        )
    mae = float(np.mean([abs(r["rel_error"]) for r in rows]))
    print(f"\nSpearman rank correlation: {rho:.3f} (target >= 0.8); mean |rel error| {mae:.3f}")
    print(f"timings: simulate {t_sim:.0f} s, make-env {t_fit:.0f} s, valuation {t_eval:.0f} s")
    doc = {
        "spearman": rho,
        "mean_abs_rel_error": mae,
        "policies": rows,
        "replay": res.report["replay"],
        "leave_model": res.report["leave_model"],
        "predictors": res.report["predictors"],
        "args": vars(args),
        "seconds": {"simulate": t_sim, "make_env": t_fit, "valuation": t_eval},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2, sort_keys=True), encoding="utf-8")


if __name__ == "__main__":
    main()
