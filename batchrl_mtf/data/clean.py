"""Validated logs and what is kept of them: the row checks, the accounting, the canonical order.

One session is one episode and one request is one step. :func:`check_columns` and
:func:`check_rows` apply schema v1's column and row rules, :func:`account` decides which rows
are kept (sessions with no flagged row) and where every input row, request and session went, and
:func:`kept_rows` puts the kept rows in canonical order (:class:`Prepared`), ready for
:func:`batchrl_mtf.data.transitions.compute_transitions`. Everything is vectorised and works on
any set of complete users (:mod:`batchrl_mtf.data.parts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt
import pandas as pd

from batchrl_mtf.data.config import DatasetConfig
from batchrl_mtf.data.reward import RewardConfig
from batchrl_mtf.errors import ConfigError, Problem, SchemaError
from batchrl_mtf.logs.schema import LogColumns, LogFrame, discover_columns, missing_required
from batchrl_mtf.logs.validate import (
    RULES,
    Codes,
    RowFlags,
    encode,
    validate_rows,
)

__all__ = [
    "Accounting",
    "Checked",
    "Prepared",
    "account",
    "check_columns",
    "check_logs",
    "check_rows",
    "kept_rows",
    "log_source",
    "raise_all_dropped",
    "raise_problems",
]

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Accounting:
    """Where every input row, request and session went.

    ``*_read == *_kept + sum(*_dropped.values())`` holds for rows, requests and sessions; a dropped
    row is attributed to the first rule (in :data:`batchrl_mtf.logs.validate.RULES` order) that flagged
    its session.
    """

    rows_read: int
    rows_kept: int
    rows_dropped: dict[str, int]
    requests_read: int
    requests_kept: int
    requests_dropped: dict[str, int]
    sessions_read: int
    sessions_kept: int
    sessions_dropped: dict[str, int]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "rows": {"read": self.rows_read, "kept": self.rows_kept, "dropped": self.rows_dropped},
            "requests": {
                "read": self.requests_read,
                "kept": self.requests_kept,
                "dropped": self.requests_dropped,
            },
            "sessions": {
                "read": self.sessions_read,
                "kept": self.sessions_kept,
                "dropped": self.sessions_dropped,
            },
        }


def _gather(series: pd.Series, idx: IntArray) -> npt.NDArray[np.generic]:
    """``series`` values at positions ``idx`` as a numpy array."""
    if isinstance(series.dtype, np.dtype):
        return series.to_numpy()[idx]
    # extension dtypes (nullable ints, strings): gather first, so absent NAs do not change dtype
    return series.array.take(idx).to_numpy()


@dataclass(frozen=True)
class Prepared:
    """Validated logs and which of their rows are kept, in canonical order.

    The rows are not copied: :meth:`values` gathers a column of the kept rows (or of some of them)
    on demand, so building per-request arrays touches only one row per request.

    Attributes:
        source: The logs as read (every row, input order).
        order: Positions in ``source`` of the kept rows, sorted by (user, session start, session,
            ts, request, position), shape (n_kept,).
        source_session: Session id of every row of ``source`` (logged or from ``session_gap_s``).
        columns: The classified columns.
        accounting: Rows, requests and sessions read, kept and dropped by reason.
        problems: The problems found (empty when the logs are clean).
        codes: Integer user/session/request codes of the kept rows, in canonical order.
    """

    source: pd.DataFrame
    order: IntArray
    source_session: pd.Series
    columns: LogColumns
    accounting: Accounting
    problems: tuple[Problem, ...]
    codes: Codes

    def values(
        self,
        column: str,
        rows: IntArray | None = None,
        dtype: npt.DTypeLike | None = None,
    ) -> npt.NDArray[np.generic]:
        """A column of the kept rows in canonical order.

        Args:
            column: Column name of ``source``.
            rows: Positions into the canonical order, shape (m,); ``None`` = every kept row.
            dtype: Convert to this dtype (after gathering, so only the gathered rows convert).

        Returns:
            Shape (n_kept,) or (m,).
        """
        idx = self.order if rows is None else self.order[rows]
        out = _gather(self.source[column], idx)
        return out if dtype is None else out.astype(dtype, copy=False)

    def session_ids(self, rows: IntArray) -> npt.NDArray[np.generic]:
        """Session id of some kept rows (positions into the canonical order), shape (m,)."""
        return _gather(self.source_session, self.order[rows])

    def rows_in_input_order(self) -> pd.DataFrame:
        """Every column of the kept rows, in input order (a copy)."""
        return self.source.iloc[np.sort(self.order)]

    @cached_property
    def frame(self) -> pd.DataFrame:
        """The kept rows with the columns the dataset needs, in canonical order (a copy)."""
        cols = self.columns
        needed = [
            "user_id",
            "request_id",
            "ts",
            "position",
            *cols.weight_columns,
            *cols.user_features,
            *cols.feedback,
            *(["behavior_logp"] if cols.has_behavior_logp else []),
        ]
        return self.source[needed].take(self.order).reset_index(drop=True)


def _sessionize(frame: pd.DataFrame, gap_s: float) -> pd.Series:
    """Session ids ``"<user_id>#<k>"`` made by splitting each user's requests at gaps > ``gap_s``."""
    ts = frame["ts"].to_numpy(dtype=np.int64)
    ok = (
        frame["user_id"].notna().to_numpy()
        & (ts != np.iinfo(np.int64).min)
        & frame["request_id"].notna().to_numpy()
    )
    user_codes, _ = pd.factorize(frame["user_id"], sort=True)
    req_codes, _ = pd.factorize(frame["request_id"], sort=True)
    idx = np.flatnonzero(ok)
    order = idx[np.lexsort((req_codes[idx], ts[idx], user_codes[idx]))]
    u, t = user_codes[order], ts[order]
    new_user = np.concatenate([[True], u[1:] != u[:-1]])
    new_session = new_user | np.concatenate([[True], (t[1:] - t[:-1]) > gap_s * 1000.0])
    k = np.cumsum(new_session)
    first_of_user = np.maximum.accumulate(np.where(new_user, k, 0))
    number = k - first_of_user
    users = frame["user_id"].astype("string").to_numpy()[order]
    labels = np.char.add(np.char.add(users.astype(str), "#"), number.astype(str))
    values = np.full(len(frame), None, dtype=object)
    values[order] = labels
    out = pd.Series(values, index=frame.index, dtype="string")
    return out


