"""Policy resolution: the one place where a policy argument becomes a :class:`Policy`.

A policy argument ``P`` (``--policy P`` of ``evaluate``, ``rollout``, ``simulate``, ``export``; the
pipeline's policy lists) is one of:

- ``constant:1.5,0.2,...``: a constant weight vector, in task order;
- a path to a weight-table JSON (``batchrl-mtf/weight-table@1``);
- a trained policy directory (holding ``policy.json``);
- for off-policy evaluation also ``behavior`` or ``logged``: the policy that wrote the logs (the
  :class:`~batchrl_mtf.policy.LoggingPolicy` marker; :func:`resolve_ope_policy`);
- in a simulated world also a named logging policy (``production``, ``action-noise``, ``random``,
  ``mixed``; :func:`resolve_sim_policy`).

This module is part of the application layer: it may import every library layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from batchrl_mtf.data.spec import check_feature_spec
from batchrl_mtf.errors import PolicyError
from batchrl_mtf.policy import LOGGING_NAMES, ConstantPolicy, LoggingPolicy, Policy, TablePolicy
from batchrl_mtf.serving import WeightTable
from batchrl_mtf.sim.policies import NAMED_POLICIES, SimPolicy, world_policy
from batchrl_mtf.sim.runner import feature_names_of
from batchrl_mtf.sim.world import World
from batchrl_mtf.training import load_policy

__all__ = ["resolve_ope_policy", "resolve_policy", "resolve_sim_policy"]


def resolve_policy(arg: str, tasks: Sequence[str], feature_names: Sequence[str]) -> Policy:
    """Turn a policy argument into a :class:`Policy`.

    Args:
        arg: ``constant:w1,w2,...``, a weight-table JSON path, or a trained policy directory.
        tasks: The dataset's (or environment's) tasks, in action order.
        feature_names: The dataset's state features, in observation order.

    Raises:
        PolicyError: The argument is none of these, or does not fit ``tasks``/``feature_names``.
    """
    if arg.startswith("constant:"):
        try:
            weights = tuple(float(x) for x in arg[len("constant:") :].split(","))
        except ValueError:
            raise PolicyError(
                f"--policy {arg}: expected constant:<w_{tasks[0]}>,... with {len(tasks)} numbers"
            ) from None
        return ConstantPolicy(weights, tuple(tasks), name=arg)
    path = Path(arg)
    if path.is_file() and path.suffix == ".json":
        table = WeightTable.load(path)
        if tuple(table.tasks) != tuple(tasks):
            raise PolicyError(
                f"{arg}: table tasks {list(table.tasks)} differ from the dataset's {list(tasks)}"
            )
        return TablePolicy(table, feature_names, name=arg)
    if path.is_dir():
        if not (path / "policy.json").is_file():
            raise PolicyError(f"{arg}: directory has no policy.json; not a trained policy")
        policy = load_policy(path)
        if tuple(policy.tasks) != tuple(tasks):
            raise PolicyError(f"{arg}: policy tasks {list(policy.tasks)} differ from {list(tasks)}")
        check_feature_spec(policy.feature_names, feature_names, arg, "the data it is applied to")
        return policy
    raise PolicyError(
        f"--policy {arg}: expected constant:w1,w2,..., a weight-table .json file, or a trained "
        "policy directory; found no such file or directory"
    )


def resolve_ope_policy(
    arg: str, tasks: Sequence[str], feature_names: Sequence[str]
) -> Policy | LoggingPolicy:
    """Turn a policy argument of off-policy evaluation into what the estimators take.

    Args:
        arg: ``behavior`` or ``logged`` (the logging policy itself), or any argument
            :func:`resolve_policy` accepts.
        tasks: The dataset's tasks, in action order.
        feature_names: The dataset's state features, in observation order.

    Raises:
        PolicyError: As :func:`resolve_policy`.
    """
    if arg in LOGGING_NAMES:
        return LoggingPolicy(tuple(tasks), name=arg)
    return resolve_policy(arg, tasks, feature_names)


def resolve_sim_policy(
    world: World,
    arg: str | Policy,
    sigma: float | None = None,
    random_sigma: float | None = None,
) -> SimPolicy:
    """The simulator policy for ``arg`` in ``world``.

    Args:
        world: The simulated (or learned) world.
        arg: A named logging policy (``production``, ``action-noise``, ``random``, ``mixed``),
            any argument :func:`resolve_policy` accepts, or a :class:`Policy` object.
        sigma: Noise of ``action-noise``/``mixed``; ``None`` = the spec's.
        random_sigma: Noise of ``random``/``mixed``; ``None`` = the spec's.

    Raises:
        PolicyError: The argument is none of these, or does not fit the world.
    """
    if isinstance(arg, str) and arg not in NAMED_POLICIES:
        arg = resolve_policy(arg, world.tasks, feature_names_of(world))
    return world_policy(world, arg, sigma, random_sigma)
