"""The learned world at run time: what a ``world.kind = "learned"`` spec steps with.

:class:`LearnedModel` is attached to :class:`batchrl_mtf.sim.World` when the spec's world is
learned; :class:`batchrl_mtf.sim.SessionBatch` then draws candidates from the logged catalogue,
ranks them with the ranker (``[predictor] path``), draws feedback from the response model and
session ends from the leave model. Everything else (fusion, reward, state features, episode
bookkeeping, ``FusionEnv``, ``run_sessions``) is the simulator's own code. See
``docs/learned_env.md``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from batchrl_mtf.errors import ConfigError, PredictorError
from batchrl_mtf.predictors import load_predictor
from batchrl_mtf.predictors.features import signed_log
from batchrl_mtf.sim.runner import feature_names_of
from batchrl_mtf.sim.world import Users

if TYPE_CHECKING:
    from batchrl_mtf.predictors import FrozenPredictor
    from batchrl_mtf.sim.world import Users, World

__all__ = [
    "LEAVE_FORMAT",
    "RESPONSES_FORMAT",
    "LearnedModel",
    "LeaveMixture",
    "LeaveModel",
    "ResponseColumn",
    "leave_feature_names",
    "read_responses",
    "recent_feedback",
]

logger = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
LEAVE_FORMAT = "batchrl-mtf-leave@3"
LEAVE_FORMAT_V2 = "batchrl-mtf-leave@2"
LEAVE_FORMAT_V1 = "batchrl-mtf-leave@1"
RESPONSES_FORMAT = "batchrl-mtf-responses@1"


def _sigmoid(x: FloatArray) -> FloatArray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(x, -40.0, 40.0))), dtype=np.float64)


def leave_feature_names(
    state_names: Sequence[str],
    feedback: Sequence[str],
    recency: bool = False,
    tasks: Sequence[str] = (),
) -> tuple[str, ...]:
    """Inputs of the leave model: the state before the request, then ``req_<fb>`` (the request's
    feedback summed over its items), in ``feedback`` order, then (with ``recency``)
    ``recent_<fb>``, the session's exponentially decayed feedback sums including this request
    (:func:`recent_feedback`), then (with ``tasks``: action inputs) the request's weights
    ``w_<task>`` and (with ``recency``) their decayed sums ``recent_w_<task>``."""
    recent = tuple(f"recent_{c}" for c in feedback) if recency else ()
    acts = tuple(f"w_{t}" for t in tasks)
    recent_acts = tuple(f"recent_w_{t}" for t in tasks) if recency else ()
    return (*state_names, *(f"req_{c}" for c in feedback), *recent, *acts, *recent_acts)


def recent_feedback(fb_req: FloatArray, step: IntArray, decay: float) -> FloatArray:
    """Exponentially decayed feedback sums of each session up to and including each request:
    ``recent_t = decay * recent_{t-1} + fb_t`` with ``recent_0 = fb_0``.

    Args:
        fb_req: Feedback summed per request, sessions contiguous and in request order,
            shape (n_requests, F).
        step: Position of each request in its session (0 for the first), shape (n_requests,).
        decay: The decay in [0, 1).

    Returns:
        Shape (n_requests, F).
    """
    fb_req = np.asarray(fb_req, dtype=np.float64)
    step = np.asarray(step, dtype=np.int64)
    out = fb_req.copy()
    if len(step) == 0:
        return out
    for t in range(1, int(step.max()) + 1):
        rows = np.flatnonzero(step == t)
        out[rows] = decay * out[rows - 1] + fb_req[rows]
    return out


@dataclass(frozen=True)
class LeaveMixture:
    """Latent user classes of a leave model: each session belongs to one of ``K`` classes, drawn
    at its start from a softmax gate on state inputs that do not change within a session (who
    the user is), and each class has its own logistic hazard.

    Attributes:
        gate_inputs: Indices of the gate's inputs among the model's inputs (state features),
            shape (g,).
        gate_coef: Gate logits ``[1, z_gate] @ gate_coef.T`` per class, shape (K, g + 1), on the
            model's standardised inputs.
        coef: Hazard coefficients per class, shape (K, n + n_pairs).
        intercept: Hazard intercept per class, shape (K,).
    """

    gate_inputs: IntArray
    gate_coef: FloatArray
    coef: FloatArray
    intercept: FloatArray

    @property
    def n_classes(self) -> int:
        """Number of classes ``K``."""
        return len(self.intercept)


@dataclass(frozen=True)
class LeaveModel:
    """``P(the session ends after this request) = sigmoid(b + c . [z, z_i z_j for (i, j) in
    pairs])`` with ``z = (x - mean) / std``.

    Attributes:
        features: Input names (:func:`leave_feature_names`).
        mean: Normalisation mean per input, shape (n,).
        std: Normalisation standard deviation per input, shape (n,).
        coef: Coefficient per normalised input, then per pair, shape (n + n_pairs,).
        intercept: The intercept ``b``.
        pairs: Interactions: products ``z_i z_j`` of normalised inputs, shape (n_pairs, 2);
            none for a linear model.
        recency_decay: Decay of the ``recent_<fb>`` inputs (:func:`recent_feedback`); ``None``
            when the model has none.
        action_inputs: The inputs end with the request's weights ``w_<task>`` (and their decayed
            sums ``recent_w_<task>`` with ``recency_decay``); see :func:`leave_feature_names`.
        mixture: Latent classes (:class:`LeaveMixture`); ``None`` for one class. With classes,
            ``coef`` and ``intercept`` are the gate-weighted average over the training sessions
            (informative only) and :meth:`probability` needs each row's class.
    """

    features: tuple[str, ...]
    mean: FloatArray
    std: FloatArray
    coef: FloatArray
    intercept: float
    pairs: IntArray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    recency_decay: float | None = None
    mixture: LeaveMixture | None = None
    action_inputs: bool = False

    def design(self, x: FloatArray) -> FloatArray:
        """The model's inputs of ``x`` (n, n_features): ``[z, z_i z_j]``, (n, n + n_pairs)."""
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.std
        if len(self.pairs) == 0:
            return z
        return np.concatenate([z, z[:, self.pairs[:, 0]] * z[:, self.pairs[:, 1]]], axis=1)

    def probability(self, x: FloatArray, classes: IntArray | None = None) -> FloatArray:
        """Leave probability of inputs ``x`` (n, n_features): shape (n,).

        Args:
            x: Inputs, shape (n, n_features).
            classes: Latent class of every row, shape (n,); needed by a mixture, else ignored.

        Raises:
            ValueError: A mixture without ``classes``.
        """
        z = self.design(x)
        if self.mixture is None:
            return _sigmoid(z @ self.coef + self.intercept)
        if classes is None:
            raise ValueError("a leave model with latent classes needs each row's class")
        c = np.asarray(classes, dtype=np.int64)
        m = self.mixture
        return _sigmoid(np.einsum("nd,nd->n", z, m.coef[c]) + m.intercept[c])

    def class_probabilities(self, state: FloatArray) -> FloatArray:
        """Gate probabilities of the latent classes, shape (n, K) (one column without a mixture).

        Args:
            state: Inputs whose first columns are the state features, shape (n, >= gate inputs).
        """
        state = np.asarray(state, dtype=np.float64)
        if self.mixture is None:
            return np.ones((len(state), 1))
        m = self.mixture
        gi = m.gate_inputs
        zg = (state[:, gi] - self.mean[gi]) / self.std[gi]
        logits = np.concatenate([np.ones((len(state), 1)), zg], axis=1) @ m.gate_coef.T
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)

    def draw_classes(self, state: FloatArray, rng: np.random.Generator) -> IntArray:
        """A latent class per row drawn from the gate, shape (n,) (zeros without a mixture)."""
        p = self.class_probabilities(state)
        if p.shape[1] == 1:
            return np.zeros(len(p), dtype=np.int64)
        u = rng.random(len(p))
        return np.minimum((np.cumsum(p, axis=1) < u[:, None]).sum(axis=1), p.shape[1] - 1).astype(
            np.int64
        )

    def to_json(self, extra: Mapping[str, object]) -> dict[str, object]:
        """JSON-ready document (``extra``: calibration, training details)."""
        return {
            "format": LEAVE_FORMAT,
            "features": list(self.features),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "coef": [float(v) for v in self.coef],
            "intercept": float(self.intercept),
            "pairs": [[int(i), int(j)] for i, j in self.pairs],
            "recency_decay": self.recency_decay,
            "action_inputs": self.action_inputs,
            **(
                {
                    "mixture": {
                        "gate_inputs": [int(i) for i in self.mixture.gate_inputs],
                        "gate_coef": [[float(v) for v in r] for r in self.mixture.gate_coef],
                        "coef": [[float(v) for v in r] for r in self.mixture.coef],
                        "intercept": [float(v) for v in self.mixture.intercept],
                    }
                }
                if self.mixture is not None
                else {}
            ),
            **extra,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], source: str) -> LeaveModel:
        """Inverse of :meth:`to_json` (``batchrl-mtf-leave@1`` documents have no pairs, ``@2``
        documents no recency inputs).

        Raises:
            ConfigError: Wrong format tag, missing keys or inconsistent lengths.
        """
        if doc.get("format") not in (LEAVE_FORMAT, LEAVE_FORMAT_V2, LEAVE_FORMAT_V1):
            raise ConfigError(
                f"{source}: expected format {LEAVE_FORMAT!r}, found {doc.get('format')!r}"
            )
        try:
            feats = tuple(str(x) for x in doc["features"])
            arrays = [np.asarray(doc[k], dtype=np.float64) for k in ("mean", "std", "coef")]
            intercept = float(doc["intercept"])
            pairs = np.asarray(doc.get("pairs", []), dtype=np.int64).reshape(-1, 2)
            raw_decay = doc.get("recency_decay")
            decay = None if raw_decay is None else float(raw_decay)
            action_inputs = bool(doc.get("action_inputs", False))
            mix_doc = doc.get("mixture")
            mixture = (
                None
                if mix_doc is None
                else LeaveMixture(
                    np.asarray(mix_doc["gate_inputs"], dtype=np.int64).reshape(-1),
                    np.asarray(mix_doc["gate_coef"], dtype=np.float64),
                    np.asarray(mix_doc["coef"], dtype=np.float64),
                    np.asarray(mix_doc["intercept"], dtype=np.float64).reshape(-1),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: not a valid leave model (missing or bad {exc})") from None
        d = len(feats)
        shapes_ok = arrays[0].shape == (d,) and arrays[1].shape == (d,)
        if (
            not shapes_ok
            or arrays[2].shape != (d + len(pairs),)
            or not all(np.isfinite(a).all() for a in arrays)
        ):
            raise ConfigError(
                f"{source}: expected finite mean and std of length {d} and coef of length "
                f"{d} + {len(pairs)} pairs"
            )
        if len(pairs) and (pairs.min() < 0 or pairs.max() >= d):
            raise ConfigError(f"{source}: pairs must index the {d} inputs")
        if (arrays[1] <= 0).any():
            raise ConfigError(f"{source}: expected std > 0")
        if decay is not None and not 0 <= decay < 1:
            raise ConfigError(f"{source}: expected recency_decay in [0, 1), found {decay}")
        if mixture is not None:
            k, g = mixture.n_classes, len(mixture.gate_inputs)
            if (
                k < 1
                or mixture.gate_coef.shape != (k, g + 1)
                or mixture.coef.shape != (k, d + len(pairs))
                or (g and (mixture.gate_inputs.min() < 0 or mixture.gate_inputs.max() >= d))
                or not np.isfinite(mixture.gate_coef).all()
                or not np.isfinite(mixture.coef).all()
                or not np.isfinite(mixture.intercept).all()
            ):
                raise ConfigError(
                    f"{source}: mixture: expected K classes with gate_coef (K, gate inputs + 1), "
                    f"coef (K, {d} + {len(pairs)} pairs), finite, gate inputs among the {d} inputs"
                )
        return cls(
            feats, arrays[0], arrays[1], arrays[2], intercept, pairs, decay, mixture, action_inputs
        )


@dataclass(frozen=True)
class ResponseColumn:
    """How one feedback column is drawn from the response model's ``pred_<column>``.

    Attributes:
        name: Feedback column.
        kind: ``"binary"`` (0/1) or ``"watch"`` (seconds, from a regression head).
        given: The binary column it needs (it is 0 where that one is 0; ``""``: none). Then the
            probability is ``min(p / p_given, 1)``, so the marginal stays ``p``.
        log_sd: ``watch`` only: standard deviation of ``log1p(seconds)`` around the model's mean.
    """

    name: str
    kind: str
    given: str = ""
    log_sd: float = 0.0


def read_responses(path: str | Path) -> tuple[ResponseColumn, ...]:
    """Read ``responses.json`` (written by ``make-env``).

    Raises:
        ConfigError: Missing file, wrong format or bad entries.
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"learned.responses: {p}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError(f"learned.responses: {p}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != RESPONSES_FORMAT:
        raise ConfigError(f"learned.responses: {p}: expected format {RESPONSES_FORMAT!r}")
    out = []
    try:
        for c in doc["columns"]:
            col = ResponseColumn(
                str(c["name"]), str(c["kind"]), str(c.get("given", "")), float(c.get("log_sd", 0))
            )
            if col.kind not in ("binary", "watch"):
                raise ValueError(f"kind {col.kind!r} of {col.name!r}")
            out.append(col)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"learned.responses: {p}: bad column entry ({exc})") from None
    return tuple(out)


def read_ranker_scale(path: str | Path) -> dict[str, float]:
    """The ``ranker_scale`` of ``responses.json``: per task, the scale of a ranker distilled from
    logged ``pred_<task>`` (its regression output ``o`` means ``pred = scale * expm1(o *
    log1p(cap))``); empty for a ranker that predicts probabilities.

    Raises:
        ConfigError: Bad entries (the file itself is checked by :func:`read_responses`).
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError(f"learned.responses: {p}: not valid JSON ({exc})") from None
    raw = doc.get("ranker_scale", {}) if isinstance(doc, dict) else {}
    try:
        out = {str(k): float(v) for k, v in dict(raw).items()}
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"learned.responses: {p}: bad ranker_scale ({exc})") from None
    if not all(math.isfinite(v) and v > 0 for v in out.values()):
        raise ConfigError(f"learned.responses: {p}: ranker_scale values must be > 0")
    return out


def _read_parquet(path: str, key: str) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"learned.{key}: {p}: file not found (expected the Parquet file written by make-env)"
        )
    try:
        return pd.read_parquet(p)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise ConfigError(f"learned.{key}: {p}: cannot read Parquet ({exc})") from None


def _need_columns(frame: pd.DataFrame, cols: Sequence[str], key: str, path: str) -> None:
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise ConfigError(f"learned.{key}: {path}: missing column(s) {missing}")


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
        cat = _read_parquet(learned.catalogue, "catalogue")
        _need_columns(cat, ("item_id", "duration", "exposures"), "catalogue", learned.catalogue)
        if len(cat) != spec.world.n_items:
            raise ConfigError(
                f"{spec.source}: world.n_items = {spec.world.n_items} but learned.catalogue "
                f"{learned.catalogue} has {len(cat)} items"
            )
        self.catalogue = cat
        self.duration = cat["duration"].to_numpy(dtype=np.float64)
        expo = cat["exposures"].to_numpy(dtype=np.float64)
        self.exposure_p = expo / expo.sum() if expo.sum() > 0 else None
        starts = _read_parquet(learned.start_states, "start_states")
        hist_cols = [f"hist_{c}_rate" for c in world.feedback]
        _need_columns(
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
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"learned.leave_model: {p}: file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ConfigError(f"learned.leave_model: {p}: not valid JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"learned.leave_model: {p}: expected a JSON object")
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
            grader = load_predictor(path)
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
