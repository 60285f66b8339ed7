"""Comparing recorded outputs with fresh ones: exactly, or up to float rounding across CPUs.

Used by the golden run (tests/test_golden.py) and the serving conformance suite
(tests/serving/test_conformance.py): both record outputs on one machine, and another CPU (or
numpy/torch build) rounds the last bits of a float differently.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["differences"]


def differences(expected: Any, actual: Any, where: str = "", rtol: float = 0.0) -> list[str]:
    """Every place where ``actual`` does not reproduce ``expected`` (extra keys are fine, and
    keys starting with ``_`` are the recording's notes, not outputs).

    With ``rtol = 0`` everything must be equal (the recording machine). With ``rtol > 0``
    (another machine) floats may differ by ``rtol`` relative (``1e-9`` absolute near 0) and file
    digests (``sha256:...``, the bytes of files holding floats) are not compared; everything else
    (counts, names, integers, rankings) must still be equal.
    """
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, found {type(actual).__name__}"]
        out: list[str] = []
        for key, value in expected.items():
            if key.startswith("_"):
                continue
            if key not in actual:
                out.append(f"{where}.{key}: missing")
            else:
                out.extend(differences(value, actual[key], f"{where}.{key}", rtol))
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{where}: expected a list of {len(expected)}, found {actual!r:.80}"]
        out = []
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            out.extend(differences(e, a, f"{where}[{i}]", rtol))
        return out
    if rtol > 0 and isinstance(expected, str) and expected.startswith("sha256:"):
        return []
    floats = isinstance(expected, float) and isinstance(actual, float)
    if rtol > 0 and floats and math.isclose(expected, actual, rel_tol=rtol, abs_tol=1e-9):
        return []
    return [] if expected == actual else [f"{where}: expected {expected!r}, found {actual!r}"]
