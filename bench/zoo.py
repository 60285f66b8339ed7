"""The world-zoo bench: today's defaults, end to end, on every world of a half (``docs/zoo.md``).

For every world (``batchrl-mtf zoo list``) it drives the toolkit as a user would, through the
``batchrl-mtf`` commands (subprocesses, default flags):

1. ``zoo make`` the spec, ``simulate`` the logs with the world's logging recipe;
2. ``build-dataset`` (the world's reward TOML) -> ``train`` (default algorithm and steps) ->
   ``export`` (default table; the platform's ``--formula``/``--beta`` are facts, not tuning);
   and ``select`` once the toolkit has that command (issue 16; see :data:`SELECT_HOOK`), with
   ``--reuse`` of the default training (the portfolio's ``td3bc-alpha10-s0``, not retrained);
3. the truth (in the simulator): production, best constant (online CEM), per-segment oracle
   (``batchrl_mtf.sim.zoo_truth``, cached) and the default table, on the same fresh sessions;
4. a by-hand d3rlpy script (``bench/byhand_d3rlpy.py --algo td3bc``: raw ``u_*`` + depth,
   d3rlpy's defaults, the toolkit's step budget), valued in the simulator;
5. ``evaluate`` of 8 policies (production, best constant, the default table and network, the box
   centre, half-way to the best constant, two perturbations of production) against their truth:
   the recommended estimate's Spearman, median relative error, 95% coverage, and how far the
   default table's estimate is above its truth;
6. ``make-env`` on the logs: replay divergence (logged weights replayed in the learned env) and
   the sim-to-real rank correlation and median relative error of the same 8 policies.

It prints one row per world and the aggregates, and writes JSON. Every stage is cached under
``--work`` (keyed by its inputs); rerun to resume (``--reuse-outputs`` also takes outputs that
an interrupted run left on disk). Sizing (to fit a 2-core machine, documented in
docs/zoo.md): ``evaluate`` runs with its defaults (every estimator, three FQE fits: the batched
FQE engine made that affordable; until 2026-12-03 the bench ran ``--estimators fqe,dr,wdr,wpdis
--fqe-fits 1 --fqe-steps 2000 --n-bootstrap 200``) and ``export`` ``--fqe-fits 1 --fqe-steps
1000`` (only its fidelity line; the table does not depend on it). The ``--jobs`` worlds share the cores: every command runs
with the job's share of threads (:func:`threads_per_job`), the largest worlds start first, and
the run ends with the time each stage took, summed over the worlds.

Usage::

    nice python bench/zoo.py --half heldout --jobs 2 [--worlds h01,h02] [--work runs/zoo]
        [--out runs/zoo/heldout.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from train_quality import ColumnPolicy  # noqa: E402
from zoo_report import aggregate, print_report, world_metrics  # noqa: E402

from batchrl_mtf.core.threads import usable_cores  # noqa: E402
from batchrl_mtf.sim import FixedPolicy, World, feature_names_of  # noqa: E402
from batchrl_mtf.sim.zoo import ZooWorld, get_world, zoo_worlds  # noqa: E402
from batchrl_mtf.sim.zoo_truth import TruthConfig, policy_returns, world_truth  # noqa: E402
from batchrl_mtf.training.checkpoint import load_algo  # noqa: E402

CLI = [sys.executable, "-m", "batchrl_mtf"]
SELECT_HOOK = "select"
"""Issue 16's command: when ``batchrl-mtf select --help`` succeeds, the bench runs
``select DATASET --out W/select`` and values ``W/select/table.json`` as the ``selected`` row."""
EVALUATE_SIZING: list[str] = []
"""Flags of the bench's ``evaluate`` beyond ``--gamma 1``: none (its defaults, module docstring)."""
EXPORT_SIZING = ["--fqe-fits", "1", "--fqe-steps", "1000"]


THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
"""Set in every command the bench runs to the threads of one job (``--jobs`` worlds share the
cores; see :func:`threads_per_job`)."""


