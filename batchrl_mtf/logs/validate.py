"""Row-level validation rules of log schema v1.

Every rule flags input rows; each problem is reported per input file with the column, what was
expected, what was found and up to 5 example ``request_id`` values. The rules, in the order used
to attribute a dropped row to one reason (``--on-error drop-session``):

=======================  ===============================================================
rule                     flags
=======================  ===============================================================
``null_id``              a missing ``user_id``, ``session_id``, ``request_id``, ``item_id``,
                         ``ts`` or ``position``
``non_finite``           NaN, inf or a value beyond float32 (|x| > 3.4e38, infinite once
                         training casts it) in ``pred_*``, ``w_*``, feedback, ``u_*``,
                         ``behavior_logp`` or ``duration``; a reward weight x feedback value
                         beyond float32
``prob_range``           a ``pred_*`` outside [0, 1]
``negative_value``       a negative ``watch_time``, ``position`` or ``duration``
``weights_differ``       ``w_*`` (or ``behavior_logp``) not constant within a request
``request_conflict``     one request with several ``ts``, users or sessions
``duplicate_position``   two rows with the same ``(request_id, position)``
``session_user_conflict`` a session shared by two users
``session_interleaved``  a session that starts before an earlier session of the same user
                         ended (its requests are out of ``ts`` order with that session's)
=======================  ===============================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from batchrl_mtf.errors import Problem
from batchrl_mtf.logs.schema import FILE_COLUMN, LogColumns

__all__ = ["RULES", "Codes", "RawProblem", "RowFlags", "encode", "merge_problems", "validate_rows"]

RULES: tuple[str, ...] = (
    "null_id",
    "non_finite",
    "prob_range",
    "negative_value",
    "weights_differ",
    "request_conflict",
    "duplicate_position",
    "session_user_conflict",
    "session_interleaved",
)
MAX_EXAMPLES = 5
FLOAT32_MAX = float(np.finfo(np.float32).max)
"""Largest finite float32: d3rlpy trains in float32, so larger values become inf there."""
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Codes:
    """Integer codes of the id columns, in the sorted order of their values (-1 for missing).

    Attributes:
        user: Shape (n_rows,).
        session: Shape (n_rows,).
        request: Shape (n_rows,).
        n_users: Number of distinct users.
        n_sessions: Number of distinct sessions.
        n_requests: Number of distinct requests.
        request_values: The distinct ``request_id`` values in code order (``None`` when unknown).
    """

    user: IntArray
    session: IntArray
    request: IntArray
    n_users: int
    n_sessions: int
    n_requests: int
    request_values: object = None


def _factorize(values: pd.Series) -> tuple[IntArray, int, object]:
    codes, uniques = pd.factorize(values, sort=True, use_na_sentinel=True)
    return codes.astype(np.int64), len(uniques), uniques


def encode(frame: pd.DataFrame, session: pd.Series) -> Codes:
    """Factorise ``user_id``, the session ids and ``request_id`` into sorted integer codes."""
    user, n_u, _ = _factorize(frame["user_id"])
    sess, n_s, _ = _factorize(session)
    req, n_r, req_values = _factorize(frame["request_id"])
    return Codes(user, sess, req, n_u, n_s, n_r, req_values)


@dataclass(frozen=True)
class RawProblem:
    """One rule's finding on one input file of one part of the logs, before merging.

    Problems found on separate parts of the logs (partitions of a cluster job) merge into the
    :class:`~batchrl_mtf.errors.Problem` list by :func:`merge_problems`; the local engine merges
    its single part the same way.

    Attributes:
        seq: Index of the rule check within :func:`validate_rows` (orders the problems).
        rule: Rule name (one of :data:`RULES`).
        column: The offending column.
        file: Index of the input file.
        expected: What the rule expects, in words.
        found: What was found, in words, without the row count.
        n_rows: Rows flagged.
        examples: The (up to 5) smallest flagged ``request_id`` values (int or str), sorted.
    """

    seq: int
    rule: str
    column: str
    file: int
    expected: str
    found: str
    n_rows: int
    examples: tuple[object, ...]

    def to_json(self) -> list[object]:
        """A JSON-ready list (for shipping partition results to a driver)."""
        return [
            self.seq,
            self.rule,
            self.column,
            self.file,
            self.expected,
            self.found,
            self.n_rows,
            list(self.examples),
        ]

    @classmethod
    def from_json(cls, doc: list[Any]) -> RawProblem:
        """Inverse of :meth:`to_json`."""
        seq, rule, column, file, expected, found, n_rows, examples = doc
        return cls(
            int(seq),
            str(rule),
            str(column),
            int(file),
            str(expected),
            str(found),
            int(n_rows),
            tuple(examples),
        )


def merge_problems(raw: Sequence[RawProblem], files: Sequence[str]) -> tuple[Problem, ...]:
    """Merge raw findings into one problem per (rule check, file), in check order then file order.

    Row counts add up; the examples are the 5 smallest ``request_id`` values over all parts
    (numeric order for integer ids, code-point order for text ids), so the result does not depend
    on how the rows were split or ordered.
    """
    merged: dict[tuple[int, int], list[RawProblem]] = {}
    for r in raw:
        merged.setdefault((r.seq, r.file), []).append(r)
    out: list[Problem] = []
    for key in sorted(merged):
        parts = merged[key]
        first = parts[0]
        n_rows = sum(p.n_rows for p in parts)
        examples = sorted({e for p in parts for e in p.examples})[:MAX_EXAMPLES]  # type: ignore[type-var]
        out.append(
            Problem(
                rule=first.rule,
                file=files[first.file],
                column=first.column,
                expected=first.expected,
                found=f"{n_rows} row(s) with {first.found}",
                examples=tuple(str(x) for x in examples),
                n_rows=n_rows,
            )
        )
    return tuple(out)


@dataclass(frozen=True)
class RowFlags:
    """Result of validation.

    Attributes:
        problems: Every problem found, in rule order, one per (rule, column, file).
        reason: Shape (n_rows,), the index into :data:`RULES` of the first rule that flagged each
            row, or -1.
        raw: The findings before formatting (see :func:`merge_problems`).
    """

    problems: tuple[Problem, ...]
    reason: npt.NDArray[np.int8]
    raw: tuple[RawProblem, ...] = ()


class _Groups:
    """Rows sorted by a group code (and an optional secondary key), for cheap per-group checks.

    Sorting once and comparing neighbours replaces per-column scatter reductions; input that is
    already in group order (the common case for logs) is not sorted at all.
    """

    def __init__(self, codes: IntArray, n_groups: int, secondary: IntArray | None = None) -> None:
        self.codes = codes
        self.n_groups = n_groups
        valid = codes >= 0
        key = np.where(valid, codes, n_groups).astype(np.int64)
        if secondary is not None:
            span = int(secondary.max()) + 1 if len(secondary) else 1
            if (n_groups + 1) * span < 2**62:
                key = key * span + secondary
            else:  # pragma: no cover - astronomically many groups
                order = np.lexsort((secondary, key))
                self._init_order(order, valid)
                return
        sorted_already = bool(np.all(key[1:] >= key[:-1]))
        self._init_order(None if sorted_already else np.argsort(key, kind="stable"), valid)

    def _init_order(self, order: IntArray | None, valid: BoolArray) -> None:
        self.order = order
        c = self.codes if order is None else self.codes[order]
        self.sorted_codes = c
        v = valid if order is None else valid[order]
        self.same_as_prev = (c[1:] == c[:-1]) & v[1:] & v[:-1]

    def take(self, values: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
        """``values`` in sorted order."""
        return values if self.order is None else values[self.order]

    def rows_of(self, bad_pairs: BoolArray) -> BoolArray:
        """Per-row mask of the groups in which a neighbour pair is flagged."""
        if not bad_pairs.any():  # the common case: clean logs
            return np.zeros(len(self.codes), dtype=bool)
        bad = np.zeros(self.n_groups + 1, dtype=bool)
        bad[self.sorted_codes[1:][bad_pairs]] = True
        return bad[np.where(self.codes >= 0, self.codes, self.n_groups)] & (self.codes >= 0)

    def nonconstant(
        self, values: npt.NDArray[np.generic], valid: BoolArray | None = None
    ) -> BoolArray:
        """Rows of groups whose ``values`` are not all equal, comparing only valid rows.

        Args:
            values: Shape (n_rows,).
            valid: Which rows take part, shape (n_rows,); ``None`` = the finite ones.
        """
        v = self.take(values)
        ok = np.isfinite(v) if valid is None else self.take(valid)
        diff = (v[1:] != v[:-1]) & self.same_as_prev & ok[1:] & ok[:-1]
        return self.rows_of(diff)


def _is_plain_int(frame: pd.DataFrame, col: str) -> bool:
    """A numpy integer or boolean column (it cannot hold NaN, inf or fractions)."""
    dtype = frame[col].dtype
    return isinstance(dtype, np.dtype) and dtype.kind in "iub"


def _not_float32(v: npt.NDArray[np.float64]) -> BoolArray:
    """Values that are not finite once cast to float32 (NaN, inf, |x| > 3.4e38)."""
    with np.errstate(invalid="ignore"):
        return ~(np.abs(v) <= FLOAT32_MAX)


def _first_bad(v: npt.NDArray[np.float64], mask: BoolArray) -> str:
    return f"{float(v[np.flatnonzero(mask)[0]])!r}"


def _numeric(frame: pd.DataFrame, col: str) -> npt.NDArray[np.float64]:
    s = frame[col]
    if s.dtype == np.float64:
        return s.to_numpy()  # a view, no copy
    return s.to_numpy(dtype=np.float64, na_value=np.nan)


class _Collector:
    def __init__(self, frame: pd.DataFrame, codes: Codes) -> None:
        self.frame = frame
        self.codes = codes
        self.file_idx = frame[FILE_COLUMN].to_numpy()
        self.reason = np.full(len(frame), -1, dtype=np.int8)
        self.raw: list[RawProblem] = []
        self.seq = 0

    def _examples(self, rows: IntArray) -> tuple[object, ...]:
        req = self.codes.request[rows]
        smallest = np.unique(req[req >= 0])[:MAX_EXAMPLES]  # codes are in sorted value order
        if self.codes.request_values is not None:
            values = self.codes.request_values[smallest]  # type: ignore[index]
        else:  # pragma: no cover - codes built without values
            values = pd.unique(self.frame["request_id"].iloc[rows].dropna())
        return tuple(v.item() if isinstance(v, np.generic) else v for v in list(values))

    def skip(self) -> None:
        """A check that found nothing without building its mask (keeps check numbering)."""
        self.seq += 1

    def flag(self, rule: str, column: str, mask: BoolArray, expected: str, found: str) -> None:
        seq = self.seq
        self.seq += 1
        if not mask.any():
            return
        rule_idx = RULES.index(rule)
        self.reason[(self.reason < 0) & mask] = rule_idx
        rows = np.flatnonzero(mask)
        for fi in np.unique(self.file_idx[rows]):
            frows = rows[self.file_idx[rows] == fi]
            self.raw.append(
                RawProblem(
                    seq, rule, column, int(fi), expected, found, len(frows), self._examples(frows)
                )
            )


def validate_rows(
    frame: pd.DataFrame,
    columns: LogColumns,
    files: Sequence[str],
    session: pd.Series,
    codes: Codes,
    reward_weights: dict[str, float] | None = None,
) -> RowFlags:
    """Apply every row-level rule.

    Args:
        frame: The logs (``ts`` already int64 ms with missing as int64 min).
        columns: The classified columns.
        files: Input file names, indexed by the frame's ``__file`` column.
        session: Session id of every row (the ``session_id`` column, or the sessions made from
            ``--session-gap``), shape (n_rows,).
        codes: Integer codes of the ids.
        reward_weights: Feedback column -> largest absolute reward weight on it; rows whose
            weight x value is beyond float32 are flagged ``non_finite`` too.
    """
    col = _Collector(frame, codes)
    ts = frame["ts"].to_numpy(dtype=np.int64)
    ts_missing = ts == np.iinfo(np.int64).min

    # null_id
    for c in ("user_id", "session_id", "request_id", "item_id", "ts", "position"):
        if c == "session_id":
            mask = session.isna().to_numpy()
        elif c == "ts":
            mask = ts_missing
        else:
            mask = frame[c].isna().to_numpy()
            if c == "position" and not _is_plain_int(frame, c):  # inf is no position either
                mask = mask | ~np.isfinite(_numeric(frame, c))
        col.flag("null_id", c, mask, "a value in every row", "a missing value")
    ok_ids = (codes.user >= 0) & (codes.session >= 0) & (codes.request >= 0) & ~ts_missing

    # non_finite
    finite_cols = (
        list(columns.pred_columns)
        + list(columns.weight_columns)
        + list(columns.feedback)
        + list(columns.user_features)
        + [c for c in ("behavior_logp", "duration") if c in frame.columns]
    )
    # Fast paths for clean columns (one reduction, no mask): integer columns cannot hold NaN or
    # inf or exceed float32, and a float column whose largest |value| is within float32 holds
    # none of them (NaN makes the maximum NaN).
    for c in finite_cols:
        v = _numeric(frame, c)
        if _is_plain_int(frame, c) or len(v) == 0 or np.abs(v).max() <= FLOAT32_MAX:
            col.skip()
        else:
            bad = _not_float32(v)
            col.flag(
                "non_finite",
                c,
                bad,
                "numbers finite in float32 (|x| <= 3.4e38)",
                f"NaN, inf or beyond float32 (e.g. {_first_bad(v, bad)})",
            )
    for c, w in sorted((reward_weights or {}).items()):
        if c not in frame.columns or w == 0:
            continue
        v = _numeric(frame, c) * w
        if len(v) == 0 or not (np.abs(v).max() > FLOAT32_MAX):  # NaN rows are flagged above
            col.skip()
            continue
        bad = ~_not_float32(_numeric(frame, c)) & _not_float32(v)
        if not bad.any():
            col.skip()
            continue
        col.flag(
            "non_finite",
            c,
            bad,
            "reward weight x value finite in float32",
            f"reward weight {w!r} x value beyond float32 (e.g. {_first_bad(v, bad)})",
        )

    # prob_range
    for c in columns.pred_columns:
        v = _numeric(frame, c)
        if len(v) == 0 or (v.min() >= 0 and v.max() <= 1):  # NaN fails both comparisons
            col.skip()
            continue
        col.flag(
            "prob_range", c, (v < 0) | (v > 1), "probabilities in [0, 1]", "values outside [0, 1]"
        )

    # negative_value
    for c in ("watch_time", "duration"):
        if c in finite_cols:
            v = _numeric(frame, c)
            if len(v) == 0 or v.min() >= 0:
                col.skip()
            else:
                col.flag("negative_value", c, v < 0, "values >= 0", "negative values")
    pos: npt.NDArray[np.int64] | npt.NDArray[np.float64]
    if _is_plain_int(frame, "position"):
        pos_int = frame["position"].to_numpy(dtype=np.int64)
        col.flag(
            "negative_value", "position", pos_int < 0, "an integer rank >= 0", "negative positions"
        )
        col.skip()  # integers are never fractional
        pos_key = np.where(pos_int >= 0, pos_int, 0)
        pos = pos_int
    else:
        pos = _numeric(frame, "position")
        col.flag(
            "negative_value", "position", pos < 0, "an integer rank >= 0", "negative positions"
        )
        col.flag(
            "negative_value",
            "position",
            np.isfinite(pos) & (pos != np.floor(np.where(np.isfinite(pos), pos, 0))),
            "an integer rank >= 0",
            "fractional positions",
        )
        pos_key = np.where(np.isfinite(pos) & (pos >= 0), pos, 0).astype(np.int64)

    # weights_differ
    by_request = _Groups(codes.request, codes.n_requests, pos_key)
    for c in [*columns.weight_columns, *(["behavior_logp"] if columns.has_behavior_logp else [])]:
        mask = by_request.nonconstant(_numeric(frame, c))
        col.flag(
            "weights_differ", c, mask, "one value per request", "different values within a request"
        )

    # request_conflict
    for name, values, valid in (
        ("ts", ts, ~ts_missing),
        ("user_id", codes.user, codes.user >= 0),
        ("session_id", codes.session, codes.session >= 0),
    ):
        col.flag(
            "request_conflict",
            name,
            by_request.nonconstant(values, valid),
            f"one {name} per request",
            f"several {name} values in a request",
        )

    # duplicate_position
    p_sorted = by_request.take(pos)
    same = by_request.same_as_prev & (p_sorted[1:] == p_sorted[:-1])
    dup_sorted = np.zeros(len(frame), dtype=bool)
    dup_sorted[1:] |= same
    dup_sorted[:-1] |= same
    dup = np.zeros(len(frame), dtype=bool)
    if by_request.order is None:
        dup = dup_sorted
    else:
        dup[by_request.order] = dup_sorted
    col.flag(
        "duplicate_position", "position", dup, "one row per (request_id, position)", "duplicates"
    )

    # session_user_conflict
    by_session = _Groups(codes.session, codes.n_sessions)
    mask = by_session.nonconstant(codes.user, codes.user >= 0)
    col.flag(
        "session_user_conflict",
        "session_id",
        mask,
        "one user per session",
        "a session shared by users",
    )

    # session_interleaved
    if codes.n_sessions:
        good = ok_ids & ~mask
        s = codes.session[good]
        t = ts[good]
        start = np.full(codes.n_sessions, np.iinfo(np.int64).max)
        end = np.full(codes.n_sessions, np.iinfo(np.int64).min)
        owner = np.full(codes.n_sessions, -1, dtype=np.int64)
        np.minimum.at(start, s, t)
        np.maximum.at(end, s, t)
        owner[s] = codes.user[good]
        has = owner >= 0
        sid = np.flatnonzero(has)
        sid = sid[np.lexsort((sid, start[sid], owner[sid]))]
        bad_sessions = sid[_starts_before_previous_end(owner[sid], start[sid], end[sid])]
        flagged = np.zeros(codes.n_sessions, dtype=bool)
        flagged[bad_sessions] = True
        rows = np.zeros(len(frame), dtype=bool)
        rows[good] = flagged[s]
        col.flag(
            "session_interleaved",
            "ts",
            rows,
            "sessions of one user that do not overlap in time",
            "a session starting before an earlier session of the same user ended",
        )
    raw = tuple(col.raw)
    return RowFlags(merge_problems(raw, files), col.reason, raw)


def _starts_before_previous_end(user: IntArray, start: IntArray, end: IntArray) -> BoolArray:
    """For sessions sorted by (user, start): does each start before an earlier one of its user ended?

    A segmented running maximum of ``end`` per user, computed without a Python loop by lifting each
    user's times into its own disjoint range.
    """
    if len(user) == 0:
        return np.zeros(0, dtype=bool)
    lo = int(min(start.min(), end.min()))
    span = int(max(start.max(), end.max())) - lo + 1
    rank = np.concatenate([[0], np.cumsum(user[1:] != user[:-1])])
    if (int(rank[-1]) + 1) * span >= 2**62:  # would overflow int64: fall back to pandas
        frame = pd.DataFrame({"u": rank, "e": end})
        prev_end = frame.groupby("u")["e"].cummax().groupby(frame["u"]).shift(1)
        return (start < prev_end.fillna(np.iinfo(np.int64).min).to_numpy()).astype(bool)
    lifted_end = (end - lo) + rank * span
    lifted_start = (start - lo) + rank * span
    running = np.maximum.accumulate(lifted_end)
    prev = np.concatenate([[-1], running[:-1]])
    first = np.concatenate([[True], rank[1:] != rank[:-1]])
    return (~first) & (lifted_start < prev)
