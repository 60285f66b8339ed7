"""The Gymnasium fusion environment: one session of one simulated user per episode."""

from __future__ import annotations

from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
import numpy.typing as npt
import pandas as pd

from batchrl_mtf.sim.engine import LogRecorder, SessionBatch, UserPool
from batchrl_mtf.sim.runner import feature_names_of
from batchrl_mtf.sim.spec import PlatformSpec, load_spec
from batchrl_mtf.sim.world import World

__all__ = ["FusionEnv"]

FloatArray = npt.NDArray[np.float64]
USER_BLOCK = 64


class FusionEnv(gym.Env[FloatArray, FloatArray]):
    """Choose the multi-task fusion weights of a recommender feed, request by request.

    ## Description

    A simulated platform (``envs/*.toml``, see ``docs/simulator.md``) serves a feed. At every
    request of a user's session, ``n_candidates`` items are drawn from the catalogue, the
    platform's frozen multi-task predictor gives ``pred_<task>`` per candidate, the agent's weight
    vector ``w`` fuses them (``logsum``: ``sum_k w_k log(p_k + beta_k)``; ``sum``:
    ``sum_k w_k p_k``) and the top ``slate_size`` items are shown. The user responds (clicks,
    watch time, likes, ...) according to the hidden true model of their segment, and a hidden
    satisfaction state, moved by what they got, decides whether they leave. This is the MDP of
    BatchRL-MTF (Zhang et al., KDD 2022): one session is one episode.

    Users return: episode ``i`` after a seeded reset is session ``i % sessions_per_user`` of user
    ``i // sessions_per_user``, a day after that user's previous session, so the ``hist_*``
    features carry the user's earlier sessions.

    ## Observation Space

    ``Box(-inf, inf, (n_features,), float64)``: exactly the state vector of
    :mod:`batchrl_mtf.data.features` that ``build-dataset`` computes from the logs of these sessions
    (``u_*``, ``session_depth``, ``session_elapsed_s``, ``session_<fb>``, ``prev_<fb>``,
    ``hist_<fb>_rate``, ``hist_sessions``, ``hour_sin``, ``hour_cos``), produced by the same code
    (:func:`batchrl_mtf.data.features.assemble`). ``feature_names`` names the columns.

    ## Action Space

    ``Box(fusion.low, fusion.high, (n_tasks,), float64)``: one fusion weight per task, in
    ``tasks`` order (``w_<task>``).

    ## Rewards

    The configured request reward (:mod:`batchrl_mtf.data.reward`): stickiness (watch time, valid
    plays) plus activeness (likes, follows, comments, shares) summed over the shown items.
    ``info["stickiness"]`` and ``info["activeness"]`` give the parts.

    ## Starting State

    A user's session starts at depth 0 with empty session sums, the user's visible ``u_*``
    features and history, at a time of day drawn per user; the hidden satisfaction starts at the
    segment's ``sat_init`` plus noise.

    ## Episode End

    Terminated when the user leaves (after each request with probability
    ``sigmoid(leave_base + leave_depth * t - leave_sat * satisfaction)``); truncated when the
    session reaches ``session.max_requests`` requests.

    ``info`` of a step carries ``items`` (shown item ids, slate order), ``preds`` and
    ``feedback`` (column -> array per shown item), ``stickiness``, ``activeness``, ``user_id``,
    ``session_id``, ``request_id`` and the hidden ``segment``.

    ## Arguments

    ``gymnasium.make("batchrl_mtf.envs:batchrl_mtf/Fusion-v0", spec="envs/x.toml", record_logs=False)``;
    ``batchrl_mtf/ShortVideo-v0`` and ``batchrl_mtf/ECommerce-v0`` are the shipped specs. With
    ``record_logs=True``, :meth:`logs` returns the impression logs (schema v1) of every episode
    since the last seeded reset.

    ## Version History

    * v0: Initial version.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(
        self,
        spec: str | Path | PlatformSpec | None = None,
        record_logs: bool = False,
        render_mode: str | None = None,
    ) -> None:
        self.platform = spec if isinstance(spec, PlatformSpec) else load_spec(spec)
        self.world = World(self.platform)
        self.world.check_predictor()
        self.tasks = self.world.tasks
        self.feature_names = feature_names_of(self.world)
        self.observation_space = gym.spaces.Box(
            -np.inf, np.inf, shape=(len(self.feature_names),), dtype=np.float64
        )
        self.action_space = gym.spaces.Box(
            self.world.low.copy(), self.world.high.copy(), dtype=np.float64
        )
        self.render_mode = render_mode
        self.record_logs = record_logs
        self._pool: UserPool | None = None
        self._batch: SessionBatch | None = None
        self._episode = 0
        self._recorder: LogRecorder | None = None

    # ------------------------------------------------------------------ gym API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[FloatArray, dict[str, Any]]:
        """Start the next session (a seeded reset starts a fresh user population)."""
        super().reset(seed=seed)
        if seed is not None or self._pool is None:
            self._pool = UserPool(
                self.world,
                self.world.new_users(0, self.np_random),
                self.platform.features.hist_n,
            )
            self._episode = 0
            self._batch = None
            self._recorder = LogRecorder(self.world) if self.record_logs else None
        pool = self._pool
        if self._batch is not None:  # reset in the middle of a session: it ends here
            self._close_session()
        user = self._episode // self.platform.users.sessions_per_user
        while user >= len(pool.users):
            pool.extend(self.world.new_users(USER_BLOCK, self.np_random))
        self._batch = SessionBatch(
            self.world, pool, np.array([user], dtype=np.int64), self.np_random
        )
        return self._batch.observe()[0], self._info_start()

    def step(
        self, action: FloatArray
    ) -> tuple[FloatArray, SupportsFloat, bool, bool, dict[str, Any]]:
        """Serve one request with fusion weights ``action`` (n_tasks,)."""
        batch = self._batch
        if batch is None or not batch.active[0]:
            raise gym.error.ResetNeeded("call reset() before step() (the session has ended)")
        w = np.asarray(action, dtype=np.float64).reshape(1, len(self.tasks))
        rows = np.zeros(1, dtype=np.int64)
        ts = batch.ts[rows].copy()
        req = batch.request_ids(rows)
        res = batch.step(w, rows)
        if self._recorder is not None:
            self._recorder.add(
                batch.user_ids, batch.session_ids, req, ts, batch.user_features, w, None, res
            )
        terminated, truncated = bool(res.terminated[0]), bool(res.truncated[0])
        info = {
            "items": res.items[0],
            "preds": {t: res.preds[0, :, k] for k, t in enumerate(self.tasks)},
            "feedback": {c: res.feedback[0, :, j] for j, c in enumerate(self.world.feedback)},
            "stickiness": float(res.stickiness[0]),
            "activeness": float(res.activeness[0]),
            "request_id": int(req[0]),
            **self._info_start(),
        }
        if terminated or truncated:
            self._close_session()
        return res.observations[0], float(res.reward[0]), terminated, truncated, info

    # ------------------------------------------------------------------ extras
    def logs(self) -> pd.DataFrame:
        """Impression logs (schema v1, no ``behavior_logp``) since the last seeded reset.

        Raises:
            RuntimeError: The environment was made without ``record_logs=True``.
        """
        if self._recorder is None:
            raise RuntimeError("make the environment with record_logs=True to keep its logs")
        return self._recorder.frame()

    def _info_start(self) -> dict[str, Any]:
        b = self._batch
        assert b is not None
        return {
            "user_id": int(b.user_ids[0]),
            "session_id": int(b.session_ids[0]),
            "segment": self.world.segment_names[int(b.segment[0])],
        }

    def _close_session(self) -> None:
        if self._batch is not None:
            self._batch.finish()
            self._batch = None
            self._episode += 1
