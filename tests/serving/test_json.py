"""The fast paths of the strict JSON reader give what the checking parser gives: numbers parsed
without hooks only when no hook could fire, repeated keys found by counting colons, and the
garbage collector paused and restored around a large parse."""

from __future__ import annotations

import gc
import json
from typing import Any

import pytest

from batchrl_mtf.errors import ExportError
from batchrl_mtf.serving import WeightTable
from batchrl_mtf.serving._json import (
    _hooks_needed,
    count_members,
    gc_paused,
    loads_counted,
    loads_strict,
)
from tests.serving.test_table import GOOD, doc_example

# Text that sends the reader to the checking parse, with what that parse says (None: accepted).
NUMBERS = [
    ("33-digit integer part", '{"a": ' + "1" * 33 + ".5}", None),
    ("100 characters", '{"a": 1.' + "2" * 98 + "}", None),
    ("101 characters", '{"a": 1.' + "2" * 99 + "}", "101 characters"),
    ("long digits in a string", '{"a": "' + "7" * 200 + '"}', None),
    ("exponent 308", '{"a": 1.5e308}', None),
    ("exponent +308", '{"a": 1E+308}', None),
    ("overflow", '{"a": 1e309}', "overflows a double"),
    ("overflow, zeros", '{"a": 2e0000400}', "overflows a double"),
    ("exponent in a string", '{"a": "e1000"}', None),
]


@pytest.mark.parametrize(("text", "error"), [c[1:] for c in NUMBERS], ids=[c[0] for c in NUMBERS])
def test_numbers_that_need_the_hooks_are_checked(text: str, error: str | None) -> None:
    assert _hooks_needed(text.encode())
    if error is None:
        assert loads_strict(text, "s") == json.loads(text)
        assert loads_counted(text, "s") == (json.loads(text), None)
    else:
        for load in (loads_strict, loads_counted):
            with pytest.raises(ExportError, match=f"s: not valid JSON .*{error}"):
                load(text, "s")


def test_plain_numbers_skip_the_hooks_with_the_same_values() -> None:
    text = '{"a": [0.30000000000000004, -1.5e-300, 1e-400, 12, -0.0, 2.5E+99, 123456789012345678]}'
    assert not _hooks_needed(text.encode())
    doc = loads_strict(text, "s")
    assert doc == json.loads(text, parse_float=float, parse_int=int)
    assert [type(v) for v in doc["a"]] == [float, float, float, int, float, float, int]  # type: ignore[index]


def test_colon_count_proves_keys_are_not_repeated() -> None:
    text = '{"a:b": {"x": "12:30", "y": [1, {"z": null}]}, "c": "::"}'
    doc, colons = loads_counted(text, "s")
    members, in_strings = count_members(doc)
    assert (members, in_strings) == (5, 4) and colons == members + in_strings
    repeated = '{"a": 1, "b": {"x": "1:2", "x": 3}}'
    doc, colons = loads_counted(repeated, "s")
    assert colons is not None and colons != sum(count_members(doc))
    with pytest.raises(ExportError, match="duplicate key 'x'"):
        loads_strict(repeated, "s")


def test_an_escaped_colon_is_parsed_with_every_check() -> None:
    assert loads_counted('{"a\\u003a": 1, "b": 2}', "s") == ({"a:": 1, "b": 2}, None)
    for load in (loads_counted, loads_strict):  # counting could not see that they are one key
        with pytest.raises(ExportError, match="duplicate key 'a:'"):
            load('{"a\\u003a": 1, "a:": 2}', "s")


def _table_text(edit: Any) -> str:
    doc = doc_example()
    edit(doc)
    return json.dumps(doc, indent=2)


REPEATED = [
    ("row weight", lambda t: t.replace('"w_like": 0.9', '"w_like": 0.9, "w_like": 1.0', 1)),
    ("row bound", lambda t: t.replace('"session_depth": [', '"session_depth": [0, 1], "session_depth": [', 1)),
    ("row field", lambda t: t.replace('"support": 5231', '"support": 5231, "support": 1', 1)),
    ("top level", lambda t: t.replace('"rows": [', '"meta": {}, "rows": [', 1)),
    ("meta with colons", lambda t: t.replace('"policy": "runs/cql"', '"policy": "a:b", "policy": "c:d"', 1)),
]  # fmt: skip


@pytest.mark.parametrize("edit", [c[1] for c in REPEATED], ids=[c[0] for c in REPEATED])
def test_repeated_keys_in_a_table_are_refused_as_by_the_strict_parser(edit: Any) -> None:
    text = edit(GOOD)
    assert text != GOOD
    with pytest.raises(ExportError, match=r"^<table>: not valid JSON \(duplicate key"):
        WeightTable.loads(text)
    with pytest.raises(ExportError, match=r"^t: not valid JSON \(duplicate key"):
        WeightTable.loads(text.encode(), source="t")


def test_a_repeated_key_is_reported_before_an_invalid_value() -> None:
    text = GOOD.replace('"w_click": 1.1', '"w_click": 99.0, "w_click": 98.0', 1)
    with pytest.raises(ExportError, match="duplicate key 'w_click'"):
        WeightTable.loads(text)
    with pytest.raises(ExportError, match=r"rows\[0\]\.weights\.w_click: expected a weight within"):
        WeightTable.loads(GOOD.replace('"w_click": 1.1', '"w_click": 99.0', 1))


def test_task_and_key_names_with_colons_load() -> None:
    def rename(doc: dict[str, Any]) -> None:
        doc["tasks"][0] = "cl:ick"
        doc["fusion"]["beta"]["cl:ick"] = doc["fusion"]["beta"].pop("click")
        for part in (doc["default"], doc["action_bounds"], doc["exploration"]["sigma"]):
            part["w_cl:ick"] = part.pop("w_click")
        doc["keys"][0]["name"] = "u:activity"
        for row in doc["rows"]:
            row["weights"]["w_cl:ick"] = row["weights"].pop("w_click")
            row["bounds"]["u:activity"] = row["bounds"].pop("u_activity")

    text = _table_text(rename)
    table = WeightTable.loads(text)
    assert table.tasks[0] == "cl:ick" and table.key_names[0] == "u:activity"
    assert table == WeightTable.from_dict(json.loads(text))


def test_gc_paused_restores_the_collector() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ExportError), gc_paused():
        loads_strict("[", "s")
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # left as found
    finally:
        gc.enable()
