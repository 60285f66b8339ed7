"""Private reading and checking of impression logs for the predictor stage.

Reads log schema v1 from a Parquet file, a directory of Parquet files, or a CSV file, and checks
only what the predictor needs (ids, ``ts``, the task labels). Full schema validation lives
elsewhere; this module stays independent of it on purpose.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from batchrl_mtf.errors import PredictorError, Problem, SchemaError

__all__ = ["check_training_columns", "read_table", "ts_to_ms"]

logger = logging.getLogger(__name__)

_PARQUET = (".parquet", ".pq")


def read_table(path: str | Path, what: str = "logs") -> pd.DataFrame:
    """Read a Parquet file, a directory of Parquet files, or a CSV file.

    Args:
        path: The file or directory.
        what: What the file is (``"logs"``, ``"item table"``), for error messages.

    Raises:
        PredictorError: When ``path`` does not exist.
        SchemaError: When it cannot be read, or has an unsupported suffix.
    """
    p = Path(path)
    if not p.exists():
        raise PredictorError(f"{p}: no such file or directory (expected {what})")
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in _PARQUET)
        if not files:
            raise SchemaError(f"{p}: directory holds no .parquet files (expected {what})")
        frames = [_read_one(f, what) for f in files]
        return pd.concat(frames, ignore_index=True)
    return _read_one(p, what)


def _read_one(p: Path, what: str) -> pd.DataFrame:
    suffix = p.suffix.lower()
    try:
        if suffix in _PARQUET:
            return pd.read_parquet(p)
        if suffix == ".csv":
            return pd.read_csv(p)
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        kind = "Parquet" if suffix in _PARQUET else "CSV"
        raise SchemaError(f"{p}: cannot read {what} as {kind}: {exc}") from None
    raise SchemaError(
        f"{p}: unsupported {what} file type {suffix or '(none)'!r}; expected .parquet, .csv or a directory"
    )


def ts_to_ms(ts: pd.Series, file: str) -> np.ndarray:
    """Return ``ts`` as int64 epoch milliseconds, shape (n,).

    Raises:
        SchemaError: When ``ts`` is neither a timestamp nor numeric.
    """
    if pd.api.types.is_datetime64_any_dtype(ts):
        values = ts
        if getattr(values.dt, "tz", None) is not None:
            values = values.dt.tz_convert("UTC").dt.tz_localize(None)
        return np.asarray(values.astype("datetime64[ms]").astype("int64"), dtype=np.int64)
    if pd.api.types.is_numeric_dtype(ts) and not pd.api.types.is_bool_dtype(ts):
        if ts.isna().any():
            raise SchemaError(f"{file}: column 'ts' has {int(ts.isna().sum())} missing value(s)")
        return np.asarray(ts, dtype=np.int64)
    raise SchemaError(
        f"{file}: column 'ts': expected int64 epoch ms or a timestamp, found dtype {ts.dtype}"
    )


def check_training_columns(
    df: pd.DataFrame, tasks: Sequence[str], regression_tasks: Sequence[str], file: str
) -> None:
    """Check that ``df`` has what training needs: ids, ``ts`` and clean task labels.

    Args:
        df: The logs.
        tasks: Task label columns.
        regression_tasks: Tasks that are regression targets (numeric >= 0); the others must be 0/1.
        file: The logs' file name, for messages.

    Raises:
        SchemaError: Listing every problem found, each naming the file and column.
    """
    problems: list[Problem] = []
    for col in ("user_id", "item_id", "ts"):
        if col not in df.columns:
            problems.append(
                Problem("required_column", file, col, "the column to exist", "it is missing")
            )
    for task in tasks:
        if task not in df.columns:
            problems.append(
                Problem(
                    "task_column", file, task, f"a label column for task '{task}'", "it is missing"
                )
            )
            continue
        labels = df[task]
        if not pd.api.types.is_numeric_dtype(labels):
            problems.append(
                Problem("label_type", file, task, "numeric labels", f"dtype {labels.dtype}")
            )
            continue
        values = labels.to_numpy(dtype=np.float64)
        n_nan = int(np.isnan(values).sum())
        if n_nan:
            problems.append(
                Problem(
                    "label_missing",
                    file,
                    task,
                    "no missing labels",
                    f"{n_nan} missing",
                    n_rows=n_nan,
                )
            )
            continue
        if task in regression_tasks:
            bad = values < 0
            if bad.any():
                problems.append(
                    Problem(
                        "label_range",
                        file,
                        task,
                        "regression labels >= 0",
                        f"min {values.min():g}",
                        n_rows=int(bad.sum()),
                    )
                )
        else:
            bad = (values != 0) & (values != 1)
            if bad.any():
                problems.append(
                    Problem(
                        "label_binary",
                        file,
                        task,
                        "binary 0/1 labels (list the task in regression_tasks / --regression otherwise)",
                        f"values such as {values[bad][0]:g}",
                        n_rows=int(bad.sum()),
                    )
                )
    if problems:
        first = problems[0]
        raise SchemaError(
            f"{file}: {len(problems)} problem(s) with the predictor's columns; first: column "
            f"'{first.column}': expected {first.expected}, found {first.found}",
            tuple(problems),
        )
    if len(df) == 0:
        raise SchemaError(f"{file}: the logs have no rows")
    logger.debug("%s: %d rows, columns checked for tasks %s", file, len(df), ", ".join(tasks))
