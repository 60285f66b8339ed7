"""How long does ``evaluate`` take: the batched FQE engine against the d3rlpy one, same run.

Simulates ``--sessions`` logged sessions (``mixed`` logging policy; cached in ``--work``), builds
the dataset, and evaluates ``--policies`` policies (the logging policy and constant weight
vectors around the logged mean) with the default estimators (``OPEConfig()``, all six, 3 FQE and
3 cFQE fits per policy) on ``--split`` (default: all sessions), ``gamma = 1``.

It times ``evaluate_policies`` with ``fqe_engine="batched"`` (default threads: one per core)
and with ``fqe_engine="d3rlpy"`` on the first ``--d3rlpy-policies`` policies (d3rlpy fits one
policy after another, so its time is linear in the policies; the figure for all of them is that
time scaled, and printed as such), with ``torch_threads=1`` as before issue 19. It prints both
wall times, their ratio, the steps the batched fits took, the largest difference between the
engines' estimates in units of the d3rlpy fits' standard error, and the load average at the
start and the end (the machine is shared).

    python bench/ope_speed.py [--sessions 30000] [--policies 10] [--d3rlpy-policies 1]
        [--set fqe_member_groups=false ...]

Target (issue 19): the batched evaluate of 10 policies on 30,000 sessions <= 90 s on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from batchrl_mtf.core.config import config_from_mapping, parse_overrides
from batchrl_mtf.data.formats import load_dataset
from batchrl_mtf.ope import OPEConfig, evaluate_policies, prepare
from batchrl_mtf.ope.fqe_batched import fqe_transitions
from batchrl_mtf.ope.fqe_schedule import step_budget
from batchrl_mtf.policy import ConstantPolicy, LoggingPolicy

ROOT = Path(__file__).resolve().parents[1]


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def _dataset(work: Path, sessions: int, seed: int) -> Path:
    logs = work / f"logs_{sessions}_{seed}.parquet"
    ds = work / f"ds_{sessions}_{seed}"
    cli = [sys.executable, "-m", "batchrl_mtf"]
    if not logs.exists():
        subprocess.run(
            [*cli, "-q", "simulate", "--sessions", str(sessions), "--policy", "mixed",
             "--seed", str(seed), "--out", str(logs)],
            check=True,
        )  # fmt: skip
    if not (ds / "dataset.h5").exists():
        subprocess.run(
            [*cli, "-q", "build-dataset", str(logs), "--reward",
             str(ROOT / "envs" / "reward_default.toml"), "--out", str(ds)],
            check=True,
        )  # fmt: skip
    return ds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sessions", type=int, default=30000)
    ap.add_argument("--policies", type=int, default=10)
    ap.add_argument("--d3rlpy-policies", type=int, default=1, help="0 = skip the d3rlpy engine")
    ap.add_argument("--split", default="all", choices=["all", "train", "test"])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("runs/ope_speed"))
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="OPEConfig field of the batched run (repeatable), e.g. fqe_member_groups=false",
    )  # fmt: skip
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    full = load_dataset(_dataset(args.work, args.sessions, args.seed))
    data = full if args.split == "all" else full.select(args.split)
    tasks = tuple(data.spec.tasks)
    rng = np.random.default_rng(0)
    centre = data.actions.mean(axis=0)
    policies: list[object] = [LoggingPolicy(tasks)]
    for i in range(args.policies - 1):
        w = centre * rng.uniform(0.6, 1.4, size=len(centre))
        policies.append(ConstantPolicy(tuple(float(x) for x in w), tasks, name=f"c{i}"))
    config = config_from_mapping(OPEConfig, {"gamma": 1.0, **parse_overrides(args.set)}, "--set")
    print(f"batched settings: {', '.join(args.set) or 'defaults'}")
    print(f"{data.n_sessions} sessions, {len(data)} requests ({args.split}); "
          f"{len(policies)} policies; estimators {','.join(config.estimators)}; "
          f"{config.fqe_n_fits} fits each; {os.cpu_count()} cores")  # fmt: skip
    print(f"start: {_load()}")
    t0, c0 = time.perf_counter(), time.process_time()
    new = evaluate_policies(data, policies, config)  # type: ignore[arg-type]
    t_new, c_new = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"batched: {t_new:.1f} s wall, {c_new:.1f} s CPU for {len(policies)} policies ({_load()})"
    )
    steps = [s for p in new.policies for s in p.fqe_steps.values()]
    pd0 = prepare(data, policies[0], 1.0)  # type: ignore[arg-type]
    budget = step_budget(config, len(fqe_transitions(pd0).rows), pd0.horizon)
    print(f"  batched fits: budget {budget} steps, took {min(steps):.0f}-{max(steps):.0f} "
          "(mean over each policy's fits)")  # fmt: skip
    on_policy = float(np.add.reduceat(data.rewards, pd0.starts).mean())
    logged = {n: round(e.value, 2) for n, e in new.policies[0].estimates.items()}
    print(f"  logging policy: on-policy mean logged return {on_policy:.2f}; batched {logged}")
    k = min(args.d3rlpy_policies, len(policies))
    if k > 0:
        ref_cfg = dataclasses.replace(OPEConfig(gamma=1.0), fqe_engine="d3rlpy", torch_threads=1)
        t0, c0 = time.perf_counter(), time.process_time()
        ref = evaluate_policies(data, policies[:k], ref_cfg)  # type: ignore[arg-type]
        t_ref, c_ref = time.perf_counter() - t0, time.process_time() - c0
        scaled, c_scaled = t_ref * len(policies) / k, c_ref * len(policies) / k
        print(f"d3rlpy: {t_ref:.1f} s wall, {c_ref:.1f} s CPU for {k} policies -> {scaled:.0f} s "
              f"wall, {c_scaled:.0f} s CPU for {len(policies)} (scaled; fits run one after "
              f"another) ({_load()})")  # fmt: skip
        print(f"ratio d3rlpy / batched: {scaled / t_new:.1f}x wall, {c_scaled / c_new:.1f}x CPU")
        worst = 0.0
        for r, b in zip(ref.policies, new.policies, strict=False):
            for name, est in r.estimates.items():
                se = est.fit_se
                diff = b.estimates[name].value - est.value
                print(f"  {r.name:10s} {name:6s} d3rlpy {est.value:9.4g}  batched "
                      f"{b.estimates[name].value:9.4g}  fit_se {se if se else 0:.3g}")  # fmt: skip
                if se and se > 1e-6 * max(abs(est.value), 1.0):  # not the IS estimators' 0 spread
                    worst = max(worst, abs(diff) / se)
        print(f"largest |batched - d3rlpy| / d3rlpy fit_se: {worst:.2f}")
    print(f"end: {_load()}")


if __name__ == "__main__":
    main()
