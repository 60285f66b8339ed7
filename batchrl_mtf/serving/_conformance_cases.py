"""The cases of the conformance suite (:mod:`batchrl_mtf.serving.conformance`); deterministic."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from batchrl_mtf.serving._types import FORMAT, MAX_CELLS

__all__ = ["INVALID_DOCS", "INVALID_TEXTS", "VALID_CASES", "Case"]

Doc = dict[str, Any]


@dataclass(frozen=True)
class Case:
    """A valid table with its request lines (dicts, or raw text for malformed lines)."""

    name: str
    about: str
    table: Doc
    requests: list[Any]


def _w(tasks: list[str], values: list[float]) -> dict[str, float]:
    return {f"w_{t}": float(v) for t, v in zip(tasks, values, strict=True)}


def _table(
    tasks: list[str],
    keys: list[tuple[str, list[float]]],
    default: list[float],
    rows: Sequence[tuple[Any, list[float], int]],
    formula: str = "logsum",
    beta: list[float] | None = None,
    bounds: tuple[float, float] | None = (0.0, 2.0),
    exploration: tuple[str, list[float]] | None = None,
) -> Doc:
    doc: Doc = {
        "format": FORMAT,
        "tasks": tasks,
        "fusion": {"formula": formula},
        "keys": [{"name": n, "edges": e} for n, e in keys],
        "default": _w(tasks, default),
        "rows": [{"bounds": b, "weights": _w(tasks, w), "support": s} for b, w, s in rows],
        "meta": {"suite": "batchrl-mtf conformance"},
    }
    if formula == "logsum":
        doc["fusion"]["beta"] = dict(zip(tasks, beta or [0.1] * len(tasks), strict=True))
    if bounds is not None:
        doc["action_bounds"] = {f"w_{t}": list(bounds) for t in tasks}
    if exploration is not None:
        dist, scale = exploration
        name = "sigma" if dist == "gaussian" else "halfwidth"
        doc["exploration"] = {"distribution": dist, name: _w(tasks, scale)}
    return doc


def _preds(
    rng: np.random.Generator, tasks: list[str], n: int, lo: float = 0.0, hi: float = 1.0
) -> dict[str, list[float]]:
    return {t: [float(x) for x in rng.uniform(lo, hi, n)] for t in tasks}


def _req(features: dict[str, Any], preds: dict[str, list[Any]], **extra: Any) -> dict[str, Any]:
    return {"features": features, "preds": preds, **extra}


def _grid_table(rng: np.random.Generator, n_keys: int, tasks: list[str], name: str) -> Case:
    """Random edges per key; rows over random boxes of cells (about a third left to the default)."""
    keys = []
    for j in range(n_keys):
        m = int(rng.integers(1, 5))
        edges = sorted({round(float(x), 3) for x in rng.normal(0, 1, m)})
        keys.append((f"k{j}", edges))
    shape = [len(e) + 1 for _, e in keys]
    taken = np.zeros(shape, dtype=bool)
    rows = []
    for cell in np.ndindex(*shape):
        if taken[cell] or rng.uniform() < 0.3:
            continue
        # grow a box along each key while the cells are free
        hi = list(cell)
        for j in range(n_keys):
            while hi[j] + 1 < shape[j] and rng.uniform() < 0.4:
                box = tuple(
                    slice(c, h + 1)
                    for c, h in zip(cell, [*hi[:j], hi[j] + 1, *hi[j + 1 :]], strict=True)
                )
                if taken[box].any():
                    break
                hi[j] += 1
        box = tuple(slice(c, h + 1) for c, h in zip(cell, hi, strict=True))
        if taken[box].any():
            continue
        taken[box] = True
        bounds = {}
        for j, (kname, edges) in enumerate(keys):
            lo_v = None if cell[j] == 0 else edges[cell[j] - 1]
            hi_v = None if hi[j] + 1 >= shape[j] else edges[hi[j]]
            bounds[kname] = [lo_v, hi_v]
        rows.append(
            (
                bounds,
                [round(float(x), 6) for x in rng.uniform(0, 2, len(tasks))],
                int(rng.integers(0, 500)),
            )
        )
    beta = [float(b) for b in rng.choice([0.1, 0.01, 0.5, 1e-6], len(tasks))]
    table = _table(tasks, keys, [1.0] * len(tasks), rows, beta=beta)
    requests = []
    for _ in range(40):
        feats: dict[str, float | None] = {}
        for kname, edges in keys:
            u = rng.uniform()
            if u < 0.3:
                feats[kname] = float(rng.choice(edges))  # exactly on an edge: the cell above
            elif u < 0.35:
                feats[kname] = None
            else:
                feats[kname] = float(rng.normal(0, 1.5))
        feats["unused_feature"] = 123.0
        requests.append(_req(feats, _preds(rng, tasks, int(rng.integers(0, 12)))))
    return Case(
        name, f"{n_keys} keys, random boxes of cells, states on edges and NaN", table, requests
    )


def _valid_cases() -> list[Case]:
    rng = np.random.default_rng(20261201)
    cases = []
    # 0 keys, sum formula, no rows: always the default.
    t1 = ["a"]
    cases.append(
        Case(
            "keys0_sum_default",
            "no keys, formula sum, no rows: the default; negative and large predictions; n = 0 and 1",
            _table(t1, [], [0.7], [], formula="sum", bounds=(-5.0, 5.0)),
            [
                _req({}, {"a": []}),
                _req({}, {"a": [3.5]}),
                _req({"x": 1.0}, {"a": [-2.0, 1e300, -1e300, 0.0, 1e-300]}),
                _req({}, {"a": [1.0, 1.0, 1.0, None, 2.0, None]}),
            ],
        )
    )
    # 0 keys, one row covering everything.
    t3 = ["click", "like", "share"]
    cases.append(
        Case(
            "keys0_one_row",
            "no keys, one row (empty bounds) overrides the default; per-task beta",
            _table(t3, [], [1.0, 1.0, 1.0], [({}, [0.5, 1.5, 0.25], 7)], beta=[0.1, 0.05, 0.2]),
            [_req({}, _preds(rng, t3, 6)) for _ in range(5)],
        )
    )
    # 1 key: one-sided and unbounded bounds, a gap, states on every edge, far away and null.
    edges = [-1.0, 0.0, 0.5, 2.0]
    rows1 = [
        ({"x": [None, -1.0]}, [0.1, 0.2, 0.3], 10),
        ({"x": [0.0, 0.5]}, [1.1, 1.2, 1.3], 20),
        ({"x": [0.5, 2.0]}, [1.9, 0.0, 2.0], 30),
        ({"x": [2.0, None]}, [0.6, 0.7, 0.8], 40),
    ]
    xs: list[float | None] = [
        -1e300,
        -1.0000000000000002,
        -1.0,
        -0.5,
        0.0,
        -0.0,
        0.49999999999999994,
        0.5,
        1.0,
        2.0,
        1e300,
        None,
    ]
    cases.append(
        Case(
            "keys1_edges",
            "one key: half-open cells, a value on an edge belongs to the cell above, an uncovered cell, null",
            _table(t3, [("x", edges)], [1.0, 0.5, 0.25], rows1, beta=[0.1, 0.01, 1.0]),
            [_req({"x": x}, _preds(rng, t3, 4)) for x in xs],
        )
    )
    # 2 keys without action bounds; rows spanning several cells.
    t2 = ["click", "longview"]
    rows2 = [
        ({"u": [None, -0.4], "d": [None, 2.0]}, [-3.0, 4.0], 5),
        ({"u": [-0.4, 1.0], "d": [2.0, None]}, [0.7, 1.2], 6),
        ({"u": [1.0, None], "d": [None, None]}, [10.0, -10.0], 7),
    ]
    reqs2 = [
        _req({"u": u, "d": d}, _preds(rng, t2, 5))
        for u in [-1.0, -0.4, 0.3, 1.0, 5.0, None]
        for d in [0.0, 2.0, 5.0, 9.0, None]
    ]
    cases.append(
        Case(
            "keys2_no_action_bounds",
            "two keys, no action_bounds (optional: weights unbounded), boxes over several cells",
            _table(
                t2, [("u", [-0.4, 0.3, 1.0]), ("d", [2.0, 5.0])], [1.5, 0.2], rows2, bounds=None
            ),
            reqs2,
        )
    )
    cases.append(_grid_table(rng, 3, ["t0", "t1", "t2", "t3"], "keys3_grid"))
    cases.append(_grid_table(rng, 4, ["t0", "t1", "t2", "t3", "t4"], "keys4_grid"))
    # Extreme predictions and offsets.
    t4 = ["p", "q", "r", "s"]
    extreme = [0.0, 1.0, 5e-324, 1e-300, 1e-12, 1.0 - 1e-16, 0.5, 1e-308]
    cases.append(
        Case(
            "extreme_predictions",
            "p in {0, 1, denormal, 1e-300, ...}, beta down to 1e-300, weights up to +-50",
            _table(
                t4,
                [],
                [50.0, -50.0, 0.001, -0.001],
                [],
                beta=[1e-300, 1e-12, 1e-3, 1e3],
                bounds=(-50.0, 50.0),
            ),
            [
                _req(
                    {},
                    {
                        t: [extreme[(i + j) % len(extreme)] for i in range(len(extreme))]
                        for j, t in enumerate(t4)
                    },
                ),
                _req({}, {t: list(reversed(extreme)) for t in t4}),
                _req({}, {t: [0.0] * 3 for t in t4}),
            ],
        )
    )
    # Ties and missing predictions.
    cases.append(
        Case(
            "ties_and_nan",
            "equal scores keep the candidates' order; a null prediction scores null and ranks last",
            _table(t3, [], [1.0, 1.0, 1.0], []),
            [
                _req({}, {t: [0.3, 0.3, 0.3, 0.3] for t in t3}),
                _req(
                    {},
                    {
                        "click": [0.3, None, 0.9, 0.3, None],
                        "like": [0.1, 0.1, 0.1, 0.1, 0.2],
                        "share": [0.2, 0.2, None, 0.2, 0.2],
                    },
                ),
                _req({}, {t: [None, None] for t in t3}),
            ],
        )
    )
    # Exploration: truncated Gaussian (rejections near the bounds), untruncated, uniform (clipped).
    rows_e = [
        ({"x": [None, 0.0]}, [0.05, 1.0, 1.95], 1),
        ({"x": [0.0, None]}, [1.0, 0.0, 2.0], 2),
    ]
    for name, dist, scale, bounds, about in [
        (
            "explore_gaussian",
            "gaussian",
            [0.3, 0.5, 0.2],
            (0.0, 2.0),
            "truncated Gaussian: rejection consumes draws",
        ),
        (
            "explore_gaussian_unbounded",
            "gaussian",
            [0.3, 0.5, 0.2],
            None,
            "Gaussian without action_bounds: no truncation",
        ),
        (
            "explore_uniform",
            "uniform",
            [0.3, 0.5, 0.2],
            (0.0, 2.0),
            "uniform window clipped to the bounds",
        ),
    ]:
        reqs = []
        for i in range(24):
            x = [-1.0, 0.5, 0.0, None][i % 4]
            if dist == "gaussian":
                draws = [float(z) for z in rng.standard_normal(40)]
                if i % 3 == 0:
                    draws = [9.0, -9.0, *draws]  # always rejected with bounds
            else:
                draws = [float(u) for u in rng.uniform(0, 1, 3)]
                if i == 0:
                    draws = [0.0, 0.0, 0.0]
            reqs.append(_req({"x": x}, _preds(rng, t3, 5), draws=draws))
        cases.append(
            Case(
                name,
                about,
                _table(
                    t3,
                    [("x", [0.0])],
                    [1.0, 1.0, 1.0],
                    rows_e,
                    bounds=bounds,
                    exploration=(dist, scale),
                ),
                reqs,
            )
        )
    # The bench shape: 1,000 candidates x 8 tasks, 2 keys.
    t8 = [f"task{i}" for i in range(8)]
    e_u = [round(float(x), 4) for x in np.linspace(-2, 2, 9)]
    e_d = [1.0, 2.0, 4.0, 8.0]
    rows8 = []
    for i in range(len(e_u) + 1):
        for j in range(len(e_d) + 1):
            b = {
                "u": [None if i == 0 else e_u[i - 1], None if i == len(e_u) else e_u[i]],
                "d": [None if j == 0 else e_d[j - 1], None if j == len(e_d) else e_d[j]],
            }
            rows8.append((b, [round(float(x), 6) for x in rng.uniform(0, 2, 8)], i * 10 + j))
    reqs8 = [
        _req({"u": float(rng.normal()), "d": float(rng.integers(0, 10))}, _preds(rng, t8, 1000))
        for _ in range(3)
    ]
    cases.append(
        Case(
            "bench_1000x8",
            "1,000 candidates x 8 tasks",
            _table(t8, [("u", e_u), ("d", e_d)], [1.0] * 8, rows8),
            reqs8,
        )
    )
    # Requests a port must refuse (one error line each; the rest still answered).
    base = _table(t3, [("x", [0.0])], [1.0, 1.0, 1.0], rows_e)
    good = _preds(rng, t3, 3)
    bad_requests: list[Any] = [
        _req({"x": 0.5}, good),
        _req({}, good),
        _req({"x": "high"}, good),
        _req({"x": 0.5}, {"click": good["click"], "like": good["like"]}),
        _req({"x": 0.5}, {**good, "follow": [0.1, 0.2, 0.3]}),
        _req({"x": 0.5}, {**good, "like": [0.1, 0.2]}),
        _req({"x": 0.5}, {**good, "share": [0.1, 7.0, 0.2]}),
        _req({"x": 0.5}, {**good, "share": [0.1, -0.1, 0.2]}),
        _req({"x": 0.5}, {**good, "click": [0.1, "0.2", 0.3]}),
        _req({"x": 0.5}, {**good, "click": [0.1, True, 0.3]}),
        _req({"x": 0.5}, good, draws=[0.1, 0.2, 0.3]),
        {"features": {"x": 0.5}, "preds": good, "extra": 1},
        [1, 2, 3],
        '{"features": {"x": NaN}, "preds": {}}',
        '{"features": {"x": 0.5}, "preds": {"click": [1e999], "like": [0.1], "share": [0.1]}}',
        "not json at all",
        _req({"x": 0.5}, good),
    ]
    cases.append(
        Case(
            "bad_requests",
            "requests a port must answer with an error line (then exit 2)",
            base,
            bad_requests,
        )
    )
    return cases


def _base_doc() -> Doc:
    tasks = ["click", "longview", "like"]
    rows = [
        ({"u_activity": [None, -0.4], "session_depth": [None, 2]}, [1.1, 0.6, 0.9], 5231),
        ({"u_activity": [-0.4, 1.0], "session_depth": [2, None]}, [0.7, 1.2, 0.3], 800),
        ({"u_activity": [1.0, None], "session_depth": [None, None]}, [0.1, 0.1, 1.9], 12),
    ]
    return _table(
        tasks,
        [("u_activity", [-0.4, 0.3, 1.0]), ("session_depth", [2, 5])],
        [1.5, 0.2, 0.2],
        rows,
        exploration=("gaussian", [0.05, 0.05, 0.05]),
    )


def _edit(path: str, value: Any) -> Callable[[], Doc]:
    """The base document with ``path`` (dotted; list indices as numbers) set or deleted."""

    def make() -> Doc:
        doc = copy.deepcopy(_base_doc())
        parts = [int(p) if p.isdigit() else p for p in path.split(".")]
        node: Any = doc
        for p in parts[:-1]:
            node = node[p]
        if value is _DELETE:
            del node[parts[-1]]
        else:
            node[parts[-1]] = value
        return doc

    return make


_DELETE = object()


def _too_many_cells() -> Doc:
    """Two keys of 2,048 edges each: 2,049^2 cells > MAX_CELLS (checked before the rows)."""
    doc = _base_doc()
    side = math.isqrt(MAX_CELLS) + 1
    for key in doc["keys"]:
        key["edges"] = [float(i) for i in range(side)]
    return doc


INVALID_DOCS: list[tuple[str, str, Callable[[], Doc]]] = [
    ("format_tag", "another format tag", _edit("format", "batchrl-mtf/weight-table@2")),
    ("missing_rows", "a required field is missing", _edit("rows", _DELETE)),
    ("unknown_field", "an unknown top-level field", _edit("extra", 1)),
    ("tasks_empty", "no tasks", _edit("tasks", [])),
    ("tasks_duplicate", "a task twice", _edit("tasks", ["click", "click", "like"])),
    ("task_not_string", "a task that is a number", _edit("tasks.0", 3)),
    ("formula", "an unknown formula", _edit("fusion.formula", "product")),
    ("beta_missing", "logsum without beta", _edit("fusion.beta", _DELETE)),
    ("beta_zero", "beta = 0", _edit("fusion.beta.like", 0.0)),
    ("beta_negative", "beta < 0", _edit("fusion.beta.click", -0.1)),
    ("beta_tasks", "beta for other tasks", _edit("fusion.beta", {"click": 0.1})),
    ("beta_for_sum", "sum with a beta", _edit("fusion.formula", "sum")),
    ("fusion_field", "an unknown fusion field", _edit("fusion.gamma", 1)),
    ("bounds_task", "action_bounds misses a task", _edit("action_bounds.w_like", _DELETE)),
    ("bounds_order", "action_bounds low > high", _edit("action_bounds.w_like", [2.0, 0.0])),
    ("bounds_equal", "action_bounds low = high", _edit("action_bounds.w_like", [1.0, 1.0])),
    ("bounds_shape", "action_bounds with one number", _edit("action_bounds.w_like", [0.0])),
    ("bounds_text", "action_bounds with a string", _edit("action_bounds.w_like", ["0", 2.0])),
    ("edges_order", "edges not ascending", _edit("keys.0.edges", [0.3, -0.4, 1.0])),
    ("edges_repeat", "an edge twice", _edit("keys.1.edges", [2, 2, 5])),
    ("edges_text", "an edge that is a string", _edit("keys.0.edges", ["a"])),
    ("key_duplicate", "a key twice", _edit("keys.1.name", "u_activity")),
    ("key_w_name", "a key named w_*", _edit("keys.1.name", "w_click")),
    ("key_support_name", "a key named support", _edit("keys.1.name", "support")),
    ("key_field", "an unknown key field", _edit("keys.1.step", 1)),
    ("too_many_cells", "a grid over 2^22 cells", lambda: _too_many_cells()),
    ("default_task", "default misses a task", _edit("default.w_like", _DELETE)),
    ("default_extra", "default with another task", _edit("default.w_share", 1.0)),
    ("default_bounds", "default outside the action bounds", _edit("default.w_like", 2.5)),
    ("default_text", "default weight as a string", _edit("default.w_like", "1")),
    ("default_bool", "default weight as a boolean", _edit("default.w_like", True)),
    ("row_weights_extra", "row weights with another task", _edit("rows.1.weights.w_x", 1.0)),
    (
        "row_weight_bounds",
        "row weight outside the action bounds",
        _edit("rows.2.weights.w_like", -0.1),
    ),
    ("row_weight_null", "row weight null", _edit("rows.0.weights.w_click", None)),
    ("row_bounds_key", "row bounds miss a key", _edit("rows.0.bounds.session_depth", _DELETE)),
    (
        "row_bound_off_edge",
        "a bound that is not an edge",
        _edit("rows.0.bounds.u_activity", [None, 0.0]),
    ),
    ("row_bound_order", "bound lo > hi", _edit("rows.0.bounds.u_activity", [0.3, -0.4])),
    ("row_bound_empty", "bound lo = hi", _edit("rows.0.bounds.u_activity", [0.3, 0.3])),
    ("row_bound_text", "a bound that is a string", _edit("rows.0.bounds.u_activity", ["a", None])),
    (
        "row_bound_shape",
        "a bound with three numbers",
        _edit("rows.0.bounds.u_activity", [None, -0.4, 0.3]),
    ),
    ("overlap", "two rows overlap", _edit("rows.2.bounds.u_activity", [0.3, None])),
    ("support_negative", "support < 0", _edit("rows.0.support", -1)),
    ("support_float", "support 2.5", _edit("rows.0.support", 2.5)),
    ("support_bool", "support true", _edit("rows.0.support", True)),
    ("row_field", "an unknown row field", _edit("rows.0.note", "x")),
    ("rows_not_list", "rows is an object", _edit("rows", {})),
    ("row_not_object", "a row that is a list", _edit("rows.1", [1, 2])),
    (
        "explore_kind",
        "unknown exploration distribution",
        _edit("exploration", {"distribution": "laplace"}),
    ),
    ("explore_sigma_zero", "sigma = 0", _edit("exploration.sigma.w_click", 0.0)),
    (
        "explore_field",
        "uniform with sigma",
        _edit(
            "exploration",
            {
                "distribution": "uniform",
                "sigma": {"w_click": 0.1, "w_longview": 0.1, "w_like": 0.1},
            },
        ),
    ),
    ("meta_list", "meta is a list", _edit("meta", [1])),
    (
        "meta_deep",
        "meta nested 70 levels deep",
        _edit("meta", json.loads('{"a": ' * 70 + "1" + "}" * 70)),
    ),
    ("top_level_list", "the file is a list", lambda: [_base_doc()]),  # type: ignore[list-item, return-value]
]


def _text(transform: Callable[[str], str]) -> Callable[[], bytes]:
    return lambda: transform(json.dumps(_base_doc(), indent=2, sort_keys=True)).encode("utf-8")


def _replace_first(old: str, new: str) -> Callable[[str], str]:
    def run(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)

    return run


INVALID_TEXTS: list[tuple[str, str, Callable[[], bytes]]] = [
    (
        "nan_token",
        "a NaN token in a weight",
        _text(_replace_first('"w_click": 1.1', '"w_click": NaN')),
    ),
    (
        "infinity_in_meta",
        "an Infinity token inside meta",
        _text(_replace_first('"suite": "batchrl-mtf conformance"', '"suite": Infinity')),
    ),
    ("minus_infinity", "-Infinity as an edge", _text(_replace_first("-0.4,", "-Infinity,"))),
    (
        "overflow_in_meta",
        "1e999 inside meta (overflows a double)",
        _text(_replace_first('"suite": "batchrl-mtf conformance"', '"suite": 1e999')),
    ),
    (
        "overflow_weight",
        "1e999 as a weight",
        _text(_replace_first('"w_click": 1.1', '"w_click": 1e999')),
    ),
    (
        "long_integer",
        "a 5,000-digit integer as support",
        _text(_replace_first('"support": 12', '"support": ' + "9" * 5000)),
    ),
    (
        "long_number",
        "a 200-character number",
        _text(_replace_first('"w_click": 1.1', '"w_click": 1.' + "1" * 200)),
    ),
    (
        "deep_nesting",
        "100,000 nested lists inside meta",
        _text(_replace_first('"batchrl-mtf conformance"', "[" * 100_000 + "]" * 100_000)),
    ),
    (
        "duplicate_key",
        "a key twice in one object",
        _text(_replace_first('"w_click": 1.1', '"w_click": 1.1, "w_click": 1.2')),
    ),
    ("utf16", "the table saved as UTF-16", lambda: json.dumps(_base_doc()).encode("utf-16")),
    (
        "bad_utf8",
        "an invalid UTF-8 byte inside a string",
        lambda: json.dumps(_base_doc()).encode("utf-8").replace(b"conformance", b"conf\xffrmance"),
    ),
    ("empty", "an empty file", lambda: b""),
    ("trailing_garbage", "text after the JSON value", _text(lambda t: t + " x")),
    (
        "trailing_comma",
        "a trailing comma",
        _text(_replace_first('"w_click": 1.1', '"w_click": 1.1,')),
    ),
    ("comment", "a // comment", _text(lambda t: "// table\n" + t)),
    ("single_quotes", "a single-quoted string", _text(_replace_first('"gaussian"', "'gaussian'"))),
    (
        "leading_zero",
        "a number with a leading zero",
        _text(_replace_first('"support": 12', '"support": 012')),
    ),
    ("truncated", "the file cut in the middle", _text(lambda t: t[: len(t) // 2])),
]

VALID_CASES: list[Case] = _valid_cases()
