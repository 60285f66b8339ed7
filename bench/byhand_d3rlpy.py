"""A minimal by-hand d3rlpy script: what one would write without batchrl-mtf.

State: the raw ``u_*`` user features and the session depth (request index), no normalisation.
Action: the logged ``w_*`` weights (d3rlpy's min-max action scaler, as in its BCQ examples).
Reward: the reward TOML (default ``envs/reward_default.toml``: stickiness + activeness) summed
over the request's items, unscaled. Episode: one session. Algorithm: ``d3rlpy.algos.BCQConfig()``
(or ``--algo td3bc``: ``d3rlpy.algos.TD3PlusBCConfig()``, alpha 2.5) with every other setting at
d3rlpy's defaults; the same number of gradient steps as the toolkit run.

Usage::

    python bench/byhand_d3rlpy.py LOGS.parquet --out runs/byhand --n-steps 10000
    python bench/byhand_d3rlpy.py LOGS.parquet --reward reward.toml --algo td3bc --out runs/bh

Writes ``<out>/model.json`` + ``<out>/model.safetensors`` (no pickle) and ``<out>/state.json`` (the state's column names, for evaluation).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd

from batchrl_mtf.training.checkpoint import save_algo

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("logs", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n-steps", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reward", type=Path, default=ROOT / "envs" / "reward_default.toml")
    parser.add_argument("--algo", choices=["bcq", "td3bc"], default="bcq")
    args = parser.parse_args()

    import d3rlpy
    import torch

    torch.set_num_threads(1)
    d3rlpy.seed(args.seed)
    df = pd.read_parquet(args.logs)
    cfg = tomllib.loads(args.reward.read_text())["reward"]
    item_reward = np.zeros(len(df))
    for col, w in {**cfg.get("stickiness", {}), **cfg.get("activeness", {})}.items():
        if col == "valid_play":
            valid = (df["watch_time"] >= cfg.get("valid_play_s", 10.0)).astype(float)
            item_reward += w * valid
        else:
            item_reward += w * df[col].astype(float)
    df["r"] = item_reward
    users = sorted(c for c in df.columns if c.startswith("u_"))
    tasks = [c for c in df.columns if c.startswith("w_")]
    req = (
        df.groupby("request_id", sort=False)
        .agg(
            {
                "session_id": "first",
                "ts": "first",
                "r": "sum",
                **{c: "first" for c in users + tasks},
            }
        )
        .reset_index()
        .sort_values(["session_id", "ts"])
    )
    req["session_depth"] = req.groupby("session_id").cumcount()
    state = [*users, "session_depth"]
    terminals = (req["session_id"] != req["session_id"].shift(-1)).to_numpy()
    dataset = d3rlpy.dataset.MDPDataset(
        observations=req[state].to_numpy(np.float32),
        actions=req[tasks].to_numpy(np.float32),
        rewards=req["r"].to_numpy(np.float32),
        terminals=terminals.astype(np.float32),
        action_space=d3rlpy.ActionSpace.CONTINUOUS,
    )
    algo_config = d3rlpy.algos.TD3PlusBCConfig if args.algo == "td3bc" else d3rlpy.algos.BCQConfig
    algo = algo_config(action_scaler=d3rlpy.preprocessing.MinMaxActionScaler()).create(
        device="cpu:0"
    )
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as logdir:
        algo.fit(
            dataset,
            n_steps=args.n_steps,
            n_steps_per_epoch=min(1000, args.n_steps),
            logger_adapter=d3rlpy.logging.FileAdapterFactory(root_dir=logdir),
            show_progress=False,
        )
    secs = time.perf_counter() - t
    args.out.mkdir(parents=True, exist_ok=True)
    save_algo(algo, args.out)
    meta = {
        "state": state,
        "tasks": tasks,
        "n_steps": args.n_steps,
        "seconds": secs,
        "algo": args.algo,
    }
    (args.out / "state.json").write_text(json.dumps(meta))
    print(
        f"by-hand {args.algo}: {args.n_steps} steps in {secs:.0f}s ({args.n_steps / secs:.1f} steps/s)"
    )


if __name__ == "__main__":
    main()
