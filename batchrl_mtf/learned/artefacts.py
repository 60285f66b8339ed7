"""The files ``make-env`` writes beside a learned world's spec, as the runtime reads them.

``responses.json`` (how each feedback column is drawn, and the scale of a distilled ranker), the
item catalogue and the start states (Parquet). The leave model's file is read by
:meth:`batchrl_mtf.learned.leave_model.LeaveModel.from_json`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from batchrl_mtf.errors import ConfigError

__all__ = [
    "RESPONSES_FORMAT",
    "ResponseColumn",
    "need_columns",
    "read_json",
    "read_parquet",
    "read_ranker_scale",
    "read_responses",
]

RESPONSES_FORMAT = "batchrl-mtf-responses@1"


@dataclass(frozen=True)
class ResponseColumn:
    """How one feedback column is drawn from the response model's ``pred_<column>``.

    Attributes:
        name: Feedback column.
        kind: ``"binary"`` (0/1) or ``"watch"`` (seconds, from a regression head).
        given: The binary column it needs (it is 0 where that one is 0; ``""``: none). Then the
            probability is ``min(p / p_given, 1)``, so the marginal stays ``p``.
        log_sd: ``watch`` only: standard deviation of ``log1p(seconds)`` around the model's mean.
    """

    name: str
    kind: str
    given: str = ""
    log_sd: float = 0.0


def read_json(path: str | Path, key: str) -> dict[str, Any]:
    """A JSON artefact named by the spec's ``learned.<key>``, as a JSON object.

    Raises:
        ConfigError: The file is missing, not valid JSON, or not an object.
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"learned.{key}: {p}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError(f"learned.{key}: {p}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"learned.{key}: {p}: expected a JSON object")
    return doc


def read_responses(path: str | Path) -> tuple[ResponseColumn, ...]:
    """Read ``responses.json`` (written by ``make-env``).

    Raises:
        ConfigError: Missing file, wrong format or bad entries.
    """
    p = Path(path)
    doc = read_json(p, "responses")
    if doc.get("format") != RESPONSES_FORMAT:
        raise ConfigError(f"learned.responses: {p}: expected format {RESPONSES_FORMAT!r}")
    out = []
    try:
        for c in doc["columns"]:
            col = ResponseColumn(
                str(c["name"]), str(c["kind"]), str(c.get("given", "")), float(c.get("log_sd", 0))
            )
            if col.kind not in ("binary", "watch"):
                raise ValueError(f"kind {col.kind!r} of {col.name!r}")
            out.append(col)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"learned.responses: {p}: bad column entry ({exc})") from None
    return tuple(out)


def read_ranker_scale(path: str | Path) -> dict[str, float]:
    """The ``ranker_scale`` of ``responses.json``: per task, the scale of a ranker distilled from
    logged ``pred_<task>`` (its regression output ``o`` means ``pred = scale * expm1(o *
    log1p(cap))``); empty for a ranker that predicts probabilities.

    Raises:
        ConfigError: Bad entries (the file itself is checked by :func:`read_responses`).
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError(f"learned.responses: {p}: not valid JSON ({exc})") from None
    raw = doc.get("ranker_scale", {}) if isinstance(doc, dict) else {}
    try:
        out = {str(k): float(v) for k, v in dict(raw).items()}
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"learned.responses: {p}: bad ranker_scale ({exc})") from None
    if not all(math.isfinite(v) and v > 0 for v in out.values()):
        raise ConfigError(f"learned.responses: {p}: ranker_scale values must be > 0")
    return out


def read_parquet(path: str, key: str) -> pd.DataFrame:
    """A Parquet artefact named by the spec's ``learned.<key>``.

    Raises:
        ConfigError: The file is missing or unreadable.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"learned.{key}: {p}: file not found (expected the Parquet file written by make-env)"
        )
    try:
        return pd.read_parquet(p)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise ConfigError(f"learned.{key}: {p}: cannot read Parquet ({exc})") from None


def need_columns(frame: pd.DataFrame, cols: Sequence[str], key: str, path: str) -> None:
    """Raise :class:`ConfigError` unless the artefact ``frame`` has ``cols``."""
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise ConfigError(f"learned.{key}: {path}: missing column(s) {missing}")
