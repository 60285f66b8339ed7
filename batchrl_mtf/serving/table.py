"""The weight table: validation, lookup, and exploration sampling (numpy only)."""

from __future__ import annotations

import bisect
import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import numpy.typing as npt

from batchrl_mtf.core.io import atomic_write_text
from batchrl_mtf.errors import ExportError
from batchrl_mtf.serving._format import (
    count_table_members,
    parse_csv_rows,
    parse_table,
    table_to_csv,
    table_to_dict,
)
from batchrl_mtf.serving._grid import (
    RowArrays,
    build_grid,
    check_keys,
    check_weights,
    rows_from_arrays,
)
from batchrl_mtf.serving._json import (
    check_plain_json,
    dumps_stable,
    gc_paused,
    loads_counted,
    loads_strict,
    read_limited,
)
from batchrl_mtf.serving._types import (
    FORMAT,
    MAX_CELLS,
    Bound,
    Exploration,
    Fusion,
    TableKey,
    TableRow,
    is_number,
    show,
    weight_names,
)

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

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_BIG_INT = 1 << 53  # ints beyond it take the array path (exactly as numpy converts them)


@dataclass(frozen=True)
class WeightTable:
    """A validated weight table (``batchrl-mtf/weight-table@1``).

    Construction validates everything and raises :class:`ExportError` naming the field: tasks
    unique, weights finite and inside the action bounds, edges strictly ascending, bounds on the
    edges, rows not overlapping. Validation costs ``O(rows · keys · log edges + cells)``. A table
    is immutable: after construction every method may be called from any number of threads.

    Attributes:
        tasks: Task names; weight ``w_<task>`` applies to prediction ``pred_<task>``.
        fusion: The fusion formula and offsets the weights are meant for.
        action_low: Lowest allowed weight per task, shape (k,); ``None`` when the table has no
            ``action_bounds`` (optional in the format): weights are then unbounded.
        action_high: Highest allowed weight per task (> low), shape (k,); ``None`` with
            ``action_low``.
        keys: The state features the rows are keyed on (may be empty: a constant table).
        default: Weights for states that no row covers (or with a NaN key value), shape (k,).
        rows: Non-overlapping buckets.
        exploration: Optional exploration block for :meth:`sample`.
        meta: Free-form provenance (policy, dataset_hash, created, ope, ...): plain finite JSON.
    """

    tasks: tuple[str, ...]
    fusion: Fusion
    action_low: tuple[float, ...] | None
    action_high: tuple[float, ...] | None
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
    _row_arrays: RowArrays = field(init=False, repr=False, compare=False)
    _scalar_keys: tuple[tuple[str, tuple[float, ...], int], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        low, high = self._validate_header()
        object.__setattr__(self, "tasks", tuple(self.tasks))
        check_weights(self.default, self.tasks, low, high, "default")
        shape = check_keys(self.keys)
        given = self.rows
        grid = build_grid(self.keys, shape, given, self.default, self.tasks, low, high)
        if self.action_low is not None and self.action_high is not None:
            object.__setattr__(self, "action_low", tuple(float(x) for x in self.action_low))
            object.__setattr__(self, "action_high", tuple(float(x) for x in self.action_high))
        object.__setattr__(self, "default", tuple(float(x) for x in self.default))
        object.__setattr__(
            self, "keys", tuple(TableKey(k.name, tuple(map(float, k.edges))) for k in self.keys)
        )
        object.__setattr__(self, "_row_arrays", grid.arrays)
        if not isinstance(given, RowArrays) and grid.arrays.plain:
            object.__setattr__(self, "rows", tuple(given))
        else:  # made from the arrays when first read (see __getattr__)
            object.__delattr__(self, "rows")
        meta = dict(self.meta) if isinstance(self.meta, Mapping) else self.meta
        check_plain_json(meta, "meta", 2)
        object.__setattr__(self, "meta", meta)
        object.__setattr__(
            self, "_edges", tuple(np.asarray(key.edges, np.float64) for key in self.keys)
        )
        object.__setattr__(self, "_strides", grid.strides)
        object.__setattr__(
            self,
            "_scalar_keys",
            tuple(
                (key.name, key.edges, int(stride))
                for key, stride in zip(self.keys, grid.strides, strict=True)
            ),
        )
        object.__setattr__(self, "_cell_row", grid.cell_row)
        object.__setattr__(self, "_weights", grid.weights)
        self._prepare_exploration(low, high)

    if not TYPE_CHECKING:  # mypy: every other attribute stays checked

        def __getattr__(self, name: str) -> object:
            """``rows``, made on first use from the validated arrays (a loaded table keeps its
            rows as arrays: 200,000 :class:`TableRow` values cost time and memory that serving
            does not need). Making them twice from two threads gives equal tuples."""
            arrays = self.__dict__.get("_row_arrays")
            if name != "rows" or arrays is None:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            rows = rows_from_arrays(arrays)
            object.__setattr__(self, "rows", rows)
            return rows

    def _validate_header(self) -> tuple[FloatArray, FloatArray]:
        """Check tasks, fusion, bounds and exploration; return the bounds (±inf when absent)."""
        if not isinstance(self.tasks, (tuple, list)) or not self.tasks:
            raise ExportError("tasks: expected at least one task, found none")
        k = len(self.tasks)
        for i, t in enumerate(self.tasks):
            if not isinstance(t, str) or not t:
                raise ExportError(f"tasks[{i}]: expected a non-empty string, found {show(t)}")
        if len(set(self.tasks)) != k:
            raise ExportError(f"tasks: expected unique names, found {show(list(self.tasks))}")
        if not isinstance(self.fusion, Fusion):
            raise ExportError(f"fusion: expected a Fusion, found {type(self.fusion).__name__}")
        if self.fusion.tasks is not None:  # offsets by name: in this table's task order
            object.__setattr__(self, "fusion", self.fusion.for_tasks(self.tasks))
        if self.fusion.beta is not None and len(self.fusion.beta) != k:
            raise ExportError(
                f"fusion.beta: expected {k} offsets (one per task), found {len(self.fusion.beta)}"
            )
        if (self.action_low is None) != (self.action_high is None):
            raise ExportError("action_bounds: expected both action_low and action_high, or neither")
        if self.action_low is None or self.action_high is None:
            low, high = np.full(k, -np.inf), np.full(k, np.inf)
        else:
            for name, values in (
                ("action_low", self.action_low),
                ("action_high", self.action_high),
            ):
                if len(values) != k:
                    raise ExportError(
                        f"action_bounds: expected {k} {name} values, found {len(values)}"
                    )
            for t, lo, hi in zip(self.tasks, self.action_low, self.action_high, strict=True):
                ok = is_number(lo) and is_number(hi) and math.isfinite(lo) and math.isfinite(hi)
                if not (ok and lo < hi):
                    raise ExportError(
                        f"action_bounds.w_{t}: expected finite [low, high] with low < high, "
                        f"found [{show(lo)}, {show(hi)}]"
                    )
            low = np.asarray(self.action_low, dtype=np.float64)
            high = np.asarray(self.action_high, dtype=np.float64)
        if self.exploration is not None:
            if not isinstance(self.exploration, Exploration):
                raise ExportError("exploration: expected an Exploration block")
            if len(self.exploration.scale) != k:
                raise ExportError(
                    f"exploration.{self.exploration.scale_name}: expected {k} values "
                    f"(one per task), found {len(self.exploration.scale)}"
                )
        return low, high

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
                # non-negative erf terms, no cancellation. Without bounds, Z = 1.
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
        return weight_names(self.tasks)

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
            features: Either a mapping key name -> values of shape (n,) (or scalars, n = 1;
                ``None`` is a missing value), or a 2-D array of states of shape (n, d) whose columns
                are named by ``names``.
            names: Column names of a 2-D ``features`` array (length d); ignored for a mapping.

        Returns:
            Row indices, shape (n,), int64; ``-1`` for states no row covers or with a NaN key.

        Raises:
            ExportError: A key feature is missing from ``features``, is not numeric, or lengths
                disagree.
        """
        cols = self._key_columns(features, names)
        n = cols[0].shape[0] if cols else _batch_len(features)
        cell = np.zeros(n, dtype=np.int64)
        missing = np.zeros(n, dtype=bool)
        for x, edges, stride in zip(cols, self._edges, self._strides, strict=True):
            nan = np.isnan(x)
            cell += np.searchsorted(edges, np.where(nan, 0.0, x), side="right") * stride
            missing |= nan
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
        if names is None and isinstance(features, Mapping) and self._scalar_keys:
            row = self._scalar_row(features)
            if row is not None:  # one state of plain numbers: the same result, without arrays
                return self._weights[row : row + 1].copy()
        return self._weights[self.row_index(features, names)]

    def _scalar_row(self, features: Mapping[str, object]) -> int | None:
        """Row of one state given as Python/numpy float or int scalars (the default row when a
        key is NaN), or ``None`` when the state is anything else: then :meth:`row_index` reads it
        (and names what is wrong). ``bisect_right`` on the edges is ``searchsorted(side="right")``."""
        cell = 0
        missing = False
        for name, edges, stride in self._scalar_keys:
            v = features.get(name)
            if isinstance(v, float) or (type(v) is int and -_BIG_INT < v < _BIG_INT):
                x = float(v)
            else:
                return None
            if x != x:  # NaN: the default row, once every key is known to be a number
                missing = True
            else:
                cell += bisect.bisect_right(edges, x) * stride
        if missing:
            return len(self._weights) - 1
        row = int(self._cell_row[cell])
        return len(self._weights) - 1 if row < 0 else row

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
        w = _floats(weights, "log_prob: weights")
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

    def sample_from_draws(
        self, features: Mapping[str, npt.ArrayLike], draws: Sequence[float]
    ) -> tuple[FloatArray, float]:
        """Exploratory weights for one state from given random draws (the ports' contract).

        Tasks are drawn in task order, each consuming draws until one is accepted:
        gaussian ``w_k = mu_k + sigma_k * z`` for the next standard-normal draw ``z``, accepted when
        ``low_k <= w_k <= high_k`` (rejection, so the next draw is used otherwise); uniform
        ``w_k = lo_k + (hi_k - lo_k) * u`` for the next draw ``u`` in ``[0, 1)`` (always accepted).
        :meth:`sample` is the same distribution with numpy's generator.

        Args:
            features: One state: key name -> scalar.
            draws: Standard-normal (gaussian) or ``[0, 1)`` (uniform) draws, used in order.

        Returns:
            ``(weights, behavior_logp)``: weights of shape (k,) and their log-density.

        Raises:
            ExportError: No exploration block, or too few draws (the message says how many).
        """
        ex = self._require_exploration()
        row = int(self.row_index(features)[0])
        if row != -1 and row >= len(self.rows):  # pragma: no cover - row_index bounds it
            raise ExportError("sample: row out of range")
        mu, lo, hi = self._weights[row], self._lo[row], self._hi[row]
        z_all = _floats(draws, "sample: draws")
        if z_all.ndim != 1:
            raise ExportError(f"sample: expected draws of shape (n,), found {z_all.shape}")
        w = np.empty(len(self.tasks), dtype=np.float64)
        used = 0
        for t in range(len(self.tasks)):
            while True:
                if used >= len(z_all):
                    raise ExportError(
                        f"sample: ran out of draws after {used} (task {self.tasks[t]!r} still "
                        "rejected); pass more draws"
                    )
                d = float(z_all[used])
                used += 1
                if ex.distribution == "uniform":
                    if not 0.0 <= d < 1.0:
                        raise ExportError(f"sample: expected uniform draws in [0, 1), found {d!r}")
                    w[t] = lo[t] + (hi[t] - lo[t]) * d
                    break
                value = mu[t] + ex.scale[t] * d
                if lo[t] <= value <= hi[t]:
                    w[t] = value
                    break
        logp = float(self.log_prob(features, w[None, :])[0])
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
                cols.append(np.atleast_1d(_floats(features[name], f"lookup: feature {name!r}")))
        else:
            if not self.keys:
                return cols
            states = _floats(features, "lookup: states")
            if (
                states.ndim != 2
                or names is None
                or isinstance(names, str)
                or len(names) != states.shape[1]
            ):
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
        return table_to_dict(self)

    def to_json(self) -> str:
        """The table as stable JSON text (sorted keys; task order is kept by ``tasks``)."""
        return dumps_stable(self.to_dict())

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the table as JSON, atomically. Returns the path."""
        atomic_write_text(path, self.to_json())
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> WeightTable:
        """Read and validate a JSON table (strict, bounded JSON: see ``docs/weight-table.md``).

        Raises:
            ExportError: The file is unreadable, not strict JSON, or not a valid table (the message
                starts with the path and names the field).
        """
        return cls.loads(read_limited(path), source=str(path))

    @classmethod
    def loads(cls, text: str | bytes, source: str = "<table>") -> WeightTable:
        """Parse and validate a table from JSON text or UTF-8 bytes (as :meth:`load`).

        Repeated keys are found by counting (:func:`~batchrl_mtf.serving._json.loads_counted`)
        rather than by a hook per object; when the count does not prove there is none, or the
        document is not a valid table, it is parsed again with every check, so that the message
        is the one the strict parser gives first.
        """
        with gc_paused():  # parse and build in one pause: the document is freed inside it
            doc, colons = loads_counted(text, source)
            if colons is None:  # parsed with every check already
                return cls.from_dict(doc, source=source)
            try:
                args = parse_table(doc)
                proven = (
                    count_table_members(cast(Mapping[str, object], doc), args["rows"]) == colons
                )
            except ExportError:
                proven = False
            if not proven:
                del doc
                return cls.from_dict(loads_strict(text, source), source=source)
            del doc
            return cls._build(args, source)

    @classmethod
    def from_dict(cls, doc: object, source: str = "<table>") -> WeightTable:
        """Build and validate a table from its JSON form.

        Raises:
            ExportError: ``"<source>: <field>: expected ..., found ..."``.
        """
        with gc_paused():  # millions of short-lived containers for a large table
            try:
                args = parse_table(doc)
            except ExportError as exc:
                raise ExportError(f"{source}: {exc}") from None
            return cls._build(args, source)

    @classmethod
    def _build(cls, args: dict[str, object], source: str) -> WeightTable:
        try:
            return cls(**args)  # type: ignore[arg-type]
        except ExportError as exc:
            raise ExportError(f"{source}: {exc}") from None

    def to_csv(self) -> str:
        """The CSV twin: one line per row, ``<key>_lo, <key>_hi, ..., w_<task>..., support``.

        Empty cells are unbounded. Only the rows are in the CSV; the rest of the table (fusion,
        default, bounds, edges, meta) lives in the JSON.
        """
        return table_to_csv(self.key_names, self.weight_names, self.rows)

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
        rows = parse_csv_rows(text, self.key_names, self.weight_names, source)
        try:
            return self.with_rows(rows)
        except ExportError as exc:
            raise ExportError(f"{source}: {exc}") from None

    def with_rows(self, rows: Sequence[TableRow]) -> WeightTable:
        """This table with other rows (validated again)."""
        return dataclasses.replace(self, rows=tuple(rows))


# -------------------------------------------------------------------------------------- helpers


def _floats(x: object, where: str) -> FloatArray:
    """``x`` as a float64 array, or an ExportError naming ``where`` (strings, ragged lists...)."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ExportError(f"{where}: expected numbers, found {show(x)}") from None
    return arr


def _batch_len(features: object) -> int:
    """Number of states in ``features`` when the table has no keys to read it from."""
    if isinstance(features, Mapping):
        sizes = [np.atleast_1d(_floats(v, "lookup: features")).shape[0] for v in features.values()]
        return max(sizes, default=1)
    arr = _floats(features, "lookup: states")
    return int(arr.shape[0]) if arr.ndim >= 1 else 1
