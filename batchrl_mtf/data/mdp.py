"""From validated logs to MDP transitions: sessions, state features, actions and rewards.

One session is one episode, one request is one step, the action is the request's ``w_*`` vector
and the reward is :mod:`batchrl_mtf.data.reward`'s. Everything here is vectorised over rows and
requests (no Python loop per row or request) and works on any subset of users: computing the
users of a log together or in separate partitions gives the same transitions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from batchrl_mtf.core.config import require
from batchrl_mtf.data.features import (
    FeatureConfig,
    FeatureSpec,
    StateParts,
    assemble,
    feature_names,
)
from batchrl_mtf.data.reward import RewardConfig, request_reward
from batchrl_mtf.errors import ConfigError, Problem, SchemaError
from batchrl_mtf.logs.schema import LogColumns, LogFrame, discover_columns, missing_required
from batchrl_mtf.logs.validate import (
    FLOAT32_MAX,
    RULES,
    Codes,
    RowFlags,
    encode,
    validate_rows,
)

__all__ = [
    "Accounting",
    "Checked",
    "DatasetConfig",
    "Prepared",
    "Transitions",
    "account",
    "action_bounds",
    "bounds_from_range",
    "check_columns",
    "check_logs",
    "check_rows",
    "compute_transitions",
    "kept_rows",
    "prepare_logs",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class DatasetConfig:
    """How logs become an MDP dataset.

    Attributes:
        gamma: Discount factor recorded with the dataset (the default for training and OPE).
        action_bounds: ``(lo, hi)`` bounds of every weight; ``None`` = from the logs with a margin.
        action_margin: Margin added on each side of the logged weight range, as a fraction of it.
        session_gap_s: Split each user's requests into sessions at gaps above this many seconds
            (then ``session_id`` is optional and ignored); ``None`` = use ``session_id``.
        window_end_ms: End of the log window (epoch ms); sessions whose last request is within
            ``window_margin_s`` of it end in a timeout instead of a terminal; ``None`` = all terminal.
        window_margin_s: See ``window_end_ms``.
        on_error: ``"fail"``: any problem fails the build; ``"drop-session"``: drop affected sessions.
        features: Which state features to compute.
    """

    gamma: float = 0.95
    action_bounds: tuple[float, float] | None = None
    action_margin: float = 0.1
    session_gap_s: float | None = None
    window_end_ms: int | None = None
    window_margin_s: float = 1800.0
    on_error: Literal["fail", "drop-session"] = "fail"
    features: FeatureConfig = field(default_factory=FeatureConfig)

    def __post_init__(self) -> None:
        require(
            0.0 <= self.gamma <= 1.0, "gamma", f"expected a number in [0, 1], found {self.gamma}"
        )
        if self.action_bounds is not None:
            lo, hi = self.action_bounds
            require(
                math.isfinite(lo) and math.isfinite(hi) and lo < hi,
                "action_bounds",
                f"expected finite LO,HI with LO < HI, found {lo},{hi}",
            )
        require(
            self.action_margin >= 0, "action_margin", f"expected >= 0, found {self.action_margin}"
        )
        if self.session_gap_s is not None:
            require(
                self.session_gap_s > 0,
                "session_gap",
                f"expected seconds > 0, found {self.session_gap_s}",
            )
        require(
            self.window_margin_s >= 0,
            "window_margin_s",
            f"expected >= 0, found {self.window_margin_s}",
        )
        require(
            self.on_error in ("fail", "drop-session"),
            "on_error",
            f"expected 'fail' or 'drop-session', found {self.on_error!r}",
        )


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


def _check_float32_reward(total: FloatArray, prepared: Prepared, first_rows: IntArray) -> None:
    """Raise :class:`ConfigError` when a request's reward is not finite in float32."""
    bad = ~(np.abs(total) <= FLOAT32_MAX)
    if bad.any():
        ids = prepared.values("request_id", first_rows[np.flatnonzero(bad)[:5]], object)
        raise ConfigError(
            f"reward: {int(bad.sum())} request(s) have a reward beyond float32 (e.g. "
            f"{float(total[bad][0])!r}; request_id {', '.join(map(str, ids))}); lower the reward "
            "weights or fix the feedback values"
        )


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


def prepare_logs(logs: LogFrame, reward: RewardConfig, config: DatasetConfig) -> Prepared:
    """Check the logs against schema v1 and keep the sessions that pass.

    Raises:
        SchemaError: With every problem found, when a column is missing or mistyped, or when rows
            break a rule and ``config.on_error == "fail"``, or when nothing is left.
        ConfigError: The reward names a column absent from the logs.
    """
    checked = check_logs(logs, reward, config)
    flags = checked.flags
    source = log_source(logs.files)
    if flags.problems and config.on_error == "fail":
        raise_problems(flags.problems)
    keep, accounting = account(checked.codes, flags.reason)
    if not keep.any():
        raise_all_dropped(source, flags.problems)
    return kept_rows(logs, checked, keep, accounting)


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


