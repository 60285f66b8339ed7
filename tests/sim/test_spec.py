"""Platform specs: shipped specs load; unknown or wrong keys are ConfigErrors naming the key."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable
from typing import Any

import pytest

from batchrl_mtf.errors import ConfigError
from batchrl_mtf.sim import World, default_spec_path, load_spec, parse_spec


def _doc() -> dict[str, Any]:
    return tomllib.loads(default_spec_path().read_text(encoding="utf-8"))


def test_shipped_specs_load() -> None:
    sv = load_spec()
    assert sv.tasks == ("click", "longview", "like", "follow", "comment", "share")
    assert sv.world.n_candidates == 200
    assert sv.feedback[:2] == ("click", "watch_time")
    ec = load_spec("ecommerce")
    assert ec.tasks == ("click", "cart", "buy")
    assert load_spec(default_spec_path("ecommerce")).tasks == ec.tasks


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def apply(doc: dict[str, Any]) -> None:
        *head, last = path.split(".")
        node: Any = doc
        for key in head:
            node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
        node[last] = value

    return apply


def _delete(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc.pop(key)


CASES = [
    (_set("wrold", {}), r"unknown top-level key\(s\) \['wrold'\]"),
    (_set("world.n_itemz", 5), r"world: unknown key\(s\) 'n_itemz'"),
    (_set("world.n_items", "many"), r"world: 'n_items': expected an integer"),
    (_set("world.slate_size", 500), r"slate_size <= n_candidates"),
    (_set("world.tasks", ["click", "watch_time"]), r"task 'watch_time' must be a binary"),
    (_set("responses.click.kind", "ternary"), r"responses.click: 'kind': expected one of"),
    (_set("responses.click.colour", 1), r"responses.click: unknown key\(s\) 'colour'"),
    (_set("responses.like.given", "nope"), r"responses.like.given: expected an earlier response"),
    (_set("responses.click.loadings", {"zzz": 1.0}), r"unknown factor\(s\) \['zzz'\]"),
    (_set("responses.longview.of", "click"), r"longview.of: expected a watch response"),
    (_set("segments.0.hints", {"u_nope": 1.0}), r"segments.casual.hints: unknown name"),
    (_set("segments.0.share", -1.0), r"share: expected > 0"),
    (_set("segments.0.mood", 1.0), r"segments\[0\]: unknown key\(s\) 'mood'"),
    (_set("users.features", ["activity"]), r"expected u_\* names"),
    (_set("session.max_requests", 0), r"session.max_requests: expected 1..999"),
    (_set("fusion.production", [1.0, 0.5]), r"fusion.production: expected 6 weights"),
    (_set("fusion.low", 3.0), r"fusion.low/high: expected finite low < high"),
    (_set("fusion.beta", [0.1]), r"fusion.beta: expected 6 values"),
    (_set("fusion.formula", "product"), r"fusion: 'formula': expected one of"),
    (_set("predictor.kind", "artefact"), r"kind = 'artefact' needs path"),
    (_set("predictor.noise", [0.1, 0.2]), r"predictor.noise: expected 1 or 6 values"),
    (_set("reward.activeness", {"hate": 1.0}), r"reward names column\(s\) 'hate'"),
    (_set("reward.bonus", 1.0), r"unknown key\(s\) \['bonus'\] in \[reward\]"),
    (_set("features.hist_n", 0), r"features.hist_n: expected an integer >= 1"),
    (_set("exploration.random_sigma", 0.0), r"exploration.random_sigma: expected > 0"),
    (_delete("fusion"), r"missing the \[fusion\] table"),
]


@pytest.mark.parametrize(("mutate", "match"), CASES)
def test_bad_spec_is_a_config_error(mutate: Callable[[dict[str, Any]], None], match: str) -> None:
    doc = copy.deepcopy(_doc())
    mutate(doc)
    with pytest.raises(ConfigError, match=match):
        parse_spec(doc, "bad.toml")


def test_missing_and_invalid_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="platform spec not found"):
        load_spec(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[world\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_spec(bad)


def test_artefact_predictor_missing_directory_is_a_config_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = (
        default_spec_path()
        .read_text(encoding="utf-8")
        .replace(
            'kind = "noisy-truth"\nnoise = 0.3', 'kind = "artefact"\npath = "no_such_predictor"'
        )
    )
    path = tmp_path / "art.toml"
    path.write_text(text, encoding="utf-8")
    spec = load_spec(path)
    assert spec.predictor.path == str((tmp_path / "no_such_predictor").resolve())
    with pytest.raises(ConfigError, match=r"predictor\.path"):
        World(spec).check_predictor()
