"""Quality target of ``batchrl-mtf train``: true value of trained policies on the default world.

Logs ``--sessions`` sessions of the ``mixed`` logging policy in the default simulated world
(``envs/short_video.toml``), builds the dataset with the world's reward and weight bounds, trains
every algorithm with its CPU default config (same seed, same step budget), and measures each
policy's true value (mean undiscounted session return over ``--eval-sessions`` fresh simulated
sessions, 95% interval; every policy meets the same users). Baselines: the production weights,
the best constant weights found by online search (``search_constant``, CEM), and the by-hand
d3rlpy script ``bench/byhand_d3rlpy.py`` on the same logs with the same step budget.

Usage::

    python bench/train_quality.py --work runs/bench_quality            # the full table
    python bench/train_quality.py --work runs/bench_quality --algos bcq,bc --byhand-steps 2000

Prints a Markdown table (true value, 95% interval, training minutes, and the *paired*
differences policy - production, policy - best constant and policy - by-hand with their 95%
intervals) and writes ``<work>/quality.json``. Every policy meets the same simulated users (common
random numbers), so the paired difference of per-session returns is a much tighter comparison
than the two marginal intervals. Training minutes are wall-clock minutes of one process with one
torch thread; the machine's load average (``os.getloadavg``) at the start and end of each
training is recorded next to them, since other jobs on the machine slow training down.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from batchrl_mtf.training.checkpoint import load_algo

HERE = Path(__file__).resolve().parent


def prepare_data(work: Path, sessions: int, seed: int) -> Path:
    """Simulate ``mixed`` logs and build the dataset once (cached in ``work``)."""
    from batchrl_mtf.data.build import build_dataset
    from batchrl_mtf.data.config import DatasetConfig
    from batchrl_mtf.resolve import resolve_sim_policy
    from batchrl_mtf.sim.runner import run_sessions
    from batchrl_mtf.sim.spec import load_spec
    from batchrl_mtf.sim.world import World

    work.mkdir(parents=True, exist_ok=True)
    logs_path = work / f"logs_mixed_{sessions}_{seed}.parquet"
    ds_path = work / f"ds_mixed_{sessions}_{seed}"
    world = World(load_spec(None))
    spec = world.spec
    if not logs_path.is_file():
        policy = resolve_sim_policy(world, "mixed")
        t = time.perf_counter()
        _stats, logs = run_sessions(world, policy, sessions, seed, record=True)
        assert logs is not None
        logs.to_parquet(logs_path)
        print(f"simulated {sessions} sessions in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    if not (ds_path / "features.json").is_file():
        t = time.perf_counter()
        config = DatasetConfig(
            action_bounds=(spec.fusion.low, spec.fusion.high), features=spec.features
        )
        build_dataset([logs_path], spec.reward, ds_path, config)
        print(f"built dataset in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    return ds_path


def true_value(policy: Any, sessions: int, seed: int) -> tuple[dict[str, Any], np.ndarray]:
    """Mean session return of a ``Policy`` in the default world with a 95% interval.

    Returns:
        The summary (mean, low, high, per-segment means) and the per-session returns, shape
        (sessions,), in the simulator's (round, user) order: the same users for every policy.
    """
    from batchrl_mtf.sim.runner import true_value as measure

    value = measure(None, policy, sessions, seed)
    summary = value.summary
    ret = summary["return"]
    segments = {name: float(v["return"]["mean"]) for name, v in summary["by_segment"].items()}
    doc = {
        "mean": float(ret["mean"]),
        "low": float(ret["ci95"][0]),
        "high": float(ret["ci95"][1]),
        "by_segment": segments,
    }
    return doc, value.returns


def paired_difference(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean of ``a - b`` over the same simulated sessions with a normal 95% interval."""
    d = a - b
    half = 1.96 * float(np.std(d, ddof=1)) / math.sqrt(len(d))
    m = float(np.mean(d))
    return {"diff": m, "low": m - half, "high": m + half}


