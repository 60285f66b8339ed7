"""Strict serving inputs: bounded strict JSON, optional fields of weight-table@1, the documented
example and the JSON Schema, checked fuse/rank inputs with the NaN policy, thread safety, and the
serving package's import rules."""

from __future__ import annotations

import ast
import copy
import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from batchrl_mtf.errors import ExportError
from batchrl_mtf.serving import Exploration, TableKey, TableRow, WeightTable, fuse, rank
from batchrl_mtf.serving._json import MAX_DEPTH, loads_strict

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
SCHEMA = json.loads((DOCS / "weight-table.schema.json").read_text())


def doc_example() -> dict[str, Any]:
    """The table printed under "## Format" in docs/weight-table.md, exactly as written there."""
    text = (DOCS / "weight-table.md").read_text()
    block = text.split("## Format", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    return json.loads(block)


def test_documented_example_loads_and_serves() -> None:
    table = WeightTable.from_dict(doc_example())
    assert table.tasks == ("click", "longview", "like")
    assert table.lookup({"u_activity": -1.0, "session_depth": 0})[0].tolist() == [1.1, 0.6, 0.9]
    assert table.lookup({"u_activity": 5.0, "session_depth": 9})[0].tolist() == [1.5, 0.2, 0.2]
    jsonschema.validate(doc_example(), SCHEMA)


def test_action_bounds_and_support_are_optional() -> None:
    doc = doc_example()
    del doc["action_bounds"], doc["exploration"], doc["meta"]
    del doc["rows"][0]["support"]
    jsonschema.validate(doc, SCHEMA)
    table = WeightTable.from_dict(doc)
    assert table.action_low is None and table.action_high is None
    assert table.rows[0].support == 0
    again = WeightTable.loads(table.to_json())
    assert again == table and "action_bounds" not in json.loads(table.to_json())
    # unbounded weights are allowed without bounds, and validated when bounds are present
    doc["default"]["w_click"] = 40.0
    assert WeightTable.from_dict(doc).default[0] == 40.0
    doc["action_bounds"] = {"w_click": [0, 3], "w_longview": [0, 3], "w_like": [0, 3]}
    with pytest.raises(ExportError, match=r"default\.w_click: expected a weight within"):
        WeightTable.from_dict(doc)


def test_gaussian_exploration_without_bounds_is_not_truncated() -> None:
    doc = doc_example()
    del doc["action_bounds"]
    table = WeightTable.from_dict(doc)
    w, logp = table.sample_from_draws({"u_activity": 9.0, "session_depth": 0}, [100.0, 0.0, -1.0])
    assert w.tolist() == [1.5 + 0.05 * 100.0, 0.2, 0.2 - 0.05]
    expect = sum(-0.5 * z * z - np.log(0.05 * np.sqrt(2 * np.pi)) for z in (100.0, 0.0, -1.0))
    assert logp == pytest.approx(expect, rel=1e-12)


def test_schema_agrees_with_the_loader_on_the_suite() -> None:
    suite = REPO / "serving" / "conformance"
    for path in sorted((suite / "valid").glob("*[!l].json")):
        jsonschema.validate(json.loads(path.read_text()), SCHEMA)
    manifest = json.loads((suite / "manifest.json").read_text())
    # shape errors (the part a schema can express) are refused by the schema too
    for name in ("missing_rows", "unknown_field", "tasks_empty", "formula", "beta_for_sum", "key_field",
                 "row_field", "support_negative", "support_float", "support_bool", "explore_kind",
                 "explore_field", "meta_list", "row_bound_shape", "default_text", "top_level_list"):  # fmt: skip
        assert name in {c["name"] for c in manifest["invalid"]}
        doc = json.loads((suite / "invalid" / f"{name}.json").read_text())
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(doc, SCHEMA)


# --------------------------------------------------------------------------------- strict JSON

GOOD = json.dumps(doc_example())

STRICT = [
    ("NaN token", GOOD.replace('"w_click": 1.1', '"w_click": NaN'), "NaN is not JSON"),
    ("NaN in meta", GOOD.replace('"policy": "runs/cql"', '"policy": NaN'), "NaN is not JSON"),
    ("Infinity in meta", GOOD.replace('"network": 1.92', '"network": Infinity'), "Infinity is not"),
    ("overflow in meta", GOOD.replace('"network": 1.92', '"network": 1e999'), "overflows a double"),
    (
        "5000-digit int",
        GOOD.replace('"support": 5231', '"support": ' + "7" * 5000),
        "5000 characters",
    ),
    ("long float", GOOD.replace("1.92", "1." + "9" * 150), "152 characters"),
    ("deep nesting", GOOD.replace('"sha256:..."', "[" * 100_000 + "]" * 100_000), "nesting deeper"),
    (
        "duplicate key",
        GOOD.replace('"w_like": 0.9', '"w_like": 0.9, "w_like": 1.0'),
        "duplicate key",
    ),
    ("trailing text", GOOD + " x", "Extra data"),
    ("empty", "", "Expecting value"),
]


@pytest.mark.parametrize(("text", "match"), [c[1:] for c in STRICT], ids=[c[0] for c in STRICT])
def test_strict_json_errors_are_one_line(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "t.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ExportError, match=f"t.json: not valid JSON \\(.*{match}") as info:
        WeightTable.load(path)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


def test_meta_nested_deeper_than_the_limit_is_refused() -> None:
    doc = doc_example()
    node: dict[str, Any] = doc["meta"]
    for _ in range(MAX_DEPTH):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(ExportError, match=f"meta.x.*expected nesting at most {MAX_DEPTH}"):
        WeightTable.from_dict(doc)
    doc = doc_example()
    doc["meta"]["ope"]["network"] = float("nan")  # a Python dict, not JSON text
    with pytest.raises(ExportError, match=r"meta\.ope\.network: expected a finite number"):
        WeightTable.from_dict(doc)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (GOOD.encode("utf-16"), "not UTF-8 text"),
        (GOOD.encode("utf-8").replace(b"runs/cql", b"runs/\xffql"), "not UTF-8 text"),
    ],
    ids=["utf-16", "bad byte"],
)
def test_encodings(tmp_path: Path, data: bytes, match: str) -> None:
    path = tmp_path / "t.json"
    path.write_bytes(data)
    with pytest.raises(ExportError, match=match):
        WeightTable.load(path)


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert WeightTable.load(path).tasks == ("click", "longview", "like")


def test_load_refuses_a_directory_and_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="is a directory"):
        WeightTable.load(tmp_path)
    with pytest.raises(ExportError, match="cannot read weight table"):
        WeightTable.load(tmp_path / "nope.json")


