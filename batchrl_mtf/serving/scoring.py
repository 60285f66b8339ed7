"""The scorer contract shared by every port: one JSON request line in, one JSON response line out.

``batchrl-mtf score TABLE.json < requests.jsonl > responses.jsonl`` (and ``serving/bin/score-java``,
``serving/bin/score-cpp``) read requests like::

    {"features": {"u_activity": 0.3, "session_depth": 2}, "preds": {"click": [0.1, 0.5], ...}}

and write responses like::

    {"weights": {"w_click": 1.1, ...}, "scores": [-3.2, -1.9], "order": [1, 0]}

* ``features``: every table key must be present (extra features are ignored); ``null`` is a missing
  value (the default weights apply, as for NaN).
* ``preds``: exactly the table's tasks, each a list of the same length n >= 0; ``null`` is a missing
  prediction (the NaN policy of :mod:`batchrl_mtf.serving.fusion`: the score is ``null`` and the
  candidate ranks last).
* ``draws`` (optional, tables with an exploration block only): random draws for
  :meth:`~batchrl_mtf.serving.WeightTable.sample_from_draws`; the weights are then the sampled ones
  and the response adds ``behavior_logp``.

An invalid request line gets ``{"error": "line N: ..."}`` (so responses stay line-aligned with the
requests); the program then exits 2 after the last line. An invalid table exits 2 at once, with
one line on stderr and nothing on stdout.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import IO

import numpy as np

from batchrl_mtf.errors import ExportError
from batchrl_mtf.serving._json import loads_strict
from batchrl_mtf.serving._types import show
from batchrl_mtf.serving.fusion import fuse
from batchrl_mtf.serving.table import WeightTable

__all__ = ["ScoreSummary", "format_response", "score_lines", "score_request"]

_REQUEST_FIELDS = frozenset({"features", "preds", "draws"})


@dataclass(frozen=True)
class ScoreSummary:
    """What :func:`score_lines` did.

    Attributes:
        n_requests: Request lines read (blank lines are skipped and not counted).
        n_errors: Lines answered with an ``error`` response.
        first_error: The first error message, ``""`` when none.
    """

    n_requests: int
    n_errors: int
    first_error: str


def score_request(table: WeightTable, request: object) -> dict[str, object]:
    """Score one parsed request (see the module docstring for the contract).

    Returns:
        ``{"weights": {w_<task>: float}, "scores": [float | None], "order": [int]}`` plus
        ``"behavior_logp"`` when the request has ``draws``.

    Raises:
        ExportError: The request does not follow the contract (the message names the field).
    """
    if not isinstance(request, Mapping):
        raise ExportError(f"request: expected a JSON object, found {show(request)}")
    extra = sorted(set(request) - _REQUEST_FIELDS)
    if extra:
        raise ExportError(f"request: unknown field(s) {show(extra)}")
    feats = request.get("features")
    if not isinstance(feats, Mapping):
        raise ExportError(f"features: expected an object, found {show(feats)}")
    state: dict[str, float] = {}
    for name in table.key_names:
        if name not in feats:
            raise ExportError(f"features: missing key feature {name!r}")
        v = feats[name]
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ExportError(f"features.{name}: expected a number or null, found {show(v)}")
        state[name] = math.nan if v is None else float(v)
    preds_raw = request.get("preds")
    if not isinstance(preds_raw, Mapping):
        raise ExportError(f"preds: expected an object, found {show(preds_raw)}")
    if set(preds_raw) != set(table.tasks):
        raise ExportError(
            f"preds: expected exactly the tasks {list(table.tasks)}; missing "
            f"{[t for t in table.tasks if t not in preds_raw]}, extra "
            f"{show(sorted(set(preds_raw) - set(table.tasks)))}"
        )
    columns = []
    n = -1
    for t in table.tasks:
        col = preds_raw[t]
        if not isinstance(col, list):
            raise ExportError(f"preds.{t}: expected a list, found {show(col)}")
        if n >= 0 and len(col) != n:
            raise ExportError(
                f"preds.{t}: expected {n} predictions (as the first task), found {len(col)}"
            )
        n = len(col)
        for i, v in enumerate(col):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ExportError(f"preds.{t}[{i}]: expected a number or null, found {show(v)}")
        columns.append([math.nan if v is None else v for v in col])
    preds = np.array(columns, dtype=np.float64).T.reshape(max(n, 0), len(table.tasks))
    if table.fusion.formula == "logsum":
        bad = ~(np.isnan(preds) | ((preds >= 0.0) & (preds <= 1.0)))
        expected = "a probability in [0, 1] or null"
    else:
        bad = ~(np.isnan(preds) | np.isfinite(preds))
        expected = "a finite number or null"
    if bad.any():
        i, k = (int(x) for x in np.argwhere(bad)[0])
        raise ExportError(
            f"preds.{table.tasks[k]}[{i}]: expected {expected}, found {preds[i, k]!r}"
        )
    out: dict[str, object] = {}
    if "draws" in request:
        draws = request["draws"]
        if table.exploration is None:
            raise ExportError("draws: the table has no exploration block to sample from")
        if not isinstance(draws, list) or not all(
            isinstance(d, (int, float)) and not isinstance(d, bool) for d in draws
        ):
            raise ExportError(f"draws: expected a list of numbers, found {show(draws)}")
        w, logp = table.sample_from_draws(state, draws)
        out["behavior_logp"] = logp
    else:
        w = table.lookup(state)[0]
    scores = fuse(preds, w, table.fusion.formula, table.fusion.beta)
    order = np.argsort(-scores, kind="stable")
    out["weights"] = dict(zip(table.weight_names, w.tolist(), strict=True))
    out["scores"] = [None if math.isnan(s) else s for s in scores.tolist()]
    out["order"] = order.tolist()
    return out


def format_response(response: Mapping[str, object]) -> str:
    """One response line: compact JSON with keys in a fixed order, shortest round-trip floats."""
    return json.dumps(response, separators=(",", ":"), allow_nan=False)


def score_lines(table: WeightTable, lines: Iterable[str | bytes], out: IO[str]) -> ScoreSummary:
    """Answer every non-blank request line with one response line on ``out``.

    Args:
        table: A loaded table.
        lines: Request lines (JSON objects; bytes must be UTF-8).
        out: Where the response lines go.

    Returns:
        The counts; the caller decides the exit status (2 when ``n_errors > 0``).
    """
    n = errors = 0
    first = ""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        n += 1
        try:
            response = score_request(table, loads_strict(line, f"line {number}"))
        except ExportError as exc:
            msg = str(exc) if str(exc).startswith(f"line {number}:") else f"line {number}: {exc}"
            response = {"error": msg}
            errors += 1
            first = first or msg
        out.write(format_response(response) + "\n")
    return ScoreSummary(n_requests=n, n_errors=errors, first_error=first)
