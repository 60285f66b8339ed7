"""Validation of a table's rows and the cell -> row grid that lookup uses (numpy only).

Work is ``O(rows · keys · log edges + cells)`` with ``cells <= MAX_CELLS``: the rows are checked as
arrays; only when a check fails is the first failing row looked at one by one, so that the message
names it exactly as a row-by-row reader would (the Java and C++ ports check row by row, in order,
and report the same row and field).
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Sequence
from typing import cast

import numpy as np
import numpy.typing as npt

from batchrl_mtf.errors import ExportError
from batchrl_mtf.serving._types import MAX_CELLS, Bound, TableKey, TableRow, is_number, show

__all__ = [
    "Grid",
    "RowArrays",
    "build_grid",
    "check_keys",
    "check_weights",
    "row_arrays",
    "rows_from_arrays",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_NUMBER_TYPES = frozenset({int, float, np.float64, np.float32, np.int64, np.int32})
_INT_TYPES = frozenset({int, np.int64, np.int32})
_MAX_SUPPORT = (1 << 63) - 1


class Grid:
    """The validated rows as arrays.

    Attributes:
        strides: Mixed-radix strides of the key cells, shape (n_keys,).
        cell_row: Row index per grid cell, ``-1`` where the default applies, shape (n_cells,).
        weights: Row weights with the default appended as the last row, shape (n_rows + 1, k).
        arrays: The rows' numbers (:func:`rows_from_arrays` makes normal rows of them).
    """

    def __init__(
        self, strides: IntArray, cell_row: IntArray, weights: FloatArray, arrays: RowArrays
    ) -> None:
        self.strides = strides
        self.cell_row = cell_row
        self.weights = weights
        self.arrays = arrays


def check_keys(keys: Sequence[TableKey]) -> tuple[int, ...]:
    """Validate key names and edges; return the grid shape (``len(edges) + 1`` per key)."""
    seen: set[str] = set()
    for j, key in enumerate(keys):
        if not isinstance(key, TableKey):
            raise ExportError(f"keys[{j}]: expected a TableKey, found {type(key).__name__}")
        if not isinstance(key.name, str) or not key.name:
            raise ExportError(
                f"keys[{j}].name: expected a non-empty string, found {show(key.name)}"
            )
        if key.name.startswith("w_") or key.name == "support":
            raise ExportError(
                f"keys[{j}].name: expected a state feature name (not 'w_*' or 'support'), "
                f"found {show(key.name)}"
            )
        if key.name in seen:
            raise ExportError(f"keys[{j}].name: duplicate key {key.name!r}")
        seen.add(key.name)
        for e in key.edges:
            if not is_number(e) or not math.isfinite(e):
                raise ExportError(f"keys[{j}].edges: expected finite numbers, found {show(e)}")
        edges = np.asarray(key.edges, dtype=np.float64)
        if edges.size > 1 and not bool((np.diff(edges) > 0).all()):
            i = int(np.argmax(np.diff(edges) <= 0))
            raise ExportError(
                f"keys[{j}].edges: expected strictly ascending edges, found "
                f"{show(key.edges[i])} then {show(key.edges[i + 1])} at positions {i}, {i + 1}"
            )
    shape = tuple(len(key.edges) + 1 for key in keys)
    n_cells = math.prod(shape)
    if n_cells > MAX_CELLS:
        raise ExportError(
            f"keys: expected at most {MAX_CELLS} grid cells (product of len(edges)+1), "
            f"found {n_cells}; use fewer keys or edges"
        )
    return shape


def check_weights(
    weights: Sequence[float], tasks: Sequence[str], low: FloatArray, high: FloatArray, where: str
) -> None:
    """One weight vector: one finite number per task, inside the action bounds."""
    if not isinstance(weights, (tuple, list)) or len(weights) != len(tasks):
        n = len(weights) if isinstance(weights, (tuple, list)) else type(weights).__name__
        raise ExportError(f"{where}: expected {len(tasks)} weights (one per task), found {n}")
    for t, w, lo, hi in zip(tasks, weights, low, high, strict=True):
        if not is_number(w) or not math.isfinite(w):
            raise ExportError(f"{where}.w_{t}: expected a finite number, found {show(w)}")
        if not lo <= w <= hi:
            raise ExportError(
                f"{where}.w_{t}: expected a weight within the action bounds [{lo}, {hi}], found {w}"
            )


class RowArrays:
    """The numbers of n rows as arrays, their types already checked (:func:`row_arrays`).

    Attributes:
        weights: Weights, shape (n, k), float64.
        support: Supports, shape (n,), int64 (values not yet checked to be >= 0).
        bounds: Per key, the bounds ``[lo, hi]`` as floats, shape (n, 2), NaN where ``None``.
        unbounded: Per key, where the bound is ``None``, shape (n, 2), bool.
        floats: Every weight and bound is a Python float (a bound may be ``None``) and every
            support a Python int: the values need no normalisation.
        plain: ``floats``, and every container is a tuple (the rows are already normal).
    """

    def __init__(
        self,
        weights: FloatArray,
        support: IntArray,
        bounds: list[FloatArray],
        unbounded: list[npt.NDArray[np.bool_]],
        floats: bool,
        plain: bool,
    ) -> None:
        self.weights = weights
        self.support = support
        self.bounds = bounds
        self.unbounded = unbounded
        self.floats = floats
        self.plain = plain


def row_arrays(
    weights: list[object],
    support: list[object],
    pairs: Sequence[list[object]],
    k: int,
) -> RowArrays | None:
    """The rows' numbers as arrays, or ``None`` when a type or length does not fit.

    Args:
        weights: Per row, its weights (a tuple or list of k numbers), n of them.
        support: Per row, its support (an integer), n of them.
        pairs: Per key, per row, its bound ``[lo, hi]`` (numbers or ``None``), n each.
        k: Number of tasks.

    Returns:
        The arrays (values not checked yet: :func:`build_grid` does), or ``None``: then the rows
        are checked one by one, which names the first that does not fit.
    """
    n = len(weights)
    w_types = set(map(type, weights))
    if not w_types <= {tuple, list}:
        return None
    rows_w = cast(list[Sequence[float]], weights)
    if n and set(map(len, rows_w)) != {k}:
        return None
    flat = itertools.chain.from_iterable
    v_types = set(map(type, flat(rows_w)))
    s_types = set(map(type, support))
    if not (v_types <= _NUMBER_TYPES and s_types <= _INT_TYPES):
        return None
    floats = v_types <= {float} and s_types <= {int}
    plain = floats and w_types <= {tuple}
    bounds: list[FloatArray] = []
    unbounded: list[npt.NDArray[np.bool_]] = []
    try:
        w = np.fromiter(flat(rows_w), np.float64, n * k)
        w = w.reshape(n, k)
        sup = np.fromiter(cast(list[int], support), np.int64, n)  # beyond int64: OverflowError
        for col in pairs:
            p_types = set(map(type, col))
            if not p_types <= {tuple, list}:
                return None
            pair_col = cast(list[Sequence[object]], col)
            if n and set(map(len, pair_col)) != {2}:
                return None
            values = list(flat(pair_col))
            b_types = set(map(type, values))
            if not b_types <= _NUMBER_TYPES | {type(None)}:
                return None
            floats = floats and b_types <= {float, type(None)}
            plain = plain and floats and p_types <= {tuple}
            x = np.array(values, dtype=np.float64).reshape(n, 2)  # None -> NaN
            none = np.isnan(x)
            if int(none.sum()) != values.count(None):  # a NaN bound that is not None
                none = np.fromiter(map(operator.is_, values, itertools.repeat(None)), bool, 2 * n)
                none = none.reshape(n, 2)
            bounds.append(x)
            unbounded.append(none)
    except OverflowError:  # beyond float64 or int64: the row-by-row check names it
        return None
    return RowArrays(w, sup, bounds, unbounded, floats, plain)


def rows_from_arrays(arrays: RowArrays) -> tuple[TableRow, ...]:
    """Rows with plain Python floats (``None`` bounds) and int supports."""
    n = arrays.weights.shape[0]
    per_key = []
    for x, none in zip(arrays.bounds, arrays.unbounded, strict=True):
        values = [
            None if u else v for v, u in zip(x.ravel().tolist(), none.ravel().tolist(), strict=True)
        ]
        per_key.append(zip(values[0::2], values[1::2], strict=True))
    bounds = zip(*per_key, strict=True) if per_key else itertools.repeat((), n)
    weights = map(tuple, arrays.weights.tolist())
    return tuple(map(TableRow, bounds, weights, arrays.support.tolist()))


def build_grid(
    keys: Sequence[TableKey],
    shape: tuple[int, ...],
    rows: Sequence[TableRow] | RowArrays,
    default: Sequence[float],
    tasks: Sequence[str],
    low: FloatArray,
    high: FloatArray,
) -> Grid:
    """Validate every row and build the lookup grid.

    Args:
        keys: Validated keys (see :func:`check_keys`), d of them.
        shape: Grid shape from :func:`check_keys`.
        rows: The rows, n of them, or their numbers as :class:`RowArrays` (a document's rows).
        default: Validated default weights, shape (k,).
        tasks: Task names, k of them.
        low: Lowest weight per task (``-inf`` without action bounds), shape (k,).
        high: Highest weight per task, shape (k,).

    Raises:
        ExportError: ``rows[i]...`` naming the first invalid row (in row order) and its field.
    """
    k, d = len(tasks), len(keys)
    arrays = rows if isinstance(rows, RowArrays) else None
    if not isinstance(rows, RowArrays) and set(map(type, rows)) <= {TableRow}:
        bs = list(map(_BOUNDS, rows))
        if set(map(type, bs)) <= {tuple, list} and (not rows or set(map(len, bs)) == {d}):
            pairs = [list(map(operator.itemgetter(j), bs)) for j in range(d)]
            arrays = row_arrays(list(map(_WEIGHTS, rows)), list(map(_SUPPORT, rows)), pairs, k)
            if arrays is not None and not set(map(type, bs)) <= {tuple}:
                arrays.plain = False
    n = arrays.weights.shape[0] if arrays is not None else len(cast(Sequence[TableRow], rows))
    weights = np.empty((n + 1, k), dtype=np.float64)
    weights[n] = default
    lo_cell = np.zeros((n, d), dtype=np.int64)
    hi_cell = np.zeros((n, d), dtype=np.int64)
    bad = np.ones(n, dtype=bool)
    if arrays is not None:
        w = arrays.weights
        weights[:n] = w
        bad = ~(np.isfinite(w) & (w >= low) & (w <= high)).all(axis=1) | (arrays.support < 0)
        for j, key in enumerate(keys):
            edges = np.asarray(key.edges, dtype=np.float64)
            x, none = arrays.bounds[j], arrays.unbounded[j]
            lo_ok, lo_cell[:, j] = _cells(edges, x[:, 0], none[:, 0], 0)
            hi_ok, hi_cell[:, j] = _cells(edges, x[:, 1], none[:, 1], len(edges) + 1)
            bad |= ~lo_ok | ~hi_ok | (lo_cell[:, j] >= hi_cell[:, j])
    if arrays is None or bad.any():
        checked = rows_from_arrays(rows) if isinstance(rows, RowArrays) else rows
        first = int(np.argmax(bad)) if arrays is not None else n
        for i in range(min(first + 1, n)):  # the row-by-row check of every row before it too
            _check_row(checked[i], i, keys, tasks, low, high)
        raise ExportError(f"rows[{first}]: invalid row")  # pragma: no cover - checks agree
    cell_row = _paint(shape, lo_cell, hi_cell)
    return Grid(_strides(shape), cell_row, weights, arrays)


_WEIGHTS = operator.attrgetter("weights")
_SUPPORT = operator.attrgetter("support")
_BOUNDS = operator.attrgetter("bounds")


def _cells(
    edges: FloatArray, x: FloatArray, none: npt.NDArray[np.bool_], none_cell: int
) -> tuple[npt.NDArray[np.bool_], IntArray]:
    """Per bound value: whether it is ``None`` or an edge, and its cell.

    ``None`` goes to ``none_cell``; a value equal to edge ``i`` to cell ``i + 1``.
    """
    xf = np.where(none, 0.0, x)
    pos = np.searchsorted(edges, xf, side="left")
    hit = pos < len(edges)
    hit[hit] = edges[pos[hit]] == xf[hit]
    return none | hit, np.where(none, none_cell, pos + 1).astype(np.int64)


def _check_row(
    row: object,
    i: int,
    keys: Sequence[TableKey],
    tasks: Sequence[str],
    low: FloatArray,
    high: FloatArray,
) -> None:
    """Row ``i`` checked field by field (weights, support, bounds); raises on the first problem."""
    where = f"rows[{i}]"
    if not isinstance(row, TableRow):
        raise ExportError(f"{where}: expected a TableRow, found {type(row).__name__}")
    check_weights(row.weights, tasks, low, high, f"{where}.weights")
    s = row.support
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s <= _MAX_SUPPORT:
        raise ExportError(f"{where}.support: expected an integer >= 0 (int64), found {show(s)}")
    if not isinstance(row.bounds, (tuple, list)) or len(row.bounds) != len(keys):
        n = len(row.bounds) if isinstance(row.bounds, (tuple, list)) else type(row.bounds).__name__
        raise ExportError(f"{where}.bounds: expected one bound per key ({len(keys)}), found {n}")
    for key, b in zip(keys, row.bounds, strict=True):
        _bound_cells(key, b, f"{where}.bounds.{key.name}")


def _bound_cells(key: TableKey, bound: Bound, where: str) -> tuple[int, int]:
    """Grid cells ``[start, stop)`` of ``key`` covered by ``bound``."""
    if not isinstance(bound, (tuple, list)) or len(bound) != 2:
        raise ExportError(f"{where}: expected [lo, hi], found {show(bound)}")
    lo, hi = bound
    if not all(v is None or is_number(v) for v in bound):
        raise ExportError(f"{where}: expected [lo, hi] of numbers or null, found {show(bound)}")
    idx = []
    for v, side in ((lo, "lo"), (hi, "hi")):
        if v is None:
            idx.append(0 if side == "lo" else len(key.edges) + 1)
            continue
        pos = int(np.searchsorted(key.edges, v)) if is_number(v) else -1
        if not is_number(v) or not math.isfinite(v) or pos >= len(key.edges) or key.edges[pos] != v:
            raise ExportError(
                f"{where}: expected {side} to be null or one of the edges {show(list(key.edges))}, "
                f"found {show(v)}"
            )
        idx.append(pos + 1)
    if idx[0] >= idx[1]:
        raise ExportError(f"{where}: expected lo < hi, found [{show(lo)}, {show(hi)}]")
    return idx[0], idx[1]


def _strides(shape: tuple[int, ...]) -> IntArray:
    strides = np.ones(len(shape), dtype=np.int64)
    for j in range(len(shape) - 2, -1, -1):
        strides[j] = strides[j + 1] * shape[j + 1]
    return strides


def _paint(shape: tuple[int, ...], lo: IntArray, hi: IntArray) -> IntArray:
    """The cell -> row array; raises ``rows[i]: overlaps rows[j]`` for the first overlap."""
    n_cells = math.prod(shape)
    n = lo.shape[0]
    grid = np.full(n_cells, -1, dtype=np.int64)
    if n == 0:
        return grid
    dims = hi - lo  # (n, d), every entry >= 1
    volume = dims.prod(axis=1) if dims.shape[1] else np.ones(n, dtype=np.int64)
    total = int(volume.sum())
    if total <= n_cells:
        owner = np.repeat(np.arange(n, dtype=np.int64), volume)
        offset = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(volume) - volume, volume)
        cell = np.zeros(total, dtype=np.int64)
        strides = _strides(shape)
        for j in range(len(shape) - 1, -1, -1):
            dj = dims[owner, j]
            cell += (lo[owner, j] + offset % dj) * strides[j]
            offset //= dj
        counts = np.bincount(cell, minlength=n_cells)
        if int(counts.max()) <= 1:
            grid[cell] = owner
            return grid
    # Some cell is covered twice: paint row by row to name the first row that overlaps.
    if not shape:  # no keys: one cell, which the first row already covers
        raise ExportError("rows[1]: overlaps rows[0] (rows never overlap)")
    nd = grid.reshape(shape)
    for i in range(n):
        region = nd[tuple(slice(int(a), int(b)) for a, b in zip(lo[i], hi[i], strict=True))]
        taken = region[region >= 0]
        if taken.size:
            raise ExportError(f"rows[{i}]: overlaps rows[{int(taken.min())}] (rows never overlap)")
        region[...] = i
    raise ExportError("rows: overlap")  # pragma: no cover - the counts said so
