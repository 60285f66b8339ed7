"""Behaviour is unchanged by refactors: the golden run gives the recorded bytes and numbers.

``tests/golden/golden.json`` was recorded with ``python tests/golden/run.py --record`` before the
architecture refactor (issue 14). Keys added since (contracts grow additively) are allowed;
every recorded value must be reproduced exactly. Re-recorded on 2026-12-02 on a new machine
(AMD EPYC, numpy 2.4.6), where the landed code reproduced every recorded number to within
1.3e-16 relative (one unit in the last place) and so not the simulated logs' hash: every value
was compared with the previous recording before it was replaced.
Re-recorded again on 2026-12-02 (second machine, Intel Xeon) for the same reason: the landed code
(no library change since the previous recording) differed only in floats, by at most 4.1e-4
relative (a WDR interval end, through the trained FQE model) and in the simulated logs' hash;
the conformance suite's floats by at most 1.0e-13. Byte equality holds per machine, not across
CPUs; a tolerance-based golden comparison is open debt.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

GOLDEN_DIR = Path(__file__).with_name("golden")


def _load_runner() -> Any:
    spec = importlib.util.spec_from_file_location("golden_run", GOLDEN_DIR / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _differences(expected: Any, actual: Any, where: str = "") -> list[str]:
    """Every place where ``actual`` does not reproduce ``expected`` (extra keys are fine)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, found {type(actual).__name__}"]
        out: list[str] = []
        for key, value in expected.items():
            if key not in actual:
                out.append(f"{where}.{key}: missing")
            else:
                out.extend(_differences(value, actual[key], f"{where}.{key}"))
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{where}: expected a list of {len(expected)}, found {actual!r:.80}"]
        out = []
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            out.extend(_differences(e, a, f"{where}[{i}]"))
        return out
    return [] if expected == actual else [f"{where}: expected {expected!r}, found {actual!r}"]


def test_differences_catch_a_changed_number() -> None:
    assert _differences({"a": [1.0, {"b": 2}]}, {"a": [1.0, {"b": 2, "new": 1}], "x": 0}) == []
    assert _differences({"a": [1.0, {"b": 2}]}, {"a": [1.0, {"b": 2.0000001}]}) != []
    assert _differences({"a": 1}, {}) == [".a: missing"]


def test_golden_run_reproduces_the_recorded_outputs(tmp_path: Path) -> None:
    runner = _load_runner()
    expected = json.loads((GOLDEN_DIR / "golden.json").read_text())
    for dotted in runner.CHANGED_DEFAULTS:
        runner._drop(expected, dotted)
    actual = runner.run(tmp_path)
    problems = _differences(expected, actual)
    assert not problems, "\n".join(problems[:20])
