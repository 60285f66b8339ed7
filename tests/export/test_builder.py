"""Tests of the table builder: buckets, shrinkage, trust region, default, auto keys, the format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from batchrl_mtf.errors import ConfigError, ExportError
from batchrl_mtf.export import (
    ExportConfig,
    build_weight_table,
    logged_centre,
    quantile_edges,
    select_keys,
    tabulation_gap,
)
from batchrl_mtf.serving import Fusion, WeightTable

REPO = Path(__file__).resolve().parents[2]
NAMES = ("u_activity", "session_depth", "hour_sin", "u_noise")
TASKS = ("click", "longview", "like")
LOW, HIGH = (0.0, 0.0, 0.0), (2.0, 2.0, 2.0)
FUSION = Fusion("logsum", (0.1, 0.1, 0.1))


def policy(states: np.ndarray) -> np.ndarray:
    """A policy whose weights depend on u_activity and session_depth only."""
    ua, sd = states[:, 0], states[:, 1]
    return np.clip(
        np.stack([1.0 + 0.5 * np.tanh(ua), 0.5 + 0.1 * sd, np.full(len(ua), 0.8)], axis=1), 0, 2
    )


@pytest.fixture(scope="module")
def states() -> np.ndarray:
    rng = np.random.default_rng(0)
    n = 4000
    return np.stack(
        [
            rng.normal(size=n),
            rng.integers(0, 10, size=n).astype(float),
            rng.uniform(-1, 1, size=n),
            rng.normal(size=n),
        ],
        axis=1,
    )


def build(states: np.ndarray, **cfg: Any) -> WeightTable:
    config = ExportConfig(**{"keys": ("u_activity", "session_depth"), "min_support": 0, **cfg})
    return build_weight_table(
        states,
        policy(states),
        NAMES,
        TASKS,
        LOW,
        HIGH,
        FUSION,
        config,
        logged_actions=np.tile([1.5, 0.2, 0.2], (10, 1)),
    )


def bucket_means(table: WeightTable, states: np.ndarray) -> np.ndarray:
    """Brute force: the mean policy action over the states in each row's box."""
    actions = policy(states)
    out = []
    for row in table.rows:
        inside = np.ones(len(states), dtype=bool)
        for key, (lo, hi) in zip(table.key_names, row.bounds, strict=True):
            x = states[:, NAMES.index(key)]
            inside &= (x >= (-np.inf if lo is None else lo)) & (x < (np.inf if hi is None else hi))
        assert inside.sum() == row.support
        out.append(actions[inside].mean(axis=0))
    return np.array(out)


def test_round_trip_lookup_equals_bucket_averages(tmp_path: Path, states: np.ndarray) -> None:
    table = build(states, buckets=3)
    assert [len(k.edges) for k in table.keys] == [2, 2]
    loaded = WeightTable.load(table.save(tmp_path / "t.json"))
    got = loaded.lookup(states, NAMES)
    rows = loaded.row_index(states, NAMES)
    assert (rows >= 0).all()  # every dataset state is in a bucket
    np.testing.assert_allclose(got, bucket_means(loaded, states)[rows], rtol=0, atol=1e-12)
    assert sum(r.support for r in loaded.rows) == len(states)


def test_explicit_edges_override_buckets(states: np.ndarray) -> None:
    table = build(states, buckets=4, edges={"u_activity": (-0.4, 0.3, 1.0)})
    assert table.keys[0].edges == (-0.4, 0.3, 1.0)
    assert len(table.keys[1].edges) == 3
    np.testing.assert_allclose(
        np.array([r.weights for r in table.rows]), bucket_means(table, states)
    )


def test_shrinkage_toward_default_below_min_support(states: np.ndarray) -> None:
    m = 400
    raw = build(states, buckets=4)
    shrunk = build(states, buckets=4, min_support=m)
    default = np.array([1.5, 0.2, 0.2])
    assert any(r.support < m for r in raw.rows)
    for a, b in zip(raw.rows, shrunk.rows, strict=True):
        lam = min(1.0, a.support / m)
        want = np.clip(lam * np.array(a.weights) + (1 - lam) * default, 0, 2)
        np.testing.assert_allclose(b.weights, want, atol=1e-12)
    assert cast(Any, shrunk.meta)["export"]["n_rows_shrunk"] == sum(r.support < m for r in raw.rows)


def test_max_delta_is_a_trust_region(states: np.ndarray) -> None:
    table = build(states, buckets=4, max_delta=0.25)
    w = np.array([r.weights for r in table.rows])
    default = np.array(table.default)
    assert np.abs(w - default).max() <= 0.25 + 1e-12
    assert np.isclose(np.abs(w - default).max(), 0.25)  # some weights were clipped


