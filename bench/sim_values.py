"""Measure the default world's reference values: production, best constant (CEM), per-segment optimum.

Usage::

    python bench/sim_values.py [--env short_video] [--eval-sessions 8000] [--out runs/sim_values.json]

Prints each value as mean session return with a 95% interval (all valued on the same fresh
evaluation users), and checks the design targets. The per-segment optimum is an oracle that knows
each user's hidden segment: per segment, the best of a CEM search on that segment's users, the
best constant and production (chosen on separate segment-only sessions). It checks the design targets: best constant > production, and per-segment
optimum > best constant, each by a margin larger than the intervals.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from batchrl_mtf.core.io import atomic_write_text, dumps_json
from batchrl_mtf.policy.base import ConstantPolicy
from batchrl_mtf.sim import (
    SegmentPolicy,
    World,
    load_spec,
    search_constant,
    true_value,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="short_video")
    ap.add_argument("--eval-sessions", type=int, default=8000)
    ap.add_argument("--eval-seed", type=int, default=12345)
    ap.add_argument("--search-sessions", type=int, default=600)
    ap.add_argument("--iterations", type=int, default=6)
    ap.add_argument("--population", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    world = World(load_spec(args.env))
    t0 = time.time()

    def value(policy: object) -> dict[str, object]:
        return true_value(world, policy, args.eval_sessions, args.eval_seed).summary  # type: ignore[arg-type]

    prod = value(ConstantPolicy(tuple(world.production), world.tasks, "production"))
    best = search_constant(
        world,
        "cem",
        sessions=args.search_sessions,
        iterations=args.iterations,
        population=args.population,
        elite=max(2, args.population // 4),
        eval_sessions=200,
        seed=args.seed,
    )
    const = value(ConstantPolicy(best.weights, world.tasks, "best-constant"))
    per_seg = []
    for g, name in enumerate(world.segment_names):
        r = search_constant(
            world,
            "cem",
            sessions=max(200, args.search_sessions * 2 // 3),
            iterations=args.iterations,
            population=max(8, args.population * 2 // 3),
            elite=max(2, args.population // 6),
            eval_sessions=200,
            seed=args.seed + 1 + g,
            segment=g,
        )
        # keep the segment's search result only if it beats the global candidates on that segment
        cands = {
            "segment search": r.weights,
            "best constant": best.weights,
            "production": tuple(world.production),
        }
        vals = {}
        for label, w in cands.items():
            pol = ConstantPolicy(tuple(w), world.tasks, label)
            vals[label] = true_value(world, pol, 2000, args.eval_seed + 1 + g, segment=g).mean
        pick = max(vals, key=lambda k: vals[k])
        per_seg.append(tuple(cands[pick]))
        print(
            f"segment {name}: {pick} {np.round(cands[pick], 3).tolist()} "
            f"(segment-only values {', '.join(f'{k} {v:.2f}' for k, v in vals.items())})",
            flush=True,
        )
    oracle = value(SegmentPolicy(tuple(per_seg)))

    def line(label: str, doc: dict[str, object], w: object) -> str:
        ret = doc["return"]  # type: ignore[index]
        lo, hi = ret["ci95"]  # type: ignore[index]
        return f"{label:<22} {ret['mean']:9.3f}  [{lo:.3f}, {hi:.3f}]  {w}"  # type: ignore[index]

    print(f"world {args.env}: {args.eval_sessions} evaluation sessions, seed {args.eval_seed}")
    print(line("production", prod, np.round(world.production, 3).tolist()))
    print(line("best constant (CEM)", const, np.round(best.weights, 3).tolist()))
    print(line("per-segment optimum", oracle, "per segment, see above"))

    def margin(a: dict[str, object], b: dict[str, object]) -> tuple[float, float]:
        ra, rb = a["return"], b["return"]  # type: ignore[index]
        d = ra["mean"] - rb["mean"]  # type: ignore[index]
        se = math.hypot(ra["sd"] / math.sqrt(a["sessions"]), rb["sd"] / math.sqrt(b["sessions"]))  # type: ignore[index,operator]
        return float(d), 1.96 * se

    for label, a, b in (
        ("best constant - production", const, prod),
        ("per-segment - best constant", oracle, const),
    ):
        d, h = margin(a, b)
        ok = "OK" if d - h > 0 else "NOT MET"
        print(f"{label:<30} {d:+.3f} +- {h:.3f}  {ok}")
    for name in world.segment_names:
        vals = [
            doc["by_segment"][name]["return"]["mean"]  # type: ignore[index]
            for doc in (prod, const, oracle)
        ]
        print(
            f"  segment {name:<10} production {vals[0]:.2f}  constant {vals[1]:.2f}  per-segment {vals[2]:.2f}"
        )
    print(f"elapsed {time.time() - t0:.0f} s")
    if args.out:
        atomic_write_text(
            args.out,
            dumps_json(
                {
                    "env": args.env,
                    "production": prod,
                    "best_constant": {"weights": list(best.weights), **const},
                    "per_segment": {
                        "weights": {
                            n: list(w) for n, w in zip(world.segment_names, per_seg, strict=True)
                        },
                        **oracle,
                    },
                }
            ),
        )


if __name__ == "__main__":
    main()