def test_huge_support_is_refused() -> None:
    doc = doc_example()
    doc["rows"][0]["support"] = 10**30
    with pytest.raises(
        ExportError, match=r"rows\[0\]\.support: expected an integer >= 0 \(int64\)"
    ):
        WeightTable.from_dict(doc)


def test_loads_strict_accepts_plain_json() -> None:
    assert loads_strict(b'{"a": [1, 2.5, null, true, "x"]}', "s") == {
        "a": [1, 2.5, None, True, "x"]
    }


# ------------------------------------------------------------------------- validation at scale


def _grid_rows(n_u: int, n_d: int) -> tuple[tuple[TableKey, ...], list[TableRow]]:
    eu = tuple(float(i) for i in range(1, n_u))
    ed = tuple(float(i) for i in range(1, n_d))
    lo_u, hi_u, lo_d, hi_d = (None, *eu), (*eu, None), (None, *ed), (*ed, None)
    rows = [
        TableRow(((lo_u[i], hi_u[i]), (lo_d[j], hi_d[j])), (0.5,), 1)
        for i in range(n_u)
        for j in range(n_d)
    ]
    return (TableKey("a", eu), TableKey("b", ed)), rows


def test_many_rows_validate_and_name_the_first_bad_row() -> None:
    keys, rows = _grid_rows(300, 100)  # 30,000 rows
    table = WeightTable(("t",), _sum(), None, None, keys, (1.0,), tuple(rows))
    assert len(table.rows) == 30_000
    assert table.lookup({"a": [0.5, 299.5], "b": [0.5, 99.5]}).tolist() == [[0.5], [0.5]]
    bad = list(rows)
    bad[20_000] = TableRow(bad[20_000].bounds, (float("nan"),), 1)
    bad[25_000] = TableRow(bad[0].bounds, (0.5,), 1)
    with pytest.raises(ExportError, match=r"rows\[20000\]\.weights\.w_t: expected a finite number"):
        WeightTable(("t",), _sum(), None, None, keys, (1.0,), tuple(bad))
    bad[20_000] = rows[20_000]
    with pytest.raises(ExportError, match=r"rows\[25000\]: overlaps rows\[0\]"):
        WeightTable(("t",), _sum(), None, None, keys, (1.0,), tuple(bad))


