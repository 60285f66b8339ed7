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
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from batchrl_mtf.core.config import config_from_mapping, config_to_dict, require
from batchrl_mtf.core.io import (
    atomic_dir,
    atomic_write_text,
    check_output_dir,
    dumps_json,
    hash_files,
    package_versions,
    read_marker,
)
from batchrl_mtf.data.features import FeatureConfig
from batchrl_mtf.data.mdp import (
    DatasetConfig,
    account,
    bounds_from_range,
    check_logs,
    compute_transitions,
    kept_rows,
    log_source,
    raise_all_dropped,
    raise_problems,
)
from batchrl_mtf.data.reward import RewardConfig, load_reward
from batchrl_mtf.errors import ConfigError, OutputError, PredictorError
from batchrl_mtf.learned.leave import LeaveData, fit_leave_on_logs
from batchrl_mtf.learned.runtime import RESPONSES_FORMAT
from batchrl_mtf.learned.validate import LoggedSessions, format_replay, replay_check
from batchrl_mtf.logs.schema import read_logs
from batchrl_mtf.predictors import PredictorConfig, fit_predictor, load_predictor, save_predictor
from batchrl_mtf.sim.spec import load_spec
from batchrl_mtf.sim.world import World

__all__ = ["LearnedEnvConfig", "MakeEnvResult", "make_env"]

logger = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
WATCH = "watch_time"


