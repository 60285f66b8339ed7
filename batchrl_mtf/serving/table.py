"""The weight table: validation, lookup, and exploration sampling (numpy only)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from batchrl_mtf.core.fusion import Fusion
from batchrl_mtf.core.io import atomic_write_text, dumps_json
from batchrl_mtf.errors import ExportError

__all__ = [
    "FORMAT",
    "MAX_CELLS",
    "Bound",
    "Exploration",
    "Fusion",
    "TableKey",
    "TableRow",
    "WeightTable",
]

FORMAT = "batchrl-mtf/weight-table@1"
"""The format tag of every table this module reads and writes."""

MAX_CELLS = 1 << 22
"""Most grid cells (product over keys of ``len(edges) + 1``) a table may span."""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Bound = tuple[float | None, float | None]
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True)
class Exploration:
    """Exploration around each bucket's weights, for the next round of logs.

    Attributes:
        distribution: ``"gaussian"``: each weight ``~ N(mu_k, sigma_k^2)`` truncated to the action
            bounds; ``"uniform"``: each weight ``~ U([mu_k - h_k, mu_k + h_k] ∩ [low_k, high_k])``.
            Weights are drawn independently per task; ``mu`` is the bucket's (or default) weight.
        scale: ``sigma_k`` or ``h_k`` per task in task order (finite, > 0), in weight units.
    """

    distribution: Literal["gaussian", "uniform"]
    scale: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.distribution not in ("gaussian", "uniform"):
            raise ExportError(
                "exploration.distribution: expected 'gaussian' or 'uniform', "
                f"found {self.distribution!r}"
            )
        for i, s in enumerate(self.scale):
            if not _is_number(s) or not (math.isfinite(s) and s > 0):
                raise ExportError(
                    f"exploration.{self.scale_name}[{i}]: expected a finite number > 0, found {s!r}"
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


@dataclass(frozen=True)
class TableRow:
    """One bucket: a box of key values and its weights.

    Attributes:
        bounds: Per key, in table key order, the half-open interval ``[lo, hi)``; ``None`` is
            unbounded. Every finite bound is one of that key's edges.
        weights: One weight per task, in task order.
        support: Number of dataset states in the bucket when it was built.
    """

    bounds: tuple[Bound, ...]
    weights: tuple[float, ...]
    support: int = 0


@dataclass(frozen=True)
class WeightTable:
    """A validated weight table (``batchrl-mtf/weight-table@1``).

    Construction validates everything and raises :class:`ExportError` naming the field: tasks
    unique, weights finite and inside the action bounds, edges strictly ascending, bounds on the
    edges, rows not overlapping.

    Attributes:
        tasks: Task names; weight ``w_<task>`` applies to prediction ``pred_<task>``.
        fusion: The fusion formula and offsets the weights are meant for.
        action_low: Lowest allowed weight per task, shape (k,).
        action_high: Highest allowed weight per task (> low), shape (k,).
        keys: The state features the rows are keyed on (may be empty: a constant table).
        default: Weights for states that no row covers (or with a NaN key value), shape (k,).
        rows: Non-overlapping buckets.
        exploration: Optional exploration block for :meth:`sample`.
        meta: Free-form provenance (policy, dataset_hash, created, ope, ...).
    """

    tasks: tuple[str, ...]
    fusion: Fusion
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    keys: tuple[TableKey, ...]
    default: tuple[float, ...]
    rows: tuple[TableRow, ...]
    exploration: Exploration | None = None
    meta: Mapping[str, object] = field(default_factory=dict)
    _edges: tuple[FloatArray, ...] = field(init=False, repr=False, compare=False)
    _strides: IntArray = field(init=False, repr=False, compare=False)
    _cell_row: IntArray = field(init=False, repr=False, compare=False)
    _weights: FloatArray = field(init=False, repr=False, compare=False)
    _logp_const: FloatArray = field(init=False, repr=False, compare=False)
    _lo: FloatArray = field(init=False, repr=False, compare=False)
    _hi: FloatArray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._validate_header()
        k = len(self.tasks)
        low = np.asarray(self.action_low, dtype=np.float64)
        high = np.asarray(self.action_high, dtype=np.float64)
        _check_weights(self.default, self.tasks, low, high, "default")
        shape = tuple(len(key.edges) + 1 for key in self.keys)
        n_cells = math.prod(shape)
        if n_cells > MAX_CELLS:
            raise ExportError(
                f"keys: expected at most {MAX_CELLS} grid cells (product of len(edges)+1), "
                f"found {n_cells}; use fewer keys or edges"
            )
        grid = np.full((*shape, 1), -1, dtype=np.int64)
        for i, row in enumerate(self.rows):
            where = f"rows[{i}]"
            if not isinstance(row, TableRow):
                raise ExportError(f"{where}: expected a TableRow, found {type(row).__name__}")
            _check_weights(row.weights, self.tasks, low, high, f"{where}.weights")
            if isinstance(row.support, bool) or not isinstance(row.support, int) or row.support < 0:
                raise ExportError(
                    f"{where}.support: expected an integer >= 0, found {row.support!r}"
                )
            if len(row.bounds) != len(self.keys):
                raise ExportError(
                    f"{where}.bounds: expected one bound per key ({len(self.keys)}), "
                    f"found {len(row.bounds)}"
                )
            region = grid[
                tuple(
                    _cell_slice(key, b, f"{where}.bounds.{key.name}")
                    for key, b in zip(self.keys, row.bounds, strict=True)
                )
            ]
            taken = region[region >= 0]
            if taken.size:
                raise ExportError(
                    f"{where}: overlaps rows[{int(taken.min())}] (rows never overlap)"
                )
            region[...] = i
        strides = np.ones(len(shape), dtype=np.int64)
        for j in range(len(shape) - 2, -1, -1):
            strides[j] = strides[j + 1] * shape[j + 1]
        weights = np.empty((len(self.rows) + 1, k), dtype=np.float64)
        for i, row in enumerate(self.rows):
            weights[i] = row.weights
        weights[-1] = self.default  # row index -1 is the default
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "action_low", tuple(float(x) for x in self.action_low))
        object.__setattr__(self, "action_high", tuple(float(x) for x in self.action_high))
        object.__setattr__(self, "default", tuple(float(x) for x in self.default))
        object.__setattr__(
            self, "keys", tuple(TableKey(k.name, tuple(map(float, k.edges))) for k in self.keys)
        )
        object.__setattr__(self, "rows", tuple(_normalised(row) for row in self.rows))
        object.__setattr__(self, "meta", dict(self.meta))
        object.__setattr__(
            self, "_edges", tuple(np.asarray(key.edges, np.float64) for key in self.keys)
        )
        object.__setattr__(self, "_strides", strides)
        object.__setattr__(self, "_cell_row", grid.reshape(-1))
        object.__setattr__(self, "_weights", weights)
        self._prepare_exploration(low, high)

    def _validate_header(self) -> None:
        k = len(self.tasks)
        if k == 0:
            raise ExportError("tasks: expected at least one task, found none")
        for i, t in enumerate(self.tasks):
            if not isinstance(t, str) or not t:
                raise ExportError(f"tasks[{i}]: expected a non-empty string, found {t!r}")
        if len(set(self.tasks)) != k:
            raise ExportError(f"tasks: expected unique names, found {list(self.tasks)}")
        if not isinstance(self.fusion, Fusion):
            raise ExportError(f"fusion: expected a Fusion, found {type(self.fusion).__name__}")
        if self.fusion.tasks is not None:  # offsets by name: in this table's task order
            object.__setattr__(self, "fusion", self.fusion.for_tasks(self.tasks))
        if self.fusion.beta is not None and len(self.fusion.beta) != k:
            raise ExportError(
                f"fusion.beta: expected {k} offsets (one per task), found {len(self.fusion.beta)}"
            )
        for name, values in (("action_low", self.action_low), ("action_high", self.action_high)):
            if len(values) != k:
                raise ExportError(f"action_bounds: expected {k} {name} values, found {len(values)}")
        for t, lo, hi in zip(self.tasks, self.action_low, self.action_high, strict=True):
            ok = _is_number(lo) and _is_number(hi) and math.isfinite(lo) and math.isfinite(hi)
            if not (ok and lo < hi):
                raise ExportError(
                    f"action_bounds.w_{t}: expected finite [low, high] with low < high, "
                    f"found [{lo!r}, {hi!r}]"
                )
        names = [key.name for key in self.keys]
        for j, key in enumerate(self.keys):
            if not isinstance(key.name, str) or not key.name:
                raise ExportError(
                    f"keys[{j}].name: expected a non-empty string, found {key.name!r}"
                )
            if key.name.startswith("w_") or key.name == "support":
                raise ExportError(
                    f"keys[{j}].name: expected a state feature name (not 'w_*' or 'support'), "
                    f"found {key.name!r}"
                )
            if names.count(key.name) > 1:
                raise ExportError(f"keys[{j}].name: duplicate key {key.name!r}")
            for e in key.edges:
                if not _is_number(e) or not math.isfinite(e):
                    raise ExportError(f"keys[{j}].edges: expected finite numbers, found {e!r}")
            if any(b <= a for a, b in itertools.pairwise(key.edges)):
                raise ExportError(
                    f"keys[{j}].edges: expected strictly ascending edges, found {list(key.edges)}"
                )
        if self.exploration is not None:
            if not isinstance(self.exploration, Exploration):
                raise ExportError("exploration: expected an Exploration block")
            if len(self.exploration.scale) != k:
                raise ExportError(
                    f"exploration.{self.exploration.scale_name}: expected {k} values "
                    f"(one per task), found {len(self.exploration.scale)}"
                )

    def _prepare_exploration(self, low: FloatArray, high: FloatArray) -> None:
        """Precompute, per row (and default), the log-density constant and the sampling box."""
        mu = self._weights
        lo = np.broadcast_to(low, mu.shape).copy()
        hi = np.broadcast_to(high, mu.shape).copy()
        const = np.zeros(len(mu), dtype=np.float64)
        ex = self.exploration
        if ex is not None:
            s = np.asarray(ex.scale, dtype=np.float64)
            if ex.distribution == "uniform":
                lo = np.maximum(mu - s, low)
                hi = np.minimum(mu + s, high)
                const = -np.log(hi - lo).sum(axis=1)
            else:
                # Z = Phi(b) - Phi(a) with a <= 0 <= b (mu lies inside the bounds): a sum of two
                # non-negative erf terms, no cancellation.
                erf = np.vectorize(math.erf, otypes=[np.float64])
                a = (low - mu) / s
                b = (high - mu) / s
                z = 0.5 * (erf(b / math.sqrt(2.0)) + erf(-a / math.sqrt(2.0)))
                const = -(np.log(s) + _LOG_SQRT_2PI + np.log(z)).sum(axis=1)
        object.__setattr__(self, "_logp_const", const)
        object.__setattr__(self, "_lo", lo)
        object.__setattr__(self, "_hi", hi)

    # ----------------------------------------------------------------------------------- lookup

    @property
    def weight_names(self) -> tuple[str, ...]:
        """``("w_<task>", ...)`` in task order."""
        return tuple(f"w_{t}" for t in self.tasks)

    @property
    def key_names(self) -> tuple[str, ...]:
        """The key feature names in table order."""
        return tuple(key.name for key in self.keys)

    def row_index(
        self,
        features: Mapping[str, npt.ArrayLike] | npt.ArrayLike,
        names: Sequence[str] | None = None,
    ) -> IntArray:
        """Index of the row covering each state, ``-1`` where the default applies.

        Args:
            features: Either a mapping key name -> values of shape (n,) (or scalars, n = 1), or a
                2-D array of states of shape (n, d) whose columns are named by ``names``.
            names: Column names of a 2-D ``features`` array (length d); ignored for a mapping.

        Returns:
            Row indices, shape (n,), int64; ``-1`` for states no row covers or with a NaN key.

        Raises:
            ExportError: A key feature is missing from ``features`` or lengths disagree.
        """
        cols = self._key_columns(features, names)
        n = cols[0].shape[0] if cols else _batch_len(features)
        cell = np.zeros(n, dtype=np.int64)
        missing = np.zeros(n, dtype=bool)
        for x, edges, stride in zip(cols, self._edges, self._strides, strict=True):
            cell += np.searchsorted(edges, x, side="right") * stride
            missing |= np.isnan(x)
        rows = self._cell_row[cell]
        if missing.any():
            rows[missing] = -1
        return rows

    def lookup(
        self,
        features: Mapping[str, npt.ArrayLike] | npt.ArrayLike,
        names: Sequence[str] | None = None,
    ) -> FloatArray:
        """Weights for a batch of states.

        Args:
            features: Mapping key name -> values of shape (n,) (scalars mean n = 1), or states of
                shape (n, d) with column ``names``.
            names: Column names (length d) of a 2-D ``features`` array.

        Returns:
            Weights of shape (n, k), columns in task order (``w_<task>``), float64.
        """
        return self._weights[self.row_index(features, names)]

    def log_prob(
        self,
        features: Mapping[str, npt.ArrayLike] | npt.ArrayLike,
        weights: npt.ArrayLike,
        names: Sequence[str] | None = None,
    ) -> FloatArray:
        """Log-density of the exploration distribution at ``weights`` (the ``behavior_logp``).

        Args:
            features: States as for :meth:`lookup` (n states).
            weights: Served weights, shape (n, k).
            names: Column names of a 2-D ``features`` array.

        Returns:
            Log-density, shape (n,); ``-inf`` where a weight is outside its sampling support.

        Raises:
            ExportError: The table has no exploration block, or shapes disagree.
        """
        ex = self._require_exploration()
        rows = self.row_index(features, names)
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (len(rows), len(self.tasks)):
            raise ExportError(
                f"log_prob: expected weights of shape ({len(rows)}, {len(self.tasks)}), "
                f"found {w.shape}"
            )
        lo, hi = self._lo[rows], self._hi[rows]
        inside = ((w >= lo) & (w <= hi)).all(axis=1)
        logp = self._logp_const[rows].copy()
        if ex.distribution == "gaussian":
            z = (w - self._weights[rows]) / np.asarray(ex.scale)
            logp -= 0.5 * (z * z).sum(axis=1)
        logp[~inside] = -np.inf
        return logp

    def sample(
        self,
        features: Mapping[str, npt.ArrayLike] | npt.ArrayLike,
        rng: np.random.Generator,
        names: Sequence[str] | None = None,
    ) -> tuple[FloatArray, FloatArray]:
        """Draw exploratory weights around each state's bucket weights.

        Gaussian exploration is truncated to the action bounds by rejection (exact: each task is
        redrawn until it lands inside), so the returned log-density is that of the truncated
        Gaussian. Uniform exploration draws on the window clipped to the bounds.

        Args:
            features: States as for :meth:`lookup` (n states).
            rng: Source of randomness.
            names: Column names of a 2-D ``features`` array.

        Returns:
            ``(weights, behavior_logp)``: weights of shape (n, k) and their log-density under
            this table's exploration distribution, shape (n,).

        Raises:
            ExportError: The table has no exploration block.
        """
        ex = self._require_exploration()
        rows = self.row_index(features, names)
        mu = self._weights[rows]
        lo, hi = self._lo[rows], self._hi[rows]
        if ex.distribution == "uniform":
            w = rng.uniform(lo, hi)
            logp = self._logp_const[rows].copy()
        else:
            s = np.broadcast_to(np.asarray(ex.scale), mu.shape)
            w = mu + s * rng.standard_normal(mu.shape)
            bad = (w < lo) | (w > hi)
            while bad.any():
                w[bad] = mu[bad] + s[bad] * rng.standard_normal(int(bad.sum()))
                bad = (w < lo) | (w > hi)
            z = (w - mu) / s
            logp = self._logp_const[rows] - 0.5 * (z * z).sum(axis=1)
        return w, logp

    def _require_exploration(self) -> Exploration:
        if self.exploration is None:
            raise ExportError(
                "table has no exploration block; export with --explore gaussian:SIGMA or "
                "uniform:HALFWIDTH to sample weights"
            )
        return self.exploration

    def _key_columns(
        self, features: Mapping[str, npt.ArrayLike] | npt.ArrayLike, names: Sequence[str] | None
    ) -> list[FloatArray]:
        cols: list[FloatArray] = []
        if isinstance(features, Mapping):
            for name in self.key_names:
                if name not in features:
                    raise ExportError(
                        f"lookup: missing key feature {name!r}; table keys are {list(self.key_names)}"
                    )
                cols.append(np.atleast_1d(np.asarray(features[name], dtype=np.float64)))
        else:
            if not self.keys:
                return cols
            states = np.asarray(features, dtype=np.float64)
            if states.ndim != 2 or names is None or len(names) != states.shape[1]:
                raise ExportError(
                    "lookup: expected a mapping of key features, or states of shape (n, d) with d "
                    f"column names; found shape {states.shape} and "
                    f"{'no' if names is None else len(names)} names"
                )
            index = {n: j for j, n in enumerate(names)}
            for name in self.key_names:
                if name not in index:
                    raise ExportError(
                        f"lookup: missing key feature {name!r} among the state columns"
                    )
                cols.append(states[:, index[name]])
        if any(c.ndim != 1 or c.shape != cols[0].shape for c in cols):
            raise ExportError(
                f"lookup: expected key features of equal shape (n,), found {[c.shape for c in cols]}"
            )
        return cols

    # ------------------------------------------------------------------------------ (de)serialise

    def to_dict(self) -> dict[str, object]:
        """The table as a JSON-ready mapping in the public format."""
        from batchrl_mtf.serving._format import table_to_dict

        return table_to_dict(self)

    def to_json(self) -> str:
        """The table as stable JSON text (sorted keys; task order is kept by ``tasks``)."""
        return dumps_json(self.to_dict())

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the table as JSON, atomically. Returns the path."""
        atomic_write_text(path, self.to_json())
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> WeightTable:
        """Read and validate a JSON table.

        Raises:
            ExportError: The file is unreadable, not JSON, or not a valid table (the message
                starts with the path and names the field).
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ExportError(f"{path}: cannot read weight table ({exc.strerror})") from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ExportError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_dict(doc, source=str(path))

    @classmethod
    def from_dict(cls, doc: object, source: str = "<table>") -> WeightTable:
        """Build and validate a table from its JSON form.

        Raises:
            ExportError: ``"<source>: <field>: expected ..., found ..."``.
        """
        from batchrl_mtf.serving._format import parse_table

        try:
            return parse_table(doc)
        except ExportError as exc:
            raise ExportError(f"{source}: {exc}") from None

    def to_csv(self) -> str:
        """The CSV twin: one line per row, ``<key>_lo, <key>_hi, ..., w_<task>..., support``.

        Empty cells are unbounded. Only the rows are in the CSV; the rest of the table (fusion,
        default, bounds, edges, meta) lives in the JSON.
        """
        from batchrl_mtf.serving._format import table_to_csv

        return table_to_csv(self)

    def save_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write the CSV twin atomically. Returns the path."""
        atomic_write_text(path, self.to_csv())
        return Path(path)

    def with_csv_rows(self, text: str, source: str = "<csv>") -> WeightTable:
        """This table with its rows replaced by those of a CSV twin (e.g. edited by an analyst).

        Args:
            text: CSV text with exactly the columns :meth:`to_csv` writes (any order).
            source: Name used in error messages.

        Raises:
            ExportError: Missing/extra columns, unparsable cells, or an invalid resulting table.
        """
        from batchrl_mtf.serving._format import table_with_csv_rows

        return table_with_csv_rows(self, text, source)

    def with_rows(self, rows: Sequence[TableRow]) -> WeightTable:
        """This table with other rows (validated again)."""
        return dataclasses.replace(self, rows=tuple(rows))