def test_rows_from_numpy_values_are_normalised() -> None:
    keys = (TableKey("a", (1.0,)),)
    rows = (TableRow(((None, np.float64(1.0)),), (np.float32(0.5),), np.int64(3)),)
    table = WeightTable(("t",), _sum(), None, None, keys, (1.0,), rows)
    row = table.rows[0]
    assert type(row.support) is int and type(row.weights[0]) is float
    assert type(row.bounds[0][1]) is float and row.bounds[0][0] is None


def test_one_state_lookup_equals_the_batched_lookup() -> None:
    table = WeightTable.from_dict(doc_example())
    edges = [e for key in table.keys for e in key.edges]
    values: list[Any] = [*edges, -1e300, 1e300, 0.0, -0.0, 2**60, 3, np.float64(0.3), None]
    values += [float("nan"), True, np.float32(1.0), np.int64(2)]
    for u in values:
        for d in values:
            got = table.lookup({"u_activity": u, "session_depth": d, "extra": "ignored"})
            batched = table.lookup({"u_activity": [u], "session_depth": [d]})
            assert got.shape == (1, 3) and np.array_equal(got, batched), (u, d)
    weights = table.lookup({"u_activity": 0.0, "session_depth": 0})
    weights[0, 0] = -5.0  # a copy: the table is not changed
    assert table.lookup({"u_activity": 0.0, "session_depth": 0})[0, 0] != -5.0
    for bad, match in (("high", "expected numbers"), ([1.0, 2.0], "equal shape")):
        with pytest.raises(ExportError, match=match):
            table.lookup({"u_activity": bad, "session_depth": 0})
    with pytest.raises(ExportError, match="missing key feature 'session_depth'"):
        table.lookup({"u_activity": 0.0})


def test_loaded_rows_are_made_on_demand_and_equal_eager_rows() -> None:
    eager = WeightTable.from_dict(doc_example())
    text = eager.to_json()
    loaded = WeightTable.loads(text)
    assert "rows" not in vars(loaded)  # kept as arrays until asked for
    copied = copy.deepcopy(loaded)  # (multiprocessing pickles tables the same way)
    assert "rows" not in vars(copied) and copied.rows == eager.rows
    assert loaded == eager and loaded.rows == eager.rows and loaded.to_json() == text
    assert all(type(r) is TableRow for r in loaded.rows) and type(loaded.rows) is tuple
    assert loaded.rows is loaded.rows  # made once
    again = WeightTable(**_public(loaded), exploration=loaded.exploration)
    assert again == loaded and again.to_csv() == loaded.to_csv()
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        loaded.nope  # type: ignore[attr-defined]  # noqa: B018


def test_a_nan_bound_in_a_python_dict_is_not_taken_for_null() -> None:
    doc = doc_example()
    doc["keys"][1]["edges"] = [2.0, 5.0]
    doc["rows"][0]["bounds"]["session_depth"] = [float("nan"), 2.0]
    with pytest.raises(ExportError, match=r"rows\[0\]\.bounds\.session_depth: expected lo"):
        WeightTable.from_dict(doc)
    doc["rows"][0]["bounds"]["session_depth"] = [None, 2.0]
    assert WeightTable.from_dict(doc).rows[0].bounds[1] == (None, 2.0)


def test_integer_numbers_in_rows_load_as_floats() -> None:
    doc = doc_example()
    doc["rows"][0]["weights"]["w_click"] = 1
    assert doc["rows"][0]["bounds"]["session_depth"] == [None, 2]  # an int in the example
    table = WeightTable.loads(json.dumps(doc))
    row = table.rows[0]
    assert row.weights[0] == 1.0 and type(row.weights[0]) is float
    assert row.bounds[1] == (None, 2.0) and type(row.bounds[1][1]) is float
    assert table == WeightTable.from_dict(doc)


