"""Pieces of a world that other packages provide: the world-backend protocol and its plugins.

``sim`` sits below ``learned`` and ``predictors``-backed worlds in the layer order, so it never
imports them. A world whose spec says ``world.kind = "learned"`` is driven by a
:class:`LearnedBackend` (a model learned from logs, ``batchrl_mtf.learned``); a spec with
``predictor.kind = "artefact"`` ranks with a trained predictor (``batchrl_mtf.predictors``). Both are
found by name among the package's entry points (group ``batchrl_mtf.world_backends``, declared in
``pyproject.toml``), the way Gymnasium finds an environment class from its ``entry_point`` string;
a third-party package can add a backend the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from batchrl_mtf.errors import ConfigError

__all__ = ["ENTRY_POINT_GROUP", "LearnedBackend", "load_backend"]

ENTRY_POINT_GROUP = "batchrl_mtf.world_backends"
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class LearnedBackend(Protocol):
    """What a learned world model offers the simulator (``docs/learned_env.md``).

    Attributes:
        duration: Item durations in seconds, shape (n_items,).
        hist_rates: Users' history feedback rates at each logged start state, shape (n_starts, n_fb).
        hist_sessions: Users' past session counts at each start state, shape (n_starts,).
        start_ms: Start time of each logged start state (epoch ms), shape (n_starts,).
    """

    duration: FloatArray
    hist_rates: FloatArray
    hist_sessions: FloatArray
    start_ms: IntArray

    def load(self) -> None:
        """Read the artefacts now (raises :class:`ConfigError` when they are unusable)."""
        ...

    leave: Any  # the leave model; its ``recency_decay`` sets the recent-feedback inputs

    def new_users(self, n: int, rng: np.random.Generator) -> Any:
        """``n`` users, each a start state drawn uniformly from the logged ones."""
        ...

    def users_at(self, rows: IntArray) -> Any:
        """The users of the logged start states ``rows``, shape (n,)."""
        ...

    def draw_candidates(self, n: int, c: int, rng: np.random.Generator) -> IntArray:
        """``c`` candidate items for each of ``n`` requests, shape (n, c)."""
        ...

    def rank(self, start: IntArray, user_features: FloatArray, items: IntArray) -> FloatArray:
        """The ranker's predictions, shape (n, c, n_tasks)."""
        ...

    def sample_feedback(
        self, start: IntArray, user_features: FloatArray, items: IntArray, rng: np.random.Generator
    ) -> FloatArray:
        """Feedback of each shown item, shape (n, slate, n_feedback)."""
        ...

    def draw_leave_classes(self, obs: FloatArray, rng: np.random.Generator) -> IntArray:
        """Latent leave-model class of each start state, shape (n,)."""
        ...

    def leave_probability(
        self,
        obs: FloatArray,
        fb_req: FloatArray,
        recent: FloatArray | None = None,
        classes: IntArray | None = None,
        actions: FloatArray | None = None,
        recent_actions: FloatArray | None = None,
    ) -> FloatArray:
        """Probability that each user leaves after this request, shape (n,)."""
        ...


def load_backend(name: str, source: str) -> Callable[..., Any]:
    """The backend factory registered under ``name`` in :data:`ENTRY_POINT_GROUP`.

    Args:
        name: ``learned`` (a learned world model) or ``predictor-artefact`` (a predictor loader).
        source: The spec file, for the error message.

    Raises:
        ConfigError: No installed package provides the backend.
    """
    found = entry_points(group=ENTRY_POINT_GROUP, name=name)
    if not found:
        raise ConfigError(
            f"{source}: no world backend {name!r} is installed (entry points of group "
            f"{ENTRY_POINT_GROUP}); reinstall batchrl-mtf (pip install -e .)"
        )
    factory: Callable[..., Any] = next(iter(found)).load()
    return factory
