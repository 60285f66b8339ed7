"""State features of a request: what the fusion policy sees.

Every feature is computed strictly from what is known before the request is served, so that a
serving system can compute it too. The definitions (request ``t`` of session ``s`` of user ``u``):

==========================  =====================================================================
feature                     definition
==========================  =====================================================================
``u_<name>``                the logged user feature at request ``t`` (first row of the request)
``session_depth``           number of earlier requests in ``s`` (0 for the first)
``session_elapsed_s``       ``(ts_t - ts_first(s)) / 1000``
``session_<fb>``            sum of feedback ``<fb>`` over the items of requests ``0..t-1`` of ``s``
``prev_<fb>``               sum of ``<fb>`` over the items of request ``t-1`` (0 at the first)
``hist_<fb>_rate``          mean ``<fb>`` per impression over ``u``'s last ``hist_n`` impressions
                            logged before ``s`` started (0 when there are none)
``hist_sessions``           number of ``u``'s sessions logged before ``s``
``hour_sin``, ``hour_cos``  ``sin/cos(2*pi*h/24)`` with ``h`` the UTC hour of ``ts_t``
==========================  =====================================================================

The order of the state vector is the order of that table (user features in log order, feedback
columns in :attr:`FeatureSpec.feedback` order). Both the dataset builder (batched over logs) and
the simulator (online, step by step) fill a :class:`StateParts` and call :func:`assemble`, so the
vector is produced by the same code in both places.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from batchrl_mtf.core.config import config_from_mapping, config_to_dict, require
from batchrl_mtf.errors import DatasetError
from batchrl_mtf.logs.schema import LogColumns

__all__ = [
    "FeatureConfig",
    "FeatureSpec",
    "StateParts",
    "UserHistory",
    "assemble",
    "feature_names",
    "feature_spec",
]

FloatArray = npt.NDArray[np.float64]
MS_PER_HOUR = 3_600_000


@dataclass(frozen=True)
class FeatureConfig:
    """Which state features to compute.

    Attributes:
        feedback: Feedback columns for ``session_/prev_/hist_`` features; empty = every feedback
            column of the logs.
        hist_n: Impressions in the user-history window of ``hist_<fb>_rate`` (paper: 500).
        session: Include ``session_depth``, ``session_elapsed_s`` and ``session_<fb>``.
        prev: Include ``prev_<fb>``.
        hist: Include ``hist_<fb>_rate`` and ``hist_sessions``.
        hour: Include ``hour_sin`` and ``hour_cos``.
        user: Include the logged ``u_*`` features.
    """

    feedback: tuple[str, ...] = ()
    hist_n: int = 500
    session: bool = True
    prev: bool = True
    hist: bool = True
    hour: bool = True
    user: bool = True

    def __post_init__(self) -> None:
        require(
            self.hist_n >= 1, "features.hist_n", f"expected an integer >= 1, found {self.hist_n}"
        )
        require(
            len(set(self.feedback)) == len(self.feedback),
            "features.feedback",
            f"expected distinct column names, found {list(self.feedback)}",
        )


def feature_names(
    user_features: Sequence[str], feedback: Sequence[str], config: FeatureConfig
) -> tuple[str, ...]:
    """The ordered names of the state vector."""
    names: list[str] = list(user_features) if config.user else []
    if config.session:
        names += ["session_depth", "session_elapsed_s", *(f"session_{f}" for f in feedback)]
    if config.prev:
        names += [f"prev_{f}" for f in feedback]
    if config.hist:
        names += [*(f"hist_{f}_rate" for f in feedback), "hist_sessions"]
    if config.hour:
        names += ["hour_sin", "hour_cos"]
    return tuple(names)


@dataclass(frozen=True)
class FeatureSpec:
    """The state definition saved with a dataset (``features.json``) and checked by policies.

    Attributes:
        names: Feature names in vector order.
        user_features: The ``u_*`` columns used.
        feedback: Feedback columns of the ``session_/prev_/hist_`` features.
        config: The feature configuration.
        mean: Per-feature mean over the dataset's states, shape (n_features,).
        std: Per-feature standard deviation (1 where constant), shape (n_features,).
    """

    names: tuple[str, ...]
    user_features: tuple[str, ...]
    feedback: tuple[str, ...]
    config: FeatureConfig
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""

        return {
            "names": list(self.names),
            "user_features": list(self.user_features),
            "feedback": list(self.feedback),
            "config": config_to_dict(self.config),
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, object], source: str) -> FeatureSpec:
        """Inverse of :meth:`to_dict`."""

        try:
            cfg = doc["config"]
            if not isinstance(cfg, Mapping):
                raise TypeError("config")
            return cls(
                names=tuple(str(x) for x in doc["names"]),  # type: ignore[attr-defined]
                user_features=tuple(str(x) for x in doc["user_features"]),  # type: ignore[attr-defined]
                feedback=tuple(str(x) for x in doc["feedback"]),  # type: ignore[attr-defined]
                config=config_from_mapping(FeatureConfig, cfg, f"{source} config"),
                mean=tuple(float(x) for x in doc.get("mean", [])),  # type: ignore[attr-defined]
                std=tuple(float(x) for x in doc.get("std", [])),  # type: ignore[attr-defined]
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(
                f"{source}: not a valid feature spec (missing or bad {exc})"
            ) from None


def feature_spec(columns: LogColumns, config: FeatureConfig) -> FeatureSpec:
    """The state definition of logs with ``columns`` (without normalisation statistics).

    The feedback columns of the ``session_/prev_/hist_`` features are ``config.feedback``, or
    every feedback column of the logs when it is empty.
    """
    feedback = config.feedback or columns.feedback
    return FeatureSpec(
        names=feature_names(columns.user_features, feedback, config),
        user_features=columns.user_features,
        feedback=tuple(feedback),
        config=config,
    )


@dataclass(frozen=True)
class StateParts:
    """The raw ingredients of a batch of states, before they are laid out as a vector.

    Attributes:
        user: Logged user features, shape (n, n_user_features).
        depth: ``session_depth``, shape (n,).
        elapsed_s: ``session_elapsed_s``, shape (n,).
        session_sums: ``session_<fb>``, shape (n, n_feedback).
        prev_sums: ``prev_<fb>``, shape (n, n_feedback).
        hist_rates: ``hist_<fb>_rate``, shape (n, n_feedback).
        hist_sessions: ``hist_sessions``, shape (n,).
        ts_ms: Request times in epoch milliseconds, shape (n,).
    """

    user: FloatArray
    depth: FloatArray
    elapsed_s: FloatArray
    session_sums: FloatArray
    prev_sums: FloatArray
    hist_rates: FloatArray
    hist_sessions: FloatArray
    ts_ms: npt.NDArray[np.int64]


def assemble(parts: StateParts, config: FeatureConfig) -> FloatArray:
    """Lay out state vectors in the documented order.

    Returns:
        Shape (n, n_features), float64.
    """
    cols: list[FloatArray] = []
    n = len(parts.depth)
    if config.user:
        cols.append(parts.user.reshape(n, -1))
    if config.session:
        cols += [parts.depth[:, None], parts.elapsed_s[:, None], parts.session_sums.reshape(n, -1)]
    if config.prev:
        cols.append(parts.prev_sums.reshape(n, -1))
    if config.hist:
        cols += [parts.hist_rates.reshape(n, -1), parts.hist_sessions[:, None]]
    if config.hour:
        hour = (parts.ts_ms // MS_PER_HOUR) % 24
        angle = 2.0 * np.pi * hour.astype(np.float64) / 24.0
        cols += [np.sin(angle)[:, None], np.cos(angle)[:, None]]
    if not cols:
        return np.zeros((n, 0))
    return np.concatenate([np.asarray(c, dtype=np.float64) for c in cols], axis=1)


class UserHistory:
    """Online ``hist_<fb>_rate`` / ``hist_sessions`` for one user (the simulator's side).

    Keeps the feedback of the user's last ``hist_n`` impressions, exactly as the dataset builder
    reads them from the logs.

    Args:
        n_feedback: Number of feedback columns.
        hist_n: Window length in impressions.
    """

    def __init__(self, n_feedback: int, hist_n: int) -> None:
        self._rows: deque[FloatArray] = deque(maxlen=hist_n)
        self._n_feedback = n_feedback
        self.n_sessions = 0

    def rates(self) -> FloatArray:
        """Mean feedback per impression over the window, shape (n_feedback,); zeros when empty."""
        if not self._rows:
            return np.zeros(self._n_feedback)
        return np.asarray(np.mean(np.stack(self._rows), axis=0), dtype=np.float64)

    def add_impressions(self, feedback: FloatArray) -> None:
        """Append served impressions in order, shape (n_items, n_feedback)."""
        for row in np.asarray(feedback, dtype=np.float64).reshape(-1, self._n_feedback):
            self._rows.append(row)

    def end_session(self) -> None:
        """Count one more finished session."""
        self.n_sessions += 1
