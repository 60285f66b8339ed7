"""The item-level models of a learned world: the ranker and the response model.

``make-env`` fits (or copies) the ranker, the platform's predictor that orders candidates, on
the earliest rows, and the response model, which draws every feedback column, on the latest rows
(disjoint, another seed), so the ranker is not graded by itself (``docs/learned_env.md``).
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

import batchrl_mtf.predictors as predictors  # its torch-backed names load on first use
from batchrl_mtf.core.config import config_from_mapping, config_to_dict
from batchrl_mtf.errors import ConfigError, PredictorError
from batchrl_mtf.learned.config import LearnedEnvConfig
from batchrl_mtf.predictors import PredictorConfig

__all__ = ["WATCH", "fit_models", "response_columns"]

WATCH = "watch_time"


def response_columns(
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


def fit_models(
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
            ranker = predictors.load_predictor(predictor_dir)
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
        trained = predictors.fit_predictor(ranker_frame.reset_index(drop=True), cfg)
        predictors.save_predictor(trained, out / "ranker")
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
    grader_t = predictors.fit_predictor(rev, cfg_r)
    grader = predictors.save_predictor(grader_t, out / "response_model")
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
