"""The true return of a policy in the simulator, for ``train --env SPEC``.

The true return is the mean undiscounted session return of the policy over ``n_episodes`` simulated
sessions, with a normal 95% interval (:func:`batchrl_mtf.sim.true_value`, the ``rollout`` figures).
"""

from __future__ import annotations

from collections.abc import Callable

from batchrl_mtf.data.spec import DatasetSpec, check_feature_spec
from batchrl_mtf.errors import EnvError, PolicyError
from batchrl_mtf.sim.runner import feature_names_of, true_value
from batchrl_mtf.sim.spec import load_spec
from batchrl_mtf.sim.world import World
from batchrl_mtf.training.policy import TrainedPolicy

__all__ = ["make_env_evaluator"]


def make_env_evaluator(
    env: str, spec: DatasetSpec, n_episodes: int, seed: int
) -> Callable[[TrainedPolicy], tuple[float, float, float]]:
    """A function returning (mean, low, high) of a policy's true session return in ``env``.

    Args:
        env: A platform spec path (``envs/short_video.toml``) or a shipped spec's name.
        spec: The training dataset's spec; its features and tasks must be the world's.
        n_episodes: Simulated sessions per evaluation.
        seed: Seed of the simulated users (the same users at every evaluation).

    Raises:
        EnvError: The simulator is not available or ``env`` is not a usable spec.
        PolicyError: The world's tasks or state features differ from the dataset's.
    """
    try:
        world = World(load_spec(env))
    except PolicyError:
        raise
    except Exception as exc:
        raise EnvError(f"--env {env}: cannot build the simulated world ({exc})") from exc
    if tuple(world.tasks) != tuple(spec.tasks):
        raise PolicyError(
            f"--env {env}: task mismatch: the dataset has tasks {list(spec.tasks)}; the world has "
            f"{list(world.tasks)}"
        )
    check_feature_spec(spec, feature_names_of(world), "the policy", f"--env {env}")

    def evaluate(policy: TrainedPolicy) -> tuple[float, float, float]:
        value = true_value(world, policy, n_episodes, seed)
        return value.mean, *value.ci95

    return evaluate
