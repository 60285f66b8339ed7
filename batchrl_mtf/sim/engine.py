"""The native batch API: many sessions stepped at once in numpy.

:class:`SessionBatch` holds ``B`` sessions that start together; each :meth:`SessionBatch.step`
serves one request to every session still running: draw ``n_candidates`` items, let the frozen
predictor score them, fuse with the given weights (:func:`batchrl_mtf.serving.fuse`), show the top
``slate_size``, draw the true feedback, compute the reward (:mod:`batchrl_mtf.data.reward`), move the
hidden satisfaction and decide whether the user leaves. Observations are the foundation's state
vectors (:func:`batchrl_mtf.data.features.assemble`). :class:`UserPool` keeps each user's history
(``hist_<fb>_rate``, ``hist_sessions``) across that user's sessions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd

from batchrl_mtf.data.features import StateParts, assemble, feature_names
from batchrl_mtf.data.reward import item_reward
from batchrl_mtf.sim.world import Users, World

__all__ = ["LogRecorder", "SessionBatch", "StepResult", "UserPool"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
MS_PER_HOUR = 3_600_000


def _sigmoid(x: FloatArray) -> FloatArray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)


@dataclass(frozen=True)
class StepResult:
    """What one :meth:`SessionBatch.step` returns, for the ``n`` sessions that were running.

    Attributes:
        rows: Batch rows served, shape (n,).
        observations: Next states, shape (n, n_features) (the final state where the session ended).
        reward: Shape (n,).
        stickiness: Shape (n,).
        activeness: Shape (n,).
        terminated: The user left after this request, shape (n,).
        truncated: The request cap was reached (and the user did not leave), shape (n,).
        items: Shown item ids in slate order, shape (n, slate_size).
        preds: ``pred_<task>`` of the shown items, shape (n, slate_size, n_tasks).
        feedback: Feedback of the shown items, shape (n, slate_size, n_feedback).
    """

    rows: IntArray
    observations: FloatArray
    reward: FloatArray
    stickiness: FloatArray
    activeness: FloatArray
    terminated: BoolArray
    truncated: BoolArray
    items: IntArray
    preds: FloatArray
    feedback: FloatArray


@dataclass
class LogRecorder:
    """Collects impression rows in log schema v1 (column order fixed, see ``docs/simulator.md``)."""

    world: World
    chunks: list[dict[str, npt.NDArray[np.generic]]] = field(default_factory=list)

    def add(
        self,
        user_id: IntArray,
        session_id: IntArray,
        request_id: IntArray,
        ts: IntArray,
        user_features: FloatArray,
        actions: FloatArray,
        logp: FloatArray | None,
        result: StepResult,
    ) -> None:
        """Record one request per session (arrays of shape (n,) / (n, ...))."""
        n, s = result.items.shape
        rep = lambda a: np.repeat(a, s, axis=0)  # noqa: E731
        chunk: dict[str, npt.NDArray[np.generic]] = {
            "user_id": rep(user_id),
            "session_id": rep(session_id),
            "request_id": rep(request_id),
            "ts": rep(ts),
            "item_id": result.items.reshape(-1),
            "position": np.tile(np.arange(s, dtype=np.int64), n),
        }
        uf = rep(user_features)
        for j, name in enumerate(self.world.user_features):
            chunk[name] = uf[:, j]
        preds = result.preds.reshape(n * s, -1)
        for k, t in enumerate(self.world.tasks):
            chunk[f"pred_{t}"] = preds[:, k]
        w = rep(actions)
        for k, t in enumerate(self.world.tasks):
            chunk[f"w_{t}"] = w[:, k]
        if logp is not None:
            chunk["behavior_logp"] = rep(logp)
        fb = result.feedback.reshape(n * s, -1)
        for j, c in enumerate(self.world.feedback):
            chunk[c] = fb[:, j]
        chunk["duration"] = self.world.duration[result.items.reshape(-1)]
        self.chunks.append(chunk)

    def frame(self) -> pd.DataFrame:
        """All recorded rows, sorted by (user, ts, request, position)."""
        if not self.chunks:
            return pd.DataFrame()
        keys = list(self.chunks[0])
        data = {k: np.concatenate([c[k] for c in self.chunks]) for k in keys}
        df = pd.DataFrame(data)
        int_cols = ("user_id", "session_id", "request_id", "ts", "item_id", "position")
        for c in int_cols:
            df[c] = df[c].astype(np.int64)
        for c in self.world.feedback:
            if self.world.spec.responses[c].kind != "watch":
                df[c] = df[c].astype(np.int8)
        df = df.sort_values(["user_id", "ts", "request_id", "position"], kind="stable")
        return df.reset_index(drop=True)


class UserPool:
    """Users with their history across sessions (the online side of ``hist_*`` features).

    Equivalent to :class:`batchrl_mtf.data.features.UserHistory` per user, kept as arrays: the
    feedback of each user's last ``hist_n`` impressions and the number of finished sessions.

    Args:
        world: The world.
        users: The users.
        hist_n: History window in impressions.
    """

    def __init__(self, world: World, users: Users, hist_n: int) -> None:
        self.world = world
        self.users = users
        self.hist_n = hist_n
        n_fb = len(world.feedback)
        self._hist: list[FloatArray] = [np.zeros((0, n_fb)) for _ in range(len(users))]
        self.n_sessions = np.zeros(len(users), dtype=np.int64)
        self.last_end_ms = np.zeros(len(users), dtype=np.int64)

    def extend(self, users: Users) -> None:
        """Add users (their indices continue after the existing ones)."""
        old = self.users
        self.users = Users(
            np.concatenate([old.segment, users.segment]),
            np.concatenate([old.features, users.features]),
            np.concatenate([old.offsets, users.offsets]),
            np.concatenate([old.day_offset_ms, users.day_offset_ms]),
            None
            if old.start is None or users.start is None
            else np.concatenate([old.start, users.start]),
        )
        n_fb = len(self.world.feedback)
        self._hist += [np.zeros((0, n_fb)) for _ in range(len(users))]
        self.n_sessions = np.concatenate([self.n_sessions, np.zeros(len(users), dtype=np.int64)])
        self.last_end_ms = np.concatenate([self.last_end_ms, np.zeros(len(users), dtype=np.int64)])

    def hist_rates(self, index: IntArray) -> FloatArray:
        """``hist_<fb>_rate`` for users ``index``, shape (n, n_feedback)."""
        out = np.zeros((len(index), len(self.world.feedback)))
        for i, u in enumerate(index):
            h = self._hist[int(u)]
            if len(h):
                out[i] = h.mean(axis=0)
        return out

    def session_start_ms(self, index: IntArray, rng: np.random.Generator) -> IntArray:
        """Start time of each user's next session: day ``n_sessions``, at the user's time of day
        plus up to an hour of jitter, never before an hour after the previous session ended."""
        sess = self.world.spec.session
        day = (self.n_sessions[index] * sess.gap_h * MS_PER_HOUR).astype(np.int64)
        jitter = rng.integers(0, MS_PER_HOUR, size=len(index))
        planned = sess.start_ms + day + self.users.day_offset_ms[index] + jitter
        return np.maximum(planned, self.last_end_ms[index] + MS_PER_HOUR).astype(np.int64)

    def end_session(self, user: int, impressions: FloatArray, end_ms: int) -> None:
        """Append a finished session's impressions (n_items, n_feedback), in serving order."""
        h = np.concatenate([self._hist[user], impressions])[-self.hist_n :]
        self._hist[user] = h
        self.n_sessions[user] += 1
        self.last_end_ms[user] = end_ms


