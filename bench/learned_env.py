"""Sim-to-real check of a learned environment (``docs/learned_env.md``).

1. Simulate logs of the default world (``envs/short_video.toml``) with the ``mixed`` logging policy
   (seed ``--log-seed``, default 1).
2. Learn an environment from them with ``make-env`` (ranker and response model fitted, leave model).
3. Value at least 6 policies by rolling them out in both the true simulator and the learned env
   (the same seed, so the same users, for every policy in each world).
4. Print both values, relative errors, and the Spearman rank correlation (target >= 0.8).

Usage::

    python bench/learned_env.py [--sessions 20000] [--sim-sessions 10000] [--env-sessions 4000]
        [--ranker-targets auto|pred|labels] [--catalogue-size 20000|0] [--candidates uniform]
        [--epochs 3] [--linear-leave] [--leave-recency 0.85] [--no-leave-actions]
        [--leave-session-sums] [--leave-classes 1] [--leave-l2 L2] [--bootstrap 2000]
        [--log-seed 1] [--seed 12345]
        [--workdir runs/learned_bench] [--out runs/learned_bench.json]

Every policy meets the same users in each world (common random numbers: one evaluation seed), so
the bootstrap interval of the Spearman correlation resamples sessions jointly across policies,
within each world. True values are cached in ``WORKDIR/truth_<sim-sessions>_<seed>.npz`` (they do
not depend on the logs).
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
from batchrl_mtf.policy.base import ConstantPolicy
from batchrl_mtf.resolve import resolve_sim_policy
from batchrl_mtf.sim import (
    PolicyContext,
    World,
    feature_names_of,
    load_spec,
    run_sessions,
    true_value,
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
        k: ConstantPolicy(v, world.tasks, name=k) for k, v in CONSTANTS.items()
    }
    out["hand-rule"] = HandRule(names.index("u_age"), names.index("u_social"))
    return out


def returns(world: World, pol: object, n: int, seed: int) -> np.ndarray:
    """Per-session returns of ``pol`` (sessions in the runner's order, the same users for every
    policy under one seed)."""
    return true_value(world, pol, n, seed).returns  # type: ignore[arg-type]


def mean_ci(r: np.ndarray) -> tuple[float, float]:
    """Mean and 95 % normal half-width."""
    return float(r.mean()), float(1.96 * r.std(ddof=1) / np.sqrt(len(r)))


def bootstrap_spearman(
    truth: np.ndarray, learned: np.ndarray, n_boot: int, seed: int
) -> tuple[float, float, float]:
    """Spearman of the policy means with a percentile bootstrap interval.

    Args:
        truth: Per-session returns, shape (n_policies, n_sim_sessions).
        learned: Per-session returns, shape (n_policies, n_env_sessions).
        n_boot: Bootstrap replicates (sessions resampled jointly across policies in each world).
        seed: Seed of the resampling.

    Returns:
        (2.5 %, 50 %, 97.5 %) quantiles of the replicated Spearman correlation.
    """
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(n_boot):
        a = truth[:, rng.integers(0, truth.shape[1], truth.shape[1])].mean(axis=1)
        b = learned[:, rng.integers(0, learned.shape[1], learned.shape[1])].mean(axis=1)
        reps.append(spearman(list(a), list(b)))
    q = np.quantile(reps, [0.025, 0.5, 0.975])
    return float(q[0]), float(q[1]), float(q[2])


def spearman(a: list[float], b: list[float]) -> float:
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sessions", type=int, default=20000, help="logged sessions")
    ap.add_argument("--sim-sessions", type=int, default=10000, help="sessions per policy (truth)")
    ap.add_argument("--env-sessions", type=int, default=4000, help="sessions per policy (learned)")
    ap.add_argument("--seed", type=int, default=12345, help="seed of the evaluation users")
    ap.add_argument("--log-seed", type=int, default=1, help="seed of the logged sessions")
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
    d = LearnedEnvConfig()
    ap.add_argument("--leave-recency", type=float, default=d.leave_recency_decay)
    ap.add_argument(
        "--leave-actions",
        action=argparse.BooleanOptionalAction,
        default=d.leave_action_inputs,
        help="weights as leave-model inputs",
    )
    ap.add_argument(
        "--leave-session-sums",
        action=argparse.BooleanOptionalAction,
        default=d.leave_session_sums,
        help="running session sums as leave-model inputs",
    )
    ap.add_argument("--leave-classes", type=int, default=d.leave_classes)
    ap.add_argument("--leave-l2", type=float, default=d.leave_l2)
    ap.add_argument("--bootstrap", type=int, default=2000, help="bootstrap replicates")
    ap.add_argument("--workdir", default="runs/learned_bench")
    ap.add_argument("--out", default="runs/learned_bench.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    sim = World(load_spec())
    mixed = resolve_sim_policy(sim, "mixed")
    _, logs = run_sessions(sim, mixed, args.sessions, args.log_seed, record=True)
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
            leave_recency_decay=args.leave_recency,
            leave_action_inputs=args.leave_actions,
            leave_session_sums=args.leave_session_sums,
            leave_classes=args.leave_classes,
            leave_l2=args.leave_l2,
            fusion=sim.fusion,
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
    truth_path = work / f"truth_{args.sim_sessions}_{args.seed}.npz"
    truth = dict(np.load(truth_path)) if truth_path.is_file() else {}
    r_sim, r_env = [], []
    for (name, p_sim), p_env in zip(policies(sim).items(), policies(learned).values(), strict=True):
        if name not in truth:
            truth[name] = returns(sim, p_sim, args.sim_sessions, args.seed)
            np.savez(truth_path, **truth)
        r_sim.append(truth[name])
        r_env.append(returns(learned, p_env, args.env_sessions, args.seed))
        v_sim, h_sim = mean_ci(r_sim[-1])
        v_env, h_env = mean_ci(r_env[-1])
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
    boot = bootstrap_spearman(np.stack(r_sim), np.stack(r_env), args.bootstrap, args.seed)
    sensible = [i for i, r in enumerate(rows) if r["policy"] != "click-only"]
    rho7 = spearman([rows[i]["true"] for i in sensible], [rows[i]["learned"] for i in sensible])
    boot7 = bootstrap_spearman(
        np.stack(r_sim)[sensible], np.stack(r_env)[sensible], args.bootstrap, args.seed
    )
    print()
    print("| policy | true value (sim) | learned env | relative error |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['policy']} | {r['true']:.2f} ± {r['true_ci95']:.2f} | "
            f"{r['learned']:.2f} ± {r['learned_ci95']:.2f} | {r['rel_error']:+.3f} |"
        )
    mae = float(np.mean([abs(r["rel_error"]) for r in rows]))
    print(
        f"\nSpearman rank correlation: {rho:.3f} (target >= 0.8), bootstrap 95 % "
        f"[{boot[0]:.3f}, {boot[2]:.3f}]; mean |rel error| {mae:.3f}"
    )
    print(
        f"without click-only ({len(sensible)} policies): Spearman {rho7:.3f}, bootstrap 95 % "
        f"[{boot7[0]:.3f}, {boot7[2]:.3f}]"
    )
    print(f"timings: simulate {t_sim:.0f} s, make-env {t_fit:.0f} s, valuation {t_eval:.0f} s")
    doc = {
        "spearman": rho,
        "spearman_bootstrap_95": [boot[0], boot[2]],
        "spearman_without_click_only": rho7,
        "spearman_without_click_only_bootstrap_95": [boot7[0], boot7[2]],
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
