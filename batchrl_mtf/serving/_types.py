"""The value types of a weight table (``batchrl-mtf/weight-table@1``) and small shared helpers.

This module sits below :mod:`batchrl_mtf.serving.table` and :mod:`batchrl_mtf.serving._format`, so
that neither imports the other's internals (numpy and the standard library only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from batchrl_mtf.core.fusion import FORMULAS, Fusion
from batchrl_mtf.errors import ExportError

__all__ = [
    "FORMAT",
    "FORMULAS",
    "MAX_CELLS",
    "Bound",
    "Exploration",
    "Fusion",
    "TableFields",
    "TableKey",
    "TableRow",
    "is_number",
    "show",
]

FORMAT = "batchrl-mtf/weight-table@1"
"""The format tag of every table this package reads and writes."""

"""Fusion formulas: ``logsum`` = sum_k w_k * log(p_k + beta_k); ``sum`` = sum_k w_k * p_k."""

MAX_CELLS = 1 << 22
"""Most grid cells (product over keys of ``len(edges) + 1``) a table may span."""

Bound = tuple[float | None, float | None]


def is_number(x: object) -> bool:
    """A real number that is not a bool (Python or numpy scalar)."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def show(x: object, limit: int = 60) -> str:
    """``repr(x)`` cut to ``limit`` characters, so that an error message stays one short line."""
    if isinstance(x, (list, dict)) and _deeper_than(x, 8):
        return f"<{type(x).__name__} nested deeper than 8>"
    text = repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _deeper_than(x: object, depth: int) -> bool:
    """Whether ``x`` nests lists/dicts more than ``depth`` levels (iterative, bounded work)."""
    todo: list[tuple[object, int]] = [(x, 1)]
    seen = 0
    while todo and seen < 10_000:
        node, d = todo.pop()
        seen += 1
        if d > depth:
            return True
        if isinstance(node, list):
            todo.extend((v, d + 1) for v in node[:100])
        elif isinstance(node, dict):
            todo.extend((v, d + 1) for v in list(node.values())[:100])
    return False


@dataclass(frozen=True)
class Exploration:
    """Exploration around each bucket's weights, for the next round of logs.

    Attributes:
        distribution: ``"gaussian"``: each weight ``~ N(mu_k, sigma_k^2)`` truncated to the action
            bounds; ``"uniform"``: each weight ``~ U([mu_k - h_k, mu_k + h_k] ∩ [low_k, high_k])``.
            Weights are drawn independently per task; ``mu`` is the bucket's (or default) weight.
            A table without action bounds does not truncate.
        scale: ``sigma_k`` or ``h_k`` per task in task order (finite, > 0), in weight units.
    """

    distribution: Literal["gaussian", "uniform"]
    scale: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.distribution not in ("gaussian", "uniform"):
            raise ExportError(
                "exploration.distribution: expected 'gaussian' or 'uniform', "
                f"found {show(self.distribution)}"
            )
        for i, s in enumerate(self.scale):
            if not is_number(s) or not (math.isfinite(s) and s > 0):
                raise ExportError(
                    f"exploration.{self.scale_name}[{i}]: expected a finite number > 0, "
                    f"found {show(s)}"
                )
        object.__setattr__(self, "scale", tuple(float(s) for s in self.scale))

    @property
    def scale_name(self) -> str:
        """The JSON name of :attr:`scale`: ``"sigma"`` or ``"halfwidth"``."""
        return "sigma" if self.distribution == "gaussian" else "halfwidth"


@dataclass(frozen=True)
class TableKey:
    """One state feature the table is keyed on.

    Attributes:
        name: State feature name (``u_activity``, ``session_depth``, ...).
        edges: Strictly ascending finite cut points; ``len(edges) + 1`` cells
            ``(-inf, e_0), [e_0, e_1), ..., [e_last, +inf)``.
    """

    name: str
    edges: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class TableRow:
    """One bucket: a box of key values and its weights.

    Attributes:
        bounds: Per key, in table key order, the half-open interval ``[lo, hi)``; ``None`` is
            unbounded. Every finite bound is one of that key's edges.
        weights: One weight per task, in task order.
        support: Number of dataset states in the bucket when it was built (0 when unknown).
    """

    bounds: tuple[Bound, ...]
    weights: tuple[float, ...]
    support: int = 0


class TableFields(Protocol):
    """The public fields of a weight table, as :mod:`batchrl_mtf.serving._format` reads them."""

    @property
    def tasks(self) -> tuple[str, ...]: ...
    @property
    def fusion(self) -> Fusion: ...
    @property
    def action_low(self) -> tuple[float, ...] | None: ...
    @property
    def action_high(self) -> tuple[float, ...] | None: ...
    @property
    def keys(self) -> tuple[TableKey, ...]: ...
    @property
    def default(self) -> tuple[float, ...]: ...
    @property
    def rows(self) -> tuple[TableRow, ...]: ...
    @property
    def exploration(self) -> Exploration | None: ...
    @property
    def meta(self) -> Mapping[str, object]: ...


def weight_names(tasks: Sequence[str]) -> tuple[str, ...]:
    """``("w_<task>", ...)`` in task order."""
    return tuple(f"w_{t}" for t in tasks)
