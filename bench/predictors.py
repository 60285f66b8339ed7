"""Benchmark: every multi-task predictor on a simulated world with conflicting tasks.

The world (a compact synthetic generator, below) has three binary tasks that share the user and
item latent factors to different degrees:

- ``click``: ``logit = 2.5 * <u_a, v_a> + b_item - 0.5``;
- ``like`` (strongly related to click): ``2.5 * <u_a, v_a> + 1.0 * <u_b, v_b> - 1.5``;
- ``follow`` (weakly related and conflicting): ``-1.0 * <u_a, v_a> + 2.5 * <u_c, v_c> - 2.0``,
  i.e. it moves *against* click on the shared factor and mostly depends on its own factor.

Every model gets the same budget (epochs, batch size, learning rate 1e-2; embedding and layer
sizes are the package defaults) and is trained on a time-ordered split; the held-out AUC of each task is printed, averaged over
seeds, together with single-task baselines (one Shared-Bottom network per task): negative transfer
shows up as a multi-task AUC below the single-task AUC.

Usage::

    python bench/predictors.py                 # default: 200k impressions, 2 seeds, 6 epochs
    python bench/predictors.py --n 50000 --seeds 1 --epochs 2   # quick look
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from typing import Any, cast

import numpy as np
import pandas as pd
import torch

from batchrl_mtf.predictors import MODELS, PredictorConfig, fit_predictor, freeze
from batchrl_mtf.predictors.config import ModelName
from batchrl_mtf.predictors.metrics import auc

TASKS = ("click", "like", "follow")
logger = logging.getLogger("bench.predictors")


def conflicting_world_logs(
    n: int, n_users: int = 1000, n_items: int = 500, dim: int = 4, seed: int = 0
) -> pd.DataFrame:
    """Schema-v1 impression logs of a world whose tasks conflict (see the module docstring).

    Args:
        n: Impressions.
        n_users: Users.
        n_items: Items.
        dim: Size of each latent factor (a, b, c).
        seed: Seed of the world and of the impressions.
    """
    rng = np.random.default_rng(seed)
    ua, ub, uc = (rng.normal(size=(n_users, dim)) / np.sqrt(dim) for _ in range(3))
    va, vb, vc = (rng.normal(size=(n_items, dim)) for _ in range(3))
    b_item = rng.normal(scale=0.5, size=n_items)
    duration = rng.lognormal(3.0, 0.6, size=n_items)
    u_feat = ua[:, :2] + rng.normal(scale=0.5, size=(n_users, 2))  # noisy visible user features
    u = rng.integers(0, n_users, n)
    i = rng.integers(0, n_items, n)
    sa = (ua[u] * va[i]).sum(1)
    sb = (ub[u] * vb[i]).sum(1)
    sc = (uc[u] * vc[i]).sum(1)
    logits = {
        "click": 2.5 * sa + b_item[i] - 0.5,
        "like": 2.5 * sa + 1.0 * sb - 1.5,
        "follow": -1.0 * sa + 2.5 * sc - 2.0,
    }
    df = pd.DataFrame(
        {
            "user_id": u,
            "session_id": u,
            "request_id": np.arange(n) // 10,
            "ts": 1_700_000_000_000 + np.sort(rng.integers(0, 14 * 86_400_000, n)),
            "item_id": i,
            "position": np.arange(n) % 10,
            "duration": duration[i],
            "u_f0": u_feat[u, 0],
            "u_f1": u_feat[u, 1],
        }
    )
    for task, z in logits.items():
        p_true = 1.0 / (1.0 + np.exp(-z))
        df[task] = (rng.random(n) < p_true).astype(np.int64)
        df[f"true_{task}"] = p_true  # not a feature: only for the oracle AUC
    return df


def run(n: int, seeds: int, epochs: int) -> pd.DataFrame:
    """Train every model (and single-task baselines) and return held-out AUCs per seed."""
    logs = conflicting_world_logs(n)
    rates = {t: float(logs[t].mean()) for t in TASKS}
    print(
        f"world: {n} impressions, positive rates "
        + ", ".join(f"{t} {r:.3f}" for t, r in rates.items())
    )
    base = PredictorConfig(tasks=TASKS, n_epochs=epochs, batch_size=1024, learning_rate=1e-2)
    held_out = logs.sort_values("ts", kind="stable").iloc[-round(n * base.valid_fraction) :]
    rows = [
        {
            "model": "oracle",
            "seed": 0,
            "task": t,
            "auc": auc(held_out[t].to_numpy(), held_out[f"true_{t}"].to_numpy()),
            "seconds": 0.0,
            "params": 0,
        }
        for t in TASKS
    ]
    for seed in range(seeds):
        models = [cast(ModelName, m) for m in MODELS]
        runs: list[tuple[str, PredictorConfig]] = [
            (m, replace(base, model=m, seed=seed)) for m in models
        ]
        runs += [
            (f"single-task:{t}", replace(base, model="shared-bottom", tasks=(t,), seed=seed))
            for t in TASKS
        ]
        for name, config in runs:
            start = time.perf_counter()
            frozen = freeze(fit_predictor(logs, config))
            seconds = time.perf_counter() - start
            preds = frozen.predict(held_out, held_out)
            n_params = sum(p.numel() for p in frozen.model.parameters())
            for task in config.tasks:
                rows.append(
                    {
                        "model": name.split(":")[0],
                        "seed": seed,
                        "task": task,
                        "auc": auc(held_out[task].to_numpy(), preds[f"pred_{task}"]),
                        "seconds": seconds,
                        "params": n_params,
                    }
                )
            logger.info("seed %d %-24s %.1fs", seed, name, seconds)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="impressions")
    parser.add_argument("--seeds", type=int, default=2, help="training seeds per model")
    parser.add_argument(
        "--epochs", type=int, default=6, help="epochs per model (same budget for all)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest for these sizes)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    logging.getLogger("batchrl_mtf").setLevel(logging.WARNING)
    start = time.perf_counter()
    results = run(args.n, args.seeds, args.epochs)
    stats: dict[tuple[str, str], tuple[float, float]] = {}
    row: dict[Any, Any]
    for row in (
        results.groupby(["model", "task"])["auc"]
        .agg(["mean", "std"])
        .reset_index()
        .to_dict("records")
    ):
        std = float(row["std"])
        stats[(str(row["model"]), str(row["task"]))] = (
            float(row["mean"]),
            0.0 if np.isnan(std) else std,
        )
    info: dict[str, tuple[int, float]] = {}
    for row in (
        results.groupby("model")
        .agg(params=("params", "max"), seconds=("seconds", "mean"))
        .reset_index()
        .to_dict("records")
    ):
        info[str(row["model"])] = (int(row["params"]), float(row["seconds"]))
    lines = [
        "| model | " + " | ".join(f"AUC {t}" for t in TASKS) + " | params | s/fit |",
        "|---" * 6 + "|",
    ]
    for model in [*MODELS, "single-task", "oracle"]:
        cells = [f"{stats[(model, t)][0]:.4f} ± {stats[(model, t)][1]:.4f}" for t in TASKS]
        params = {"single-task": "per task", "oracle": "-"}.get(model, f"{info[model][0]:,}")
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {params} | {info[model][1]:.1f} |")
    print("\n".join(lines))
    single = stats[("single-task", "follow")][0]
    print(
        "\nfollow (weak/conflicting task), AUC minus single-task AUC (negative = negative transfer):"
    )
    for model in MODELS:
        print(f"  {model:<14} {stats[(model, 'follow')][0] - single:+.4f}")
    print(f"\ntotal {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