def test_a_loaded_table_names_the_first_bad_row_as_the_row_by_row_check() -> None:
    doc = doc_example()
    doc["keys"][1]["edges"] = [2.0, 5.0]
    first = doc["rows"][0]
    doc["rows"] = [
        first,
        {**first, "bounds": {"u_activity": [-0.4, 0.3], "session_depth": [2.5, None]}},
        {**first, "bounds": {"u_activity": [0.3, 1.0], "session_depth": [None, 2.0]}},
    ]
    doc["rows"][0]["bounds"]["session_depth"] = [None, 2.0]
    doc["rows"][2]["weights"] = {**first["weights"], "w_like": 99.0}
    assert WeightTable.loads(json.dumps({**doc, "rows": [first]})).rows[0].bounds[1] == (None, 2.0)
    for load in (lambda: WeightTable.loads(json.dumps(doc)), lambda: WeightTable.from_dict(doc)):
        with pytest.raises(ExportError, match=r"rows\[1\]\.bounds\.session_depth: expected lo"):
            load()


def _sum() -> Any:
    from batchrl_mtf.serving import Fusion

    return Fusion("sum")


# ------------------------------------------------------------------------------ fuse and rank

P = np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])
W = np.array([1.0, 2.0])
B = np.array([0.1, 0.1])