def test_one_bucket_is_a_constant_policy(states: np.ndarray) -> None:
    table = build(states, buckets=1)
    assert len(table.rows) == 1
    assert table.rows[0].bounds == ((None, None), (None, None))
    got = table.lookup(states[:5], NAMES)
    np.testing.assert_allclose(got, np.tile(policy(states).mean(axis=0), (5, 1)))


def test_default_is_logged_centre_or_given(states: np.ndarray) -> None:
    assert build(states).default == (1.5, 0.2, 0.2)
    assert build(states, default=(1.0, 1.0, 1.0)).default == (1.0, 1.0, 1.0)


def test_logged_centre_mode_or_median() -> None:
    a = np.array([[1.0, 2.0], [1.0, 2.0], [0.5, 0.5], [3.0, 3.0]])
    assert logged_centre(a) == (1.0, 2.0)
    noisy = np.random.default_rng(0).normal([1.5, 0.2], 0.01, size=(501, 2))
    np.testing.assert_allclose(logged_centre(noisy), np.median(noisy, axis=0))


def test_quantile_edges_handle_ties_and_constants() -> None:
    x = np.arange(100.0)
    assert quantile_edges(x, 4) == (24.75, 49.5, 74.25)
    assert quantile_edges(np.r_[np.zeros(90), np.arange(1.0, 11.0)], 4) == ()
    assert quantile_edges(np.r_[np.zeros(50), np.ones(50)], 4) == (0.5, 1.0)
    assert quantile_edges(np.ones(10), 4) == ()
    assert quantile_edges(x, 1) == ()
    assert quantile_edges([np.nan, 1.0, 2.0], 2) == (1.5,)


def test_auto_keys_pick_the_features_the_action_depends_on(states: np.ndarray) -> None:
    chosen = select_keys(states, policy(states), NAMES, LOW, HIGH, ExportConfig(n_auto_keys=2))
    assert [c for c, _ in chosen] == ["u_activity", "session_depth"]
    assert 0 < chosen[0][1] < chosen[1][1] <= 1
    table = build_weight_table(
        states,
        policy(states),
        NAMES,
        TASKS,
        LOW,
        HIGH,
        FUSION,
        ExportConfig(keys=("auto",), n_auto_keys=1),
        logged_actions=policy(states),
    )
    assert table.key_names == ("u_activity",)
    assert cast(Any, table.meta)["export"]["keys_auto"]["r2"]["u_activity"] == pytest.approx(
        chosen[0][1]
    )


def test_auto_keys_skip_constant_features() -> None:
    rng = np.random.default_rng(1)
    s = np.stack([np.ones(500), rng.normal(size=500)], axis=1)
    a = np.stack([1 + 0.1 * s[:, 1]] * 3, axis=1)
    chosen = select_keys(s, a, ("c", "x"), LOW, HIGH, ExportConfig(n_auto_keys=2))
    assert [c for c, _ in chosen] == ["x"]


def test_exploration_block(states: np.ndarray) -> None:
    table = build(states, explore="uniform", explore_scale=0.2)
    assert table.exploration is not None
    assert table.exploration.distribution == "uniform"
    assert table.exploration.scale == (0.2, 0.2, 0.2)
    doc = json.loads(table.to_json())
    assert doc["exploration"] == {
        "distribution": "uniform",
        "halfwidth": {"w_click": 0.2, "w_like": 0.2, "w_longview": 0.2},
    }


