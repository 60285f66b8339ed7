"""``make-env``: learn a world model from logs and write it as a platform spec with artefacts.

From validated logs (schema v1) this fits, in order (``docs/learned_env.md``):

1. the item catalogue seen in the logs (``item_id``, ``duration``, ``exposures``);
2. the start states: the state vector of every logged session's first request;
3. the leave model (:mod:`batchrl_mtf.learned.leave`);
4. the ranker (``--predictor DIR``, or one fitted on the earliest half of the rows by ``ts``);
5. the response model: a second predictor of every feedback column, fitted on the **latest**
   half of the rows (disjoint from the ranker's, another seed), so the ranker is not graded
   by itself;

then writes ``OUT.toml`` (``world.kind = "learned"``) and the artefacts in ``OUT/`` beside it,
and runs the replay check (:mod:`batchrl_mtf.learned.validate`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import tomli_w

from batchrl_mtf.core.config import config_to_dict
from batchrl_mtf.core.fusion import Fusion
from batchrl_mtf.core.io import (
    atomic_dir,
    atomic_write_text,
    check_output_dir,
    dumps_json,
    hash_files,
    package_versions,
    read_marker,
)
from batchrl_mtf.core.threads import limit_threads
from batchrl_mtf.data.clean import Accounting, log_source
from batchrl_mtf.data.config import DatasetConfig
from batchrl_mtf.data.features import FeatureConfig
from batchrl_mtf.data.parts import process_logs
from batchrl_mtf.data.reward import RewardConfig, load_reward
from batchrl_mtf.data.spec import action_bounds
from batchrl_mtf.data.transitions import Transitions
from batchrl_mtf.errors import ConfigError, OutputError
from batchrl_mtf.learned.artefacts import RESPONSES_FORMAT
from batchrl_mtf.learned.config import LearnedEnvConfig
from batchrl_mtf.learned.leave import LeaveData, fit_leave_on_logs
from batchrl_mtf.learned.leave_model import LeaveModel
from batchrl_mtf.learned.models import WATCH, fit_models, response_columns
from batchrl_mtf.learned.validate import LoggedSessions, format_replay, replay_check
from batchrl_mtf.logs.schema import read_logs
from batchrl_mtf.sim.spec import load_spec
from batchrl_mtf.sim.world import World

__all__ = ["MakeEnvResult", "make_env"]

logger = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class MakeEnvResult:
    """What ``make-env`` wrote and measured.

    Attributes:
        spec_path: The environment spec (``OUT.toml``).
        artefacts: The artefact directory beside it.
        report: The saved ``validation.json`` document (replay check, leave-model calibration,
            predictor metrics, timings).
        replay_text: The replay check as a printable table.
    """

    spec_path: Path
    artefacts: Path
    report: dict[str, object]
    replay_text: str


def _request_feedback(
    prepared_frame: pd.DataFrame, req_codes: IntArray, feedback: Sequence[str]
) -> tuple[FloatArray, IntArray]:
    """Feedback summed per request (in request order of the prepared frame) and items per request."""
    first = np.concatenate([[True], req_codes[1:] != req_codes[:-1]])
    starts = np.flatnonzero(first)
    fb = np.column_stack([prepared_frame[c].to_numpy(dtype=np.float64) for c in feedback])
    sums = np.add.reduceat(fb, starts, axis=0)
    counts = np.diff(np.concatenate([starts, [len(req_codes)]])).astype(np.int64)
    return sums, counts


def _catalogue(rows: pd.DataFrame) -> pd.DataFrame:
    ids = rows["item_id"].astype(str)
    g = pd.DataFrame({"item_id": ids})
    if "duration" in rows.columns:
        g["duration"] = rows["duration"].to_numpy(dtype=np.float64)
    else:  # no durations logged: the longest logged watch time (at least 1 s)
        g["duration"] = (
            rows[WATCH].to_numpy(dtype=np.float64) if WATCH in rows.columns else np.ones(len(rows))
        )
    agg = g.groupby("item_id", sort=True).agg(
        duration=("duration", "max" if "duration" not in rows.columns else "mean"),
        exposures=("item_id", "size"),
    )
    out = agg.reset_index()
    out["duration"] = np.maximum(out["duration"].to_numpy(dtype=np.float64), 1.0)
    out["exposures"] = out["exposures"].astype(np.int64)
    return out


@dataclass(frozen=True)
class _Logged:
    """The logs as ``make-env`` learns from them (through the data layer's per-part path).

    Attributes:
        source: How messages name the logs.
        rows: The kept rows with every column, in input order (catalogue and predictors).
        transitions: The kept requests' transitions.
        tasks: Task names.
        user_features: The ``u_*`` columns.
        feedback: Every feedback column, in log order.
        response: Kind and parent of each feedback column, root first (:func:`_response_columns`).
        fb_req: Feedback summed per request, in ``feedback`` order, shape (n_requests, F).
        n_items_req: Items shown per request, shape (n_requests,).
        accounting: Rows, requests and sessions read, kept and dropped.
    """

    source: str
    rows: pd.DataFrame
    transitions: Transitions
    tasks: tuple[str, ...]
    user_features: tuple[str, ...]
    feedback: tuple[str, ...]
    response: list[dict[str, object]]
    fb_req: FloatArray
    n_items_req: IntArray
    accounting: Accounting

    @property
    def order(self) -> list[str]:
        """The feedback columns in the world's order (root first)."""
        return [str(r["name"]) for r in self.response]


@dataclass(frozen=True)
class _Sessions:
    """Where the logged sessions start and end in the transitions."""

    starts: IntArray
    ends: IntArray
    lengths: IntArray
    last: npt.NDArray[np.bool_]

    @property
    def max_len(self) -> int:
        """The longest logged session, in requests."""
        return int(self.lengths.max())

    @classmethod
    def of(cls, step: IntArray) -> _Sessions:
        """From each transition's step within its session, shape (n,)."""
        n_req = len(step)
        starts = np.flatnonzero(step == 0)
        ends = np.concatenate([starts[1:], [n_req]])
        last = np.zeros(n_req, dtype=bool)
        last[ends - 1] = True
        return cls(starts, ends, (ends - starts).astype(np.int64), last)


def _dataset_config(config: LearnedEnvConfig) -> DatasetConfig:
    """The dataset options ``make-env`` reads the logs with (as ``build-dataset`` would)."""
    return DatasetConfig(
        session_gap_s=config.session_gap_s,
        on_error=config.on_error,
        features=FeatureConfig(hist_n=config.hist_n),
        action_bounds=config.action_bounds,
    )


def _read_logged(paths: Sequence[str | Path], reward: RewardConfig, dcfg: DatasetConfig) -> _Logged:
    """Read and validate the logs and make their transitions (``build-dataset``'s path).

    Raises:
        SchemaError: The logs break schema v1.
        ConfigError: The feedback columns cannot be modelled, or a task lacks a binary label.
    """
    logs = read_logs(paths)
    source = log_source(logs.files)
    result, _problems = process_logs(logs, reward, dcfg)
    trans, kept = result.transitions, result.kept
    assert trans is not None and kept is not None  # process_logs raised otherwise
    cols = result.columns
    tasks = cols.tasks
    feedback = cols.feedback
    response = response_columns(kept.frame, feedback, source)
    kinds = {str(r["name"]): str(r["kind"]) for r in response}
    bad_tasks = [t for t in tasks if kinds.get(t) != "binary"]
    if bad_tasks:
        raise ConfigError(
            f"{source}: task(s) {bad_tasks} need a binary label column of the same name in the "
            "logs (the learned world draws every task's feedback)"
        )
    fb_req, n_items_req = _request_feedback(kept.frame, kept.codes.request, feedback)
    return _Logged(
        source=source,
        rows=kept.rows_in_input_order(),
        transitions=trans,
        tasks=tasks,
        user_features=cols.user_features,
        feedback=feedback,
        response=response,
        fb_req=fb_req,
        n_items_req=n_items_req,
        accounting=result.summary.accounting,
    )


def _start_states(logged: _Logged, sessions: _Sessions) -> pd.DataFrame:
    """The state vector of every logged session's first request (``start_states.parquet``)."""
    trans = logged.transitions
    starts = sessions.starts
    obs = trans.observations
    col = {n: i for i, n in enumerate(trans.spec.features.names)}
    needed = [*logged.user_features, *(f"hist_{c}_rate" for c in logged.order), "hist_sessions"]
    missing = [n for n in needed if n not in col]
    if missing:
        raise ConfigError(f"state features {missing} are needed for start states")
    start_df = pd.DataFrame(
        {
            "session_id": pd.Series(trans.session_id[starts]).astype(str).to_numpy(),
            "user_id": pd.Series(trans.user_id[starts]).astype(str).to_numpy(),
            "ts": trans.ts_ms[starts].astype(np.int64),
        }
    )
    for n in needed:
        start_df[n] = obs[starts, col[n]]
    return start_df


def _fit_leave(
    logged: _Logged, sessions: _Sessions, config: LearnedEnvConfig
) -> tuple[LeaveModel, dict[str, object], list[tuple[int, int]], list[str]]:
    """The leave model (the last request of sessions at the longest logged length is censored)."""
    trans = logged.transitions
    step = trans.step
    censored = np.zeros(len(step), dtype=bool)
    censored[(sessions.ends - 1)[sessions.lengths == sessions.max_len]] = True
    return fit_leave_on_logs(
        LeaveData(
            trans.observations,
            logged.fb_req,
            trans.actions,
            step,
            trans.session_id,
            sessions.last,
            censored,
        ),
        trans.spec.features.names,
        logged.feedback,
        logged.order,
        logged.tasks,
        recency_decay=config.leave_recency_decay,
        action_inputs=config.leave_action_inputs,
        session_sums=config.leave_session_sums,
        interactions=config.leave_interactions,
        n_classes=config.leave_classes,
        l2=config.leave_l2,
        holdout=config.leave_holdout,
        em_iterations=config.leave_em_iterations,
        seed=config.seed,
        l2_grid=config.leave_l2_grid,
    )


@dataclass(frozen=True)
class _Fusion:
    """The platform's weights: bounds, production weights and its fusion (one offset per task)."""

    low: float
    high: float
    production: tuple[float, ...]
    fusion: Fusion


def _fusion(
    actions: FloatArray, tasks: Sequence[str], dcfg: DatasetConfig, config: LearnedEnvConfig
) -> _Fusion:
    """Weight bounds and production weights from the logged weights, and the fusion.

    Raises:
        ConfigError: ``--production`` or ``--beta`` do not fit the tasks, or explicit bounds
            exclude logged weights.
    """
    k = len(tasks)
    lo_t, hi_t = action_bounds(actions, tasks, dcfg)
    low, high = float(lo_t.min()), float(hi_t.max())
    production = config.production or tuple(float(v) for v in np.median(actions, axis=0))
    if len(production) != k:
        raise ConfigError(f"--production: expected {k} weights (tasks {list(tasks)})")
    production = tuple(float(min(max(v, low), high)) for v in production)
    fusion = (config.fusion or Fusion()).for_tasks(tasks, "--beta")
    return _Fusion(low, high, production, fusion)


def _overhead(logged: _Logged, sessions: _Sessions) -> float:
    """Seconds per item on top of the watch time: the median over consecutive logged requests."""
    trans = logged.transitions
    n_items_req = logged.n_items_req
    overhead = 1.5
    nxt = ~sessions.last
    if nxt.any():
        gaps = (trans.ts_ms[1:] - trans.ts_ms[:-1]) / 1000.0
        watch = (
            logged.fb_req[:, list(logged.feedback).index(WATCH)]
            if WATCH in logged.feedback
            else np.zeros(len(trans))
        )
        per_item = (gaps[nxt[:-1]] - watch[:-1][nxt[:-1]]) / np.maximum(
            n_items_req[:-1][nxt[:-1]], 1
        )
        if len(per_item):
            overhead = float(max(np.median(per_item), 0.01))
    return overhead


def _candidates(n_items: int, n_items_req: IntArray, config: LearnedEnvConfig) -> tuple[int, int]:
    """Candidates per request and slate size."""
    slate = int(np.bincount(n_items_req).argmax())
    n_cand = min(config.n_candidates, n_items)
    if config.catalogue_size is not None and config.catalogue_size > n_items:
        # the unlogged items never won a slate: only the logged share of candidates competes
        n_cand = round(config.n_candidates * n_items / config.catalogue_size)
        n_cand = max(min(n_cand, n_items), min(int(np.bincount(n_items_req).argmax()), n_items))
    return n_cand, min(slate, n_cand)


def _write_artefacts(
    art: Path,
    logged: _Logged,
    catalogue: pd.DataFrame,
    start_df: pd.DataFrame,
    leave: tuple[LeaveModel, dict[str, object], list[tuple[int, int]], list[str]],
    fusion: _Fusion,
    config: LearnedEnvConfig,
    predictor_dir: str | Path | None,
) -> dict[str, object]:
    """Write the artefact directory atomically (catalogue, start states, predictors, responses,
    leave model); return the predictors' metrics."""
    model, calib, pairs, excluded = leave
    k = len(logged.tasks)
    with atomic_dir(art, kind="env") as tmp:
        catalogue.to_parquet(tmp / "catalogue.parquet", index=False)
        start_df.to_parquet(tmp / "start_states.parquet", index=False)
        beta = fusion.fusion.beta
        scale = list(beta) if beta is not None else [1.0] * k
        metrics, ranker_scale = fit_models(
            logged.rows, logged.tasks, logged.response, config, predictor_dir, tmp, scale
        )
        resp_doc: dict[str, object] = {"format": RESPONSES_FORMAT, "columns": logged.response}
        if ranker_scale:
            resp_doc["ranker_scale"] = ranker_scale
        (tmp / "responses.json").write_text(dumps_json(resp_doc), encoding="utf-8")
        (tmp / "leave_model.json").write_text(
            dumps_json(
                model.to_json(
                    {
                        "l2": calib["l2"],
                        "interactions": len(pairs),
                        "classes": config.leave_classes,
                        "excluded_inputs": excluded,
                        "label": "1 on the last request of a session",
                        "censored": "last requests of sessions at the longest logged length",
                        "calibration": calib,
                    }
                )
            ),
            encoding="utf-8",
        )
    return metrics


def _replay(
    out_path: Path, logged: _Logged, sessions: _Sessions, config: LearnedEnvConfig
) -> tuple[dict[str, object], float]:
    """The replay check of the written world against the logged sessions, and its seconds."""
    trans = logged.transitions
    world = World(load_spec(out_path))
    offsets = np.concatenate([sessions.starts, [len(trans)]]).astype(np.int64)
    fb_world = logged.fb_req[:, [list(logged.feedback).index(c) for c in logged.order]]
    logged_sessions = LoggedSessions(
        lengths=sessions.lengths,
        offsets=offsets,
        actions=trans.actions,
        rewards=trans.rewards,
        feedback=fb_world,
        impressions=logged.n_items_req,
    )
    t0 = time.perf_counter()
    replay = replay_check(world, logged_sessions, config.replay_sessions, config.seed)
    return replay, time.perf_counter() - t0


def make_env(
    paths: Sequence[str | Path],
    reward: RewardConfig | str | Path,
    out: str | Path,
    config: LearnedEnvConfig | None = None,
    predictor_dir: str | Path | None = None,
    overwrite: bool = False,
) -> MakeEnvResult:
    """Learn a world from logs; write ``out`` (a spec TOML) and its artefacts; run the replay check.

    Args:
        paths: Log files or directories (schema v1).
        reward: The reward (a config or a reward TOML path).
        out: The spec to write, ``NAME.toml``; the artefacts go to ``NAME/`` beside it.
        config: Fitting options.
        predictor_dir: The platform's frozen predictor (the ranker); ``None`` fits one.
        overwrite: Replace an environment this command wrote before at ``out``.

    Raises:
        SchemaError: The logs break schema v1.
        ConfigError: The options do not fit the logs.
    """
    config = config or LearnedEnvConfig()
    with limit_threads(config.n_threads):
        return _make_env(paths, reward, out, config, predictor_dir, overwrite)


def _make_env(
    paths: Sequence[str | Path],
    reward: RewardConfig | str | Path,
    out: str | Path,
    config: LearnedEnvConfig,
    predictor_dir: str | Path | None,
    overwrite: bool,
) -> MakeEnvResult:
    t_start = time.perf_counter()
    out_path = Path(out)
    if out_path.suffix.lower() != ".toml":
        raise ConfigError(f"--out {out}: expected a .toml file name")
    inputs = [*paths, *([] if isinstance(reward, RewardConfig) else [reward])]
    check_output_dir(out_path.with_suffix(""), "env", inputs=inputs, overwrite=overwrite)
    if out_path.exists() and not (overwrite and read_marker(out_path.with_suffix("")) == "env"):
        raise OutputError(
            f"--out {out}: exists; refusing to replace it (pass --overwrite to replace an "
            "environment make-env wrote)"
        )
    reward_cfg = reward if isinstance(reward, RewardConfig) else load_reward(reward)
    dcfg = _dataset_config(config)
    logged = _read_logged(paths, reward_cfg, dcfg)
    trans = logged.transitions
    sessions = _Sessions.of(trans.step)
    start_df = _start_states(logged, sessions)
    leave = _fit_leave(logged, sessions, config)
    fusion = _fusion(trans.actions, logged.tasks, dcfg, config)
    overhead = _overhead(logged, sessions)
    catalogue = _catalogue(logged.rows)
    n_items = len(catalogue)
    n_cand, slate = _candidates(n_items, logged.n_items_req, config)
    stem = out_path.stem
    art = out_path.parent / stem
    metrics = _write_artefacts(
        art, logged, catalogue, start_df, leave, fusion, config, predictor_dir
    )
    spec_doc = _spec_document(
        stem=stem,
        tasks=logged.tasks,
        response=logged.response,
        user_features=logged.user_features,
        feedback=logged.feedback,
        config=config,
        n_items=n_items,
        n_candidates=n_cand,
        slate=slate,
        max_len=sessions.max_len,
        overhead=overhead,
        start_ms=int(trans.ts_ms.min()),
        low=fusion.low,
        high=fusion.high,
        fusion=fusion.fusion,
        production=fusion.production,
        reward=reward_cfg,
    )
    header = (
        f"# A world learned from logs by `batchrl-mtf make-env` (docs/learned_env.md).\n"
        f"# Artefacts: {stem}/ beside this file.\n\n"
    )
    atomic_write_text(out_path, header + tomli_w.dumps(spec_doc))
    replay, replay_s = _replay(out_path, logged, sessions, config)
    report: dict[str, object] = {
        "spec": str(out_path),
        "logs": [str(p) for p in paths],
        "data_hash": hash_files(list(paths)),
        "accounting": logged.accounting.to_dict(),
        "catalogue": {
            "items": n_items,
            "catalogue_size": config.catalogue_size,
            "n_candidates": n_cand,
            "candidates": config.candidates,
        },
        "start_states": len(start_df),
        "slate_size": slate,
        "max_requests": sessions.max_len,
        "overhead_s": overhead,
        "responses": logged.response,
        "fusion": {
            **fusion.fusion.to_dict(logged.tasks),
            "source": "default" if config.fusion is None else "given",
        },
        "leave_model": leave[1],
        "predictors": metrics,
        "replay": replay,
        "config": config_to_dict(config),
        "seconds": {
            "total": round(time.perf_counter() - t_start, 1),
            "replay": round(replay_s, 1),
        },
        "versions": package_versions(),
    }
    atomic_write_text(art / "validation.json", dumps_json(report))
    return MakeEnvResult(out_path, art, report, format_replay(replay))


def _spec_document(
    *,
    stem: str,
    tasks: Sequence[str],
    response: Sequence[dict[str, object]],
    user_features: Sequence[str],
    feedback: Sequence[str],
    config: LearnedEnvConfig,
    n_items: int,
    n_candidates: int,
    slate: int,
    max_len: int,
    overhead: float,
    start_ms: int,
    low: float,
    high: float,
    fusion: Fusion,
    production: Sequence[float],
    reward: RewardConfig,
) -> dict[str, object]:
    responses: dict[str, object] = {}
    for r in response:
        entry: dict[str, object] = {"kind": r["kind"], "item_noise": 0.0}
        if r["given"]:
            entry["given"] = r["given"]
        responses[str(r["name"])] = entry
    fusion_doc: dict[str, object] = {
        **fusion.to_dict(),
        "low": low,
        "high": high,
        "production": list(production),
    }
    return {
        "world": {
            "kind": "learned",
            "name": f"learned:{stem}",
            "seed": config.seed,
            "tasks": list(tasks),
            "n_items": n_items,
            "n_candidates": n_candidates,
            "slate_size": slate,
        },
        "responses": responses,
        "segments": [{"name": "logged"}],
        "users": {
            "features": list(user_features),
            "hint_noise": 0.0,
            "offset_sd": 0.0,
            "sessions_per_user": 1,
        },
        "session": {
            "max_requests": max_len,
            "overhead_s": overhead,
            "start_ms": start_ms,
        },
        "fusion": fusion_doc,
        "predictor": {"kind": "artefact", "path": f"{stem}/ranker"},
        "reward": {
            "valid_play_s": reward.valid_play_s,
            "stickiness": dict(reward.stickiness),
            "activeness": dict(reward.activeness),
        },
        "features": {"feedback": list(feedback), "hist_n": config.hist_n},
        "learned": {
            "catalogue": f"{stem}/catalogue.parquet",
            "response_model": f"{stem}/response_model",
            "responses": f"{stem}/responses.json",
            "leave_model": f"{stem}/leave_model.json",
            "start_states": f"{stem}/start_states.parquet",
            "candidates": config.candidates,
        },
    }