@dataclass(frozen=True)
class Checked:
    """Logs with their columns classified and every row-level rule applied.

    Attributes:
        columns: The classified columns.
        session: Session id of every row (logged, or made from ``session_gap_s``).
        codes: Integer codes of the ids.
        flags: The problems found and the first rule that flagged each row.
    """

    columns: LogColumns
    session: pd.Series
    codes: Codes
    flags: RowFlags


def check_columns(
    frame: pd.DataFrame, source: str, reward: RewardConfig | None, config: DatasetConfig
) -> LogColumns:
    """Column-level checks: required columns, task pairs, numeric types, reward/feedback columns.

    Only the column names and dtypes of ``frame`` matter (a sample of the logs is enough).

    Raises:
        SchemaError: A required column is missing, ``pred_*``/``w_*`` do not pair up, or a numeric
            column is not numeric (problems no row-level dropping can fix).
        ConfigError: The reward or ``features.feedback`` names a column absent from the logs.
    """
    gap = config.session_gap_s is not None
    missing = missing_required(frame, gap, source)
    if missing:
        raise SchemaError(f"{source}: {len(missing)} required column(s) missing", missing)
    extra = (*(reward.columns() if reward else ()), *config.features.feedback)
    columns = discover_columns(frame, extra, source)
    if reward is not None:
        reward.check_columns(columns.feedback, source)
    unknown_fb = [c for c in config.features.feedback if c not in columns.feedback]
    if unknown_fb:
        raise ConfigError(f"features.feedback names column(s) {unknown_fb} absent from {source}")
    return columns


def check_rows(
    logs: LogFrame,
    columns: LogColumns,
    config: DatasetConfig,
    reward: RewardConfig | None = None,
) -> Checked:
    """Make the sessions (logged or from ``session_gap_s``) and apply every row-level rule.

    Works on any set of complete users (every row of each user, and every row sharing a request
    or a session with them): the flags of a user's rows do not depend on the other users.
    """
    frame = logs.frame
    session = (
        _sessionize(frame, config.session_gap_s)
        if config.session_gap_s is not None
        else frame["session_id"]
    )
    codes = encode(frame, session)
    weights = reward.largest_weights() if reward is not None else None
    flags = validate_rows(frame, columns, logs.files, session, codes, weights)
    return Checked(columns, session, codes, flags)