def threads_per_job(jobs: int) -> int:
    """CPU threads of each of ``jobs`` parallel worlds: the cores shared out, at least 1.

    Every world's commands run with this many torch/BLAS threads (:data:`THREAD_VARS`), and
    ``select`` trains its candidates one after another when that is 1 (``--set parallel=1``):
    two worlds on two cores with each library's default of one thread per core ran 4+ spinning
    threads on 2 cores, which made ``make-env`` several times slower (docs/zoo.md, Sizing).
    """
    return max(1, usable_cores() // max(1, jobs))


def run(cmd: list[str], log: Path) -> None:
    """Run one command, appending its output to ``log``; raise with the log's tail on failure."""
    with log.open("a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode:
        tail = log.read_text().splitlines()[-8:]
        raise RuntimeError(f"{' '.join(cmd[2:5])} failed ({proc.returncode}):\n" + "\n".join(tail))


class Stages:
    """Stage cache of one world: ``W/stages.json`` maps a stage to the key of its inputs."""

    def __init__(self, wdir: Path) -> None:
        self.path = wdir / "stages.json"
        self.done: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.seconds: dict[str, float] = {}

    def fresh(self, name: str, key: object, outputs: list[Path]) -> bool:
        """Whether stage ``name`` is cached with this key and its outputs exist."""
        return self.done.get(name, {}).get("key") == key and all(p.exists() for p in outputs)

    def record(self, name: str, key: object, seconds: float, result: object = None) -> None:
        self.done[name] = {"key": key, "seconds": seconds, "result": result}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.done, indent=1))
        os.replace(tmp, self.path)


def has_command(name: str) -> bool:
    """Whether the installed ``batchrl-mtf`` has command ``name``."""
    proc = subprocess.run([*CLI, name, "--help"], capture_output=True, check=False)
    return proc.returncode == 0


def summary(r: np.ndarray) -> dict[str, Any]:
    m, h = float(r.mean()), 1.96 * float(r.std(ddof=1)) / np.sqrt(len(r))
    return {"mean": m, "ci95": [m - h, m + h]}


def ope_policies(zw: ZooWorld, truth: dict[str, Any], wdir: Path) -> dict[str, str]:
    """The 8 policies valued offline: name -> ``--policy`` argument."""
    world = World(zw.spec())
    lo, hi = float(world.low[0]), float(world.high[0])
    prod = np.asarray(truth["production"]["weights"])
    best = np.asarray(truth["best_constant"]["weights"])
    rng = np.random.default_rng([zw.seed, 8])

    def const(w: np.ndarray) -> str:
        return "constant:" + ",".join(f"{x:.4g}" for x in np.clip(w, lo, hi))

    out = {
        "production": const(prod),
        "best-constant": const(best),
        "default-table": str(wdir / "table.json"),
        "default-network": str(wdir / "train"),
        "centre": const(np.full(len(prod), (lo + hi) / 2)),
        "half-way": const((prod + best) / 2),
    }
    for i, scale in enumerate((0.15, 0.3)):
        out[f"perturb-{i + 1}"] = const(prod + scale * (hi - lo) * rng.standard_normal(len(prod)))
    return out


def rollout(env: Path, policy: str, sessions: int, seed: int, out: Path, log: Path) -> dict:
    """True (or learned-env) value of ``policy`` via ``batchrl-mtf rollout``."""
    if not out.is_file():
        cmd = [*CLI, "rollout", "--env", str(env), "--policy", policy]
        run([*cmd, "--sessions", str(sessions), "--seed", str(seed), "--out", str(out)], log)
    doc = json.loads(out.read_text())
    return {"mean": doc["return"]["mean"], "ci95": doc["return"]["ci95"]}


