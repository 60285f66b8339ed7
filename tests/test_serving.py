"""Tests of the reference serving code: weight table validation, lookup, sampling, fusion, rank."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchrl_mtf.errors import ExportError
from batchrl_mtf.serving import (
    FORMAT,
    MAX_CELLS,
    Exploration,
    Fusion,
    TableKey,
    TableRow,
    WeightTable,
    fuse,
    rank,
)

TASKS = ("click", "longview", "like")


def table_doc() -> dict[str, Any]:
    """The example of the issue (plus action bounds), with three rows."""
    return {
        "format": FORMAT,
        "tasks": list(TASKS),
        "fusion": {"formula": "logsum", "beta": {"click": 0.1, "longview": 0.1, "like": 0.1}},
        "action_bounds": {"w_click": [0.0, 2.0], "w_longview": [0.0, 2.0], "w_like": [0.0, 2.0]},
        "keys": [
            {"name": "u_activity", "edges": [-0.4, 0.3, 1.0]},
            {"name": "session_depth", "edges": [2, 5]},
        ],
        "default": {"w_click": 1.5, "w_longview": 0.2, "w_like": 0.2},
        "rows": [
            {
                "bounds": {"u_activity": [None, -0.4], "session_depth": [None, 2]},
                "weights": {"w_click": 1.1, "w_longview": 0.6, "w_like": 0.9},
                "support": 5231,
            },
            {
                "bounds": {"u_activity": [-0.4, 1.0], "session_depth": [2, None]},
                "weights": {"w_click": 0.7, "w_longview": 1.2, "w_like": 0.3},
                "support": 800,
            },
            {
                "bounds": {"u_activity": [1.0, None], "session_depth": [None, None]},
                "weights": {"w_click": 0.1, "w_longview": 0.1, "w_like": 1.9},
                "support": 12,
            },
        ],
        "meta": {"policy": "runs/cql", "dataset_hash": "sha256:00", "created": "2026-01-01"},
    }


@pytest.fixture
def table() -> WeightTable:
    return WeightTable.from_dict(table_doc())


def test_lookup_applies_half_open_bounds_and_default(table: WeightTable) -> None:
    ua = np.array([-1.0, -0.4, 0.3, 0.99, 1.0, 5.0, -1.0, np.nan, 0.0])
    sd = np.array([0.0, 1.0, 2.0, 7.0, 0.0, 3.0, 2.0, 0.0, np.nan])
    got = table.lookup({"u_activity": ua, "session_depth": sd})
    r0, r1, r2 = (np.array(r.weights) for r in table.rows)
    d = np.array(table.default)
    # -0.4 is in [-0.4, 1.0), not in [null, -0.4); depth 2 is in [2, null).
    want = np.stack([r0, d, r1, r1, r2, r2, d, d, d])
    np.testing.assert_array_equal(got, want)
    assert got.shape == (9, 3)
    assert table.row_index({"u_activity": ua, "session_depth": sd}).tolist() == [
        0, -1, 1, 1, 2, 2, -1, -1, -1,
    ]  # fmt: skip


def test_lookup_accepts_scalars_and_state_matrix(table: WeightTable) -> None:
    one = table.lookup({"u_activity": -1.0, "session_depth": 0})
    np.testing.assert_array_equal(one, [table.rows[0].weights])
    names = ["hour_sin", "session_depth", "u_activity"]
    states = np.array([[0.5, 0.0, -1.0], [0.1, 3.0, 0.5]])
    got = table.lookup(states, names)
    want = table.lookup({"u_activity": states[:, 2], "session_depth": states[:, 1]})
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    ("features", "names", "match"),
    [
        ({"u_activity": [0.0]}, None, "missing key feature 'session_depth'"),
        (np.zeros((2, 2)), ["u_activity", "x"], "missing key feature 'session_depth'"),
        (np.zeros((2, 2)), None, r"states of shape \(n, d\)"),
        ({"u_activity": [0.0, 1.0], "session_depth": [1.0]}, None, "equal shape"),
    ],
)
def test_lookup_errors(table: WeightTable, features: Any, names: Any, match: str) -> None:
    with pytest.raises(ExportError, match=match):
        table.lookup(features, names)


def brute_force_lookup(table: WeightTable, cols: dict[str, np.ndarray]) -> np.ndarray:
    n = len(next(iter(cols.values())))
    out = np.tile(np.array(table.default), (n, 1))
    for i in range(n):
        for row in table.rows:
            inside = True
            for key, (lo, hi) in zip(table.key_names, row.bounds, strict=True):
                x = cols[key][i]
                if math.isnan(x) or (lo is not None and x < lo) or (hi is not None and x >= hi):
                    inside = False
            if inside:
                out[i] = row.weights
    return out


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([-2.0, -0.4, -0.1, 0.3, 0.5, 1.0, 3.0, math.nan]),
            st.sampled_from([0.0, 1.0, 2.0, 4.0, 5.0, 9.0]),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_lookup_matches_brute_force(points: list[tuple[float, float]]) -> None:
    table = WeightTable.from_dict(table_doc())
    cols = {
        "u_activity": np.array([p[0] for p in points]),
        "session_depth": np.array([p[1] for p in points]),
    }
    np.testing.assert_array_equal(table.lookup(cols), brute_force_lookup(table, cols))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=True, width=64), min_size=1, max_size=20))
def test_one_unbounded_row_is_a_constant_policy(xs: list[float]) -> None:
    doc = table_doc()
    doc["rows"] = [
        {
            "bounds": {"u_activity": [None, None], "session_depth": [None, None]},
            "weights": {"w_click": 0.3, "w_longview": 1.7, "w_like": 0.9},
            "support": 10,
        }
    ]
    table = WeightTable.from_dict(doc)
    x = np.array(xs)
    got = table.lookup({"u_activity": x, "session_depth": x[::-1]})
    np.testing.assert_array_equal(got, np.tile([0.3, 1.7, 0.9], (len(xs), 1)))


def test_table_without_keys_is_constant() -> None:
    doc = table_doc()
    doc["keys"] = []
    doc["rows"] = [{"bounds": {}, "weights": doc["default"] | {"w_click": 0.5}, "support": 1}]
    table = WeightTable.from_dict(doc)
    got = table.lookup({"anything": np.zeros(4)})
    np.testing.assert_array_equal(got, np.tile([0.5, 0.2, 0.2], (4, 1)))
    np.testing.assert_array_equal(table.lookup(np.zeros((3, 2)), ["a", "b"]), got[:3])


def test_json_round_trip(tmp_path: Path, table: WeightTable) -> None:
    path = table.save(tmp_path / "t.json")
    again = WeightTable.load(path)
    assert again == table
    assert json.loads(path.read_text())["format"] == FORMAT
    assert path.read_text() == again.to_json()


def test_csv_twin_round_trip(tmp_path: Path, table: WeightTable) -> None:
    path = table.save_csv(tmp_path / "t.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == (
        "u_activity_lo,u_activity_hi,session_depth_lo,session_depth_hi,"
        "w_click,w_longview,w_like,support"
    )
    assert lines[1] == ",-0.4,,2.0,1.1,0.6,0.9,5231"
    assert len(lines) == 1 + len(table.rows)
    assert table.with_csv_rows(path.read_text()) == table


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t.replace("support", "n"), "missing \\['support'\\]"),
        (lambda t: t.replace("1.1,", "abc,", 1), "line 2, w_click: expected a number"),
        (lambda t: t.replace(",5231", ",5.5"), "line 2, support: expected an integer"),
        (lambda t: t.replace(",-0.4,", ",-0.5,", 1), "one of the edges"),
        (lambda t: t.replace("1.1,", "7.0,", 1), "within the action bounds"),
    ],
)
def test_csv_twin_errors(table: WeightTable, edit: Callable[[str], str], match: str) -> None:
    with pytest.raises(ExportError, match=match):
        table.with_csv_rows(edit(table.to_csv()), source="edited.csv")


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """An edit that sets ``doc[a][b]...`` (dotted, list indices as numbers) to ``value``."""

    def edit(doc: dict[str, Any]) -> None:
        parts = [int(p) if p.isdigit() else p for p in path.split(".")]
        node: Any = doc
        for p in parts[:-1]:
            node = node[p]
        if value is _DELETE:
            del node[parts[-1]]
        else:
            node[parts[-1]] = value

    return edit


_DELETE = object()
NAN = float("nan")

INVALID = [
    ("format tag", _set("format", "batchrl-mtf/weight-table@2"), "format: expected"),
    ("missing field", _set("rows", _DELETE), "rows: missing required field"),
    ("unknown field", _set("extra", 1), r"table: unknown field\(s\) \['extra'\]"),
    ("not an object", lambda d: d.clear() or d.update(rows=[]), "format: expected"),
    ("tasks empty", _set("tasks", []), "tasks: expected a non-empty list"),
    (
        "tasks duplicate",
        _set("tasks", ["click", "click", "like"]),
        "tasks: expected a non-empty list of unique names",
    ),
    ("task not a string", _set("tasks.0", 3), r"tasks\[0\]: expected a non-empty string"),
    ("formula", _set("fusion.formula", "product"), "fusion.formula: expected one of"),
    ("beta missing", _set("fusion.beta", _DELETE), "fusion.beta: missing"),
    ("beta zero", _set("fusion.beta.like", 0.0), "fusion.beta.like: expected a number > 0"),
    ("beta task", _set("fusion.beta", {"click": 0.1}), "fusion.beta: expected exactly the keys"),
    (
        "beta for sum",
        _set("fusion.formula", "sum"),
        "fusion.beta: expected no beta for formula 'sum'",
    ),
    ("bounds task", _set("action_bounds.w_like", _DELETE), "action_bounds: expected exactly"),
    ("bounds order", _set("action_bounds.w_like", [2.0, 0.0]), "action_bounds.w_like: expected"),
    ("bounds NaN", _set("action_bounds.w_like", [NAN, 2.0]), "action_bounds.w_like: expected"),
    (
        "bounds shape",
        _set("action_bounds.w_like", [0.0]),
        r"action_bounds.w_like: expected \[low, high\]",
    ),
    (
        "edges order",
        _set("keys.0.edges", [0.3, -0.4, 1.0]),
        r"keys\[0\].edges: expected strictly ascending",
    ),
    ("edges NaN", _set("keys.0.edges", [-0.4, NAN]), r"keys\[0\].edges: expected finite"),
    ("edges text", _set("keys.0.edges", ["a"]), r"keys\[0\].edges: expected finite"),
    ("key duplicate", _set("keys.1.name", "u_activity"), r"keys\[1\].name: duplicate key"),
    (
        "key name w_",
        _set("keys.1.name", "w_click"),
        r"keys\[1\].name: expected a state feature name",
    ),
    ("key fields", _set("keys.1.step", 1), r"keys\[1\]: expected fields name and edges"),
    ("default task", _set("default.w_like", _DELETE), r"default: .*missing \['w_like'\]"),
    ("default extra", _set("default.w_share", 1.0), r"default: .*extra \['w_share'\]"),
    ("default NaN", _set("default.w_like", NAN), "default.w_like: expected a finite number"),
    ("default bounds", _set("default.w_like", 2.5), "default.w_like: .*within the action bounds"),
    ("row weights", _set("rows.1.weights.w_x", 1.0), r"rows\[1\].weights: .*extra \['w_x'\]"),
    ("row NaN", _set("rows.0.weights.w_click", NAN), r"rows\[0\].weights.w_click: expected a fin"),
    ("row inf", _set("rows.0.weights.w_click", math.inf), r"rows\[0\].weights.w_click: expected"),
    ("row bounds", _set("rows.2.weights.w_like", -0.1), r"rows\[2\].weights.w_like: .*action bou"),
    ("row key", _set("rows.0.bounds.session_depth", _DELETE), r"rows\[0\].bounds: expected one"),
    (
        "row edge",
        _set("rows.0.bounds.u_activity", [None, 0.0]),
        r"rows\[0\].bounds.u_activity: expected hi to be null or one of the edges",
    ),
    (
        "row lo>=hi",
        _set("rows.0.bounds.u_activity", [0.3, -0.4]),
        r"rows\[0\].bounds.u_activity: expected lo < hi",
    ),
    (
        "row empty",
        _set("rows.0.bounds.u_activity", [0.3, 0.3]),
        r"rows\[0\].bounds.u_activity: expected lo < hi",
    ),
    (
        "row bound text",
        _set("rows.0.bounds.u_activity", ["a", None]),
        r"rows\[0\].bounds.u_activity: expected \[lo, hi\] of numbers",
    ),
    ("overlap", _set("rows.2.bounds.u_activity", [0.3, None]), r"rows\[2\]: overlaps rows\[1\]"),
    ("support", _set("rows.0.support", -1), r"rows\[0\].support: expected an integer >= 0"),
    ("support float", _set("rows.0.support", 2.5), r"rows\[0\].support: expected an integer"),
    ("row fields", _set("rows.0.note", "x"), r"rows\[0\]: expected fields"),
    ("explore kind", _set("exploration", {"distribution": "laplace"}), "exploration.distribution"),
    (
        "explore sigma",
        _set("exploration", {"distribution": "gaussian", "sigma": {f"w_{t}": 0.0 for t in TASKS}}),
        "exploration.sigma.w_click: expected a number > 0",
    ),
    (
        "explore field",
        _set("exploration", {"distribution": "uniform", "sigma": {f"w_{t}": 0.1 for t in TASKS}}),
        "exploration: expected fields distribution and halfwidth",
    ),
    ("meta", _set("meta", [1]), "meta: expected an object"),
]


@pytest.mark.parametrize(("edit", "match"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_every_validation_rule(edit: Callable[[dict[str, Any]], None], match: str) -> None:
    doc = copy.deepcopy(table_doc())
    edit(doc)
    with pytest.raises(ExportError, match=f"^<table>: {match}"):
        WeightTable.from_dict(doc)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "table: expected an object"),
        (
            json.dumps(table_doc()).replace("1.1", "NaN"),
            r"not valid JSON \(NaN is not JSON",
        ),
    ],
)
def test_load_errors_name_the_file(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ExportError, match=f"bad.json: {match}"):
        WeightTable.load(path)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"nope\.json: cannot read weight table"):
        WeightTable.load(tmp_path / "nope.json")


def test_too_many_cells() -> None:
    doc = table_doc()
    doc["keys"] = [{"name": f"k{i}", "edges": list(range(15))} for i in range(6)]
    doc["rows"] = []
    assert MAX_CELLS < 16**6
    with pytest.raises(ExportError, match="grid cells"):
        WeightTable.from_dict(doc)


def test_dataclass_construction_is_validated() -> None:
    with pytest.raises(ExportError, match=r"fusion\.beta: expected one offset per task"):
        Fusion("logsum", None)
    with pytest.raises(ExportError, match=r"exploration.halfwidth\[1\]: expected a finite number"):
        Exploration("uniform", (0.1, -1.0))
    with pytest.raises(ExportError, match=r"rows\[0\].bounds: expected one bound per key"):
        WeightTable(
            tasks=("a",),
            fusion=Fusion("sum"),
            action_low=(0.0,),
            action_high=(1.0,),
            keys=(TableKey("x", (0.0,)),),
            default=(0.5,),
            rows=(TableRow(bounds=(), weights=(0.5,)),),
        )


# -------------------------------------------------------------------------------- exploration


def explore_table(distribution: str, scale: float) -> WeightTable:
    doc = table_doc()
    name = "sigma" if distribution == "gaussian" else "halfwidth"
    doc["exploration"] = {"distribution": distribution, name: {f"w_{t}": scale for t in TASKS}}
    return WeightTable.from_dict(doc)


def test_no_exploration_block_cannot_sample(table: WeightTable) -> None:
    with pytest.raises(ExportError, match="no exploration block"):
        table.sample({"u_activity": [0.0], "session_depth": [0.0]}, np.random.default_rng(0))


@pytest.mark.parametrize(("distribution", "scale"), [("gaussian", 0.5), ("uniform", 0.5)])
def test_sample_stays_in_bounds_and_logp_matches(distribution: str, scale: float) -> None:
    table = explore_table(distribution, scale)
    feats = {"u_activity": np.full(2000, 1.5), "session_depth": np.zeros(2000)}  # row 2: near edges
    w, logp = table.sample(feats, np.random.default_rng(0))
    assert w.shape == (2000, 3)
    assert logp.shape == (2000,)
    assert ((w >= 0.0) & (w <= 2.0)).all()
    np.testing.assert_allclose(table.log_prob(feats, w), logp, rtol=0, atol=1e-12)
    if distribution == "uniform":  # windows [0, 0.6], [0, 0.6], [1.4, 2.0]
        assert (w[:, 0] <= 0.6).all()
        assert (w[:, 2] >= 1.4).all()
        np.testing.assert_allclose(logp, -3 * math.log(0.6))
    # the sample mean moves toward the inside of the bounds, away from the edge
    assert w[:, 0].mean() > 0.1
    assert w[:, 2].mean() < 1.9


@pytest.mark.parametrize(
    ("distribution", "scale"), [("gaussian", 0.3), ("gaussian", 5.0), ("uniform", 0.4)]
)
def test_exploration_density_is_normalised(distribution: str, scale: float) -> None:
    """The density factorises over tasks: f(w) = prod_j f_j(w_j). With d_j(x) = log f(mu with
    w_j = x) - log f(mu) = log f_j(x) - log f_j(mu_j), the integral of exp(d_j) over the bounds is
    1 / f_j(mu_j), so sum_j -log(integral_j) must equal log f(mu) when every f_j integrates to 1."""
    table = explore_table(distribution, scale)
    mu = np.array(table.rows[2].weights)  # [0.1, 0.1, 1.9]: near the bounds, truncation matters
    grid = np.linspace(0.0, 2.0, 200001)
    feats = {"u_activity": np.full(grid.size, 1.5), "session_depth": np.zeros(grid.size)}
    at_mu = table.log_prob({"u_activity": [1.5], "session_depth": [0.0]}, mu[None, :])[0]
    total = 0.0
    for j in range(3):
        w = np.tile(mu, (grid.size, 1))
        w[:, j] = grid
        d = table.log_prob(feats, w) - at_mu
        total -= math.log(np.trapezoid(np.exp(d), grid))
    assert total == pytest.approx(at_mu, abs=1e-3)


def test_gaussian_logp_is_the_truncated_normal_density() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    table = explore_table("gaussian", 0.7)
    feats = {"u_activity": [1.5, -1.0], "session_depth": [0.0, 0.0]}
    w = np.array([[0.05, 0.3, 1.95], [1.0, 0.0, 2.0]])
    mu = np.array([table.rows[2].weights, table.rows[0].weights])
    a, b = (0.0 - mu) / 0.7, (2.0 - mu) / 0.7
    want = scipy_stats.truncnorm.logpdf(w, a, b, loc=mu, scale=0.7).sum(axis=1)
    np.testing.assert_allclose(table.log_prob(feats, w), want, rtol=1e-10)


def test_log_prob_outside_support_is_minus_inf() -> None:
    table = explore_table("uniform", 0.1)
    lp = table.log_prob({"u_activity": [-1.0], "session_depth": [0.0]}, [[1.1, 0.6, 1.5]])
    assert lp[0] == -math.inf
    with pytest.raises(ExportError, match=r"expected weights of shape \(1, 3\)"):
        table.log_prob({"u_activity": [-1.0], "session_depth": [0.0]}, [[1.1, 0.6]])


def test_sample_is_reproducible() -> None:
    table = explore_table("gaussian", 0.2)
    feats = {"u_activity": np.linspace(-1, 2, 50), "session_depth": np.arange(50.0)}
    a = table.sample(feats, np.random.default_rng(7))
    b = table.sample(feats, np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


# ------------------------------------------------------------------------------ fuse and rank


def test_fuse_logsum_and_sum() -> None:
    preds = np.array([[0.5, 0.1], [0.2, 0.9], [0.0, 0.0]])
    w = np.array([1.0, 2.0])
    beta = np.array([0.1, 0.2])
    want = np.log(preds[:, 0] + 0.1) * 1.0 + np.log(preds[:, 1] + 0.2) * 2.0
    np.testing.assert_allclose(fuse(preds, w, "logsum", beta), want)
    np.testing.assert_allclose(fuse(preds, w, "sum"), preds @ w)


def test_fuse_batched_matches_per_request() -> None:
    rng = np.random.default_rng(0)
    preds = rng.uniform(size=(4, 7, 3))
    w = rng.uniform(size=(4, 3))
    beta = np.full(3, 0.1)
    got = fuse(preds, w, "logsum", beta)
    assert got.shape == (4, 7)
    for r in range(4):
        np.testing.assert_allclose(got[r], fuse(preds[r], w[r], "logsum", beta))


@pytest.mark.parametrize(
    ("preds", "weights", "formula", "beta", "match"),
    [
        (np.ones((3, 2)), np.ones(2), "logsum", None, "needs beta"),
        (np.ones((3, 2)), np.ones(2), "product", None, "expected formula"),
        (np.ones((3, 2)), np.ones(3), "sum", None, r"found \(3, 2\) and \(3,\)"),
        (np.ones((2, 3, 2)), np.ones(2), "sum", None, "n_requests"),
    ],
)
def test_fuse_errors(preds: Any, weights: Any, formula: Any, beta: Any, match: str) -> None:
    with pytest.raises(ExportError, match=match):
        fuse(preds, weights, formula, beta)


def test_rank_orders_by_score_ties_stable_nan_last() -> None:
    preds = np.array([[0.1], [0.9], [0.5], [0.9], [np.nan], [0.0]])
    assert rank(preds, [1.0], "sum").tolist() == [1, 3, 2, 0, 5, 4]
    assert rank(preds, [-1.0], "sum", top_n=2).tolist() == [5, 0]
    batched = rank(np.stack([preds, preds]), np.array([[1.0], [-1.0]]), "sum", top_n=3)
    assert batched.tolist() == [[1, 3, 2], [5, 0, 2]]


def test_rank_with_table_weights_changes_order(table: WeightTable) -> None:
    preds = np.array([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9]])
    beta = np.array(table.fusion.beta or ())
    w = table.lookup({"u_activity": [-1.0, 2.0], "session_depth": [0.0, 0.0]})
    assert rank(preds, w[0], "logsum", beta)[0] == 0  # w_click 1.1 highest
    assert rank(preds, w[1], "logsum", beta)[0] == 2  # w_like 1.9 highest