@dataclass(frozen=True)
class Transitions:
    """One row per request (MDP step), sessions contiguous and in canonical order.

    Attributes:
        user_id: Shape (n,).
        session_id: Shape (n,).
        request_id: Shape (n,).
        step: Index of the request within its session, shape (n,).
        ts_ms: Request time, shape (n,).
        observations: State vectors, shape (n, n_features).
        actions: Logged ``w_*`` vectors in task order, shape (n, n_tasks).
        stickiness: Shape (n,).
        activeness: Shape (n,).
        terminal: The user left after this request, shape (n,).
        timeout: The session was cut by the end of the log window here, shape (n,).
        behavior_logp: Log-density of the logged action under the logging policy (NaN when not
            logged), shape (n,).
        tasks: Task names in action order.
        spec: The state definition (without normalisation statistics).
    """

    user_id: npt.NDArray[np.generic]
    session_id: npt.NDArray[np.generic]
    request_id: npt.NDArray[np.generic]
    step: IntArray
    ts_ms: IntArray
    observations: FloatArray
    actions: FloatArray
    stickiness: FloatArray
    activeness: FloatArray
    terminal: BoolArrayT
    timeout: BoolArrayT
    behavior_logp: FloatArray
    tasks: tuple[str, ...]
    spec: FeatureSpec

    @property
    def reward(self) -> FloatArray:
        """``stickiness + activeness``, shape (n,)."""
        return self.stickiness + self.activeness

    @property
    def n_sessions(self) -> int:
        """Number of sessions (episodes)."""
        return int(np.count_nonzero(self.terminal | self.timeout))

    def episode_starts(self) -> IntArray:
        """Index of the first step of every session, shape (n_sessions,)."""
        return np.flatnonzero(self.step == 0).astype(np.int64)