# -------------------------------------------------------------------------------------- helpers


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _batch_len(features: object) -> int:
    """Number of states in ``features`` when the table has no keys to read it from."""
    if isinstance(features, Mapping):
        sizes = [np.atleast_1d(np.asarray(v)).shape[0] for v in features.values()]
        return max(sizes, default=1)
    arr = np.asarray(features)
    return int(arr.shape[0]) if arr.ndim >= 1 else 1


def _normalised(row: TableRow) -> TableRow:
    """``row`` with plain Python floats/ints (so equal tables compare and serialise equal)."""
    bounds = tuple(tuple(None if v is None else float(v) for v in b) for b in row.bounds)
    return TableRow(
        bounds=bounds,  # type: ignore[arg-type]
        weights=tuple(float(w) for w in row.weights),
        support=int(row.support),
    )


def _check_weights(
    weights: Sequence[float], tasks: Sequence[str], low: FloatArray, high: FloatArray, where: str
) -> None:
    if len(weights) != len(tasks):
        raise ExportError(
            f"{where}: expected {len(tasks)} weights (one per task), found {len(weights)}"
        )
    for t, w, lo, hi in zip(tasks, weights, low, high, strict=True):
        if not _is_number(w) or not math.isfinite(w):
            raise ExportError(f"{where}.w_{t}: expected a finite number, found {w!r}")
        if not lo <= w <= hi:
            raise ExportError(
                f"{where}.w_{t}: expected a weight within the action bounds [{lo}, {hi}], found {w}"
            )


def _cell_slice(key: TableKey, bound: Bound, where: str) -> slice:
    """Grid cells ``[start, stop)`` of ``key`` covered by ``bound``."""
    if not isinstance(bound, (tuple, list)) or len(bound) != 2:
        raise ExportError(f"{where}: expected [lo, hi], found {bound!r}")
    lo, hi = bound
    idx = []
    for v, side in ((lo, "lo"), (hi, "hi")):
        if v is None:
            idx.append(0 if side == "lo" else len(key.edges) + 1)
            continue
        if not _is_number(v) or not math.isfinite(v) or float(v) not in key.edges:
            raise ExportError(
                f"{where}: expected {side} to be null or one of the edges {list(key.edges)}, "
                f"found {v!r}"
            )
        idx.append(key.edges.index(float(v)) + 1)
    if idx[0] >= idx[1]:
        raise ExportError(f"{where}: expected lo < hi, found [{lo!r}, {hi!r}]")
    return slice(idx[0], idx[1])
