"""Requests per second of the batched simulator (200 candidates, 6 tasks): target >= 20,000.

Usage::

    python bench/env_throughput.py [--batch 4096] [--requests 200000]

Steps ``--batch`` sessions of ``envs/short_video.toml`` together through the native batch API
(:class:`batchrl_mtf.sim.SessionBatch`: candidates, predictor, fusion, slate, feedback, reward,
satisfaction, leaving and the next observations), with production weights, starting new batches
until ``--requests`` requests were served. Also prints single-environment ``gymnasium`` steps/s.
"""

from __future__ import annotations

import argparse
import time

import gymnasium
import numpy as np

from batchrl_mtf.sim import SessionBatch, UserPool, World, load_spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="short_video")
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    world = World(load_spec(args.env))
    rng = np.random.default_rng(args.seed)
    world.fused_features()  # build the per-(segment, item) tables outside the timing
    served = 0
    t0 = time.perf_counter()
    while served < args.requests:
        pool = UserPool(world, world.new_users(args.batch, rng), world.spec.features.hist_n)
        batch = SessionBatch(world, pool, np.arange(args.batch, dtype=np.int64), rng)
        while batch.active.any() and served < args.requests:
            rows = np.flatnonzero(batch.active)
            batch.observe(rows)
            batch.step(np.tile(world.production, (len(rows), 1)), rows)
            served += len(rows)
    dt = time.perf_counter() - t0
    c, k = world.spec.world.n_candidates, len(world.tasks)
    print(
        f"batched: {served / dt:,.0f} requests/s ({served} requests, batch {args.batch}, "
        f"{c} candidates, {k} tasks, {dt:.2f} s)"
    )

    env = gymnasium.make("batchrl_mtf.envs:batchrl_mtf/ShortVideo-v0")
    env.reset(seed=args.seed)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 2.0:
        _, _, te, tr, _ = env.step(world.production)
        n += 1
        if te or tr:
            env.reset()
    print(f"single gymnasium env: {n / (time.perf_counter() - t0):,.0f} steps/s")


if __name__ == "__main__":
    main()
