"""Transitions: one row per request (MDP step), the one type the whole toolkit passes around.

:func:`compute_transitions` turns kept, canonically ordered log rows
(:class:`~batchrl_mtf.data.clean.Prepared`) into :class:`Transitions`; the dataset file formats
(:mod:`batchrl_mtf.data.formats`) write and read them, and training, OPE, export and ``make-env``
use them. Everything is vectorised over rows and requests (no Python loop per row or request) and
works on any subset of complete users: computing the users of a log together or in separate
parts gives the same transitions.

Episode ends: the last request of every session is either ``terminals`` (the user left) or,
when the session's last request is within ``window_margin_s`` of ``window_end_ms``, ``timeouts``
(cut by the end of the log window; the user may have stayed). Exactly one of the two is set on
the last step of each session and neither on any other step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from batchrl_mtf.core.d3rlpy import load_d3rlpy
from batchrl_mtf.data.clean import Prepared
from batchrl_mtf.data.config import DatasetConfig
from batchrl_mtf.data.features import StateParts, assemble, feature_spec
from batchrl_mtf.data.reward import RewardConfig, request_reward
from batchrl_mtf.data.spec import DatasetSpec
from batchrl_mtf.data.split import session_split
from batchrl_mtf.errors import ConfigError, DatasetError
from batchrl_mtf.logs.validate import FLOAT32_MAX

__all__ = ["Transitions", "compute_transitions"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArrayT = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Transitions:
    """One row per request (MDP step), sessions contiguous and in canonical order.

    What :func:`batchrl_mtf.load_dataset` returns, what :func:`compute_transitions` makes from
    logs, and what training, OPE and export read.

    Attributes:
        spec: Tasks, features, bounds, gamma and hashes. On the transitions of one part of the
            logs (before the builder merged the parts' statistics) the feature statistics and
            the action bounds are empty and the hashes are ``""``.
        user_id: Shape (n,).
        session_id: Shape (n,).
        request_id: Shape (n,).
        step: Index of the request within its session, shape (n,).
        ts_ms: Request time (epoch milliseconds), shape (n,).
        observations: State vectors, shape (n, n_features), float64 (raw, not normalised).
        actions: Logged ``w_*`` vectors in task order, shape (n, n_tasks), float64.
        rewards: ``stickiness + activeness``, shape (n,).
        stickiness: Shape (n,).
        activeness: Shape (n,).
        terminals: The user left after this request, shape (n,), bool.
        timeouts: The session was cut by the end of the log window here, shape (n,), bool.
        behavior_logp: Log-density of the logged action under the logging policy (NaN when not
            logged), shape (n,).
        split: ``"train"`` or ``"test"`` (by session), shape (n,).
        path: The dataset directory it was loaded from (``None`` when built in memory).
    """

    spec: DatasetSpec
    user_id: npt.NDArray[np.generic]
    session_id: npt.NDArray[np.generic]
    request_id: npt.NDArray[np.generic]
    step: IntArray
    ts_ms: IntArray
    observations: FloatArray
    actions: FloatArray
    rewards: FloatArray
    stickiness: FloatArray
    activeness: FloatArray
    terminals: BoolArrayT
    timeouts: BoolArrayT
    behavior_logp: FloatArray
    split: npt.NDArray[np.str_]
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def n_sessions(self) -> int:
        """Number of sessions (episodes): steps with ``step == 0``."""
        return int(np.count_nonzero(self.step == 0))

    def episode_starts(self) -> IntArray:
        """Index of the first step of every session, shape (n_sessions,)."""
        return np.flatnonzero(self.step == 0).astype(np.int64)

    def take(self, rows: IntArray | BoolArrayT) -> Transitions:
        """The transitions at ``rows`` (positions, shape (m,), or a mask, shape (n,)); give whole
        sessions in order to keep the episodes intact."""
        arrays = {
            f.name: getattr(self, f.name)[rows]
            for f in dataclasses.fields(self)
            if f.name not in ("spec", "path")
        }
        return Transitions(spec=self.spec, path=self.path, **arrays)

    def select(self, split: str | None) -> Transitions:
        """The sessions of one split (``"train"``, ``"test"``) or all (``None``/``"all"``).

        Raises:
            DatasetError: Unknown split name or no session in it.
        """
        if split in (None, "all"):
            return self
        if split not in ("train", "test"):
            raise DatasetError(f"split: expected 'train', 'test' or 'all', found {split!r}")
        mask = self.split == split
        if not mask.any():
            raise DatasetError(f"split {split!r} of {self.path or 'the dataset'} holds no session")
        return self.take(mask)

    def to_d3rlpy(self) -> object:
        """The episodes as a d3rlpy ``MDPDataset`` with a continuous action space (float32)."""
        d3rlpy = load_d3rlpy()

        return d3rlpy.dataset.MDPDataset(
            observations=self.observations.astype(np.float32),
            actions=self.actions.astype(np.float32),
            rewards=self.rewards.astype(np.float32).reshape(-1, 1),
            terminals=self.terminals.astype(np.float32),
            timeouts=self.timeouts.astype(np.float32),
            action_space=d3rlpy.ActionSpace.CONTINUOUS,
            action_size=self.actions.shape[1],
        )


def _segment_first(keys: IntArray) -> BoolArrayT:
    return np.concatenate([[True], keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, dtype=bool)


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


def compute_transitions(
    prepared: Prepared, reward: RewardConfig, config: DatasetConfig
) -> Transitions:
    """Turn prepared logs into per-request transitions (states, actions, rewards, episode ends).

    Args:
        prepared: The kept rows in canonical order (:func:`batchrl_mtf.data.clean.kept_rows`).
        reward: The reward.
        config: Dataset options (features, gamma, log window).

    Returns:
        The transitions, with the spec of these rows alone (no feature statistics or action
        bounds yet, see :class:`Transitions`).
    """
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
    session_id = prepared.session_ids(first_rows)
    spec = DatasetSpec(
        features=feature_spec(cols, config.features),
        tasks=cols.tasks,
        action_low=(),
        action_high=(),
        gamma=config.gamma,
        has_behavior_logp=cols.has_behavior_logp,
        dataset_hash="",
        data_hash="",
    )
    return Transitions(
        spec=spec,
        user_id=prepared.values("user_id", first_rows),
        session_id=session_id,
        request_id=prepared.values("request_id", first_rows),
        step=step.astype(np.int64),
        ts_ms=ts_req,
        observations=obs,
        actions=actions,
        rewards=parts_r.stickiness + parts_r.activeness,
        stickiness=parts_r.stickiness,
        activeness=parts_r.activeness,
        terminals=terminal,
        timeouts=timeout,
        behavior_logp=blogp,
        split=session_split(session_id),
    )
