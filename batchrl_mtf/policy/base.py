"""What every fusion policy offers: the :class:`Policy` protocol, constant and table policies.

A policy maps states to fusion-weight vectors. Trained networks (``batchrl_mtf.training``),
weight tables (``batchrl_mtf.serving``) and constant vectors all implement :class:`Policy`, so the
evaluator, the exporter and the simulator treat them alike. Every policy can be shown under
another name (:meth:`Policy.renamed`; OPE reports, tables and rollouts key policies by name).

The policy that wrote the logs is no :class:`Policy`: it is only known through its logged actions.
:class:`LoggingPolicy` is the marker that stands for it; off-policy evaluation recognises it and
returns the on-policy average of the logged returns (``batchrl_mtf.ope``).

This layer imports nothing above it: a table policy wraps any object with the lookup interface of
:class:`batchrl_mtf.serving.WeightTable`. Policy arguments (``constant:...``, a table path, a
policy directory) are resolved in the application layer, :func:`batchrl_mtf.resolve.resolve_policy`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from batchrl_mtf.errors import PolicyError

__all__ = [
    "LOGGING_NAMES",
    "ConstantPolicy",
    "LoggingPolicy",
    "Policy",
    "RenamedPolicy",
    "TablePolicy",
]

FloatArray = npt.NDArray[np.float64]

LOGGING_NAMES = ("behavior", "logged")
"""Policy arguments that mean "the logging policy itself" (the on-policy sanity line of OPE)."""


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

    def renamed(self, name: str) -> Policy:
        """The same policy shown as ``name`` (same weights for every state)."""
        ...


@dataclass(frozen=True)
class RenamedPolicy:
    """Any :class:`Policy` shown under another name.

    The policies of this package return a copy of themselves from :meth:`Policy.renamed`; a
    policy written elsewhere can return ``RenamedPolicy(self, name)``.

    Attributes:
        policy: The wrapped policy.
        name: The display name.
    """

    policy: Policy
    name: str

    @property
    def tasks(self) -> tuple[str, ...]:
        """The wrapped policy's tasks."""
        return tuple(self.policy.tasks)

    def act(self, observations: FloatArray) -> FloatArray:
        """The wrapped policy's weights, shape (n, n_tasks)."""
        return np.asarray(self.policy.act(observations), dtype=np.float64)

    def renamed(self, name: str) -> RenamedPolicy:
        """The wrapped policy shown as ``name``."""
        return RenamedPolicy(self.policy, name)


@dataclass(frozen=True)
class LoggingPolicy:
    """Marker for the policy that wrote the logs: its action at a logged state is the logged action.

    It is no :class:`Policy` (it has no ``act``: it is stochastic and only known at the logged
    states). The estimators of ``batchrl_mtf.ope`` recognise it and use the logged actions,
    importance weights of exactly 1 and SARSA-style FQE targets (the next logged action), so every
    estimator gives the on-policy average of the logged returns (FQE up to fitting error).

    Attributes:
        tasks: Task names, in the order of the logged action vector.
        name: Display name (``behavior`` or ``logged``, as given).
    """

    tasks: tuple[str, ...]
    name: str = "behavior"

    def renamed(self, name: str) -> LoggingPolicy:
        """The marker shown as ``name``."""
        return dataclasses.replace(self, name=name)


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

    def renamed(self, name: str) -> ConstantPolicy:
        """The same weights shown as ``name``."""
        return dataclasses.replace(self, name=name)


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

    def renamed(self, name: str) -> TablePolicy:
        """The same table shown as ``name``."""
        return TablePolicy(self.table, self.feature_names, name)
