"""The learned world at run time: what a ``world.kind = "learned"`` spec steps with.

:class:`LearnedModel` is attached to :class:`batchrl_mtf.sim.World` when the spec's world is
learned; :class:`batchrl_mtf.sim.SessionBatch` then draws candidates from the logged catalogue,
ranks them with the ranker (``[predictor] path``), draws feedback from the response model and
session ends from the leave model. Everything else (fusion, reward, state features, episode
bookkeeping, ``FusionEnv``, ``run_sessions``) is the simulator's own code. See
``docs/learned_env.md``. The artefacts' files are read by :mod:`batchrl_mtf.learned.artefacts`
and :mod:`batchrl_mtf.learned.leave_model`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pandas as pd

import batchrl_mtf.predictors as predictors  # its torch-backed names load on first use
from batchrl_mtf.errors import ConfigError, PredictorError
from batchrl_mtf.learned.artefacts import (
    need_columns,
    read_json,
    read_parquet,
    read_ranker_scale,
    read_responses,
)
from batchrl_mtf.learned.leave_model import LeaveModel, leave_feature_names
from batchrl_mtf.predictors.features import signed_log
from batchrl_mtf.sim.runner import feature_names_of
from batchrl_mtf.sim.world import Users

if TYPE_CHECKING:
    from batchrl_mtf.predictors import FrozenPredictor
    from batchrl_mtf.sim.world import Users, World

__all__ = ["LearnedModel"]

logger = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class _Encoder:
    """Fast inputs of a frozen predictor for (start state, catalogue item) pairs.

    User rows are fixed per start state and item rows per catalogue item, so both are encoded
    once; a request only gathers and concatenates them (no pandas per request).
    """

    def __init__(
        self,
        pred: FrozenPredictor,
        user_ids: pd.Series,
        user_values: Mapping[str, FloatArray],
        item_ids: pd.Series,
        item_values: Mapping[str, FloatArray],
    ) -> None:

        v = pred.vocab
        self.pred = pred
        self.user_idx = v.user_index(user_ids)
        self.item_idx = v.item_index(item_ids)
        n_uf, n_if = len(v.user_features), len(v.item_features)
        self.n_context = len(v.context_features)

        def block(
            names: Sequence[str],
            values: Mapping[str, FloatArray],
            table: np.ndarray,
            idx: IntArray,
            offset: int,
        ) -> npt.NDArray[np.float32]:
            out = np.zeros((len(idx), len(names)), dtype=np.float32)
            for j, f in enumerate(names):
                if f in values:
                    x = np.asarray(values[f], dtype=np.float64)
                    z = (signed_log(x) - v.means[offset + j]) / v.stds[offset + j]
                    out[:, j] = np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)
                else:
                    out[:, j] = table[idx, j]
            return out

        self.user_dense = block(v.user_features, user_values, v.user_table, self.user_idx, 0)
        self.item_dense = block(v.item_features, item_values, v.item_table, self.item_idx, n_uf)
        self.n_dense = n_uf + n_if + self.n_context

    def predict(self, start: IntArray, items: IntArray) -> FloatArray:
        """Probabilities of start states ``start`` (n,) with items ``items`` (n, m): (n, m, K)."""
        n, m = items.shape
        u = np.repeat(start, m)
        flat = items.reshape(-1)
        parts = [self.user_dense[u], self.item_dense[flat]]
        if self.n_context:
            parts.append(np.zeros((n * m, self.n_context), dtype=np.float32))
        dense = np.concatenate(parts, axis=1)
        out = self.pred.predict_arrays(self.user_idx[u], self.item_idx[flat], dense)
        return np.clip(out, 0.0, 1.0).reshape(n, m, -1)


class LearnedModel:
    """The learned parts of a ``world.kind = "learned"`` world (built by :class:`World`).

    Reads every artefact named by the spec's ``[learned]`` table and ``[predictor] path`` when it
    is built, and checks that they fit the spec (feedback columns, tasks, user and state features).

    Args:
        world: The world being built (its spec, feedback and user features are used).

    Raises:
        ConfigError: An artefact is missing, unreadable or does not fit the spec.
    """

    def __init__(self, world: World) -> None:
        spec = world.spec
        learned = spec.learned
        if learned is None:  # pragma: no cover - PlatformSpec.check refuses this
            raise ConfigError(f"{spec.source}: world.kind = 'learned' needs a [learned] table")
        self.world = world
        self.source = spec.source
        self.candidates = learned.candidates
        cat = read_parquet(learned.catalogue, "catalogue")
        need_columns(cat, ("item_id", "duration", "exposures"), "catalogue", learned.catalogue)
        if len(cat) != spec.world.n_items:
            raise ConfigError(
                f"{spec.source}: world.n_items = {spec.world.n_items} but learned.catalogue "
                f"{learned.catalogue} has {len(cat)} items"
            )
        self.catalogue = cat
        self.duration = cat["duration"].to_numpy(dtype=np.float64)
        expo = cat["exposures"].to_numpy(dtype=np.float64)
        self.exposure_p = expo / expo.sum() if expo.sum() > 0 else None
        starts = read_parquet(learned.start_states, "start_states")
        hist_cols = [f"hist_{c}_rate" for c in world.feedback]
        need_columns(
            starts,
            ("user_id", "ts", *world.user_features, *hist_cols, "hist_sessions"),
            "start_states",
            learned.start_states,
        )
        if len(starts) == 0:
            raise ConfigError(f"learned.start_states: {learned.start_states}: no start states")
        self.starts = starts
        self.user_values = {u: starts[u].to_numpy(dtype=np.float64) for u in world.user_features}
        self.user_matrix = (
            np.column_stack([self.user_values[u] for u in world.user_features])
            if world.user_features
            else np.zeros((len(starts), 0))
        )
        self.hist_rates = np.column_stack(
            [starts[c].to_numpy(dtype=np.float64) for c in hist_cols]
        ).reshape(len(starts), len(hist_cols))
        self.hist_sessions = starts["hist_sessions"].to_numpy(dtype=np.float64)
        self.start_ms = starts["ts"].to_numpy(dtype=np.int64)
        self.columns = read_responses(learned.responses)
        self.ranker_scale = read_ranker_scale(learned.responses)
        names = [c.name for c in self.columns]
        if names != list(world.feedback):
            raise ConfigError(
                f"learned.responses: {learned.responses}: columns {names} differ from the spec's "
                f"responses {list(world.feedback)}"
            )
        self.leave = self._read_leave(learned.leave_model)
        self.ranker: _Encoder | None = None
        self.grader: _Encoder | None = None
        self.load()

    def _read_leave(self, path: str) -> LeaveModel:

        p = Path(path)
        doc = read_json(p, "leave_model")
        model = LeaveModel.from_json(doc, f"learned.leave_model: {p}")
        fcfg = self.world.spec.features
        fb = fcfg.feedback or self.world.feedback
        expected = leave_feature_names(
            feature_names_of(self.world),
            fb,
            recency=model.recency_decay is not None,
            tasks=self.world.tasks if model.action_inputs else (),
        )
        if model.features != expected:
            raise ConfigError(
                f"learned.leave_model: {p}: expected inputs {list(expected)}, found "
                f"{list(model.features)}"
            )
        fi = [self.world.feedback.index(c) for c in fb]
        self._leave_fb = np.asarray(fi, dtype=np.int64)
        return model

    def load(self) -> None:
        """Load the ranker and the response model (once)."""
        if self.ranker is not None and self.grader is not None:
            return

        spec = self.world.spec
        assert spec.learned is not None
        ranker = self.world._load_artefact()
        path = spec.learned.response_model
        try:
            grader = predictors.load_predictor(path)
        except PredictorError as exc:
            raise ConfigError(f"{spec.source}: learned.response_model: {exc}") from None
        missing = [c.name for c in self.columns if c.name not in grader.tasks]
        if missing:
            raise ConfigError(
                f"{spec.source}: learned.response_model {path}: predictor lacks {missing}"
            )
        for c in self.columns:
            if c.kind == "watch" and c.name not in grader.regression_caps:
                raise ConfigError(
                    f"{spec.source}: learned.response_model {path}: {c.name!r} is not a "
                    "regression task of the predictor"
                )
        items = {"duration": self.duration}
        ids = self.starts["user_id"].astype(str)
        item_ids = self.catalogue["item_id"].astype(str)
        self.ranker = _Encoder(ranker, ids, self.user_values, item_ids, items)
        self._rank_cols = np.asarray([ranker.tasks.index(t) for t in self.world.tasks])
        self._rank_decode: tuple[FloatArray, FloatArray] | None = None
        if self.ranker_scale:
            bad = [
                t
                for t in self.world.tasks
                if t not in self.ranker_scale or t not in ranker.regression_caps
            ]
            if bad:
                raise ConfigError(
                    f"{spec.source}: the ranker is distilled (ranker_scale in "
                    f"{spec.learned.responses}) but task(s) {bad} lack a scale or a regression head"
                )
            self._rank_decode = (
                np.asarray([self.ranker_scale[t] for t in self.world.tasks]),
                np.asarray([math.log1p(ranker.regression_caps[t]) for t in self.world.tasks]),
            )
        self.grader = _Encoder(grader, ids, self.user_values, item_ids, items)
        self._grade_cols = {c.name: grader.tasks.index(c.name) for c in self.columns}
        self._grader = grader

    # ------------------------------------------------------------------ serving
    def new_users(self, n: int, rng: np.random.Generator) -> Users:
        """``n`` users, each a start state drawn uniformly from the logged ones."""

        rows = rng.integers(0, len(self.starts), size=n).astype(np.int64)
        return self.users_at(rows)

    def users_at(self, rows: IntArray) -> Users:
        """Users starting at the given start states ``rows`` (n,)."""

        rows = np.asarray(rows, dtype=np.int64)
        n = len(rows)
        return Users(
            segment=np.zeros(n, dtype=np.int64),
            features=self.user_matrix[rows].copy(),
            offsets=np.zeros((n, len(self.world.logit_names))),
            day_offset_ms=np.zeros(n, dtype=np.int64),
            start=rows,
        )

    def draw_candidates(self, n: int, c: int, rng: np.random.Generator) -> IntArray:
        """Candidate catalogue rows, shape (n, c): uniform, or by logged exposure count."""
        n_items = len(self.duration)
        if self.candidates == "exposure" and self.exposure_p is not None:
            return rng.choice(n_items, size=(n, c), p=self.exposure_p).astype(np.int64)
        return rng.integers(0, n_items, size=(n, c)).astype(np.int64)

    def rank(self, start: IntArray, user_features: FloatArray, items: IntArray) -> FloatArray:
        """The ranker's ``pred_<task>`` for ``items`` (n, c) of start states ``start`` (n,):
        shape (n, c, n_tasks). (User features are fixed per start state.)"""
        assert self.ranker is not None
        out = self.ranker.predict(start, items)[:, :, self._rank_cols]
        if self._rank_decode is not None:  # distilled: back to the platform's probabilities
            sc, log_cap = self._rank_decode
            out = np.clip(sc * np.expm1(out * log_cap), 0.0, 1.0)
        return out

    def sample_feedback(
        self,
        start: IntArray,
        user_features: FloatArray,
        items: IntArray,
        rng: np.random.Generator,
    ) -> FloatArray:
        """Draw the feedback of shown ``items`` (n, s) from the response model: (n, s, F).

        ``binary``: ``Bernoulli(p)``, or given its parent ``Bernoulli(min(p / p_parent, 1))``
        where the parent is 1. ``watch``: ``exp(N(mu, log_sd^2)) - 1`` seconds, clipped to the
        item's duration, with ``mu = min(p / p_parent, 1) * log1p(cap)`` (the regression head
        predicts ``log1p(seconds) / log1p(cap)`` averaged over all impressions, so dividing by
        ``p_parent`` conditions it on the parent), times the parent.
        """
        assert self.grader is not None
        probs = self.grader.predict(start, items)
        n, s = items.shape
        out = np.zeros((n, s, len(self.columns)))
        col = {c.name: j for j, c in enumerate(self.columns)}
        eps = 1e-6
        for j, c in enumerate(self.columns):
            p = probs[:, :, self._grade_cols[c.name]]
            if c.given:
                parent = out[:, :, col[c.given]]
                p_parent = probs[:, :, self._grade_cols[c.given]]
                p = np.minimum(p / np.maximum(p_parent, eps), 1.0)
            else:
                parent = np.ones((n, s))
            if c.kind == "binary":
                out[:, :, j] = parent * (rng.random((n, s)) < p)
            else:
                cap = self._grader.regression_caps[c.name]
                mu = p * math.log1p(cap)
                z = mu + c.log_sd * rng.standard_normal((n, s))
                secs = np.clip(np.expm1(z), 0.0, self.duration[items])
                out[:, :, j] = parent * secs
        return out

    def draw_leave_classes(self, obs: FloatArray, rng: np.random.Generator) -> IntArray:
        """Latent leave-model class of each session, from its state ``obs`` (n, n_features),
        shape (n,) (zeros without latent classes; draws nothing then)."""
        if self.leave.mixture is None:
            return np.zeros(len(obs), dtype=np.int64)
        return self.leave.draw_classes(obs, rng)

    def leave_probability(
        self,
        obs: FloatArray,
        fb_req: FloatArray,
        recent: FloatArray | None = None,
        classes: IntArray | None = None,
        actions: FloatArray | None = None,
        recent_actions: FloatArray | None = None,
    ) -> FloatArray:
        """P(the session ends after this request), shape (n,), from the state before the request
        ``obs`` (n, n_features), the request's feedback sums ``fb_req`` (n, F) and, for a leave
        model with recency inputs, the session's decayed feedback sums ``recent`` (n, F) including
        this request (world feedback order); for latent classes each session's ``classes`` (n,);
        for action inputs the request's weights ``actions`` (n, n_tasks) and, with recency, their
        decayed sums ``recent_actions`` (n, n_tasks) including this request.

        Raises:
            ValueError: An input the leave model needs is missing.
        """
        parts = [obs, fb_req[:, self._leave_fb]]
        if self.leave.recency_decay is not None:
            if recent is None:
                raise ValueError("this leave model needs the decayed feedback sums `recent`")
            parts.append(recent[:, self._leave_fb])
        if self.leave.action_inputs:
            if actions is None:
                raise ValueError("this leave model needs the request's weights `actions`")
            parts.append(actions)
            if self.leave.recency_decay is not None:
                if recent_actions is None:
                    raise ValueError("this leave model needs the decayed weights `recent_actions`")
                parts.append(recent_actions)
        return self.leave.probability(np.concatenate(parts, axis=1), classes)
