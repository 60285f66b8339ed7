"""What every fusion policy offers, and how a policy argument on the command line is resolved.

A policy maps states to fusion-weight vectors. Trained networks (``batchrl_mtf.training``),
weight tables (``batchrl_mtf.serving``) and constant vectors all implement :class:`Policy`, so the
evaluator, the exporter and the simulator treat them alike.

A policy argument ``P`` is one of:

- ``constant:1.5,0.2,...``: a constant weight vector, in task order;
- a path to a weight-table JSON (``batchrl-mtf/weight-table@1``);
- a trained policy directory (holding ``policy.json``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from batchrl_mtf.errors import PolicyError

__all__ = ["ConstantPolicy", "Policy", "TablePolicy", "resolve_policy"]

FloatArray = npt.NDArray[np.float64]


@runtime_checkable
class Policy(Protocol):
    """A deterministic fusion policy."""

    @property
    def name(self) -> str:
        """A display name (for an argument-resolved policy: the argument as given)."""
        ...

    @property
    def tasks(self) -> tuple[str, ...]:
        """Task names, in the order of the action vector."""
        ...

    def act(self, observations: FloatArray) -> FloatArray:
        """Fusion weights for a batch of raw (unnormalised) states.

        Args:
            observations: Shape (n, n_features), in the dataset's feature order.

        Returns:
            Shape (n, n_tasks).
        """
        ...


@dataclass(frozen=True)
class ConstantPolicy:
    """The same weights for every state.

    Attributes:
        weights: One weight per task.
        tasks: Task names in weight order.
        name: Display name.
    """

    weights: tuple[float, ...]
    tasks: tuple[str, ...]
    name: str = "constant"

    def __post_init__(self) -> None:
        if len(self.weights) != len(self.tasks):
            raise PolicyError(
                f"{self.name}: expected {len(self.tasks)} weights (tasks {', '.join(self.tasks)}), "
                f"found {len(self.weights)}"
            )
        if not all(np.isfinite(self.weights)):
            raise PolicyError(f"{self.name}: expected finite weights, found {list(self.weights)}")

    def act(self, observations: FloatArray) -> FloatArray:
        """Shape (n, n_tasks): ``weights`` repeated."""
        n = np.asarray(observations).shape[0]
        return np.tile(np.asarray(self.weights, dtype=np.float64), (n, 1))


class TablePolicy:
    """A weight table applied to state vectors (through :mod:`batchrl_mtf.serving`).

    Args:
        table: A loaded ``WeightTable``.
        feature_names: Names of the observation columns, in order.
        name: Display name.
    """

    def __init__(self, table: object, feature_names: Sequence[str], name: str) -> None:
        self.table = table
        self.feature_names = tuple(feature_names)
        self._name = name
        keys = [k.name for k in table.keys]  # type: ignore[attr-defined]
        missing = [k for k in keys if k not in self.feature_names]
        if missing:
            raise PolicyError(
                f"{name}: table keys {missing} are not state features of the dataset "
                f"(features: {', '.join(self.feature_names)})"
            )

    @property
    def name(self) -> str:
        """Display name."""
        return self._name

    @property
    def tasks(self) -> tuple[str, ...]:
        """The table's tasks."""
        return tuple(self.table.tasks)  # type: ignore[attr-defined]

    def act(self, observations: FloatArray) -> FloatArray:
        """Look every state up in the table; shape (n, n_tasks)."""
        obs = np.asarray(observations, dtype=np.float64)
        return np.asarray(
            self.table.lookup(obs, names=self.feature_names),  # type: ignore[attr-defined]
            dtype=np.float64,
        )


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
        from batchrl_mtf.serving import WeightTable

        table = WeightTable.load(path)
        if tuple(table.tasks) != tuple(tasks):
            raise PolicyError(
                f"{arg}: table tasks {list(table.tasks)} differ from the dataset's {list(tasks)}"
            )
        return TablePolicy(table, feature_names, name=arg)
    if path.is_dir():
        if not (path / "policy.json").is_file():
            raise PolicyError(f"{arg}: directory has no policy.json; not a trained policy")
        from batchrl_mtf.training import load_policy

        policy = load_policy(path)
        if tuple(policy.tasks) != tuple(tasks):
            raise PolicyError(f"{arg}: policy tasks {list(policy.tasks)} differ from {list(tasks)}")
        theirs = tuple(getattr(policy, "feature_names", ()))
        if theirs != tuple(feature_names):
            raise PolicyError(
                f"{arg}: feature spec mismatch: the policy was trained on features {list(theirs)}; "
                f"the data it is applied to has {list(feature_names)}"
            )
        return policy
    raise PolicyError(
        f"--policy {arg}: expected constant:w1,w2,..., a weight-table .json file, or a trained "
        "policy directory; found no such file or directory"
    )