@dataclass(frozen=True)
class LearnedEnvConfig:
    """How ``make-env`` learns a world from logs.

    Attributes:
        n_candidates: Candidates drawn per request (at most the catalogue size).
        candidates: ``"uniform"`` over the catalogue or ``"exposure"`` (by logged exposure count).
        formula: The platform's fusion formula, ``"logsum"`` or ``"sum"``.
        beta: ``logsum`` offsets: one value for every task, or one per task.
        production: Production weights, one per task; empty = the per-task median logged weight.
        action_bounds: ``(lo, hi)`` of every weight; ``None`` = the logged range plus 10 %.
        model: Architecture of the fitted ranker and response model (``fit-predictor --model``).
        n_epochs: Training epochs of each fitted predictor.
        train_fraction: Share of rows (by ``ts``) each fitted predictor trains on: the ranker on
            the earliest, the response model on the latest (0.5: disjoint halves).
        ranker_targets: What a fitted ranker learns: ``"pred"`` distils the platform's own
            predictor from the logged ``pred_<task>`` columns (regression on
            ``log(pred + scale)``), ``"labels"`` fits the feedback labels, ``"auto"`` = ``"pred"``
            when every task has a logged ``pred_<task>`` column, else ``"labels"``.
        catalogue_size: Items the platform draws candidates from (``None``: only the logged
            items). Items never shown in the logs are taken as never winning a slate, so a
            request draws ``round(n_candidates * logged items / catalogue_size)`` candidates
            from the logged catalogue (at least the slate size).
        min_id_count: Ids seen fewer times map to the predictors' unknown id (less memorisation
            of rarely seen items).
        leave_l2: L2 penalty of the leave model's standardised coefficients; ``None``: chosen
            from ``leave_l2_grid`` by log-loss on a validation part of the training sessions.
        leave_l2_grid: Candidate penalties of the automatic choice.
        leave_interactions: Add products of the user-revealing inputs (``u_*``,
            ``hist_<fb>_rate``) with the session's and request's feedback and depth to the
            leave model (:func:`batchrl_mtf.learned.leave.segment_feedback_pairs`).
        leave_holdout: Share of sessions held out to report the leave model's calibration.
        leave_recency_decay: Decay of the leave model's ``recent_<fb>`` inputs, the session's
            exponentially decayed feedback sums up to this request
            (:func:`batchrl_mtf.learned.runtime.recent_feedback`); 0 = no recency inputs.
        leave_session_sums: Keep the state's running sums (``session_<fb>``, ``prev_<fb>``,
            ``session_elapsed_s``) among the leave model's inputs; ``False`` leaves them out
            (coefficient 0), so leaving reads the session's feedback only through the decayed
            ``recent_<fb>`` sums, depth and the request itself.
        leave_action_inputs: Give the leave model the request's fusion weights ``w_<task>`` and
            their decayed sums ``recent_w_<task>`` (with a recency decay), interacted with the
            user-revealing inputs. The logged weights are randomised by the logging policy's
            exploration, so their effect on leaving is not confounded by who the user is, unlike
            the realised feedback's.
        leave_classes: Latent user classes of the leave model (1: one logistic regression; more:
            a mixture fitted by EM, :func:`batchrl_mtf.learned.leave.fit_leave_mixture`).
        leave_em_iterations: EM iterations of a mixture leave model.
        replay_sessions: Logged sessions replayed by the replay check.
        seed: Seed of the predictors (ranker ``seed``, response model ``seed + 1``) and the check.
        hist_n: ``hist_<fb>_rate`` window (as ``build-dataset --hist-n``).
        session_gap_s: Make sessions from gaps (as ``build-dataset --session-gap``).
        on_error: ``"fail"`` or ``"drop-session"`` (as ``build-dataset --on-error``).
    """

    n_candidates: int = 200
    candidates: Literal["uniform", "exposure"] = "uniform"
    formula: Literal["logsum", "sum"] = "logsum"
    beta: tuple[float, ...] = (0.01,)
    production: tuple[float, ...] = ()
    action_bounds: tuple[float, float] | None = None
    model: str = "shared-bottom"
    n_epochs: int = 3
    train_fraction: float = 0.5
    ranker_targets: Literal["auto", "pred", "labels"] = "auto"
    catalogue_size: int | None = None
    min_id_count: int = 1
    leave_l2: float | None = None
    leave_l2_grid: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0)
    leave_interactions: bool = True
    leave_holdout: float = 0.2
    leave_recency_decay: float = 0.85
    leave_session_sums: bool = True
    leave_action_inputs: bool = True
    leave_classes: int = 1
    leave_em_iterations: int = 40
    replay_sessions: int = 2000
    seed: int = 0
    hist_n: int = 500
    session_gap_s: float | None = None
    on_error: Literal["fail", "drop-session"] = "fail"

    def __post_init__(self) -> None:
        require(self.n_candidates >= 1, "n_candidates", f"expected >= 1, found {self.n_candidates}")
        require(
            self.candidates in ("uniform", "exposure"),
            "candidates",
            f"expected 'uniform' or 'exposure', found {self.candidates!r}",
        )
        require(
            self.formula in ("logsum", "sum"),
            "formula",
            f"expected 'logsum' or 'sum', found {self.formula!r}",
        )
        require(
            len(self.beta) >= 1 and all(b > 0 for b in self.beta), "beta", "expected numbers > 0"
        )
        require(self.n_epochs >= 1, "n_epochs", f"expected >= 1, found {self.n_epochs}")
        require(
            0 < self.train_fraction < 1,
            "train_fraction",
            f"expected a share in (0, 1), found {self.train_fraction}",
        )
        require(
            self.ranker_targets in ("auto", "pred", "labels"),
            "ranker_targets",
            f"expected 'auto', 'pred' or 'labels', found {self.ranker_targets!r}",
        )
        require(
            self.catalogue_size is None or self.catalogue_size >= 1,
            "catalogue_size",
            f"expected >= 1, found {self.catalogue_size}",
        )
        require(self.min_id_count >= 1, "min_id_count", f"expected >= 1, found {self.min_id_count}")
        require(
            self.leave_l2 is None or self.leave_l2 >= 0,
            "leave_l2",
            f"expected >= 0 or None (automatic), found {self.leave_l2}",
        )
        require(
            len(self.leave_l2_grid) >= 1 and all(v >= 0 for v in self.leave_l2_grid),
            "leave_l2_grid",
            f"expected at least one penalty >= 0, found {list(self.leave_l2_grid)}",
        )
        require(
            0 < self.leave_holdout < 1,
            "leave_holdout",
            f"expected a share in (0, 1), found {self.leave_holdout}",
        )
        require(
            0 <= self.leave_recency_decay < 1,
            "leave_recency_decay",
            f"expected a decay in [0, 1), found {self.leave_recency_decay}",
        )
        require(
            self.leave_classes >= 1, "leave_classes", f"expected >= 1, found {self.leave_classes}"
        )
        require(
            self.leave_em_iterations >= 1,
            "leave_em_iterations",
            f"expected >= 1, found {self.leave_em_iterations}",
        )
        require(
            self.replay_sessions >= 1,
            "replay_sessions",
            f"expected >= 1, found {self.replay_sessions}",
        )


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