def log_source(files: Sequence[str]) -> str:
    """How error messages name the input: the file, or ``"<n> log files"``."""
    return files[0] if len(files) == 1 else f"{len(files)} log files"


def check_logs(logs: LogFrame, reward: RewardConfig | None, config: DatasetConfig) -> Checked:
    """Classify the columns and apply every validation rule, without dropping anything.

    Raises:
        SchemaError: A required column is missing, ``pred_*``/``w_*`` do not pair up, or a numeric
            column is not numeric (problems no row-level dropping can fix).
        ConfigError: The reward or ``features.feedback`` names a column absent from the logs.
    """
    columns = check_columns(logs.frame, log_source(logs.files), reward, config)
    return check_rows(logs, columns, config, reward)


def raise_problems(problems: Sequence[Problem]) -> None:
    """The error of ``on_error="fail"`` when the logs have problems."""
    raise SchemaError(
        f"{len(problems)} problem(s) in the logs; nothing was written "
        "(use --on-error drop-session to drop the affected sessions)",
        tuple(problems),
    )


def raise_all_dropped(source: str, problems: Sequence[Problem]) -> None:
    """The error when no session is left."""
    raise SchemaError(
        f"{source}: every session was dropped; nothing left to build a dataset from",
        tuple(problems),
    )


def kept_rows(
    logs: LogFrame, checked: Checked, keep: BoolArrayT, accounting: Accounting
) -> Prepared:
    """The kept rows, in canonical order (positions into the logs; nothing is copied)."""
    codes = checked.codes
    kept_idx = np.flatnonzero(keep)
    order = kept_idx[_canonical_order(logs.frame, codes, kept_idx)]
    return Prepared(
        source=logs.frame,
        order=order,
        source_session=checked.session,
        columns=checked.columns,
        accounting=accounting,
        problems=checked.flags.problems,
        codes=Codes(
            codes.user[order],
            codes.session[order],
            codes.request[order],
            codes.n_users,
            codes.n_sessions,
            codes.n_requests,
        ),
    )


def _count_by_reason(
    codes: IntArray, n: int, reason: npt.NDArray[np.int8]
) -> tuple[int, dict[str, int], BoolArrayT]:
    """Distinct non-null codes, and how many end up dropped per reason (min reason per code)."""
    valid = codes >= 0
    worst = np.full(n, np.iinfo(np.int8).max, dtype=np.int16)
    r = np.where(reason >= 0, reason, np.iinfo(np.int8).max).astype(np.int16)
    np.minimum.at(worst, codes[valid], r[valid])
    present = np.zeros(n, dtype=bool)
    present[codes[valid]] = True
    dropped: dict[str, int] = {}
    for i, rule in enumerate(RULES):
        c = int(np.count_nonzero(present & (worst == i)))
        if c:
            dropped[rule] = c
    return int(present.sum()), dropped, present & (worst == np.iinfo(np.int8).max)


BoolArrayT = npt.NDArray[np.bool_]


def _spread(r: npt.NDArray[np.int16], codes: IntArray, n: int) -> npt.NDArray[np.int16]:
    """Every row of a group (non-null ``codes``) takes the group's smallest reason."""
    valid = codes >= 0
    if not valid.any():
        return r
    worst = np.full(n, np.iinfo(np.int8).max, dtype=np.int16)
    np.minimum.at(worst, codes[valid], r[valid])
    return np.where(valid, worst[np.where(valid, codes, 0)], r)