def bench_world(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every stage of one world (cached); returns its raw results."""
    zw = get_world(name)
    wdir = args.work / name
    wdir.mkdir(parents=True, exist_ok=True)
    log = wdir / "commands.log"
    st = Stages(wdir)
    spec, logs, reward = wdir / "spec.toml", wdir / "logs.parquet", wdir / "reward.toml"
    fusion = zw.doc["fusion"]
    fusion_flags = ["--formula", fusion["formula"]]
    if fusion["formula"] == "logsum":
        fusion_flags += ["--beta", ",".join(str(b) for b in fusion["beta"])]
    text = zw.to_toml()
    t_all = time.perf_counter()

    ran: dict[str, float] = {}  # seconds of the stages this run computed (not cached)

    def stage(key_name: str, key: object, outputs: list[Path], fn: Any) -> Any:
        if st.fresh(key_name, key, outputs):
            return st.done[key_name].get("result")
        t = time.perf_counter()
        result = fn()
        ran[key_name] = time.perf_counter() - t
        st.record(key_name, key, ran[key_name], result)
        return result

    def make_logs() -> None:
        run([*CLI, "zoo", "make", name, "--out", str(spec)], log)
        reward.write_text(tomli_w.dumps({"reward": zw.doc["reward"]}))
        run(
            [
                *CLI,
                "simulate",
                "--env",
                str(spec),
                "--sessions",
                str(zw.sessions),
                "--policy",
                zw.logging,
                "--seed",
                str(zw.log_seed),
                "--out",
                str(logs),
            ],
            log,
        )

    stage("logs", text, [spec, logs, reward], make_logs)
    has_select = has_command(SELECT_HOOK)
    if args.select_only and not has_select:
        raise RuntimeError("--select-only: this batchrl-mtf has no select command")
    tcfg = TruthConfig(eval_sessions=args.truth_sessions)
    truth = stage(
        "truth",
        [text, args.truth_sessions],
        [],
        lambda: world_truth(zw, tcfg, args.work / "truth"),
    )
    ds, pol, table = wdir / "ds", wdir / "train", wdir / "table.json"
    stage(
        "build-dataset",
        text,
        [ds],
        lambda: run(
            [
                *CLI,
                "build-dataset",
                str(logs),
                "--reward",
                str(reward),
                "--out",
                str(ds),
                "--overwrite",
            ],
            log,
        ),
    )
    if not args.select_only:  # the default end to end (train -> export)
        stage(
            "train",
            text,
            [pol],
            lambda: run([*CLI, "-q", "train", str(ds), "--out", str(pol), "--overwrite"], log),
        )
        stage(
            "export",
            text,
            [table],
            lambda: run(
                [
                    *CLI,
                    "export",
                    str(pol),
                    "--dataset",
                    str(ds),
                    "--out",
                    str(table),
                    *fusion_flags,
                    *EXPORT_SIZING,
                ],
                log,
            ),
        )
    selected = None
    if has_select:  # issue 16: off-policy selection
        sel = wdir / "select"
        # production's weights are a fact the platform knows (as --formula/--beta)
        prod_flag = ["--production", ",".join(str(w) for w in fusion["production"])]
        stage(
            "select",
            text,
            [sel],
            lambda: run(
                [
                    *CLI,
                    "-q",
                    SELECT_HOOK,
                    str(ds),
                    "--out",
                    str(sel),
                    "--overwrite",
                    *fusion_flags,
                    *prod_flag,
                    "--set",
                    f"parallel={threads_per_job(args.jobs)}",
                    # the default training above is the portfolio's td3bc-alpha10-s0: reused
                    # (copied, same bytes) instead of trained again
                    *([] if args.select_only else ["--reuse", str(pol)]),
                ],
                log,
            ),
        )
        selected = str(sel / "table.json")

    def candidate_truths() -> dict[str, Any]:
        """True value of every candidate table ``select`` estimated (for choosing its rule on
        the tuning half: ``bench/select_rules.py``)."""
        doc = json.loads((sel / "selection.json").read_text())
        out = {}
        for c in doc["candidates"]:
            if c["table"] is None or c["name"] == "production":
                continue
            out[c["name"]] = rollout(
                spec,
                str(sel / c["table"]),
                args.truth_sessions,
                tcfg.eval_seed,
                wdir / "select_truth" / f"{c['name']}.json",
                log,
            )
        return out

    cand_truth = None
    if selected is not None and (args.candidate_truth or args.select_only):
        (wdir / "select_truth").mkdir(exist_ok=True)
        cand_truth = stage("candidate-truth", [text, args.truth_sessions], [sel], candidate_truths)
    if args.select_only:
        return {
            "world": zw.summary(),
            "selection": json.loads((sel / "selection.json").read_text()) if selected else None,
            "truth": truth,
            "candidate_truth": cand_truth,
            "seconds": {k: v.get("seconds") for k, v in st.done.items()},
            "ran_s": ran,
            "wall_s": time.perf_counter() - t_all,
        }

    def byhand() -> dict[str, Any]:
        import torch

        torch.set_num_threads(threads_per_job(args.jobs))
        out = wdir / "byhand"
        if not (args.reuse_outputs and (out / "state.json").is_file()):
            run(
                [
                    sys.executable,
                    str(HERE / "byhand_d3rlpy.py"),
                    str(logs),
                    "--out",
                    str(out),
                    "--reward",
                    str(reward),
                    "--algo",
                    "td3bc",
                    "--n-steps",
                    "5000",
                ],
                log,
            )
        meta = json.loads((out / "state.json").read_text())
        world = World(zw.spec())
        names = feature_names_of(world)
        algo = load_algo(out / "model.json", out / "model.safetensors", "cpu:0")
        p = ColumnPolicy(
            algo, [names.index(c) for c in meta["state"]], world.tasks, world.low, world.high
        )
        return summary(policy_returns(world, FixedPolicy(p), args.truth_sessions, tcfg.eval_seed))

    hand = stage("byhand", [text, args.truth_sessions], [wdir / "byhand"], byhand)
    policies = ope_policies(zw, truth, wdir)
    if selected is not None:
        policies["selected"] = selected

    def truths() -> dict[str, Any]:
        out = {"production": truth["production"], "best-constant": truth["best_constant"]}
        for k, v in policies.items():
            if k not in out:
                out[k] = rollout(
                    spec, v, args.truth_sessions, tcfg.eval_seed, wdir / f"true_{k}.json", log
                )
        return out

    true_values = stage("policy-truth", [text, args.truth_sessions, list(policies)], [], truths)
    ope_out = wdir / "ope.json"

    def ope() -> dict[str, Any]:
        cmd = [*CLI, "evaluate", str(ds), "--gamma", "1", "--out", str(ope_out)]
        for v in policies.values():
            cmd += ["--policy", v]
        if not (args.reuse_outputs and ope_out.is_file()):
            run(cmd + EVALUATE_SIZING, log)
        doc = json.loads(ope_out.read_text())
        if len(doc["policies"]) != len(policies):
            raise RuntimeError(f"{ope_out}: expected {len(policies)} policies")
        # the report lists the policies in --policy order
        return {k: p.get("recommended") for k, p in zip(policies, doc["policies"], strict=True)}

    estimates = stage("evaluate", [text, list(policies), EVALUATE_SIZING], [ope_out], ope)
    learned = None
    if not args.skip_learned:
        env = wdir / "learned" / "env.toml"

        def make_env() -> dict[str, Any]:
            cmd = [
                *CLI,
                "make-env",
                str(logs),
                "--reward",
                str(reward),
                "--out",
                str(env),
                "--overwrite",
            ]
            validation = env.parent / "env" / "validation.json"
            if not (args.reuse_outputs and validation.is_file()):
                run(cmd + fusion_flags, log)
            val = json.loads(validation.read_text())
            rep = val["replay"]
            values = {
                k: rollout(env, v, args.env_sessions, tcfg.eval_seed, wdir / f"env_{k}.json", log)
                for k, v in policies.items()
            }
            return {
                "replay_return_logs": rep["logged"]["return_per_session"],
                "replay_return_env": rep["learned"]["return_per_session"],
                "replay_length_rel": rep["divergence"]["session_length_mean_rel"],
                "values": values,
            }

        learned = stage("make-env", [text, args.env_sessions, list(policies)], [env], make_env)
    sel_doc = wdir / "select" / "selection.json"
    return {
        "world": zw.summary(),
        "selection": json.loads(sel_doc.read_text()) if selected and sel_doc.is_file() else None,
        "candidate_truth": cand_truth,
        "truth": truth,
        "byhand": hand,
        "true_values": true_values,
        "estimates": estimates,
        "learned": learned,
        "seconds": {k: v.get("seconds") for k, v in st.done.items()},
        "ran_s": ran,
        "wall_s": time.perf_counter() - t_all,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--half", choices=["tuning", "heldout", "all"], default="heldout")
    parser.add_argument("--worlds", default=None, help="Comma-separated names (override --half).")
    parser.add_argument("--work", type=Path, default=Path("runs/zoo"))
    parser.add_argument("--out", type=Path, default=None, help="default: WORK/<half>.json")
    parser.add_argument("--jobs", type=int, default=1, help="Worlds run in parallel.")
    parser.add_argument("--truth-sessions", type=int, default=4000)
    parser.add_argument("--env-sessions", type=int, default=1000)
    parser.add_argument("--skip-learned", action="store_true")
    parser.add_argument(
        "--candidate-truth",
        action="store_true",
        help="Also roll out every candidate table select estimated (its true value), for "
        "choosing select's rule (bench/select_rules.py).",
    )
    parser.add_argument(
        "--select-only",
        action="store_true",
        help="Only the stages select needs (logs, truth, build-dataset, select) and every "
        "candidate's true value; writes the raw results for bench/select_rules.py.",
    )
    parser.add_argument(
        "--reuse-outputs",
        action="store_true",
        help="Resume from outputs already on disk (by-hand model, ope.json, the learned env) "
        "even where stages.json has no record of them (e.g. after an interrupted run).",
    )
    args = parser.parse_args()
    args.work = args.work.resolve()
    if args.worlds:
        names = [n.strip() for n in args.worlds.split(",") if n.strip()]
        for n in names:
            get_world(n)
    else:
        names = [w.name for w in zoo_worlds() if args.half in ("all", w.half)]
    out = args.out or args.work / f"{(args.worlds and 'subset') or args.half}.json"
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    results: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    threads = threads_per_job(args.jobs)
    for var in THREAD_VARS:  # inherited by the worker processes and every command they run
        os.environ[var] = str(threads)
    print(f"{len(names)} worlds, {args.jobs} at a time, {threads} thread(s) each", flush=True)
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        # largest logs first, so the longest world does not start last (shorter makespan)
        order = sorted(names, key=lambda n: -get_world(n).sessions)
        submitted = {n: pool.submit(bench_world, n, args) for n in order}
        futures = {n: submitted[n] for n in names}
        for n, f in futures.items():
            try:
                results.append(f.result())
                print(f"{n}: done in {results[-1]['wall_s']:.0f}s", flush=True)
            except Exception as exc:  # report every world, even when one fails
                errors[n] = str(exc)
                print(f"{n}: FAILED {exc}", flush=True)
    if args.select_only:
        doc0 = {"command": " ".join(sys.argv), "errors": errors, "raw": results}
        doc0["wall_s"] = time.perf_counter() - t0
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc0, indent=1))
        print(f"wall {doc0['wall_s'] / 60:.1f} min; json: {out}")
        return
    rows = [world_metrics(r) for r in results]
    agg = aggregate(rows)
    wall = time.perf_counter() - t0
    doc = {
        "command": " ".join(sys.argv),
        "worlds": rows,
        "aggregate": agg,
        "errors": errors,
        "wall_s": wall,
        "load_average": {"start": load0, "end": os.getloadavg()[0]},
        "cpus": os.cpu_count(),
        "raw": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    print_report(rows, agg)
    per_stage: dict[str, float] = {}
    for r in results:
        for k, v in r.get("ran_s", {}).items():
            per_stage[k] = per_stage.get(k, 0.0) + v
    cached = sorted({k for r in results for k in r["seconds"]} - set(per_stage))
    print(
        "\nstage time this run, summed over worlds (min): "
        + ", ".join(f"{k} {v / 60:.1f}" for k, v in per_stage.items())
        + (f"; cached, not run: {', '.join(cached)}" if cached else "")
    )
    print(f"\nwall {wall / 60:.1f} min; load average {load0:.2f} -> {os.getloadavg()[0]:.2f}")
    print(f"json: {out}")


if __name__ == "__main__":
    main()
