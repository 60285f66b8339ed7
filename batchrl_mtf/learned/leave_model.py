"""The leave model of a learned world: its inputs, its form and its file (``leave_model.json``).

``P(the session ends after this request)`` is a logistic hazard on the normalised state, the
request's feedback and (optionally) decayed feedback and weight sums, with optional interactions
and latent user classes (:class:`LeaveModel`, :class:`LeaveMixture`). Fitted by
:mod:`batchrl_mtf.learned.leave`, stepped by :class:`batchrl_mtf.learned.runtime.LearnedModel`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from batchrl_mtf.errors import ConfigError

__all__ = [
    "LEAVE_FORMAT",
    "LeaveMixture",
    "LeaveModel",
    "leave_feature_names",
    "recent_feedback",
    "sigmoid",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
LEAVE_FORMAT = "batchrl-mtf-leave@3"
LEAVE_FORMAT_V2 = "batchrl-mtf-leave@2"
LEAVE_FORMAT_V1 = "batchrl-mtf-leave@1"


def sigmoid(x: FloatArray) -> FloatArray:
    """``1 / (1 + exp(-x))`` elementwise, with ``x`` clipped to [-40, 40]."""
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
            return sigmoid(z @ self.coef + self.intercept)
        if classes is None:
            raise ValueError("a leave model with latent classes needs each row's class")
        c = np.asarray(classes, dtype=np.int64)
        m = self.mixture
        return sigmoid(np.einsum("nd,nd->n", z, m.coef[c]) + m.intercept[c])

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
