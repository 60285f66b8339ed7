"""Speed of the reference serving code: table lookups per second and rank latency.

Run: ``python bench/serving.py`` (prints the figures; nothing is asserted).

* batched lookup: states/s for one call on 1,000,000 states (2 keys x 4 buckets, 6 tasks);
* single-request lookup: p50/p99 of one ``lookup`` on a dict of scalars;
* rank: p50/p99 of lookup + ``rank`` (logsum fusion) of 500 candidates x 6 tasks, one request;
* sample: p50/p99 of one ``sample`` (gaussian exploration) for one request.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from batchrl_mtf.serving import Exploration, WeightTable, rank

TABLE = Path(__file__).resolve().parents[1] / "policies" / "sample_table.json"


def percentiles(samples_s: list[float]) -> str:
    us = np.array(samples_s) * 1e6
    return f"p50 {np.percentile(us, 50):7.1f} us   p99 {np.percentile(us, 99):7.1f} us"


def main() -> None:
    table = WeightTable.load(TABLE)
    rng = np.random.default_rng(0)
    n = 1_000_000
    feats = {
        "u_activity": rng.normal(size=n),
        "session_depth": rng.integers(0, 12, n).astype(float),
    }
    table.lookup({k: v[:1000] for k, v in feats.items()})  # warm up
    best = min(_timed(lambda: table.lookup(feats)) for _ in range(5))
    print(
        f"batched lookup   : {n / best / 1e6:7.1f} M states/s ({n:,} states in {best * 1e3:.1f} ms)"
    )

    one = {"u_activity": 0.2, "session_depth": 3.0}
    times = [_timed(lambda: table.lookup(one)) for _ in range(20000)]
    print(f"single lookup    : {percentiles(times)}   ({1 / np.median(times):,.0f} lookups/s)")

    beta = np.asarray(table.fusion.beta)
    preds = rng.uniform(0.001, 0.999, size=(500, len(table.tasks)))

    def serve() -> None:
        w = table.lookup(one)[0]
        rank(preds, w, table.fusion.formula, beta)

    times = [_timed(serve) for _ in range(20000)]
    print(f"lookup+rank 500x{len(table.tasks)}: {percentiles(times)}")

    explore = dataclasses.replace(table, exploration=Exploration("gaussian", (0.1,) * 6))
    times = [_timed(lambda: explore.sample(one, rng)) for _ in range(20000)]
    print(f"sample (gaussian): {percentiles(times)}")


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