class SessionBatch:
    """``B`` sessions stepped together (the native batch API).

    Args:
        world: The world.
        pool: The users and their history.
        users: Index into ``pool`` of each session's user, shape (B,).
        rng: Source of randomness of these sessions.
    """

    def __init__(
        self, world: World, pool: UserPool, users: IntArray, rng: np.random.Generator
    ) -> None:
        spec = world.spec
        self.world = world
        self.pool = pool
        self.rng = rng
        self.users = np.asarray(users, dtype=np.int64)
        b = len(self.users)
        n_fb = len(world.feedback)
        self.fcfg = spec.features
        self.feedback_index = (
            np.array([world.feedback.index(c) for c in self.fcfg.feedback], dtype=np.int64)
            if self.fcfg.feedback
            else np.arange(n_fb)
        )
        self.segment = pool.users.segment[self.users]
        self.user_features = pool.users.features[self.users]
        self.offsets = pool.users.offsets[self.users]
        self.session_index = pool.n_sessions[self.users].copy()
        self.learned = world.learned
        if self.learned is not None:  # start states come from the logs (docs/learned_env.md)
            starts = pool.users.start
            if starts is None:
                raise ValueError("users of a learned world need start states")
            self.start_row = starts[self.users]
            self.hist_rates = self.learned.hist_rates[self.start_row]
            self.hist_sessions = self.learned.hist_sessions[self.start_row]
            self.start_ms = self.learned.start_ms[self.start_row].copy()
        else:
            self.hist_rates = pool.hist_rates(self.users)
            self.hist_sessions = self.session_index.astype(np.float64)
            self.start_ms = pool.session_start_ms(self.users, rng)
        self.ts = self.start_ms.copy()
        self.depth = np.zeros(b, dtype=np.int64)
        self.session_sums = np.zeros((b, n_fb))
        self.prev_sums = np.zeros((b, n_fb))
        # learned worlds: decayed feedback sums of the leave model's recency inputs
        learned_b = b if self.learned is not None else 0
        self.recent_sums = np.zeros((learned_b, n_fb))
        self.recent_actions = np.zeros((learned_b, len(world.tasks)))
        self.leave_class: IntArray | None = None  # learned worlds: latent leave-model classes
        if self.learned is not None:
            self.satisfaction = np.zeros(b)
        else:
            self.satisfaction = np.array(
                [spec.segments[g].sat_init for g in self.segment]
            ) + spec.session.sat_init_sd * rng.standard_normal(b)
        self.leave_base = np.array([s.leave_base for s in spec.segments])[self.segment]
        self.active = np.ones(b, dtype=bool)
        self._impressions: list[tuple[IntArray, FloatArray]] = []

    # ------------------------------------------------------------- identity
    @property
    def user_ids(self) -> IntArray:
        """Logged ``user_id`` of each session, shape (B,)."""
        return self.users

    @property
    def session_ids(self) -> IntArray:
        """Logged ``session_id``: ``user_id * 1000 + k`` for the user's k-th session, shape (B,)."""
        return self.users * 1000 + self.session_index

    def request_ids(self, rows: IntArray) -> IntArray:
        """Logged ``request_id`` of the current request of ``rows``: ``session_id * 1000 + t``."""
        return self.session_ids[rows] * 1000 + self.depth[rows]

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the observation columns."""
        fb = tuple(self.world.feedback[i] for i in self.feedback_index)
        return feature_names(self.world.user_features, fb, self.fcfg)

    # ---------------------------------------------------------- observation
    def observe(self, rows: IntArray | None = None) -> FloatArray:
        """State vectors of ``rows`` (all by default), shape (n, n_features)."""
        r = np.arange(len(self.users)) if rows is None else rows
        fi = self.feedback_index
        parts = StateParts(
            user=self.user_features[r],
            depth=self.depth[r].astype(np.float64),
            elapsed_s=(self.ts[r] - self.start_ms[r]).astype(np.float64) / 1000.0,
            session_sums=self.session_sums[r][:, fi],
            prev_sums=self.prev_sums[r][:, fi],
            hist_rates=self.hist_rates[r][:, fi],
            hist_sessions=self.hist_sessions[r],
            ts_ms=self.ts[r],
        )
        return assemble(parts, self.fcfg)

    # ----------------------------------------------------------------- step
    def step(self, actions: FloatArray, rows: IntArray | None = None) -> StepResult:
        """Serve one request to every running session (or to ``rows``).

        Args:
            actions: Fusion weights, shape (n, n_tasks), one row per served session.
            rows: Batch rows to serve; default: every running session, in row order.
        """
        world, spec, rng = self.world, self.world.spec, self.rng
        r = np.flatnonzero(self.active) if rows is None else np.asarray(rows, dtype=np.int64)
        w = np.asarray(actions, dtype=np.float64).reshape(len(r), len(world.tasks))
        if self.learned is not None:
            return self._step_learned(w, r)
        n = len(r)
        c, s = spec.world.n_candidates, spec.world.slate_size
        cand = rng.integers(0, spec.world.n_items, size=(n, c))
        seg = self.segment[r]
        fused = world.fused_features()
        if fused is None:
            preds = world.predict(seg, cand, self.users[r], self.user_features[r])
            scores = world.fusion.score(preds, w)
        else:  # same scores as world.fusion.score, transform precomputed per (segment, item)
            idx = seg[:, None] * spec.world.n_items + cand
            x = np.take(fused, idx, axis=0)
            scores = np.einsum("bck,bk->bc", x, w.astype(np.float32))
        shown = _slate(scores, s)
        items = np.take_along_axis(cand, shown, axis=1)
        shown_logits = world.candidate_logits(seg, self.offsets[r], items)
        if fused is None:
            shown_preds = np.take_along_axis(preds, shown[:, :, None], axis=1).astype(np.float64)
        else:
            shown_preds = world.predict(seg, items).astype(np.float64)
        fb = world.sample_feedback(shown_logits, items, rng)
        cols = {col: fb[:, :, j].reshape(-1) for j, col in enumerate(world.feedback)}
        stick_i, act_i = item_reward(spec.reward, cols)
        stick = stick_i.reshape(n, s).sum(axis=1)
        act = act_i.reshape(n, s).sum(axis=1)
        fb_req = fb.sum(axis=1)
        # hidden satisfaction and leaving
        root = fb[:, :, world.feedback.index(spec.root)]
        gain = (fb_req * world.sat_feedback[seg]).sum(axis=1) + (
            root * world.sat_item[seg[:, None], items]
        ).sum(axis=1)
        ss = spec.session
        if ss.sat_reward:
            gain = gain + ss.sat_reward * (stick + act)
        self.satisfaction[r] = ss.sat_decay * self.satisfaction[r] + gain - ss.sat_cost
        leave_p = _sigmoid(
            self.leave_base[r]
            + ss.leave_depth * self.depth[r]
            - ss.leave_sat * self.satisfaction[r]
        )
        terminated = rng.random(n) < leave_p
        if ss.leave_below > -np.inf:
            terminated |= self.satisfaction[r] < ss.leave_below
        return self._advance(r, items, shown_preds, fb, stick, act, terminated)

    def _advance(
        self,
        r: IntArray,
        items: IntArray,
        shown_preds: FloatArray,
        fb: FloatArray,
        stick: FloatArray,
        act: FloatArray,
        terminated: BoolArray,
    ) -> StepResult:
        """Book a served request: truncation, history, time, session sums, depth, episode end."""
        world, ss = self.world, self.world.spec.session
        s = items.shape[1]
        fb_req = fb.sum(axis=1)
        truncated = ~terminated & (self.depth[r] + 1 >= ss.max_requests)
        self._impressions.append((r, fb))
        # advance the state
        watch = fb[:, :, world.watch_columns].sum(axis=(1, 2)) if world.watch_columns else 0.0
        self.ts[r] += np.rint((watch + ss.overhead_s * s) * 1000.0).astype(np.int64)
        self.session_sums[r] += fb_req
        self.prev_sums[r] = fb_req
        self.depth[r] += 1
        done = terminated | truncated
        self.active[r[done]] = False
        return StepResult(
            rows=r,
            observations=self.observe(r),
            reward=stick + act,
            stickiness=stick,
            activeness=act,
            terminated=terminated,
            truncated=truncated,
            items=items.astype(np.int64),
            preds=shown_preds,
            feedback=fb,
        )

    def _step_learned(self, w: FloatArray, r: IntArray) -> StepResult:
        """One request in a learned world (``docs/learned_env.md``): candidates from the logged
        catalogue, the ranker's ``pred_*`` fused with ``w``, feedback drawn from the response
        model, leaving drawn from the leave model."""
        world, spec, rng, model = self.world, self.world.spec, self.rng, self.learned
        if model is None:
            raise ValueError("_step_learned needs a learned world")
        n = len(r)
        c, s = spec.world.n_candidates, spec.world.slate_size
        if self.leave_class is None:  # drawn once per batch, from the start states
            self.leave_class = model.draw_leave_classes(self.observe(), rng)
        obs = self.observe(r)
        start = self.start_row[r]
        cand = model.draw_candidates(n, c, rng)
        preds = model.rank(start, self.user_features[r], cand)
        scores = world.fusion.score(preds, w)
        shown = _slate(scores, s)
        items = np.take_along_axis(cand, shown, axis=1)
        shown_preds = np.take_along_axis(preds, shown[:, :, None], axis=1).astype(np.float64)
        fb = model.sample_feedback(start, self.user_features[r], items, rng)
        cols = {col: fb[:, :, j].reshape(-1) for j, col in enumerate(world.feedback)}
        stick_i, act_i = item_reward(spec.reward, cols)
        stick = stick_i.reshape(n, s).sum(axis=1)
        act = act_i.reshape(n, s).sum(axis=1)
        fb_req = fb.sum(axis=1)
        decay = model.leave.recency_decay
        if decay is not None:
            self.recent_sums[r] = decay * self.recent_sums[r] + fb_req
            self.recent_actions[r] = decay * self.recent_actions[r] + w
        leave_p = model.leave_probability(
            obs,
            fb_req,
            self.recent_sums[r] if decay is not None else None,
            self.leave_class[r],
            w,
            self.recent_actions[r] if decay is not None else None,
        )
        terminated = rng.random(n) < leave_p
        return self._advance(r, items, shown_preds, fb, stick, act, terminated)

    def finish(self) -> None:
        """Write every ended session's impressions into the users' history.

        Call once, after every session of the batch has ended.
        """
        if not self._impressions:
            return
        rows = np.concatenate([r for r, _ in self._impressions])
        fbs = np.concatenate([f for _, f in self._impressions])  # (n_req, S, F)
        order = np.argsort(rows, kind="stable")
        rows, fbs = rows[order], fbs[order]
        bounds = np.flatnonzero(np.diff(rows)) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [len(rows)]])
        n_fb = fbs.shape[2]
        last_ts = self.ts
        for a, e in zip(starts, ends, strict=True):
            row = int(rows[a])
            self.pool.end_session(
                int(self.users[row]), fbs[a:e].reshape(-1, n_fb), int(last_ts[row])
            )
        self._impressions = []


def _slate(scores: npt.NDArray[np.floating], slate_size: int) -> npt.NDArray[np.intp]:
    """Candidate positions of the top ``slate_size`` scores per request, best first.

    Args:
        scores: Fused scores, shape (n_requests, n_candidates).
        slate_size: Items shown per request.

    Returns:
        Shape (n_requests, min(slate_size, n_candidates)).
    """
    n, c = scores.shape
    if slate_size < c:
        top = np.argpartition(scores, c - slate_size, axis=1)[:, c - slate_size :]
    else:
        top = np.tile(np.arange(c), (n, 1))
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)