def load_average() -> float:
    """The machine's 1-minute load average (NaN where the OS does not report it)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")


class ColumnPolicy:
    """A d3rlpy model that sees only some observation columns (the by-hand script's state)."""

    def __init__(
        self, algo: Any, columns: list[int], tasks: tuple[str, ...], low: float, high: float
    ) -> None:
        self.algo, self.columns, self._tasks, self.low, self.high = algo, columns, tasks, low, high

    @property
    def name(self) -> str:
        return "by-hand d3rlpy"

    @property
    def tasks(self) -> tuple[str, ...]:
        return self._tasks

    def act(self, observations: np.ndarray) -> np.ndarray:
        x = np.asarray(observations)[:, self.columns].astype(np.float32)
        return np.clip(np.asarray(self.algo.predict(x), dtype=np.float64), self.low, self.high)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("runs/bench_quality"))
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--log-seed", type=int, default=1)
    parser.add_argument("--eval-sessions", type=int, default=4_000)
    parser.add_argument("--eval-seed", type=int, default=12345)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--algos", default="bcq,cql,iql,td3bc,awac,bc")
    parser.add_argument("--n-steps", type=int, default=None, help="default: TrainConfig's")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--byhand-steps", type=int, default=None, help="default: --n-steps")
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--skip-byhand", action="store_true")
    parser.add_argument(
        "--eval-only",
        action="store_true",
        help="train nothing: value the policies already in --work at their last checkpoint",
    )
    parser.add_argument(
        "--best-constant-json",
        type=Path,
        default=None,
        help="take the online best constant from bench/sim_values.py's JSON instead of searching",
    )
    parser.add_argument(
        "--offline-best-constant",
        action="store_true",
        help="also value the OPE stage's best constant (batchrl_mtf.ope.best_constant, FQE)",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="reuse complete policies (and the by-hand model) already in --work with the same steps",
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from batchrl_mtf.core.config import parse_overrides
    from batchrl_mtf.policy.base import ConstantPolicy
    from batchrl_mtf.sim.spec import load_spec
    from batchrl_mtf.sim.world import World
    from batchrl_mtf.training import TrainConfig, load_policy, resolve_config, train

    ds = prepare_data(args.work, args.sessions, args.log_seed)
    world = World(load_spec(None))
    tasks = tuple(world.tasks)
    n_steps = args.n_steps or TrainConfig().n_steps
    default_algo = TrainConfig().algo
    rows: list[dict[str, Any]] = []
    returns: dict[str, np.ndarray] = {}
    results_path = args.work / "quality.json"
    previous = json.loads(results_path.read_text()) if results_path.is_file() else {}
    obs = None
    try:
        from batchrl_mtf.data.formats import load_dataset

        obs = load_dataset(ds).select("test").observations[:4096]
    except Exception:  # action statistics are informative only
        obs = None

    def add(
        name: str,
        policy: Any,
        minutes: float,
        extra: str = "",
        role: str = "",
        load: tuple[float, float] | None = None,
    ) -> None:
        v, r = true_value(policy, args.eval_sessions, args.eval_seed)
        row: dict[str, Any] = {"policy": name, **v, "minutes": minutes, "note": extra}
        if role:
            row["role"] = role
        if load is not None:
            row["load_average"] = list(load)
        if obs is not None and hasattr(policy, "act"):
            try:
                acts = np.asarray(policy.act(obs))
                row["action_mean"] = [round(float(x), 4) for x in acts.mean(axis=0)]
            except Exception:  # a policy that needs a context (none here) has no statistics
                pass
        rows.append(row)
        returns[name] = r
        print(
            f"{name}: {v['mean']:.3f} [{v['low']:.3f}, {v['high']:.3f}] ({minutes:.2f} min)",
            file=sys.stderr,
        )

    add(
        "production weights",
        ConstantPolicy(tuple(world.spec.fusion.production), tasks, "production"),
        0.0,
        role="production",
    )
    if args.best_constant_json is not None:
        bc_doc = json.loads(args.best_constant_json.read_text())["best_constant"]
        add(
            "best constant (online CEM search, bench/sim_values.py)",
            ConstantPolicy(tuple(bc_doc["weights"]), tasks, "best-constant"),
            0.0,
            f"weights {[round(w, 2) for w in bc_doc['weights']]}",
            role="best_constant",
        )
    elif not args.skip_search:
        from batchrl_mtf.sim.runner import search_constant

        t = time.perf_counter()
        best = search_constant(world, seed=args.seed)
        add(
            "best constant (online CEM search)",
            ConstantPolicy(best.weights, tasks, "best-constant"),
            (time.perf_counter() - t) / 60,
            f"weights {[round(w, 2) for w in best.weights]}, {best.evaluations} online evaluations",
            role="best_constant",
        )
    else:
        for r in previous.get("rows", []):
            if r["policy"].startswith("best constant") and "weights [" in r.get("note", ""):
                w = json.loads(r["note"].split("weights ", 1)[1].split("]", 1)[0] + "]")
                add(
                    r["policy"],
                    ConstantPolicy(tuple(w), tasks, "best-constant"),
                    r["minutes"],
                    r["note"],
                    role="best_constant",
                )
                break

    if args.offline_best_constant:
        from batchrl_mtf.data.formats import load_dataset
        from batchrl_mtf.ope import best_constant

        t = time.perf_counter()
        bc = best_constant(load_dataset(ds).select("train"))
        add(
            "best constant (offline, OPE stage, FQE)",
            ConstantPolicy(bc.weights, tasks, "offline-best-constant"),
            (time.perf_counter() - t) / 60,
            f"weights {[round(w, 2) for w in bc.weights]}",
        )

    for algo in [a for a in args.algos.split(",") if a]:
        layers = [("bench", {"algo": algo, "n_steps": n_steps, "seed": args.seed})]
        if args.overrides:
            layers.append(("--set", parse_overrides(args.overrides)))
        cfg = resolve_config(layers)
        out = args.work / f"policy_{algo}"
        manifest = out / "policy.json"
        done = json.loads(manifest.read_text()) if manifest.is_file() else {}
        role = "default" if algo == default_algo else ""
        label = "toolkit default" if role else "default config"
        if args.eval_only:
            if not done:
                print(f"{algo}: no policy in {out}; skipped", file=sys.stderr)
                continue
            minutes = float(done["training_seconds"]) / 60
            steps_done = int(done["n_steps_done"])
            add(f"{algo} ({label}, {steps_done} steps)", load_policy(out), minutes, role=role)
            continue
        load: tuple[float, float] | None = None
        if args.reuse and done.get("complete") and done.get("n_steps_done") == n_steps:
            minutes = float(done["training_seconds"]) / 60
        else:
            before = load_average()
            t = time.perf_counter()
            train(ds, out, cfg)
            minutes = (time.perf_counter() - t) / 60
            load = (before, load_average())
        add(f"{algo} ({label}, {n_steps} steps)", load_policy(out), minutes, role=role, load=load)

    if not args.skip_byhand:
        steps = args.byhand_steps or n_steps
        out = args.work / "byhand"
        state_path = out / "state.json"
        meta = json.loads(state_path.read_text()) if state_path.is_file() else {}
        load = None
        if args.reuse and meta.get("n_steps") == steps and (out / "model.safetensors").is_file():
            minutes = float(meta["seconds"]) / 60
        else:
            logs = next(args.work.glob(f"logs_mixed_{args.sessions}_{args.log_seed}.parquet"))
            before = load_average()
            t = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    str(HERE / "byhand_d3rlpy.py"),
                    str(logs),
                    "--out",
                    str(out),
                    "--n-steps",
                    str(steps),
                ],
                check=True,
            )
            minutes = (time.perf_counter() - t) / 60
            load = (before, load_average())
            meta = json.loads(state_path.read_text())
        from batchrl_mtf.sim.runner import feature_names_of

        names = feature_names_of(world)
        cols = [names.index(c) for c in meta["state"]]
        algo = load_algo(out / "model.json", out / "model.safetensors", "cpu:0")
        pol = ColumnPolicy(algo, cols, tasks, world.spec.fusion.low, world.spec.fusion.high)
        add(
            f"by-hand d3rlpy BCQ ({steps} steps)",
            pol,
            minutes,
            "raw u_* + session_depth, d3rlpy defaults",
            role="byhand",
            load=load,
        )

    # paired differences over the same simulated users (common random numbers)
    by_role = {r["role"]: r["policy"] for r in rows if r.get("role") and r["role"] != "default"}
    for r in rows:
        paired = {
            role: paired_difference(returns[r["policy"]], returns[name])
            for role, name in by_role.items()
            if name != r["policy"]
        }
        if paired:
            r["paired"] = paired

    doc = {
        "sessions": args.sessions,
        "eval_sessions": args.eval_sessions,
        "eval_seed": args.eval_seed,
        "n_steps": n_steps,
        "default_algo": default_algo,
        "rows": rows,
    }
    args.work.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(doc, indent=2))
    print(
        f"\nDefault world, {args.sessions} logged sessions (mixed), true value over "
        f"{args.eval_sessions} simulated sessions (95% interval; paired differences over the same "
        f"sessions)\n"
    )

    def fmt(r: dict[str, Any], role: str) -> str:
        p = r.get("paired", {}).get(role)
        return "" if p is None else f"{p['diff']:+.2f} [{p['low']:+.2f}, {p['high']:+.2f}]"

    print(
        "| policy | true value | 95% interval | - production | - best constant | - by-hand "
        "| training min | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        load_txt = "/".join(f"{x:.1f}" for x in r.get("load_average", []))
        print(
            f"| {r['policy']} | {r['mean']:.2f} | [{r['low']:.2f}, {r['high']:.2f}] "
            f"| {fmt(r, 'production')} | {fmt(r, 'best_constant')} | {fmt(r, 'byhand')} "
            f"| {r['minutes']:.2f} | {load_txt} |"
        )


if __name__ == "__main__":
    main()
