"""Training speed of every algorithm: gradient steps per second, CPU defaults vs paper settings.

For each algorithm this builds the d3rlpy model exactly as ``batchrl-mtf train`` does and times
``--steps`` gradient steps (after a short warm-up) with (a) the toolkit's CPU default config and
(b) the paper/d3rlpy settings (BCQ: the ``paper`` preset, d3rlpy's default networks and 100 action
samples; others: d3rlpy's default networks and batch size). With ``--value-curve`` it also trains
the toolkit's default algorithm (``batchrl-mtf train`` without ``--algo``: TD3+BC), or
``--curve-algo``, with its CPU defaults on the default world's logs with ``--env`` evaluation
after every epoch and prints the true value reached per minute of training.

Usage::

    python bench/train_speed.py                         # steps/s table on the default world's logs
    python bench/train_speed.py --dataset runs/ds --steps 300 --threads 2
    python bench/train_speed.py --value-curve --n-steps 10000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

D3RLPY_BATCH = {"bcq": 100, "cql": 256, "iql": 256, "td3bc": 256, "awac": 1024, "bc": 100}


def steps_per_second(dataset: object, layer: dict[str, object], steps: int) -> float:
    from batchrl_mtf.training import build_algo, resolve_config

    cfg = resolve_config([("bench", layer)])
    spec = dataset.spec  # type: ignore[attr-defined]
    buffer = dataset.select("train").to_d3rlpy()  # type: ignore[attr-defined]
    algo = build_algo(cfg, spec)
    algo.build_with_dataset(buffer)
    for _ in range(10):
        algo.update(buffer.sample_transition_batch(cfg.batch_size))
    t = time.perf_counter()
    for _ in range(steps):
        algo.update(buffer.sample_transition_batch(cfg.batch_size))
    return steps / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dataset", type=Path, default=None, help="default: the default world's logs"
    )
    parser.add_argument("--work", type=Path, default=Path("runs/bench_quality"))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--algos", default="bcq,cql,iql,td3bc,awac,bc")
    parser.add_argument("--value-curve", action="store_true")
    parser.add_argument("--n-steps", type=int, default=10_000)
    parser.add_argument(
        "--curve-algo", default=None, help="algorithm of --value-curve (default: the toolkit's)"
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from batchrl_mtf.data.formats import load_dataset

    sys.path.insert(0, str(HERE))
    from train_quality import prepare_data

    ds_dir = args.dataset or prepare_data(args.work, 20_000, 1)
    data = load_dataset(ds_dir)
    print(
        f"dataset {ds_dir}: {len(data)} transitions, {data.observations.shape[1]} features, "
        f"{len(data.spec.tasks)} tasks; torch threads {args.threads}\n"
    )
    print("| algo | default steps/s | paper/d3rlpy settings steps/s | speed-up |")
    print("|---|---|---|---|")
    for algo in [a for a in args.algos.split(",") if a]:
        default = steps_per_second(data, {"algo": algo}, args.steps)
        paper: dict[str, object] = (
            {"algo": "bcq", "preset": "paper"}
            if algo == "bcq"
            else {"algo": algo, "hidden_units": [], "batch_size": D3RLPY_BATCH[algo]}
        )
        slow = steps_per_second(data, paper, max(20, args.steps // 5))
        print(f"| {algo} | {default:.1f} | {slow:.1f} | {default / slow:.1f}x |", flush=True)

    if args.value_curve:
        from batchrl_mtf.training import resolve_config, train

        cfg = resolve_config(
            [
                (
                    "bench",
                    {
                        **({"algo": args.curve_algo} if args.curve_algo else {}),
                        "n_steps": args.n_steps,
                        "env": "short_video",
                        "eval_every": 1,
                        "eval_episodes": 2000,
                    },
                )
            ]
        )
        result = train(data, args.work / "speed_value_curve", cfg)
        print(f"\nTrue value per minute of training: {cfg.algo} ({cfg.preset}), 1 torch thread\n")
        print("| training min | steps | true value | 95% interval |")
        print("|---|---|---|---|")
        for row in result.metrics:
            print(
                f"| {row['train_seconds'] / 60:.2f} | {int(row['step'])} | {row['true_return']:.3f} | "
                f"[{row['true_return_low']:.3f}, {row['true_return_high']:.3f}] |"
            )


if __name__ == "__main__":
    main()