def _response_columns(
    frame: pd.DataFrame, feedback: Sequence[str], source: str
) -> list[dict[str, object]]:
    """Kinds and parents of the feedback columns, root (first binary column) first."""
    kinds: dict[str, str] = {}
    for c in feedback:
        x = frame[c].to_numpy(dtype=np.float64)
        if c == WATCH:
            kinds[c] = "watch"
        elif np.isin(x, (0.0, 1.0)).all():
            kinds[c] = "binary"
        else:
            raise ConfigError(
                f"{source}: feedback column {c!r}: a learned world models binary (0/1) columns "
                f"and {WATCH!r}; found other values (narrow the columns with --feedback)"
            )
    binaries = [c for c in feedback if kinds[c] == "binary"]
    if not binaries:
        raise ConfigError(f"{source}: a learned world needs at least one binary feedback column")
    order = [binaries[0]] + [c for c in feedback if c != binaries[0]]
    positive = {c: frame[c].to_numpy(dtype=np.float64) > 0 for c in order}
    out: list[dict[str, object]] = []
    for i, c in enumerate(order):
        given = ""
        for b in reversed(order[:i]):  # the latest earlier binary column it implies
            if kinds[b] == "binary" and not np.any(positive[c] & ~positive[b]):
                given = b
                break
        out.append({"name": c, "kind": kinds[c], "given": given})
    return out


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


