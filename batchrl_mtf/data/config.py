"""How logs become an MDP dataset: :class:`DatasetConfig` (``build-dataset``'s options)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from batchrl_mtf.core.config import require
from batchrl_mtf.core.fusion import Fusion
from batchrl_mtf.data.features import FeatureConfig

__all__ = ["DatasetConfig"]


@dataclass(frozen=True)
class DatasetConfig:
    """How logs become an MDP dataset.

    Attributes:
        gamma: Discount factor recorded with the dataset (the default for training and OPE).
        action_bounds: ``(lo, hi)`` bounds of every weight; ``None`` = from the logs with a margin.
        action_margin: Margin added on each side of the logged weight range, as a fraction of it.
        session_gap_s: Split each user's requests into sessions at gaps above this many seconds
            (then ``session_id`` is optional and ignored); ``None`` = use ``session_id``.
        window_end_ms: End of the log window (epoch ms); sessions whose last request is within
            ``window_margin_s`` of it end in a timeout instead of a terminal; ``None`` = all terminal.
        window_margin_s: See ``window_end_ms``.
        on_error: ``"fail"``: any problem fails the build; ``"drop-session"``: drop affected sessions.
        features: Which state features to compute.
        fusion: The fusion (formula and offsets) the logged weights ``w_<task>`` were applied
            with, recorded in the dataset (``features.json``) for every later command;
            ``None``: the default :class:`~batchrl_mtf.core.fusion.Fusion` (``logsum``, beta
            0.1), recorded with ``"source": "default"`` so nobody mistakes it for a stated one.
    """

    gamma: float = 0.95
    action_bounds: tuple[float, float] | None = None
    action_margin: float = 0.1
    session_gap_s: float | None = None
    window_end_ms: int | None = None
    window_margin_s: float = 1800.0
    on_error: Literal["fail", "drop-session"] = "fail"
    features: FeatureConfig = field(default_factory=FeatureConfig)
    fusion: Fusion | None = None

    def __post_init__(self) -> None:
        require(
            self.fusion is None or isinstance(self.fusion, Fusion),
            "fusion",
            f"expected a Fusion, found {self.fusion!r}",
        )
        require(
            0.0 <= self.gamma <= 1.0, "gamma", f"expected a number in [0, 1], found {self.gamma}"
        )
        if self.action_bounds is not None:
            lo, hi = self.action_bounds
            require(
                math.isfinite(lo) and math.isfinite(hi) and lo < hi,
                "action_bounds",
                f"expected finite LO,HI with LO < HI, found {lo},{hi}",
            )
        require(
            self.action_margin >= 0, "action_margin", f"expected >= 0, found {self.action_margin}"
        )
        if self.session_gap_s is not None:
            require(
                self.session_gap_s > 0,
                "session_gap",
                f"expected seconds > 0, found {self.session_gap_s}",
            )
        require(
            self.window_margin_s >= 0,
            "window_margin_s",
            f"expected >= 0, found {self.window_margin_s}",
        )
        require(
            self.on_error in ("fail", "drop-session"),
            "on_error",
            f"expected 'fail' or 'drop-session', found {self.on_error!r}",
        )