def account(codes: Codes, reason: npt.NDArray[np.int8]) -> tuple[BoolArrayT, Accounting]:
    """Which rows are kept (sessions with no flagged row) and the accounting by first reason."""
    n = len(reason)
    if n and reason.max() < 0:  # clean logs: every row, request and session is kept
        return np.ones(n, dtype=bool), Accounting(
            rows_read=n,
            rows_kept=n,
            rows_dropped={},
            requests_read=codes.n_requests,
            requests_kept=codes.n_requests,
            requests_dropped={},
            sessions_read=codes.n_sessions,
            sessions_kept=codes.n_sessions,
            sessions_dropped={},
        )
    # a session's reason is the first rule that flagged any of its rows; a request with a
    # flagged row is dropped whole first (its row may lack the session id: issue 17)
    r = np.where(reason >= 0, reason, np.iinfo(np.int8).max).astype(np.int16)
    r = _spread(r, codes.request, codes.n_requests)
    spread = _spread(_spread(r, codes.session, codes.n_sessions), codes.request, codes.n_requests)
    row_reason = np.where(spread == np.iinfo(np.int8).max, -1, spread).astype(np.int8)
    keep = row_reason < 0
    rows_dropped = {rule: int(np.count_nonzero(row_reason == i)) for i, rule in enumerate(RULES)}
    rows_dropped = {k: v for k, v in rows_dropped.items() if v}
    req_read, req_dropped, _ = _count_by_reason(codes.request, codes.n_requests, row_reason)
    ses_read, ses_dropped, _ = _count_by_reason(codes.session, codes.n_sessions, row_reason)
    # a request or session whose id is missing is counted once per row (it has no other identity)
    req_read += int(np.count_nonzero(codes.request < 0))
    if np.any(codes.request < 0):
        req_dropped["null_id"] = req_dropped.get("null_id", 0) + int(
            np.count_nonzero(codes.request < 0)
        )
    ses_read += int(np.count_nonzero(codes.session < 0))
    if np.any(codes.session < 0):
        ses_dropped["null_id"] = ses_dropped.get("null_id", 0) + int(
            np.count_nonzero(codes.session < 0)
        )
    acc = Accounting(
        rows_read=n,
        rows_kept=int(keep.sum()),
        rows_dropped=rows_dropped,
        requests_read=req_read,
        requests_kept=req_read - sum(req_dropped.values()),
        requests_dropped=req_dropped,
        sessions_read=ses_read,
        sessions_kept=ses_read - sum(ses_dropped.values()),
        sessions_dropped=ses_dropped,
    )
    return keep, acc


def _canonical_order(frame: pd.DataFrame, codes: Codes, rows: IntArray) -> IntArray:
    """Positions (into ``rows``) sorting them by (user, session start, session, ts, request,
    position).

    ``rows`` are validated rows (``ts`` and the session are constant within a request), so the
    sort runs on requests first (sessions ranked by (user, start), requests by (session rank, ts,
    request)) and then once on rows by (request rank, position).
    """
    n = len(rows)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    req = codes.request[rows]
    pos = frame["position"].to_numpy(dtype=np.int64)[rows]
    rep = np.full(codes.n_requests, -1, dtype=np.int64)
    rep[req] = np.arange(n)  # one row of each request
    req_ids = np.flatnonzero(rep >= 0)
    rep = rows[rep[req_ids]]  # as positions in the frame
    sess_r = codes.session[rep]
    ts_r = frame["ts"].to_numpy(dtype=np.int64)[rep]
    start = np.full(codes.n_sessions, np.iinfo(np.int64).max)
    np.minimum.at(start, sess_r, ts_r)
    owner = np.zeros(codes.n_sessions, dtype=np.int64)
    owner[sess_r] = codes.user[rep]
    present = np.flatnonzero(start < np.iinfo(np.int64).max)
    ranked = present[np.lexsort((present, start[present], owner[present]))]
    sess_rank = np.empty(codes.n_sessions, dtype=np.int64)
    sess_rank[ranked] = np.arange(len(ranked))
    req_order = req_ids[np.lexsort((req_ids, ts_r, sess_rank[sess_r]))]
    req_rank = np.zeros(codes.n_requests, dtype=np.int64)
    req_rank[req_order] = np.arange(len(req_order))
    row_rank = req_rank[req]
    pos_span = int(pos.max()) + 1
    if (len(req_order) + 1) * pos_span >= 2**62:  # pragma: no cover - astronomically large
        return np.lexsort((pos, row_rank)).astype(np.int64)
    key = row_rank * pos_span + pos
    if bool(np.all(key[1:] >= key[:-1])):
        return np.arange(n, dtype=np.int64)  # already in canonical order
    return np.argsort(key, kind="stable").astype(np.int64)
