"""What BCQ's deterministic serving rule costs: true value with fixed vs fresh latent draws.

Run: ``python bench/bcq_deterministic.py`` (prints the figures; nothing is asserted).

BCQ (the paper's algorithm, 300 steps on 3,000 simulated sessions) acts by decoding
``n_action_samples`` latent draws into candidate actions and taking the best by Q. To export it as
one TorchScript/ONNX graph the draws are fixed (``batchrl_mtf.training.policy.deterministic_bcq``).
This prints the simulator's true value (mean session return over 4,000 fresh sessions, several
seeds) of the deterministic policy and of d3rlpy's own rule with fresh draws per call, and their
paired difference.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from batchrl_mtf.cli import main as cli
from batchrl_mtf.sim.runner import true_value
from batchrl_mtf.training import load_policy

ROOT = Path(__file__).resolve().parents[1]


class FreshDraws:
    """The same trained BCQ acting with d3rlpy's own fresh latent draws on every call."""

    def __init__(self, policy: object) -> None:
        self.policy = policy
        self.name = "bcq (fresh draws)"
        self.tasks = policy.tasks  # type: ignore[attr-defined]

    def act(self, observations: np.ndarray) -> np.ndarray:
        impl = self.policy.algo.impl  # type: ignore[attr-defined]
        fixed = impl._sample_repeated_action
        impl._sample_repeated_action = impl._batchrl_sampled_candidates
        try:
            out = np.asarray(self.policy.algo.predict(observations.astype(np.float32)), np.float64)  # type: ignore[attr-defined]
        finally:
            impl._sample_repeated_action = fixed
        return np.clip(out, self.policy.action_low, self.policy.action_high)  # type: ignore[attr-defined]


def run(args: list[str]) -> None:
    res = CliRunner().invoke(cli, ["--quiet", *args])
    if res.exit_code != 0:
        sys.exit(f"{' '.join(args[:2])} failed: {res.output}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        run(
            [
                "simulate",
                "--sessions",
                "3000",
                "--policy",
                "mixed",
                "--seed",
                "0",
                "--out",
                str(t / "logs.parquet"),
            ]
        )
        run(
            [
                "build-dataset",
                str(t / "logs.parquet"),
                "--reward",
                str(ROOT / "envs/reward_default.toml"),
                "--out",
                str(t / "ds"),
            ]
        )
        run(
            [
                "train",
                str(t / "ds"),
                "--algo",
                "bcq",
                "--n-steps",
                "300",
                "--seed",
                "0",
                "--out",
                str(t / "bcq"),
            ]
        )
        policy = load_policy(t / "bcq")
        fixed, fresh = [], []
        for seed in (11, 12, 13):
            fixed.append(true_value(None, policy, seed=seed, sessions=4000).mean)
            fresh.append(true_value(None, FreshDraws(policy), seed=seed, sessions=4000).mean)  # type: ignore[arg-type]
        d = np.array(fixed) - np.array(fresh)
        print(
            f"true value, fixed draws (served): {np.mean(fixed):.4f}  per seed {np.round(fixed, 4).tolist()}"
        )
        print(
            f"true value, fresh draws (d3rlpy): {np.mean(fresh):.4f}  per seed {np.round(fresh, 4).tolist()}"
        )
        print(
            f"fixed - fresh: {d.mean():+.4f} (paired over 3 seeds of 4,000 sessions; sd {d.std(ddof=1):.4f})"
        )


if __name__ == "__main__":
    main()