def _fit_predictors(
    rows: pd.DataFrame,
    tasks: Sequence[str],
    response: Sequence[dict[str, object]],
    config: LearnedEnvConfig,
    predictor_dir: str | Path | None,
    out: Path,
    scale: Sequence[float],
) -> tuple[dict[str, object], dict[str, float]]:
    """Fit (or copy) the ranker and fit the response model into ``out``.

    Returns the predictors' metrics and, for a ranker distilled from the logged ``pred_<task>``
    columns, the scale of each task (``pred = scale * expm1(out * log1p(cap))``; empty
    otherwise)."""

    cols = [
        c
        for c in rows.columns
        if c in ("user_id", "item_id", "ts", "duration") or str(c).startswith("u_")
    ]
    names = [str(r["name"]) for r in response]
    frame = rows[[*cols, *names]].reset_index(drop=True)
    rows = rows.reset_index(drop=True)
    metrics: dict[str, object] = {}
    ranker_scale: dict[str, float] = {}
    if predictor_dir is not None:
        try:
            ranker = load_predictor(predictor_dir)
        except PredictorError as exc:
            raise ConfigError(f"--predictor: {exc}") from None
        missing = [t for t in tasks if t not in ranker.tasks]
        if missing:
            raise ConfigError(f"--predictor {predictor_dir}: predictor lacks task(s) {missing}")
        shutil.copytree(predictor_dir, out / "ranker")
        metrics["ranker"] = {"source": str(predictor_dir), "content_hash": ranker.content_hash}
    else:
        pred_cols = [f"pred_{t}" for t in tasks]
        have_pred = all(c in rows.columns for c in pred_cols)
        distil = config.ranker_targets == "pred" or (config.ranker_targets == "auto" and have_pred)
        if distil and not have_pred:
            raise ConfigError(
                f"ranker_targets = 'pred' needs logged columns {pred_cols}; missing "
                f"{[c for c in pred_cols if c not in rows.columns]}"
            )
        missing = [t for t in tasks if t not in frame.columns]
        if missing and not distil:
            raise ConfigError(
                f"tasks {missing} have no label column in the logs, so no ranker can be fitted; "
                "give one with --predictor DIR"
            )
        ranker_frame = frame
        if distil:
            # copy the platform's own predictor: regress log(pred + scale) (the scale the
            # fusion formula reads) through the predictors' log1p regression target pred / scale
            ranker_frame = frame[cols].copy()
            for t, sc in zip(tasks, scale, strict=True):
                ranker_frame[t] = np.clip(rows[f"pred_{t}"].to_numpy(dtype=np.float64), 0, 1) / sc
        cfg = config_from_mapping(
            PredictorConfig,
            {
                "model": config.model,
                "tasks": list(tasks),
                "regression_tasks": list(tasks) if distil else [],
                "regression_cap_quantile": 1.0,
                "n_epochs": config.n_epochs,
                "seed": config.seed,
                "valid_fraction": 1.0 - config.train_fraction,
                "min_id_count": config.min_id_count,
            },
            "make-env ranker",
        )
        t0 = time.perf_counter()
        trained = fit_predictor(ranker_frame.reset_index(drop=True), cfg)
        save_predictor(trained, out / "ranker")
        if distil:
            ranker_scale = {t: float(sc) for t, sc in zip(tasks, scale, strict=True)}
        metrics["ranker"] = {
            "held_out": [config_to_dict(m) for m in trained.metrics],
            "targets": "logged pred_<task> (distilled)" if distil else "labels",
            "split": f"trained on the earliest {config.train_fraction:.0%} of rows by ts",
            "seconds": round(time.perf_counter() - t0, 1),
        }
    # the response model: every feedback column, trained on the latest rows (time reversed)
    ts = frame["ts"].to_numpy(dtype=np.int64)
    rev = frame.copy()
    rev["ts"] = int(ts.max()) + int(ts.min()) - ts
    cfg_r = config_from_mapping(
        PredictorConfig,
        {
            "model": config.model,
            "tasks": names,
            "regression_tasks": [WATCH] if WATCH in names else [],
            "n_epochs": config.n_epochs,
            "seed": config.seed + 1,
            "valid_fraction": 1.0 - config.train_fraction,
            "min_id_count": config.min_id_count,
        },
        "make-env response model",
    )
    t0 = time.perf_counter()
    grader_t = fit_predictor(rev, cfg_r)
    grader = save_predictor(grader_t, out / "response_model")
    metrics["response_model"] = {
        "held_out": [config_to_dict(m) for m in grader_t.metrics],
        "split": f"trained on the latest {config.train_fraction:.0%} of rows by ts",
        "seconds": round(time.perf_counter() - t0, 1),
    }
    # spread of log1p(watch_time) around the model's conditional mean, per watch column
    for r in response:
        if r["kind"] != "watch":
            continue
        name = str(r["name"])
        given = str(r["given"])
        sample = frame
        if given:
            sample = frame[frame[given].to_numpy(dtype=np.float64) > 0]
        if len(sample) > 200_000:
            sample = sample.sample(200_000, random_state=config.seed)
        pred = grader.predict(sample, sample)
        p = pred[f"pred_{name}"]
        if given:
            p = np.minimum(p / np.maximum(pred[f"pred_{given}"], 1e-6), 1.0)
        mu = p * math.log1p(grader.regression_caps[name])
        resid = np.log1p(sample[name].to_numpy(dtype=np.float64)) - mu
        r["log_sd"] = float(np.std(resid)) if len(resid) > 1 else 0.0
    return metrics, ranker_scale


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
    logs = read_logs(paths)
    dcfg = DatasetConfig(
        session_gap_s=config.session_gap_s,
        on_error=config.on_error,
        features=FeatureConfig(hist_n=config.hist_n),
        action_bounds=config.action_bounds,
    )
    checked = check_logs(logs, reward_cfg, dcfg)
    source = log_source(logs.files)
    if checked.flags.problems and config.on_error == "fail":
        raise_problems(checked.flags.problems)
    keep, accounting = account(checked.codes, checked.flags.reason)
    if not keep.any():
        raise_all_dropped(source, checked.flags.problems)
    prepared = kept_rows(logs, checked, keep, accounting)
    cols = prepared.columns
    tasks = cols.tasks
    feedback = cols.feedback
    response = _response_columns(prepared.frame, feedback, source)
    kinds = {str(r["name"]): str(r["kind"]) for r in response}
    bad_tasks = [t for t in tasks if kinds.get(t) != "binary"]
    if bad_tasks:
        raise ConfigError(
            f"{source}: task(s) {bad_tasks} need a binary label column of the same name in the "
            "logs (the learned world draws every task's feedback)"
        )
    trans = compute_transitions(prepared, reward_cfg, dcfg)
    fb_req, n_items_req = _request_feedback(prepared.frame, prepared.codes.request, feedback)
    order = [str(r["name"]) for r in response]
    fb_world = fb_req[:, [list(feedback).index(c) for c in order]]
    names = trans.spec.names
    step = trans.step
    n_req = len(step)
    starts = np.flatnonzero(step == 0)
    ends = np.concatenate([starts[1:], [n_req]])
    lengths = (ends - starts).astype(np.int64)
    max_len = int(lengths.max())
    last = np.zeros(n_req, dtype=bool)
    last[ends - 1] = True

    # ---- start states
    obs = trans.observations
    col = {n: i for i, n in enumerate(names)}
    needed = [*cols.user_features, *(f"hist_{c}_rate" for c in order), "hist_sessions"]
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

    # ---- leave model (the last request of sessions at the longest logged length is censored)
    censored = np.zeros(n_req, dtype=bool)
    censored[(ends - 1)[lengths == max_len]] = True
    leave, calib, pairs, excluded = fit_leave_on_logs(
        LeaveData(obs, fb_req, trans.actions, step, trans.session_id, last, censored),
        names,
        feedback,
        order,
        tasks,
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

    # ---- weights, bounds and production
    actions = trans.actions
    k = len(tasks)
    lo_t, hi_t = bounds_from_range(actions.min(axis=0), actions.max(axis=0), tasks, dcfg)
    low, high = float(lo_t.min()), float(hi_t.max())
    production = config.production or tuple(float(v) for v in np.median(actions, axis=0))
    if len(production) != k:
        raise ConfigError(f"--production: expected {k} weights (tasks {list(tasks)})")
    production = tuple(float(min(max(v, low), high)) for v in production)
    if len(config.beta) not in (1, k):
        raise ConfigError(f"--beta: expected 1 or {k} values, found {len(config.beta)}")
    beta = config.beta if len(config.beta) == k else config.beta * k

    # ---- timing: seconds per item on top of the watch time
    overhead = 1.5
    nxt = ~last
    if nxt.any():
        gaps = (trans.ts_ms[1:] - trans.ts_ms[:-1]) / 1000.0
        watch = fb_req[:, list(feedback).index(WATCH)] if WATCH in feedback else np.zeros(n_req)
        per_item = (gaps[nxt[:-1]] - watch[:-1][nxt[:-1]]) / np.maximum(
            n_items_req[:-1][nxt[:-1]], 1
        )
        if len(per_item):
            overhead = float(max(np.median(per_item), 0.01))

    # ---- catalogue and predictors, written together
    raw = logs.frame.loc[keep]
    catalogue = _catalogue(raw)
    n_items = len(catalogue)
    slate = int(np.bincount(n_items_req).argmax())
    n_cand = min(config.n_candidates, n_items)
    if config.catalogue_size is not None and config.catalogue_size > n_items:
        # the unlogged items never won a slate: only the logged share of candidates competes
        n_cand = round(config.n_candidates * n_items / config.catalogue_size)
        n_cand = max(min(n_cand, n_items), min(int(np.bincount(n_items_req).argmax()), n_items))
    slate = min(slate, n_cand)
    stem = out_path.stem
    art = out_path.parent / stem
    with atomic_dir(art, kind="env") as tmp:
        catalogue.to_parquet(tmp / "catalogue.parquet", index=False)
        start_df.to_parquet(tmp / "start_states.parquet", index=False)
        scale = list(beta) if config.formula == "logsum" else [1.0] * k
        metrics, ranker_scale = _fit_predictors(
            raw, tasks, response, config, predictor_dir, tmp, scale
        )
        resp_doc: dict[str, object] = {"format": RESPONSES_FORMAT, "columns": response}
        if ranker_scale:
            resp_doc["ranker_scale"] = ranker_scale
        (tmp / "responses.json").write_text(dumps_json(resp_doc), encoding="utf-8")
        (tmp / "leave_model.json").write_text(
            dumps_json(
                leave.to_json(
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
    spec_doc = _spec_document(
        stem=stem,
        tasks=tasks,
        response=response,
        user_features=cols.user_features,
        feedback=feedback,
        config=config,
        n_items=n_items,
        n_candidates=n_cand,
        slate=slate,
        max_len=max_len,
        overhead=overhead,
        start_ms=int(trans.ts_ms.min()),
        low=low,
        high=high,
        beta=beta,
        production=production,
        reward=reward_cfg,
    )
    import tomli_w

    header = (
        f"# A world learned from logs by `batchrl-mtf make-env` (docs/learned_env.md).\n"
        f"# Artefacts: {stem}/ beside this file.\n\n"
    )
    atomic_write_text(out_path, header + tomli_w.dumps(spec_doc))

    # ---- replay check

    world = World(load_spec(out_path))
    offsets = np.concatenate([starts, [n_req]]).astype(np.int64)
    logged = LoggedSessions(
        lengths=lengths,
        offsets=offsets,
        actions=actions,
        rewards=trans.reward,
        feedback=fb_world,
        impressions=n_items_req,
    )
    t0 = time.perf_counter()
    replay = replay_check(world, logged, config.replay_sessions, config.seed)
    replay_s = time.perf_counter() - t0
    report: dict[str, object] = {
        "spec": str(out_path),
        "logs": [str(p) for p in paths],
        "data_hash": hash_files(list(paths)),
        "accounting": accounting.to_dict(),
        "catalogue": {
            "items": n_items,
            "catalogue_size": config.catalogue_size,
            "n_candidates": n_cand,
            "candidates": config.candidates,
        },
        "start_states": len(start_df),
        "slate_size": slate,
        "max_requests": max_len,
        "overhead_s": overhead,
        "responses": response,
        "leave_model": calib,
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
    beta: Sequence[float],
    production: Sequence[float],
    reward: RewardConfig,
) -> dict[str, object]:
    responses: dict[str, object] = {}
    for r in response:
        entry: dict[str, object] = {"kind": r["kind"], "item_noise": 0.0}
        if r["given"]:
            entry["given"] = r["given"]
        responses[str(r["name"])] = entry
    fusion: dict[str, object] = {
        "formula": config.formula,
        "low": low,
        "high": high,
        "production": list(production),
    }
    if config.formula == "logsum":
        fusion["beta"] = list(beta)
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
        "fusion": fusion,
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
