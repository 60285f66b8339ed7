"""Log schema v1: reading impression logs and discovering their columns.

One row per item shown (an impression); the full contract is documented in ``logs/README.md``.
This module is the one place that reads logs: :func:`read_logs` reads Parquet files, directories
of Parquet files and CSV files into one :class:`pandas.DataFrame`, normalises id and time types
(:func:`normalise_ts`), and :func:`discover_columns` tells which columns are tasks, weights,
feedback, user features and unknown. :func:`read_table` reads one such table as stored (the
predictors' impressions and item tables, which need not be schema v1). Row-level rules live in :mod:`batchrl_mtf.logs.validate`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from batchrl_mtf.errors import Problem, SchemaError

__all__ = [
    "FILE_COLUMN",
    "ID_COLUMNS",
    "KNOWN_FEEDBACK",
    "RESERVED",
    "SCHEMA_VERSION",
    "LogColumns",
    "LogFrame",
    "discover_columns",
    "missing_required",
    "normalise_ts",
    "read_logs",
    "read_table",
]

SCHEMA_VERSION = 1
ID_COLUMNS = ("user_id", "session_id", "request_id", "item_id")
REQUIRED = ("user_id", "session_id", "request_id", "ts", "item_id", "position")
RESERVED = frozenset((*ID_COLUMNS, "ts", "position", "behavior_logp", "duration"))
KNOWN_FEEDBACK = (
    "click",
    "longview",
    "like",
    "follow",
    "comment",
    "share",
    "watch_time",
    "collect",
    "forward",
    "hate",
    "cart",
    "buy",
)
FILE_COLUMN = "__file"
"""Name of the internal column holding the index of the input file each row came from."""


@dataclass(frozen=True)
class LogColumns:
    """What the columns of a log are.

    Attributes:
        tasks: Task names, from the ``pred_<task>`` columns, in log column order.
        user_features: ``u_*`` columns, in log column order.
        feedback: Numeric feedback columns (labels): task labels present in the log, known label
            names, and any column named by the reward or the feature config.
        has_session_id: Whether a ``session_id`` column exists.
        has_behavior_logp: Whether a ``behavior_logp`` column exists.
        has_duration: Whether a ``duration`` column exists.
        unknown: Columns that are none of the above; kept out of the dataset and reported.
    """

    tasks: tuple[str, ...]
    user_features: tuple[str, ...]
    feedback: tuple[str, ...]
    has_session_id: bool
    has_behavior_logp: bool
    has_duration: bool
    unknown: tuple[str, ...]

    @property
    def pred_columns(self) -> tuple[str, ...]:
        """``pred_<task>`` for every task."""
        return tuple(f"pred_{t}" for t in self.tasks)

    @property
    def weight_columns(self) -> tuple[str, ...]:
        """``w_<task>`` for every task (the logged action)."""
        return tuple(f"w_{t}" for t in self.tasks)


@dataclass(frozen=True)
class LogFrame:
    """Logs read into memory.

    Attributes:
        frame: All rows, in input order; ``ts`` as int64 epoch milliseconds; an internal
            ``__file`` column (int16) holds the index into ``files``.
        files: The input files, in the order read (a directory expands to its Parquet files).
    """

    frame: pd.DataFrame
    files: tuple[str, ...]

    @property
    def n_rows(self) -> int:
        """Number of rows read."""
        return len(self.frame)


def _expand(paths: Sequence[str | Path]) -> list[Path]:
    if not paths:
        raise SchemaError(
            "no log files given; expected one or more Parquet/CSV files or directories"
        )
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*.parquet") if f.is_file())
            if not files:
                raise SchemaError(f"{p}: directory holds no *.parquet files")
            out.extend(files)
        elif p.is_file():
            out.append(p)
        else:
            raise SchemaError(f"{p}: no such file or directory")
    return out


def _read_one(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            # a few columns at a time: peak memory is the frame plus a few Arrow columns, not
            # twice the frame (Arrow's freed buffers are not always returned to the system),
            # while Arrow still decodes the columns of a group in parallel
            pfile = pq.ParquetFile(path)
            names = [n for n in pfile.schema_arrow.names if not n.startswith("__index_level_")]
            columns = {}
            for i in range(0, len(names), 4):
                table = pfile.read(columns=names[i : i + 4])
                for j, name in enumerate(table.column_names):
                    columns[name] = table.column(j).to_pandas()
                del table
            return pd.DataFrame(columns, copy=False)
        if suffix in (".csv", ".tsv") or path.name.endswith((".csv.gz", ".tsv.gz")):
            sep = "\t" if ".tsv" in path.name else ","
            return pd.read_csv(path, sep=sep, low_memory=False)
    except (
        pa.ArrowInvalid,
        OSError,
        pd.errors.ParserError,
        pd.errors.EmptyDataError,
        UnicodeDecodeError,
    ) as exc:
        raise SchemaError(f"{path}: cannot read as {suffix.lstrip('.')} ({exc})") from None
    raise SchemaError(f"{path}: unsupported file type {suffix!r}; expected .parquet or .csv")


def normalise_ts(series: pd.Series, source: str) -> pd.Series:
    """Return ``ts`` as int64 epoch milliseconds, missing values as the int64 minimum.

    Accepts integers (epoch ms), integral floats, timestamps (UTC when tz-aware) and text that
    parses as a timestamp.

    Raises:
        SchemaError: Fractional numbers, unparseable text or another dtype (names ``source``).
    """
    if pd.api.types.is_datetime64_any_dtype(series):
        s = series
        if getattr(s.dt, "tz", None) is not None:
            s = s.dt.tz_convert("UTC").dt.tz_localize(None)
        ms = s.astype("datetime64[ms]").astype("int64")
        return ms.where(series.notna(), other=np.iinfo(np.int64).min)
    if pd.api.types.is_integer_dtype(series):
        return series.astype("int64")
    if pd.api.types.is_float_dtype(series):
        vals = series.to_numpy(dtype=np.float64)
        finite = np.isfinite(vals)
        if np.any(finite & (vals != np.floor(np.where(finite, vals, 0)))):
            raise SchemaError(
                f"{source}: column 'ts': expected int64 epoch milliseconds or timestamps; "
                "found fractional numbers",
                (),
            )
        out = np.where(finite, vals, np.iinfo(np.int64).min).astype(np.int64)
        return pd.Series(out, index=series.index)
    if series.dtype == object or pd.api.types.is_string_dtype(series):
        parsed = pd.to_datetime(series, errors="coerce", utc=True)
        bad = parsed.isna() & series.notna()
        if bad.any():
            example = series[bad].iloc[0]
            raise SchemaError(
                f"{source}: column 'ts': expected int64 epoch milliseconds or timestamps; "
                f"found {example!r}"
            )
        return normalise_ts(parsed, source)
    raise SchemaError(
        f"{source}: column 'ts': expected int64 epoch milliseconds; found {series.dtype}"
    )


def _id_kind(series: pd.Series) -> str:
    if pd.api.types.is_integer_dtype(series):
        return "int"
    if pd.api.types.is_float_dtype(series):
        vals = series.dropna().to_numpy()
        # integers only when every value fits int64 (inf and 1e39 are integral floats too)
        fits = np.isfinite(vals) & (np.abs(vals) < 2.0**63) & (vals == np.floor(vals))
        return "int" if np.all(fits) else "str"
    return "str"


def read_logs(paths: Sequence[str | Path]) -> LogFrame:
    """Read impression logs.

    Args:
        paths: Parquet files, directories of Parquet files, or CSV files. All must share one column
            set (up to order).

    Returns:
        The rows of every file, concatenated in the order given, ids normalised to one type per
        column (int64 when every file has integers, otherwise strings) and ``ts`` to int64 ms.

    Raises:
        SchemaError: A path is missing or unreadable, files disagree on columns, or ``ts`` cannot be
            read as a time.
    """
    files = _expand(paths)
    frames: list[pd.DataFrame] = []
    first_cols: list[str] | None = None
    for i, f in enumerate(files):
        df = _read_one(f)
        if first_cols is None:
            first_cols = list(df.columns)
        elif set(df.columns) != set(first_cols):
            extra = sorted(set(df.columns) - set(first_cols))
            missing = sorted(set(first_cols) - set(df.columns))
            raise SchemaError(
                f"{f}: columns differ from {files[0]}: expected the same column set; found "
                f"extra {extra} and missing {missing}"
            )
        else:
            df = df[first_cols]
        if "ts" in df.columns:
            df["ts"] = normalise_ts(df["ts"], str(f))
        df[FILE_COLUMN] = np.int16(i)
        frames.append(df)
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    for col in ID_COLUMNS:
        if col not in frame.columns:
            continue
        kinds = {_id_kind(df[col]) for df in frames if col in df.columns}
        s = frame[col]
        if kinds == {"int"} and s.notna().all():
            frame[col] = s.astype("int64")
        elif kinds == {"int"}:
            frame[col] = s.astype("Int64")
        else:
            frame[col] = s.astype("string")
    return LogFrame(frame=frame.reset_index(drop=True), files=tuple(str(f) for f in files))


def read_table(path: str | Path) -> pd.DataFrame:
    """Read one table as stored: a Parquet file, a directory of Parquet files (concatenated in
    name order) or a CSV/TSV file, without normalising ids or ``ts``.

    Raises:
        SchemaError: The path is missing or unreadable, or has an unsupported suffix.
    """
    frames = [_read_one(f) for f in _expand([path])]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def discover_columns(
    frame: pd.DataFrame, extra_feedback: Iterable[str] = (), source: str = "logs"
) -> LogColumns:
    """Classify the columns of a log.

    Args:
        frame: The logs.
        extra_feedback: Columns that must be treated as feedback (those the reward and the feature
            config name).
        source: Name of the input used in error messages.

    Raises:
        SchemaError: With one :class:`~batchrl_mtf.errors.Problem` per missing required column,
            ``pred_*`` without ``w_*`` (or the reverse), and non-numeric numeric columns.
    """
    cols = [c for c in frame.columns if c != FILE_COLUMN]
    problems: list[Problem] = []
    preds = [c[5:] for c in cols if c.startswith("pred_")]
    weights = [c[2:] for c in cols if c.startswith("w_")]
    for t in preds:
        if t not in weights:
            problems.append(
                Problem("task_mismatch", source, f"pred_{t}", f"a matching column 'w_{t}'", "none")
            )
    for t in weights:
        if t not in preds:
            problems.append(
                Problem("task_mismatch", source, f"w_{t}", f"a matching column 'pred_{t}'", "none")
            )
    if not preds and not weights:
        problems.append(
            Problem(
                "task_mismatch", source, "pred_*", "at least one pred_<task>/w_<task> pair", "none"
            )
        )
    extra = [c for c in extra_feedback if c]
    feedback: list[str] = []
    unknown: list[str] = []
    for c in cols:
        if c in RESERVED or c.startswith(("pred_", "w_", "u_")):
            continue
        if c in preds or c in KNOWN_FEEDBACK or c in extra:
            feedback.append(c)
        else:
            unknown.append(c)
    numeric = (
        [f"pred_{t}" for t in preds]
        + [f"w_{t}" for t in weights]
        + feedback
        + [c for c in cols if c.startswith("u_")]
        + [c for c in ("position", "behavior_logp", "duration") if c in cols]
    )
    for c in numeric:
        dtype = frame[c].dtype
        if not (pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)):
            if pd.api.types.is_bool_dtype(dtype) and c in feedback:
                continue
            sample = frame[c].dropna()
            found = f"{dtype} values such as {sample.iloc[0]!r}" if len(sample) else f"{dtype}"
            problems.append(Problem("column_type", source, c, "numeric values", found))
    if problems:
        raise SchemaError(
            f"{source}: {len(problems)} column problem(s) in the logs", tuple(problems)
        )
    return LogColumns(
        tasks=tuple(t for t in preds),
        user_features=tuple(c for c in cols if c.startswith("u_")),
        feedback=tuple(feedback),
        has_session_id="session_id" in cols,
        has_behavior_logp="behavior_logp" in cols,
        has_duration="duration" in cols,
        unknown=tuple(unknown),
    )


def missing_required(frame: pd.DataFrame, session_gap: bool, source: str) -> tuple[Problem, ...]:
    """Problems for required columns absent from ``frame`` (``session_id`` is optional with a gap)."""
    required = [c for c in REQUIRED if not (c == "session_id" and session_gap)]
    return tuple(
        Problem(
            "missing_column",
            source,
            c,
            "a required column of log schema v1"
            + (" (or pass --session-gap SECONDS)" if c == "session_id" else ""),
            "no such column",
        )
        for c in required
        if c not in frame.columns
    )
