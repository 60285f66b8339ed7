"""What every fusion policy offers: the :class:`Policy` protocol, constant and table policies.

A policy maps states to fusion-weight vectors. Trained networks (``batchrl_mtf.training``),
weight tables (``batchrl_mtf.serving``) and constant vectors all implement :class:`Policy`, so the
evaluator, the exporter and the simulator treat them alike.

This layer imports nothing above it: a table policy wraps any object with the lookup interface of
:class:`batchrl_mtf.serving.WeightTable`. Policy arguments (``constant:...``, a table path, a
policy directory) are resolved in the application layer, :func:`batchrl_mtf.resolve.resolve_policy`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from batchrl_mtf.errors import PolicyError

__all__ = ["ConstantPolicy", "Policy", "TablePolicy"]

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