def _segment_first(keys: IntArray) -> BoolArrayT:
    return np.concatenate([[True], keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, dtype=bool)


def compute_transitions(
    prepared: Prepared, reward: RewardConfig, config: DatasetConfig
) -> Transitions:
    """Turn prepared logs into per-request transitions (states, actions, rewards, episode ends)."""
    cols = prepared.columns
    feedback = config.features.feedback or cols.feedback
    n_rows = len(prepared.order)
    req_codes = prepared.codes.request
    row_first = _segment_first(req_codes)
    first_rows = np.flatnonzero(row_first)
    request_of_row = np.cumsum(row_first) - 1
    n_req = len(first_rows)

    sess_of_req = prepared.codes.session[first_rows]
    user_codes = prepared.codes.user
    user_of_req = user_codes[first_rows]
    req_first_in_session = _segment_first(sess_of_req)
    session_start_req = np.maximum.accumulate(np.where(req_first_in_session, np.arange(n_req), 0))
    step = np.arange(n_req) - session_start_req
    ts_req = prepared.values("ts", first_rows, np.int64).astype(np.int64, copy=False)

    # feedback per row, one contiguous column each (gathered in the column's own dtype, then
    # converted), and per request
    fb_rows = np.empty((n_rows, len(feedback)), dtype=np.float64, order="F")
    fb_req = np.empty((n_req, len(feedback)), dtype=np.float64, order="F")
    for j, c in enumerate(feedback):
        fb_rows[:, j] = prepared.values(c)
        if n_rows:
            fb_req[:, j] = np.add.reduceat(fb_rows[:, j], first_rows)
    if feedback:
        inclusive = pd.DataFrame(fb_req).groupby(sess_of_req, sort=False).cumsum().to_numpy()
        # exclusive sums by shifting (not by subtracting, which would let request t's own
        # feedback perturb its state through rounding)
        session_sums = np.zeros_like(fb_req)
        session_sums[1:] = inclusive[:-1]
        session_sums[req_first_in_session] = 0.0
        prev_sums = np.zeros_like(fb_req)
        prev_sums[1:] = fb_req[:-1]
        prev_sums[req_first_in_session] = 0.0
    else:
        session_sums = prev_sums = np.zeros((n_req, 0))

    # user history before each session, from the kept rows
    sess_first_req = np.flatnonzero(req_first_in_session)
    sess_first_row = first_rows[sess_first_req]
    row_user = user_codes
    user_first_row_flag = _segment_first(row_user)
    user_start_row = np.maximum.accumulate(np.where(user_first_row_flag, np.arange(n_rows), 0))
    hist_n = config.features.hist_n
    a = sess_first_row
    u0 = user_start_row[a]
    lo = np.maximum(u0, a - hist_n)
    count = (a - lo).astype(np.float64)
    if feedback:
        # The user's prefix sums are needed at the cut points only (user starts, window starts,
        # session starts): sum the rows between consecutive cuts (every user start is a cut, so
        # no segment spans two users), then take exclusive running sums per user.
        cuts = np.unique(np.concatenate([u0, lo, a]))
        seg = np.empty((len(cuts), len(feedback)), dtype=np.float64, order="F")
        for j in range(len(feedback)):
            seg[:, j] = np.add.reduceat(fb_rows[:, j], cuts)
        seg_user = row_user[cuts]
        inclusive_seg = pd.DataFrame(seg).groupby(seg_user, sort=False).cumsum().to_numpy()
        before = np.zeros_like(seg)  # sum of the user's rows before each cut (shift, not subtract)
        before[1:] = inclusive_seg[:-1]
        before[_segment_first(seg_user)] = 0.0
        upto_a = before[np.searchsorted(cuts, a)]
        upto_lo = before[np.searchsorted(cuts, lo)]
        with np.errstate(invalid="ignore", divide="ignore"):
            rates_sess = np.where(count[:, None] > 0, (upto_a - upto_lo) / count[:, None], 0.0)
    else:
        rates_sess = np.zeros((len(a), 0))
    user_of_sess = user_of_req[sess_first_req]
    user_first_sess = np.maximum.accumulate(
        np.where(_segment_first(user_of_sess), np.arange(len(user_of_sess)), 0)
    )
    hist_sessions_sess = (np.arange(len(user_of_sess)) - user_first_sess).astype(np.float64)
    sess_index_of_req = np.cumsum(req_first_in_session) - 1

    user_feats = (
        np.column_stack([prepared.values(c, first_rows, np.float64) for c in cols.user_features])
        if cols.user_features
        else np.zeros((n_req, 0))
    )
    parts = StateParts(
        user=user_feats,
        depth=step.astype(np.float64),
        elapsed_s=(ts_req - ts_req[session_start_req]).astype(np.float64) / 1000.0,
        session_sums=session_sums,
        prev_sums=prev_sums,
        hist_rates=rates_sess[sess_index_of_req],
        hist_sessions=hist_sessions_sess[sess_index_of_req],
        ts_ms=ts_req,
    )
    obs = assemble(parts, config.features)
    actions = np.column_stack(
        [prepared.values(c, first_rows, np.float64) for c in cols.weight_columns]
    )
    fb_index = {c: j for j, c in enumerate(feedback)}
    reward_cols = {
        c: (
            fb_rows[:, fb_index[c]]
            if c in fb_index
            else prepared.values(c, None, np.float64).astype(np.float64, copy=False)
        )
        for c in reward.columns()
    }
    parts_r = request_reward(reward, reward_cols, request_of_row, n_req)
    _check_float32_reward(parts_r.total, prepared, first_rows)
    last = np.concatenate([req_first_in_session[1:], [True]]) if n_req else np.zeros(0, dtype=bool)
    timeout = np.zeros(n_req, dtype=bool)
    if config.window_end_ms is not None:
        timeout = last & (ts_req >= config.window_end_ms - config.window_margin_s * 1000.0)
    terminal = last & ~timeout
    blogp = (
        prepared.values("behavior_logp", first_rows, np.float64).astype(np.float64, copy=False)
        if cols.has_behavior_logp
        else np.full(n_req, np.nan)
    )
    spec = FeatureSpec(
        names=feature_names(cols.user_features, feedback, config.features),
        user_features=cols.user_features,
        feedback=tuple(feedback),
        config=config.features,
    )
    return Transitions(
        user_id=prepared.values("user_id", first_rows),
        session_id=prepared.session_ids(first_rows),
        request_id=prepared.values("request_id", first_rows),
        step=step.astype(np.int64),
        ts_ms=ts_req,
        observations=obs,
        actions=actions,
        stickiness=parts_r.stickiness,
        activeness=parts_r.activeness,
        terminal=terminal,
        timeout=timeout,
        behavior_logp=blogp,
        tasks=cols.tasks,
        spec=spec,
    )


def action_bounds(
    actions: FloatArray, tasks: Sequence[str], config: DatasetConfig
) -> tuple[FloatArray, FloatArray]:
    """Per-task weight bounds: ``config.action_bounds`` or the logged range plus a margin.

    From the logs, each task's range ``[min, max]`` is widened by ``action_margin`` times its
    width (at least 1e-3) on both sides; a lower bound is never pushed below 0 when every logged
    weight is non-negative.

    Raises:
        ConfigError: Explicit bounds exclude logged weights.
    """
    return bounds_from_range(actions.min(axis=0), actions.max(axis=0), tasks, config)


def bounds_from_range(
    mn: FloatArray, mx: FloatArray, tasks: Sequence[str], config: DatasetConfig
) -> tuple[FloatArray, FloatArray]:
    """:func:`action_bounds` from the per-task minimum and maximum logged weight, shape (n_tasks,).

    Raises:
        ConfigError: Explicit bounds exclude logged weights.
    """
    if config.action_bounds is not None:
        lo, hi = config.action_bounds
        outside = [t for t, a, b in zip(tasks, mn, mx, strict=True) if a < lo or b > hi]
        if outside:
            raise ConfigError(
                f"--action-bounds {lo},{hi}: expected every logged weight inside; found w_{outside[0]} "
                f"in [{mn[list(tasks).index(outside[0])]:.4g}, {mx[list(tasks).index(outside[0])]:.4g}]"
            )
        return np.full(len(tasks), float(lo)), np.full(len(tasks), float(hi))
    width = np.maximum(mx - mn, 1e-3)
    low = mn - config.action_margin * width
    low = np.where(mn >= 0, np.maximum(low, 0.0), low)
    high = mx + config.action_margin * width
    return low.astype(np.float64), high.astype(np.float64)