def test_nan_key_states_are_left_out(states: np.ndarray) -> None:
    s = states.copy()
    s[:100, 0] = np.nan
    table = build_weight_table(
        s, policy(states), NAMES, TASKS, LOW, HIGH, FUSION,
        ExportConfig(keys=("u_activity",), min_support=0), logged_actions=policy(states),
    )  # fmt: skip
    assert sum(r.support for r in table.rows) == len(s) - 100
    assert cast(Any, table.meta)["export"]["n_states_without_bucket"] == 100


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"keys": ("u_nope",)}, r"keys: \['u_nope'\] are not state features"),
        ({"states": np.zeros((3, 2))}, r"states: expected shape \(n, 4\)"),
        ({"actions": np.zeros((3, 3))}, r"actions: expected shape \(4000, 3\)"),
        ({"actions": np.full((4000, 3), np.nan)}, "actions: expected finite"),
        ({"logged": None}, "default: expected default weights or the logged actions"),
        ({"default": (1.0, 1.0)}, r"default \(--default\): expected 3 weights"),
        ({"default": (1.0, 1.0, 3.0)}, r"w_like=3 .*|within the action bounds, found w_like=3"),
        ({"buckets": 2000, "keys": ("u_activity", "hour_sin", "u_noise")}, "buckets .* use fewer"),
    ],
)
def test_build_errors(states: np.ndarray, kwargs: dict[str, Any], match: str) -> None:
    s = kwargs.pop("states", states)
    actions = kwargs.pop("actions", policy(states))
    logged = kwargs.pop("logged", policy(states))
    config = ExportConfig(**{"keys": ("u_activity",), **kwargs})
    with pytest.raises(ExportError, match=match):
        build_weight_table(s, actions, NAMES, TASKS, LOW, HIGH, FUSION, config, logged)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"keys": ()}, "export.keys: expected at least one"),
        ({"keys": ("auto", "x")}, "export.keys: expected 'auto' alone"),
        ({"keys": ("x", "x")}, "export.keys: expected unique"),
        ({"n_auto_keys": 0}, "export.n_auto_keys"),
        ({"buckets": 0}, "export.buckets"),
        ({"keys": ("x",), "edges": {"x": (1.0, 0.0)}}, "export.edges.x: expected strictly"),
        ({"keys": ("x",), "edges": {"x": (float("nan"),)}}, "export.edges.x: expected finite"),
        ({"keys": ("x",), "edges": {"y": (1.0,)}}, "export.edges.y: edges given for 'y'"),
        ({"min_support": -1}, "export.min_support"),
        ({"max_delta": 0.0}, "export.max_delta"),
        ({"default": (1.0, float("inf"))}, "export.default"),
        ({"explore": "laplace"}, "export.explore:"),
        ({"explore": "gaussian"}, "export.explore_scale"),
        ({"auto_sample": 0}, "export.auto_sample"),
    ],
)
def test_config_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ExportConfig(**kwargs)


def test_tabulation_gap() -> None:
    net = np.array([[1.0, 0.0], [1.0, 2.0]])
    tab = np.array([[0.0, 0.0], [1.0, 1.0]])
    gap = tabulation_gap(net, tab, ("a", "b"), (0.0, 0.0), (2.0, 4.0))
    assert gap["rmse"] == pytest.approx({"w_a": np.sqrt(0.5), "w_b": np.sqrt(0.5)})
    assert gap["mean_abs_scaled"] == pytest.approx((0.5 + 0 + 0 + 0.25) / 4)
    with pytest.raises(ExportError, match="tabulation gap"):
        tabulation_gap(net, tab[:1], ("a", "b"), (0.0, 0.0), (2.0, 4.0))


# ------------------------------------------------------------------- sample table and schema


def test_sample_table_in_policies_loads_and_matches_its_csv() -> None:
    table = WeightTable.load(REPO / "policies" / "sample_table.json")
    assert table.tasks == ("click", "longview", "like", "follow", "comment", "share")
    assert table.fusion == Fusion("logsum", (0.1,) * 6)
    csv_text = (REPO / "policies" / "sample_table.csv").read_text()
    assert csv_text == table.to_csv()
    assert table.with_csv_rows(csv_text) == table


def schema_validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((REPO / "docs" / "weight-table.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_tables_validate_against_the_json_schema(states: np.ndarray) -> None:
    validator = schema_validator()
    docs = [
        json.loads((REPO / "policies" / "sample_table.json").read_text()),
        json.loads(build(states, buckets=3, explore="gaussian", explore_scale=0.1).to_json()),
        json.loads(build(states, buckets=1).to_json()),
    ]
    for doc in docs:
        validator.validate(doc)
    sum_doc = {**docs[2], "fusion": {"formula": "sum"}}
    validator.validate(sum_doc)
    WeightTable.from_dict(sum_doc)


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"format": "batchrl-mtf/weight-table@2"}, "format"),
        ({"extra": 1}, ""),
        ({"fusion": {"formula": "logsum"}}, "fusion"),
        ({"default": {"click": 1.0}}, "default"),
        (
            {"exploration": {"distribution": "gaussian", "halfwidth": {"w_click": 0.1}}},
            "exploration",
        ),
    ],
)
def test_schema_rejects_what_loading_rejects(
    states: np.ndarray, change: dict[str, Any], path: str
) -> None:
    validator = schema_validator()
    doc = {**json.loads(build(states, buckets=2).to_json()), **change}
    errors = list(validator.iter_errors(doc))
    assert errors
    assert any(".".join(map(str, e.absolute_path)).startswith(path) for e in errors)
    with pytest.raises(ExportError):
        WeightTable.from_dict(doc)
