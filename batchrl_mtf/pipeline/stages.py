"""The pipeline's stages: simulate → dataset → train → evaluate → truth → export → select →
report.

Each function here builds one :class:`~batchrl_mtf.pipeline.runner.Stage`: what it hashes and what
it does. Folders under ``OUT``: ``simulate/``, ``dataset/``, ``train/<algo>/``, ``evaluate/``,
``truth/``, ``export/``, ``select/``, ``report/``; each holds its ``stage.json``.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from datetime import UTC, datetime
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from batchrl_mtf.core.config import config_to_dict
from batchrl_mtf.core.io import (
    atomic_write_bytes,
    atomic_write_text,
    dumps_json,
    hash_bytes,
    hash_files,
)
from batchrl_mtf.data.build import build_dataset
from batchrl_mtf.ope import best_constant, best_constant_table, report_to_dict
from batchrl_mtf.ope.paired import evaluate_each, paired_vs
from batchrl_mtf.pipeline.config import IMPORTANCE_WEIGHTED, PipelineConfig
from batchrl_mtf.pipeline.context import (
    Context,
    check_env_fits,
    fusion,
    load_trained,
    ope_config,
    production_weights,
)
from batchrl_mtf.pipeline.evaluation import save_rollouts, save_weights, write_export
from batchrl_mtf.pipeline.glue import (
    load_npz,
    npz_bytes,
    read_stage_json,
    rollout_arrays,
    truth_summary,
)
from batchrl_mtf.pipeline.report import write_report
from batchrl_mtf.pipeline.selecting import OUTPUTS as SELECT_OUTPUTS
from batchrl_mtf.pipeline.selecting import run_selection
from batchrl_mtf.pipeline.stage import Stage, input_hash
from batchrl_mtf.policy import ConstantPolicy, LoggingPolicy, Policy
from batchrl_mtf.resolve import resolve_ope_policy, resolve_sim_policy
from batchrl_mtf.sim import load_spec, run_sessions, true_value
from batchrl_mtf.training import TrainConfig, train

__all__ = ["Context", "plan", "train_job"]

logger = logging.getLogger("batchrl_mtf.pipeline")


def _spec_hash(env: str) -> str:

    return hash_files([load_spec(env).source])


def plan(ctx: Context) -> list[Stage]:
    """The stages of ``ctx.config``, in run order."""
    cfg = ctx.config
    stages: list[Stage] = []
    if cfg.data.simulate is not None:
        stages.append(_simulate_stage(ctx))
    stages.append(_dataset_stage(ctx))
    stages.extend(_train_stage(ctx, algo) for algo in cfg.train.algos)
    stages.append(_evaluate_stage(ctx))
    if cfg.truth is not None:
        stages.append(_truth_stage(ctx))
    stages.append(_export_stage(ctx))
    if cfg.select is not None:
        stages.append(_select_stage(ctx))
    stages.append(_report_stage(ctx))
    return stages


# --------------------------------------------------------------------------------- simulate


def _simulate_stage(ctx: Context) -> Stage:
    sim = ctx.config.data.simulate
    assert sim is not None
    folder = ctx.folder("simulate")

    def inputs() -> dict[str, Any]:
        return {"simulate": dataclasses.asdict(sim), "env_hash": _spec_hash(sim.env)}

    def run() -> tuple[str, dict[str, Any]]:

        world = ctx.world(sim.env)
        pol = resolve_sim_policy(world, sim.policy, sim.sigma, sim.random_sigma)
        stats, logs = run_sessions(world, pol, sim.sessions, sim.seed, record=True)
        assert logs is not None
        buf = io.BytesIO()
        logs.to_parquet(buf, index=False, compression="zstd")
        data = buf.getvalue()
        atomic_write_bytes(folder / "logs.parquet", data)
        summary = {
            "env": sim.env,
            "policy": pol.name,
            "sessions": sim.sessions,
            "requests": int(stats.length.sum()),
            "rows": len(logs),
            "mean_return": float(stats.returns.mean()),
            "seed": sim.seed,
        }
        logger.info(
            "simulated %d sessions, %d requests, %d rows (policy %s)",
            sim.sessions,
            summary["requests"],
            len(logs),
            pol.name,
        )
        return hash_bytes(data), summary

    return Stage("simulate", folder, 1, inputs, run, ("logs.parquet",))


# --------------------------------------------------------------------------------- dataset


def _log_paths(ctx: Context) -> list[str]:
    if ctx.config.data.simulate is not None:
        return [str(ctx.folder("simulate") / "logs.parquet")]
    return list(ctx.config.data.logs)


def _dataset_stage(ctx: Context) -> Stage:
    cfg = ctx.config
    folder = ctx.folder("dataset")

    def inputs() -> dict[str, Any]:
        up = ctx.upstream("simulate")
        logs = up["simulate"] if up else hash_files(cfg.data.logs)
        return {
            "data": cfg.section("data"),
            "features": _features(cfg),
            "reward": cfg.section("reward"),
            "logs_hash": logs,
        }

    def run() -> tuple[str, dict[str, Any]]:

        ctx._cache.pop("dataset", None)
        report = build_dataset(
            _log_paths(ctx), cfg.reward, folder, cfg.data.dataset, overwrite=True
        )
        acc = report["accounting"]
        summary = {"accounting": acc, "episodes": report["episodes"], "reward": report["reward"]}
        return str(report["dataset_hash"]), summary

    return Stage(
        "dataset", folder, 1, inputs, run, ("transitions.parquet", "features.json", "report.json")
    )


def _features(cfg: PipelineConfig) -> dict[str, object]:

    return config_to_dict(cfg.data.dataset.features)


# --------------------------------------------------------------------------------- train


def train_job(dataset: str, folder: str, config: TrainConfig) -> dict[str, Any]:
    """The train stage's work (also run in a worker process): train ``config`` on the dataset
    directory ``dataset`` into ``folder``; returns the stage summary."""
    result = train(dataset, folder, config, overwrite=True, show_progress=False)
    return _train_summary(config.algo, result)


def _train_summary(algo: str, result: Any) -> dict[str, Any]:
    last = dict(result.metrics[-1]) if result.metrics else {}
    return {
        "algo": algo,
        "n_steps": result.n_steps_done,
        "train_seconds": result.seconds,
        "last": last,
    }


def _train_stage(ctx: Context, algo: str) -> Stage:
    name = f"train:{algo}"
    folder = ctx.folder(name)
    tc = ctx.config.train.resolved(algo, f"{ctx.config.source} [train]")

    def inputs() -> dict[str, Any]:
        return {"train": tc.to_dict(), **ctx.upstream("dataset")}

    def run() -> tuple[str, dict[str, Any]]:
        started = ctx.jobs.pop(name, None)
        if started is not None:  # the runner trained it in a worker process
            summary = started.result()
        else:
            result = train(ctx.dataset(), folder, tc, overwrite=True, show_progress=ctx.progress)
            summary = _train_summary(algo, result)
        return hash_files([folder / "model.safetensors"]), summary

    job = (train_job, (str(ctx.folder("dataset")), str(folder), tc))
    return Stage(
        name, folder, 1, inputs, run, ("model.safetensors", "policy.json", "metrics.csv"), job
    )


# --------------------------------------------------------------------------------- evaluate


def _evaluate_stage(ctx: Context) -> Stage:
    cfg = ctx.config
    folder = ctx.folder("evaluate")
    algos = cfg.train.algos

    def inputs() -> dict[str, Any]:
        env = cfg.data.simulate.env if cfg.data.simulate is not None else cfg.truth_env
        return {
            "evaluate": cfg.section("evaluate"),
            "fusion": cfg.section("fusion"),  # the dataset's: its bytes (and hash) do not show it
            "export_fusion": None if cfg.export.fusion is None else cfg.export.fusion.to_dict(),
            "env_hash": _spec_hash(env) if env else "",
            **ctx.upstream("dataset", *(f"train:{a}" for a in algos)),
        }

    def run() -> tuple[str, dict[str, Any]]:

        ev = cfg.evaluate
        full = ctx.dataset()
        spec = full.spec
        tasks = tuple(spec.tasks)
        ope = ope_config(ctx)
        data = full.select(ev.split)
        prod, prod_source = production_weights(ctx)
        summary: dict[str, Any] = {
            "production": {"weights": list(prod), "source": prod_source},
            "estimators": list(ope.estimators),
        }
        policies: list[Policy | LoggingPolicy] = []
        for p in ev.policies:
            if p == "production":
                policies.append(ConstantPolicy(prod, tasks, name="production"))
            elif p == "best-constant":
                est = ev.best_constant_estimator
                if est in IMPORTANCE_WEIGHTED and not spec.has_behavior_logp:
                    est = "fqe"
                bc_cfg = dataclasses.replace(ope, estimators=(est,))
                logger.info(
                    "best constant: %d candidates rated by %s", ev.best_constant_candidates, est
                )
                best = best_constant(
                    full.select(ev.best_constant_split),
                    est,
                    ev.best_constant_candidates,
                    ope.seed,
                    bc_cfg,
                )
                table = best_constant_table(best, full, fusion(ctx))
                table.save(folder / "best_constant.json")  # type: ignore[attr-defined]
                summary["best_constant"] = {
                    "weights": list(best.weights),
                    "estimator": est,
                    "value": float(best.estimate.value),
                    "split": ev.best_constant_split,
                    "candidates": len(best.candidates),
                }
                policies.append(ConstantPolicy(best.weights, tasks, name="best-constant"))
            else:
                policies.append(resolve_ope_policy(p, tasks, spec.feature_names))
        trained = [load_trained(ctx, a) for a in algos]
        policies.extend(trained)
        result, per_session = evaluate_each(data, policies, ope, ctx.progress)
        save_weights(folder, data, trained)
        doc = report_to_dict(result, ev.split, str(ctx.folder("dataset")), spec.dataset_hash)
        atomic_write_text(folder / "ope.json", dumps_json(doc))

        atomic_write_bytes(folder / "per_session.npz", npz_bytes(per_session))
        if "production" in [p.name for p in policies]:
            summary["vs_production"] = paired_vs(per_session, "production", result, ope)
        summary["ranking"] = list(result.ranking)
        atomic_write_text(folder / "summary.json", dumps_json(summary))
        files = [folder / "ope.json", folder / "summary.json"]
        return hash_files(files), {"ranking": list(result.ranking)}

    return Stage(
        "evaluate",
        folder,
        1,
        inputs,
        run,
        ("ope.json", "per_session.npz", "summary.json", "weights.npz"),
    )


# --------------------------------------------------------------------------------- truth


def _truth_policies(ctx: Context) -> list[tuple[str, dict[str, Any]]]:
    """``(name, identity)`` of every policy rolled out; the identity keys the per-policy cache."""
    cfg = ctx.config
    ev_summary = read_stage_json(ctx.folder("evaluate") / "summary.json")
    out: list[tuple[str, dict[str, Any]]] = []
    for p in cfg.evaluate.policies:
        if p == "behavior":
            if cfg.data.simulate is None:
                continue  # the logging policy of real logs cannot be rolled out
            sim = cfg.data.simulate
            out.append((p, {"logging": dataclasses.asdict(sim)}))
        elif p == "production":
            out.append((p, {"weights": ev_summary["production"]["weights"]}))
        elif p == "best-constant":
            out.append((p, {"weights": ev_summary["best_constant"]["weights"]}))
        else:
            out.append((p, {"policy": p}))
    for a in cfg.train.algos:
        out.append((a, ctx.upstream(f"train:{a}")))
    return out


def _make_sim_policy(ctx: Context, world: Any, name: str, identity: dict[str, Any]) -> Any:

    tasks = tuple(world.tasks)
    if "logging" in identity:
        sim = ctx.config.data.simulate
        assert sim is not None
        return resolve_sim_policy(world, sim.policy, sim.sigma, sim.random_sigma)
    if "weights" in identity:
        return resolve_sim_policy(
            world, ConstantPolicy(tuple(identity["weights"]), tasks, name=name)
        )
    if "policy" in identity:
        return resolve_sim_policy(world, str(identity["policy"]))
    return resolve_sim_policy(world, load_trained(ctx, name))


def _truth_stage(ctx: Context) -> Stage:
    cfg = ctx.config
    truth = cfg.truth
    assert truth is not None
    env = cfg.truth_env
    folder = ctx.folder("truth")

    def inputs() -> dict[str, Any]:
        return {
            "truth": cfg.section("truth"),
            "env": env,
            "env_hash": _spec_hash(env),
            "policies": dict(_truth_policies(ctx)),
        }

    def run() -> tuple[str, dict[str, Any]]:

        world = ctx.world(env)
        check_env_fits(ctx, world, env)
        old = read_stage_json(folder / "values.json") if (folder / "values.json").is_file() else {}
        old_arrays = load_npz(folder / "rollouts.npz")
        values: dict[str, Any] = {}
        arrays: dict[str, np.ndarray] = {}
        todo = _truth_policies(ctx)
        base = {"truth": cfg.section("truth"), "env_hash": _spec_hash(env)}
        reused = 0
        for name, identity in _progress(todo, ctx.progress, "truth"):
            key = input_hash("truth-policy", 1, {**base, "identity": identity})
            prev = old.get("policies", {}).get(name)
            if prev is not None and prev.get("key") == key and f"returns|{name}" in old_arrays:
                values[name] = prev
                arrays.update({k: v for k, v in old_arrays.items() if k.endswith(f"|{name}")})
                reused += 1
                continue
            res = true_value(
                world, _make_sim_policy(ctx, world, name, identity), truth.sessions, truth.seed
            )
            values[name] = {"key": key, **truth_summary(res)}
            arrays.update(rollout_arrays(name, res))
            logger.info("true value of %s: %.3f", name, res.mean)
        doc = {
            "env": env,
            "sessions": truth.sessions,
            "seed": truth.seed,
            "segments": list(world.segment_names),
            "tasks": list(world.tasks),
            "policies": values,
        }
        save_rollouts(folder, doc, arrays)
        return hash_files([folder / "values.json"]), {"reused": reused, "rolled_out": len(todo)}

    return Stage("truth", folder, 1, inputs, run, ("values.json", "rollouts.npz"))


def _progress(items: list[Any], show: bool, desc: str) -> Any:
    return tqdm(items, desc=desc, unit="policy", disable=not show, leave=False)


# --------------------------------------------------------------------------------- export


def _export_stage(ctx: Context) -> Stage:
    cfg = ctx.config
    folder = ctx.folder("export")
    algo = cfg.learned

    def inputs() -> dict[str, Any]:
        env = cfg.truth_env
        return {
            "export": cfg.section("export"),
            "fusion": cfg.section("fusion"),
            "truth": cfg.section("truth"),
            "evaluate_ope": cfg.section("evaluate"),
            "env_hash": _spec_hash(env) if env else "",
            "sim_env": cfg.data.simulate.env if cfg.data.simulate is not None else "",
            **ctx.upstream("dataset", f"train:{algo}", "evaluate", "truth"),
        }

    def run() -> tuple[str, dict[str, Any]]:

        summary = write_export(ctx, folder, algo)
        return hash_files([folder / "weight_table.json"]), summary

    return Stage(
        "export",
        folder,
        1,
        inputs,
        run,
        ("weight_table.json", "weight_table.csv", "fidelity.json", "weights.npz", "weights.json"),
    )


# --------------------------------------------------------------------------------- select


def _select_stage(ctx: Context) -> Stage:
    cfg = ctx.config
    folder = ctx.folder("select")
    algos = cfg.train.algos

    def inputs() -> dict[str, Any]:
        env = cfg.truth_env
        return {
            "select": cfg.section("select"),
            "evaluate": cfg.section("evaluate"),
            "fusion": cfg.section("fusion"),
            "export_fusion": None if cfg.export.fusion is None else cfg.export.fusion.to_dict(),
            "truth": cfg.section("truth"),
            "env_hash": _spec_hash(env) if env else "",
            "sim_env": cfg.data.simulate.env if cfg.data.simulate is not None else "",
            **ctx.upstream("dataset", "truth", *(f"train:{a}" for a in algos)),
        }

    def run() -> tuple[str, dict[str, Any]]:
        summary = run_selection(ctx, folder)
        return hash_files([folder / "table.json", folder / "selection.json"]), summary

    return Stage("select", folder, 1, inputs, run, SELECT_OUTPUTS)


# --------------------------------------------------------------------------------- report


def _report_stage(ctx: Context) -> Stage:
    cfg = ctx.config
    folder = ctx.folder("report")

    def inputs() -> dict[str, Any]:
        names = [n for n in ctx.records if n != "report"]
        return {
            "config": cfg.to_dict(),
            "label": ctx.label,
            **ctx.upstream(*names),
        }

    def run() -> tuple[str, dict[str, Any]]:

        write_report(ctx, folder)
        return hash_files([folder / "report.md"]), {
            "created": datetime.now(UTC).isoformat(timespec="seconds")
        }

    return Stage("report", folder, 1, inputs, run, ("report.md", "report.html", "headline.md"))
