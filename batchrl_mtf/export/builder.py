"""Turn a policy's actions on a dataset's states into a weight table.

The rules (documented in ``docs/weight-table.md``):

* **Edges.** Each key is cut at explicit edges, or at the ``i/buckets`` quantiles
  (``i = 1..buckets-1``) of its values over the dataset's states, rounded to 6 significant digits;
  repeated edges and edges at or below the minimum are dropped (ties and constant features give
  fewer buckets).
* **Bucket weights.** A bucket's raw weights are the mean of the policy's actions over the
  dataset's states in it (support ``n``). With ``m = min_support``, they shrink linearly toward
  the default: ``w = lam * mean + (1 - lam) * default`` with ``lam = min(1, n / m)`` (``lam = 1``
  when ``m = 0``). Buckets with no state get no row (the default applies there).
* **Trust region.** With ``max_delta = D``, every weight is clipped to ``[default - D, default + D]``
  and, always, to the action bounds.
* **Default.** ``config.default`` when given, otherwise the logged actions' most common centre:
  the most frequent logged weight vector when vectors repeat, else the per-task median.
* **Auto keys.** Greedy forward selection: starting from no key, repeatedly add the candidate
  feature whose bucketing (same edge rule) together with the keys chosen so far explains the
  largest share ``R^2 = 1 - SSW / SST`` of the variance of the policy's actions (each task scaled by
  its action range), until ``n_auto_keys`` keys are chosen.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from batchrl_mtf.core.config import config_to_dict, require
from batchrl_mtf.core.io import package_versions
from batchrl_mtf.errors import ExportError
from batchrl_mtf.serving import MAX_CELLS, Exploration, Fusion, TableKey, TableRow, WeightTable

__all__ = [
    "SHRINKAGE_RULE",
    "ExportConfig",
    "ValueComparison",
    "build_weight_table",
    "fidelity_report",
    "logged_centre",
    "quantile_edges",
    "select_keys",
    "tabulate_policy",
    "tabulation_gap",
]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

SHRINKAGE_RULE = "w = lam*mean + (1-lam)*default, lam = min(1, support/min_support)"
AUTO_KEYS_METHOD = (
    "greedy forward selection of bucketed features by R^2 of the range-scaled actions"
)


@dataclass(frozen=True)
class ExportConfig:
    """How a policy is tabulated.

    Attributes:
        keys: State features to key the table on, or ``("auto",)`` to pick them (see module doc).
        n_auto_keys: Number of keys ``auto`` picks.
        buckets: Quantile buckets per key without explicit edges (1 = no split).
        edges: Explicit strictly ascending edges per key, overriding ``buckets`` for that key.
        min_support: Buckets with fewer states shrink toward the default (0 = no shrinkage).
        max_delta: Keep every weight within +-max_delta of the default (``None`` = no limit).
        default: Default weights in task order (``None`` = the logged actions' centre).
        explore: Exploration block to add: ``"none"``, ``"gaussian"`` or ``"uniform"``.
        explore_scale: Gaussian sigma or uniform half-width, in weight units, for every task.
        auto_sample: At most this many states (a seeded sample) are used to pick ``auto`` keys.
        seed: Seed of that sample.
    """

    keys: tuple[str, ...] = ("auto",)
    n_auto_keys: int = 2
    buckets: int = 4
    edges: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    min_support: int = 200
    max_delta: float | None = None
    default: tuple[float, ...] | None = None
    explore: Literal["none", "gaussian", "uniform"] = "none"
    explore_scale: float = 0.0
    auto_sample: int = 200_000
    seed: int = 0

    def __post_init__(self) -> None:
        require(len(self.keys) > 0, "export.keys", "expected at least one key or 'auto'")
        require(
            "auto" not in self.keys or len(self.keys) == 1,
            "export.keys",
            f"expected 'auto' alone or feature names, found {list(self.keys)}",
        )
        require(
            len(set(self.keys)) == len(self.keys),
            "export.keys",
            f"expected unique keys, found {list(self.keys)}",
        )
        require(
            self.n_auto_keys >= 1, "export.n_auto_keys", f"expected >= 1, found {self.n_auto_keys}"
        )
        require(self.buckets >= 1, "export.buckets", f"expected >= 1, found {self.buckets}")
        for name, edges in self.edges.items():
            where = f"export.edges.{name}"
            require(
                all(isinstance(e, (int, float)) and math.isfinite(e) for e in edges),
                where,
                f"expected finite numbers, found {list(edges)}",
            )
            require(
                all(b > a for a, b in itertools.pairwise(edges)),
                where,
                f"expected strictly ascending edges, found {list(edges)}",
            )
            require(
                self.keys == ("auto",) or name in self.keys,
                where,
                f"edges given for {name!r}, which is not among the keys {list(self.keys)}",
            )
        object.__setattr__(
            self, "edges", {str(k): tuple(float(e) for e in v) for k, v in self.edges.items()}
        )
        require(
            self.min_support >= 0, "export.min_support", f"expected >= 0, found {self.min_support}"
        )
        require(
            self.max_delta is None or (math.isfinite(self.max_delta) and self.max_delta > 0),
            "export.max_delta",
            f"expected a finite number > 0, found {self.max_delta}",
        )
        require(
            self.default is None or all(math.isfinite(w) for w in self.default),
            "export.default",
            f"expected finite weights, found {self.default}",
        )
        require(
            self.explore in ("none", "gaussian", "uniform"),
            "export.explore",
            f"expected 'none', 'gaussian' or 'uniform', found {self.explore!r}",
        )
        require(
            (self.explore == "none")
            or (math.isfinite(self.explore_scale) and self.explore_scale > 0),
            "export.explore_scale",
            f"expected a finite number > 0 for {self.explore} exploration, found {self.explore_scale}",
        )
        require(
            self.auto_sample >= 1, "export.auto_sample", f"expected >= 1, found {self.auto_sample}"
        )


def quantile_edges(values: npt.ArrayLike, buckets: int) -> tuple[float, ...]:
    """Edges cutting ``values`` into ``buckets`` quantile buckets.

    Args:
        values: Feature values, shape (n,); NaNs are ignored.
        buckets: Number of buckets wanted (>= 1).

    Returns:
        Strictly ascending edges rounded to 6 significant digits, all above ``min(values)``;
        fewer than ``buckets - 1`` when values tie.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if buckets <= 1 or x.size == 0:
        return ()
    q = np.quantile(x, np.arange(1, buckets) / buckets)
    lo = float(x.min())
    out: list[float] = []
    for e in q:
        r = float(f"{float(e):.6g}")
        if r > lo and (not out or r > out[-1]):
            out.append(r)
    return tuple(out)


def logged_centre(actions: npt.ArrayLike) -> tuple[float, ...]:
    """The logged actions' most common centre (the production weights).

    Args:
        actions: Logged weight vectors, shape (n, k).

    Returns:
        The most frequent vector when some vector occurs at least twice (ties: the smallest in
        lexicographic order), otherwise the per-task median; length k.
    """
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        raise ExportError(f"logged actions: expected shape (n, k) with n > 0, found {a.shape}")
    uniq, counts = np.unique(a, axis=0, return_counts=True)
    if counts.max() >= 2:
        return tuple(float(v) for v in uniq[int(np.argmax(counts))])
    return tuple(float(v) for v in np.median(a, axis=0))


def _cells(columns: Sequence[FloatArray], edges: Sequence[tuple[float, ...]]) -> IntArray:
    """Flat grid cell of each state (row-major over keys), shape (n,)."""
    n = columns[0].shape[0] if columns else 0
    cell = np.zeros(n, dtype=np.int64)
    for x, e in zip(columns, edges, strict=True):
        cell = cell * (len(e) + 1) + np.searchsorted(np.asarray(e), x, side="right")
    return cell


def _r2(cell: IntArray, scaled: FloatArray, sst: float) -> float:
    """Share of the variance of ``scaled`` (n, k) explained by the cell means."""
    cnt = np.bincount(cell).astype(np.float64)
    ssw = 0.0
    used = cnt > 0
    for j in range(scaled.shape[1]):
        s1 = np.bincount(cell, weights=scaled[:, j])[used]
        s2 = np.bincount(cell, weights=scaled[:, j] ** 2)[used]
        ssw += float((s2 - s1 * s1 / cnt[used]).sum())
    return 1.0 - ssw / sst if sst > 0 else 0.0


def select_keys(
    states: npt.ArrayLike,
    actions: npt.ArrayLike,
    feature_names: Sequence[str],
    action_low: npt.ArrayLike,
    action_high: npt.ArrayLike,
    config: ExportConfig,
) -> tuple[tuple[str, float], ...]:
    """Pick ``config.n_auto_keys`` keys by greedy forward selection (see module doc).

    Args:
        states: Shape (n, d), columns named by ``feature_names``.
        actions: The policy's actions on ``states``, shape (n, k).
        feature_names: Length d.
        action_low: Shape (k,); actions are scaled by ``high - low`` before comparing.
        action_high: Shape (k,).
        config: ``buckets``, ``edges``, ``n_auto_keys``, ``auto_sample`` and ``seed`` are used.

    Returns:
        ``(feature, cumulative R^2 after adding it)`` in selection order. Constant features are
        never picked, so fewer keys may come back.
    """
    s = np.asarray(states, dtype=np.float64)
    a = np.asarray(actions, dtype=np.float64)
    if s.shape[0] > config.auto_sample:
        idx = np.sort(
            np.random.default_rng(config.seed).choice(s.shape[0], config.auto_sample, replace=False)
        )
        s, a = s[idx], a[idx]
    scaled = (a - np.asarray(action_low)) / (np.asarray(action_high) - np.asarray(action_low))
    sst = float(((scaled - scaled.mean(axis=0)) ** 2).sum())
    candidates: dict[str, tuple[FloatArray, tuple[float, ...]]] = {}
    for j, name in enumerate(feature_names):
        col = np.nan_to_num(s[:, j], nan=np.inf)
        edges = config.edges.get(name) or quantile_edges(s[:, j], config.buckets)
        if edges:
            candidates[name] = (col, edges)
    chosen: list[tuple[str, float]] = []
    chosen_cols: list[FloatArray] = []
    chosen_edges: list[tuple[float, ...]] = []
    while len(chosen) < config.n_auto_keys and len(chosen) < len(candidates):
        best, best_r2 = "", -math.inf
        for name, (col, edges) in candidates.items():
            if name in dict(chosen):
                continue
            r2 = _r2(_cells([*chosen_cols, col], [*chosen_edges, edges]), scaled, sst)
            if r2 > best_r2 + 1e-12:
                best, best_r2 = name, r2
        chosen.append((best, best_r2))
        chosen_cols.append(candidates[best][0])
        chosen_edges.append(candidates[best][1])
    if len(chosen) < config.n_auto_keys:
        logger.warning(
            "keys auto: only %d non-constant feature(s) to choose from; using %s",
            len(chosen),
            [c for c, _ in chosen],
        )
    logger.info("keys auto: %s", ", ".join(f"{c} (R^2 {r:.3f})" for c, r in chosen))
    return tuple(chosen)


def build_weight_table(
    states: npt.ArrayLike,
    actions: npt.ArrayLike,
    feature_names: Sequence[str],
    tasks: Sequence[str],
    action_low: Sequence[float],
    action_high: Sequence[float],
    fusion: Fusion,
    config: ExportConfig | None = None,
    logged_actions: npt.ArrayLike | None = None,
    meta: Mapping[str, object] | None = None,
) -> WeightTable:
    """Tabulate a policy: bucket the states, average the policy's actions per bucket.

    Args:
        states: Dataset states in serving units (raw, not normalised), shape (n, d).
        actions: The policy's actions on ``states``, shape (n, k), tasks in ``tasks`` order.
        feature_names: Names of the d state columns.
        tasks: The k task names.
        action_low: Lowest allowed weight per task, shape (k,).
        action_high: Highest allowed weight per task, shape (k,).
        fusion: The fusion formula and offsets the weights are for.
        config: Keys, buckets, shrinkage, trust region, default and exploration.
        logged_actions: The logged (behaviour) actions, shape (n_logged, k); needed for the
            default unless ``config.default`` is given.
        meta: Provenance merged into the table's ``meta`` (policy, dataset_hash, created, ope).

    Returns:
        The validated table; its ``meta.export`` records the settings and rules used.

    Raises:
        ExportError: Shapes disagree, a key is not a state feature, no default can be found, or
            the grid is too large.
    """
    cfg = config or ExportConfig()
    s = np.asarray(states, dtype=np.float64)
    a = np.asarray(actions, dtype=np.float64)
    names = tuple(feature_names)
    k = len(tasks)
    if s.ndim != 2 or s.shape[1] != len(names):
        raise ExportError(
            f"states: expected shape (n, {len(names)}) (one column per feature name), found {s.shape}"
        )
    if a.shape != (s.shape[0], k):
        raise ExportError(f"actions: expected shape ({s.shape[0]}, {k}), found {a.shape}")
    if not np.isfinite(a).all():
        raise ExportError("actions: expected finite policy actions, found NaN or inf")
    low = np.asarray(action_low, dtype=np.float64)
    high = np.asarray(action_high, dtype=np.float64)
    default = _default(cfg, logged_actions, tasks, low, high)

    auto: tuple[tuple[str, float], ...] = ()
    if cfg.keys == ("auto",):
        auto = select_keys(s, a, names, low, high, cfg)
        keys = tuple(c for c, _ in auto)
    else:
        missing = [key for key in cfg.keys if key not in names]
        if missing:
            raise ExportError(
                f"keys: {missing} are not state features; available: {', '.join(names)}"
            )
        keys = cfg.keys
    columns = [s[:, names.index(key)] for key in keys]
    edges = [
        cfg.edges.get(key) or quantile_edges(col, cfg.buckets)
        for key, col in zip(keys, columns, strict=True)
    ]
    shape = tuple(len(e) + 1 for e in edges)
    if math.prod(shape) > MAX_CELLS:
        raise ExportError(
            f"keys: {math.prod(shape)} buckets (> {MAX_CELLS}); use fewer keys, buckets or edges"
        )
    finite = np.ones(s.shape[0], dtype=bool)
    for col in columns:
        finite &= ~np.isnan(col)
    cell = _cells([c[finite] for c in columns], edges)
    n_cells = math.prod(shape)
    support = np.bincount(cell, minlength=n_cells)
    sums = np.stack(
        [np.bincount(cell, weights=a[finite, j], minlength=n_cells) for j in range(k)], axis=1
    )

    rows: list[TableRow] = []
    n_shrunk = 0
    for c in np.flatnonzero(support):
        n = int(support[c])
        mean = sums[c] / n
        lam = 1.0 if cfg.min_support == 0 else min(1.0, n / cfg.min_support)
        n_shrunk += lam < 1.0
        w = lam * mean + (1.0 - lam) * default
        if cfg.max_delta is not None:
            w = np.clip(w, default - cfg.max_delta, default + cfg.max_delta)
        w = np.clip(w, low, high)
        index = np.unravel_index(int(c), shape) if shape else ()
        bounds = tuple(
            (None if i == 0 else e[i - 1], None if i == len(e) else e[i])
            for i, e in zip(index, edges, strict=True)
        )
        rows.append(TableRow(bounds=bounds, weights=tuple(float(x) for x in w), support=n))

    exploration = None
    if cfg.explore != "none":
        exploration = Exploration(distribution=cfg.explore, scale=(cfg.explore_scale,) * k)
    export_meta: dict[str, object] = {
        "config": config_to_dict(cfg),
        "shrinkage_rule": SHRINKAGE_RULE,
        "n_states": int(s.shape[0]),
        "n_states_without_bucket": int((~finite).sum()),
        "n_rows": len(rows),
        "n_rows_shrunk": int(n_shrunk),
    }
    if auto:
        export_meta["keys_auto"] = {"method": AUTO_KEYS_METHOD, "r2": dict(auto)}
    full_meta = {**dict(meta or {}), "export": export_meta}
    return WeightTable(
        tasks=tuple(tasks),
        fusion=fusion,
        action_low=tuple(float(x) for x in low),
        action_high=tuple(float(x) for x in high),
        keys=tuple(TableKey(name=key, edges=e) for key, e in zip(keys, edges, strict=True)),
        default=tuple(float(x) for x in default),
        rows=tuple(rows),
        exploration=exploration,
        meta=full_meta,
    )


def _default(
    cfg: ExportConfig,
    logged_actions: npt.ArrayLike | None,
    tasks: Sequence[str],
    low: FloatArray,
    high: FloatArray,
) -> FloatArray:
    if cfg.default is not None:
        default = np.asarray(cfg.default, dtype=np.float64)
        source = "--default"
    elif logged_actions is not None:
        default = np.asarray(logged_centre(logged_actions), dtype=np.float64)
        source = "the logged actions' centre"
    else:
        raise ExportError("default: expected default weights or the logged actions to derive them")
    if default.shape != (len(tasks),):
        raise ExportError(
            f"default ({source}): expected {len(tasks)} weights (tasks {', '.join(tasks)}), "
            f"found {default.size}"
        )
    outside = [
        f"w_{t}={w:g}"
        for t, w, lo, hi in zip(tasks, default, low, high, strict=True)
        if not lo <= w <= hi
    ]
    if outside:
        raise ExportError(
            f"default ({source}): expected weights within the action bounds, found {', '.join(outside)}"
        )
    return default


def tabulation_gap(
    network_actions: npt.ArrayLike,
    table_actions: npt.ArrayLike,
    tasks: Sequence[str],
    action_low: Sequence[float],
    action_high: Sequence[float],
) -> dict[str, object]:
    """How far the table's weights are from the network's on the same states.

    Args:
        network_actions: Shape (n, k).
        table_actions: Shape (n, k).
        tasks: The k task names.
        action_low: Shape (k,).
        action_high: Shape (k,).

    Returns:
        ``{"n_states", "rmse": {w_<task>: float}, "mean_abs_scaled": float}``; the last is the mean
        absolute difference with each task scaled by its action range (0 = identical, 1 = range).
    """
    net = np.asarray(network_actions, dtype=np.float64)
    tab = np.asarray(table_actions, dtype=np.float64)
    if net.shape != tab.shape or net.ndim != 2 or net.shape[1] != len(tasks):
        raise ExportError(
            f"tabulation gap: expected two (n, {len(tasks)}) arrays, found {net.shape}, {tab.shape}"
        )
    diff = net - tab
    span = np.asarray(action_high, dtype=np.float64) - np.asarray(action_low, dtype=np.float64)
    rmse = np.sqrt((diff**2).mean(axis=0)) if len(diff) else np.zeros(len(tasks))
    return {
        "n_states": int(net.shape[0]),
        "rmse": {f"w_{t}": float(v) for t, v in zip(tasks, rmse, strict=True)},
        "mean_abs_scaled": float(np.abs(diff / span).mean()) if len(diff) else 0.0,
    }


@dataclass(frozen=True)
class ValueComparison:
    """The network policy's value next to its table's, from one source.

    Attributes:
        source: Where the values come from (``"ope:fqe"``, ``"env:envs/sim.toml"``).
        network: Value of the network policy.
        table: Value of the table.
        network_lower: Lower end of the network's 95% interval (offline estimates; ``None``
            when there is none): quote it next to the value.
        table_lower: Lower end of the table's 95% interval.
    """

    source: str
    network: float
    table: float
    network_lower: float | None = None
    table_lower: float | None = None

    @property
    def value_lost(self) -> float:
        """``network - table``: the value given up by tabulating."""
        return self.network - self.table

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form, with ``value_lost`` (and the lower bounds when known)."""
        out: dict[str, object] = {
            "source": self.source,
            "network": self.network,
            "table": self.table,
            "value_lost": self.value_lost,
        }
        for key in ("network_lower", "table_lower"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


def fidelity_report(
    gap: Mapping[str, object],
    ope: ValueComparison | None = None,
    true: ValueComparison | None = None,
) -> dict[str, object]:
    """The fidelity block stored in ``meta.fidelity``: action gap, offline and true values."""
    return {
        "action_gap": dict(gap),
        "ope": None if ope is None else ope.to_dict(),
        "true": None if true is None else true.to_dict(),
    }


def tabulate_policy(
    network: object,
    data: object,
    config: ExportConfig,
    fusion: Fusion,
    policy_name: str,
) -> tuple[WeightTable, FloatArray]:
    """Tabulate a policy over a dataset's states, with provenance in ``meta``.

    Args:
        network: A policy with ``act(observations (n, d)) -> (n, k)``.
        data: A dataset with ``observations`` (n, d), ``actions`` (n, k) and ``spec``
            (``feature_names``, ``tasks``, ``action_low``, ``action_high``, ``dataset_hash``).
        config: How to bucket and shrink.
        fusion: The fusion the weights are for.
        policy_name: Recorded as ``meta.policy``.

    Returns:
        The table and the policy's actions on the dataset's states, shape (n, k).
    """
    from datetime import UTC, datetime

    spec = data.spec  # type: ignore[attr-defined]
    obs = data.observations  # type: ignore[attr-defined]
    actions = np.asarray(network.act(obs), dtype=np.float64)  # type: ignore[attr-defined]
    table = build_weight_table(
        obs,
        actions,
        feature_names=tuple(spec.feature_names),
        tasks=tuple(spec.tasks),
        action_low=spec.action_low,
        action_high=spec.action_high,
        fusion=fusion,
        config=config,
        logged_actions=data.actions,  # type: ignore[attr-defined]
        meta={
            "policy": policy_name,
            "dataset_hash": getattr(spec, "dataset_hash", None),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": package_versions(),
        },
    )
    return table, actions
