"""The simulated world of a spec: catalogue, users, true responses and the frozen predictor.

Everything here is vectorised over a batch of requests: ``B`` requests x ``C`` candidates x
``K`` tasks at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from batchrl_mtf.errors import ConfigError, PredictorError
from batchrl_mtf.sim.backends import LearnedBackend, load_backend
from batchrl_mtf.sim.spec import PlatformSpec

__all__ = ["Users", "World"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _sigmoid(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class Users:
    """A population of simulated users.

    Attributes:
        segment: Segment index per user, shape (n,).
        features: Visible ``u_*`` features, shape (n, n_user_features).
        offsets: Personal logit offsets per response, shape (n, n_responses).
        day_offset_ms: Time of day of each user's sessions (ms after midnight), shape (n,).
        start: Learned worlds only: the start state (row of the start-state table) of each user,
            shape (n,); ``None`` in simulated worlds.
    """

    segment: IntArray
    features: FloatArray
    offsets: FloatArray
    day_offset_ms: IntArray
    start: IntArray | None = None

    def __len__(self) -> int:
        return len(self.segment)


class World:
    """The fixed part of a platform: catalogue, per-segment response tables, the predictor.

    Args:
        spec: The platform spec. The catalogue is drawn from ``spec.world.seed``.
    """

    def __init__(self, spec: PlatformSpec) -> None:
        self.spec = spec
        w = spec.world
        rng = np.random.default_rng(w.seed)
        self.tasks = spec.tasks
        self.feedback = spec.feedback
        self.user_features = spec.users.features
        self.factors = rng.standard_normal((w.n_items, len(w.factors)))
        dur = w.duration_median_s * np.exp(w.duration_sigma * rng.standard_normal(w.n_items))
        self.duration = np.minimum(dur, w.duration_max_s)
        names = list(spec.responses)
        self.responses = names
        # responses that carry a logit (binary, watch): their column in the logit table
        self.logit_names = [n for n in names if spec.responses[n].kind != "threshold"]
        self.logit_index = {n: i for i, n in enumerate(self.logit_names)}
        self.watch_columns = [i for i, n in enumerate(names) if spec.responses[n].kind == "watch"]
        item = np.zeros((w.n_items, len(self.logit_names)))
        for n in self.logit_names:
            r = spec.responses[n]
            col = np.full(w.n_items, r.base)
            for f, c in r.loadings.items():
                col += c * self.factors[:, list(w.factors).index(f)]
            col += r.item_noise * rng.standard_normal(w.n_items)
            item[:, self.logit_index[n]] = col
        shares = np.array([s.share for s in spec.segments])
        self.segment_shares = shares / shares.sum()
        self.segment_names = tuple(s.name for s in spec.segments)
        seg_tables = []
        for s in spec.segments:
            off = np.array([s.offsets.get(n, 0.0) for n in self.logit_names])
            seg_tables.append(item + off)
        # (G, n_items, R) float32 logit tables
        self.logits = np.stack(seg_tables).astype(np.float32)
        # satisfaction of engaged items: (G, n_items)
        self.sat_item = np.stack(
            [
                sum(
                    (
                        c * self.factors[:, list(w.factors).index(f)]
                        for f, c in s.sat_factors.items()
                    ),
                    start=np.zeros(w.n_items),
                )
                for s in spec.segments
            ]
        )
        self.sat_feedback = np.array(
            [[s.sat_feedback.get(c, 0.0) for c in self.feedback] for s in spec.segments]
        )
        self.hint_means = np.array(
            [[s.hints.get(u, 0.0) for u in self.user_features] for s in spec.segments]
        ).reshape(len(spec.segments), len(self.user_features))
        k = len(self.tasks)
        noise = spec.predictor.noise
        self.pred_noise = np.asarray(noise if len(noise) == k else noise * k, dtype=np.float32)
        self.fusion = spec.fusion.to_fusion()
        """The platform's fusion (formula and offsets), applied to every request."""
        self.beta = np.asarray(self.fusion.beta or (1.0,) * k, dtype=np.float64)
        self.low = np.full(k, spec.fusion.low)
        self.high = np.full(k, spec.fusion.high)
        self.production = np.asarray(spec.fusion.production, dtype=np.float64)
        self._artefact: Any = None
        self._pred_table: npt.NDArray[np.float32] | None = None
        self._fused: npt.NDArray[np.float32] | None = None
        self.learned: LearnedBackend | None = None
        if w.kind == "learned":  # a world model learned from logs (a world backend)
            self.learned = load_backend("learned", spec.source)(self)
            self.duration = self.learned.duration

    # ------------------------------------------------------------------ users
    def new_users(self, n: int, rng: np.random.Generator, segment: int | None = None) -> Users:
        """Draw ``n`` users (segments by share, or all of ``segment``).

        In a learned world each user is a start state drawn uniformly from the logged ones.
        """
        if self.learned is not None:
            return self.learned.new_users(n, rng)
        g = len(self.segment_names)
        seg = (
            rng.choice(g, size=n, p=self.segment_shares)
            if segment is None
            else np.full(n, segment, dtype=np.int64)
        ).astype(np.int64)
        feats = self.hint_means[seg] + self.spec.users.hint_noise * rng.standard_normal(
            (n, len(self.user_features))
        )
        offsets = self.spec.users.offset_sd * rng.standard_normal((n, len(self.logit_names)))
        day = rng.integers(0, 16 * 3_600_000, size=n).astype(np.int64)
        return Users(seg, np.round(feats, 6), offsets, day)

    # -------------------------------------------------------------- responses
    def candidate_logits(
        self, segment: IntArray, offsets: FloatArray, items: IntArray
    ) -> npt.NDArray[np.float32]:
        """True response logits of ``items`` (B, C) for users with ``segment`` (B,) and personal
        ``offsets`` (B, R): shape (B, C, R), float32."""
        out = self.logits[segment[:, None], items]
        out += offsets[:, None, :].astype(np.float32)
        return out

    def task_probs(self, logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """True unconditional probability of every task, shape (..., K), from logits (..., R)."""
        spec = self.spec
        probs: dict[str, npt.NDArray[np.float32]] = {}
        out = []
        for n in self.responses:
            r = spec.responses[n]
            if r.kind == "binary":
                p = _sigmoid(logits[..., self.logit_index[n]])
            elif r.kind == "threshold":
                parent = spec.responses[r.of]
                cut = np.float32(np.log(r.ratio / (1 - r.ratio)))
                p = _sigmoid((logits[..., self.logit_index[r.of]] - cut) / parent.noise_scale)
                if parent.given:
                    p = p * probs[parent.given]
                probs[n] = p
                continue
            else:
                continue
            if r.given:
                p = p * probs[r.given]
            probs[n] = p
        for t in self.tasks:
            out.append(probs[t])
        return np.stack(out, axis=-1).astype(np.float32)

    def sample_feedback(
        self, logits: npt.NDArray[np.floating[Any]], items: IntArray, rng: np.random.Generator
    ) -> FloatArray:
        """Draw the feedback of shown items.

        Args:
            logits: True logits of the shown items, shape (B, S, R).
            items: Shown item indices, shape (B, S).
            rng: Source of randomness.

        Returns:
            Feedback, shape (B, S, F), columns in :attr:`feedback` order (float64).
        """
        spec = self.spec
        b, s = items.shape
        out = np.zeros((b, s, len(self.responses)))
        ratios: dict[str, FloatArray] = {}
        col = {n: i for i, n in enumerate(self.responses)}
        for n in self.responses:
            r = spec.responses[n]
            parent = out[..., col[r.given]] if r.given else np.ones((b, s))
            if r.kind == "binary":
                p = _sigmoid(logits[..., self.logit_index[n]].astype(np.float64))
                out[..., col[n]] = parent * (rng.random((b, s)) < p)
            elif r.kind == "watch":
                u = rng.random((b, s))
                u = np.clip(u, 1e-12, 1 - 1e-12)
                ratio = _sigmoid(
                    logits[..., self.logit_index[n]].astype(np.float64)
                    + r.noise_scale * np.log(u / (1 - u))
                )
                ratios[n] = np.where(parent > 0, ratio, 0.0)
                out[..., col[n]] = parent * ratio * self.duration[items]
            else:
                src = spec.responses[r.of]
                par = out[..., col[src.given]] if src.given else np.ones((b, s))
                out[..., col[n]] = par * (ratios[r.of] >= r.ratio)
        return out

    # -------------------------------------------------------------- predictor
    def _noisy_truth_table(self) -> npt.NDArray[np.float32]:
        """``pred_<task>`` per (segment, item): shape (G, n_items, K), float32."""
        rng = np.random.default_rng([self.spec.world.seed, 1])
        probs = self.task_probs(self.logits).astype(np.float64)
        p = np.clip(probs, 1e-6, 1 - 1e-6)
        z = np.log(p / (1 - p)) + rng.standard_normal(p.shape) * self.pred_noise.astype(np.float64)
        return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float32)

    def predict(
        self,
        segment: IntArray,
        items: IntArray,
        user_ids: IntArray | None = None,
        user_features: FloatArray | None = None,
    ) -> npt.NDArray[np.float32]:
        """The frozen predictor's ``pred_<task>`` for candidates ``items`` (B, C): (B, C, K).

        ``noisy-truth``: ``sigmoid(logit(p_seg) + noise_k * e)`` with ``p_seg`` the true
        probability for the user's segment (personal offsets are invisible to the predictor) and
        ``e ~ N(0, 1)`` drawn once per (segment, item, task): a frozen model errs the same way
        every time it sees the same input. ``artefact``: the trained predictor applied to
        (user, item) rows (``user_id``, ``u_*``; ``item_id``, ``duration``).
        """
        if self.spec.predictor.kind == "artefact":
            return self._predict_artefact(user_ids, user_features, items)
        table = self.pred_table()
        idx = segment[:, None] * self.spec.world.n_items + items
        return np.take(table, idx, axis=0)

    def pred_table(self) -> npt.NDArray[np.float32]:
        """``noisy-truth`` predictions of every (segment, item), shape (G * n_items, K)."""
        if self._pred_table is None:
            t = self._noisy_truth_table()
            self._pred_table = t.reshape(-1, t.shape[-1])
        return self._pred_table

    def fused_features(self) -> npt.NDArray[np.float32] | None:
        """Per (segment, item) the fusion inputs ``log(pred + beta)`` (``logsum``) or ``pred``
        (``sum``), shape (G * n_items, K) float32; ``None`` for an artefact predictor.

        Scores are then ``x @ w``: :meth:`Fusion.score <batchrl_mtf.core.fusion.Fusion.score>` on
        the same predictions, with its :meth:`~batchrl_mtf.core.fusion.Fusion.transform` taken once
        per (segment, item) instead of once per request and the products in float32 (for speed).
        """
        if self.spec.predictor.kind == "artefact":
            return None
        if self._fused is None:
            p = self.pred_table().astype(np.float64)
            x = self.fusion.transform(p)
            self._fused = x.astype(np.float32)
        return self._fused

    def _load_artefact(self) -> Any:
        if self._artefact is None:
            path = self.spec.predictor.path
            load_predictor = load_backend("predictor-artefact", self.spec.source)
            try:
                pred = load_predictor(path)
            except PredictorError as exc:
                raise ConfigError(f"{self.spec.source}: predictor.path: {exc}") from None
            missing = [t for t in self.tasks if t not in pred.tasks]
            if missing:
                raise ConfigError(
                    f"{self.spec.source}: predictor.path {path}: predictor lacks task(s) {missing}"
                )
            self._artefact = pred
        return self._artefact

    def check_predictor(self) -> None:
        """Load the artefact predictor now (raises :class:`ConfigError` when it cannot)."""
        if self.spec.predictor.kind == "artefact":
            self._load_artefact()
        if self.learned is not None:
            self.learned.load()

    def _predict_artefact(
        self,
        user_ids: IntArray | None,
        user_features: FloatArray | None,
        items: IntArray,
    ) -> npt.NDArray[np.float32]:
        if user_ids is None or user_features is None:
            raise ConfigError("artefact predictor needs user ids, user features and items")
        pred = self._load_artefact()
        b, c = items.shape
        users = pd.DataFrame({"user_id": np.repeat(user_ids, c)})
        for j, u in enumerate(self.user_features):
            users[u] = np.repeat(user_features[:, j], c)
        flat = items.reshape(-1)
        items_df = pd.DataFrame({"item_id": flat, "duration": self.duration[flat]})
        out = pred.predict(users, items_df)
        cols = [np.asarray(out[f"pred_{t}"], dtype=np.float32).reshape(b, c) for t in self.tasks]
        return np.stack(cols, axis=-1)