FUSE_ERRORS: list[tuple[str, Callable[[], object], str]] = [
    (
        "p > 1",
        lambda: fuse(P * 7, W, "logsum", B),
        r"preds\[0, 1\]: expected a probability in \[0, 1\].*found 1.4",
    ),
    ("p < 0", lambda: fuse(-P, W, "logsum", B), r"preds\[0, 0\]: expected a probability"),
    ("p inf", lambda: fuse(np.where(P > 0.5, np.inf, P), W, "logsum", B), r"preds\[2, 1\]"),
    (
        "sum inf",
        lambda: fuse(np.where(P > 0.5, np.inf, P), W, "sum"),
        r"preds\[2, 1\]: expected a finite",
    ),
    ("strings", lambda: fuse([["a", "b"]], W, "sum"), "expected preds as numbers"),
    ("ragged", lambda: fuse([[0.1], [0.1, 0.2]], W, "sum"), "expected preds as numbers"),
    ("wrong k", lambda: fuse(P, [1.0, 2.0, 3.0], "sum"), r"found \(3, 2\) and \(3,\)"),
    ("1-D preds", lambda: fuse([0.1, 0.2], W, "sum"), "expected preds"),
    ("nan weight", lambda: fuse(P, [np.nan, 1.0], "sum"), "expected finite weights"),
    ("beta shape", lambda: fuse(P, W, "logsum", [0.1]), r"expected beta of shape \(2,\)"),
    ("beta zero", lambda: fuse(P, W, "logsum", [0.0, 0.1]), "finite and > 0"),
    ("no beta", lambda: fuse(P, W, "logsum"), "needs beta"),
    ("formula", lambda: fuse(P, W, "prod"), "expected formula"),  # type: ignore[arg-type]
    ("overflow", lambda: fuse(P * 1e300, W * 1e300, "sum"), "overflows a double"),
    ("top_n", lambda: rank(P, W, "sum", top_n=-1), "top_n an integer >= 0"),
    ("top_n bool", lambda: rank(P, W, "sum", top_n=True), "top_n an integer"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(
    ("call", "match"), [c[1:] for c in FUSE_ERRORS], ids=[c[0] for c in FUSE_ERRORS]
)
def test_fuse_and_rank_check_their_inputs(call: Callable[[], object], match: str) -> None:
    with pytest.raises(ExportError, match=match):
        call()


def test_nan_policy_missing_prediction_scores_nan_and_ranks_last() -> None:
    p = np.array([[0.2, 0.2], [np.nan, 0.9], [0.2, 0.2], [0.9, 0.9], [0.5, np.nan]])
    scores = fuse(p, W, "logsum", B)
    assert np.isnan(scores[[1, 4]]).all() and np.isfinite(scores[[0, 2, 3]]).all()
    assert rank(p, W, "logsum", B).tolist() == [3, 0, 2, 1, 4]  # ties by index, NaN last in order
    assert rank(p, W, "sum").tolist() == [3, 0, 2, 1, 4]
    # probabilities 0 and 1 are fine
    assert np.isfinite(fuse([[0.0, 1.0]], W, "logsum", B)).all()


def test_lookup_argument_errors() -> None:
    table = WeightTable.from_dict(doc_example())
    with pytest.raises(ExportError, match="lookup: feature 'u_activity': expected numbers"):
        table.lookup({"u_activity": "high", "session_depth": 1})
    assert table.lookup({"u_activity": None, "session_depth": 1})[0].tolist() == [1.5, 0.2, 0.2]
    with pytest.raises(ExportError, match="expected a mapping of key features"):
        table.lookup(np.zeros((2, 2)), names="ab")  # type: ignore[arg-type]
    with pytest.raises(ExportError, match="ran out of draws"):
        table.sample_from_draws({"u_activity": 0.0, "session_depth": 1}, [0.0])
    with pytest.raises(ExportError, match="log_prob: weights: expected numbers"):
        table.log_prob({"u_activity": 0.0, "session_depth": 1}, [["x", 1, 2]])


def test_concurrent_lookups_and_ranks_agree_with_serial() -> None:
    table = WeightTable.from_dict(doc_example())
    table = WeightTable(
        **{**_public(table), "exploration": Exploration("gaussian", (0.1, 0.1, 0.1))}
    )
    rng = np.random.default_rng(0)
    states = {
        "u_activity": rng.normal(size=500),
        "session_depth": rng.integers(0, 8, 500).astype(float),
    }
    preds = rng.uniform(0, 1, (200, 3))
    serial_w = table.lookup(states)
    serial_r = [rank(preds, w, "logsum", table.fusion.beta).tolist() for w in serial_w[:50]]
    errors: list[str] = []

    def work() -> None:
        for _ in range(20):
            if not np.array_equal(table.lookup(states), serial_w):
                errors.append("lookup")
            got = [rank(preds, w, "logsum", table.fusion.beta).tolist() for w in serial_w[:50]]
            if got != serial_r:
                errors.append("rank")
            table.sample({"u_activity": 0.1, "session_depth": 2.0}, np.random.default_rng())

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def _public(table: WeightTable) -> dict[str, Any]:
    names = ("tasks", "fusion", "action_low", "action_high", "keys", "default", "rows", "meta")
    return {n: getattr(table, n) for n in names}


# ----------------------------------------------------------------------------- import rules

SERVING = REPO / "batchrl_mtf" / "serving"


def _imports(path: Path) -> tuple[list[str], list[str]]:
    """(module-level imported modules, imports found inside functions)."""
    tree = ast.parse(path.read_text())
    top, inner = [], []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            (top if node in tree.body else inner).extend(names)
    return top, inner


# besides numpy and the standard library, serving may use the errors and these core modules
# (themselves numpy/stdlib only: the one Fusion, atomic writes)
SERVING_MAY_IMPORT = {"batchrl_mtf.errors", "batchrl_mtf.core.fusion", "batchrl_mtf.core.io"}


def test_serving_imports_only_numpy_stdlib_and_errors_without_cycles() -> None:
    graph: dict[str, set[str]] = {}
    for path in sorted(SERVING.glob("*.py")):
        top, inner = _imports(path)
        assert inner == [], f"{path.name}: imports inside functions: {inner}"
        mod = f"batchrl_mtf.serving.{path.stem}".removesuffix(".__init__")
        graph[mod] = set()
        for name in top:
            root = name.split(".")[0]
            if name.startswith("batchrl_mtf.serving"):
                graph[mod].add(name)
            elif root == "batchrl_mtf":
                assert name in SERVING_MAY_IMPORT, f"{path.name} imports {name}"
            else:
                assert root in {"numpy", "__future__"} or root in _stdlib(), (
                    f"{path.name} imports {name}"
                )
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in graph.get(m, ()):
            if n == "batchrl_mtf.serving":
                continue  # the package's __init__ re-exports; submodules never import it
            assert state.get(n) != 1, f"import cycle: {' -> '.join([*stack, n])}"
            if n not in state:
                visit(n, [*stack, n])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert "batchrl_mtf.serving.table" not in graph["batchrl_mtf.serving._format"]


def _stdlib() -> frozenset[str]:
    import sys

    return frozenset(sys.stdlib_module_names)


def test_docs_name_the_nan_policy() -> None:
    text = (DOCS / "serving.md").read_text()
    assert re.search(r"NaN", text) and "ranks last" in text
