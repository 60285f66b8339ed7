"""The reward of one request: user stickiness plus user activeness (BatchRL-MTF, KDD 2022).

The reward is configured in TOML, in exactly this shape (a public contract; other tools write it)::

    [reward]
    valid_play_s = 10.0          # a play counts as valid when watch_time >= this

    [reward.stickiness]          # feedback column (or "valid_play") = weight per unit
    watch_time = 0.02
    valid_play = 0.3

    [reward.activeness]
    like = 1.0
    comment = 1.5
    share = 2.0

For request ``t`` with shown items ``i``::

    stickiness_t = sum_i sum_{c in stickiness} w_c * x_{i,c}
    activeness_t = sum_i sum_{c in activeness} w_c * x_{i,c}
    reward_t     = stickiness_t + activeness_t

where ``x_{i,valid_play} = 1[watch_time_i >= valid_play_s]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import tomli_w

from batchrl_mtf.core.config import read_toml
from batchrl_mtf.errors import ConfigError
from batchrl_mtf.logs.validate import FLOAT32_MAX

__all__ = [
    "VALID_PLAY",
    "RewardConfig",
    "RewardParts",
    "default_reward",
    "load_reward",
    "request_reward",
]

VALID_PLAY = "valid_play"


@dataclass(frozen=True)
class RewardConfig:
    """Weights of the request reward.

    Attributes:
        valid_play_s: A play is valid when ``watch_time >= valid_play_s`` (seconds).
        stickiness: Feedback column (or ``"valid_play"``) -> weight per unit, summed over items.
        activeness: Feedback column -> weight per unit, summed over items.
    """

    valid_play_s: float = 10.0
    stickiness: Mapping[str, float] = field(default_factory=dict)
    activeness: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.valid_play_s) and self.valid_play_s >= 0):
            raise ConfigError(
                f"reward.valid_play_s: expected a number >= 0, found {self.valid_play_s}"
            )
        for part in ("stickiness", "activeness"):
            table = getattr(self, part)
            for col, w in table.items():
                if not isinstance(col, str) or not col:
                    raise ConfigError(f"reward.{part}: expected column names, found {col!r}")
                if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
                    raise ConfigError(f"reward.{part}.{col}: expected a finite number, found {w!r}")
                if abs(w) > FLOAT32_MAX:
                    raise ConfigError(
                        f"reward.{part}.{col}: expected a weight finite in float32 "
                        f"(|w| <= 3.4e38; rewards are float32 in training), found {w!r}"
                    )
            object.__setattr__(self, part, {str(k): float(v) for k, v in table.items()})
        if not self.stickiness and not self.activeness:
            raise ConfigError("reward: both [reward.stickiness] and [reward.activeness] are empty")

    def largest_weights(self) -> dict[str, float]:
        """Feedback column -> its largest absolute weight (for the float32 range check)."""
        out: dict[str, float] = {}
        for table in (self.stickiness, self.activeness):
            for col, w in table.items():
                out[col] = max(out.get(col, 0.0), abs(w))
        return out

    def columns(self) -> tuple[str, ...]:
        """The log columns the reward reads (``valid_play`` resolves to ``watch_time``)."""
        cols: list[str] = []
        for table in (self.stickiness, self.activeness):
            for c in table:
                real = "watch_time" if c == VALID_PLAY else c
                if real not in cols:
                    cols.append(real)
        return tuple(cols)

    def check_columns(self, available: Sequence[str], source: str) -> None:
        """Raise :class:`ConfigError` when the reward names a column ``available`` lacks."""
        missing = [c for c in self.columns() if c not in available]
        if missing:
            raise ConfigError(
                f"reward names column(s) {', '.join(repr(c) for c in missing)} absent from {source}; "
                f"available feedback columns: {', '.join(available) or '(none)'}"
            )

    def to_toml(self) -> str:
        """Serialise in the public TOML shape."""
        doc = {
            "reward": {
                "valid_play_s": self.valid_play_s,
                "stickiness": dict(self.stickiness),
                "activeness": dict(self.activeness),
            }
        }
        return tomli_w.dumps(doc)


def default_reward() -> RewardConfig:
    """The paper-style default: stickiness from watch time and valid plays, activeness from
    likes, follows, comments and shares."""
    return RewardConfig(
        valid_play_s=10.0,
        stickiness={"watch_time": 0.02, VALID_PLAY: 0.3},
        activeness={"like": 1.0, "follow": 2.0, "comment": 1.5, "share": 2.0},
    )


def parse_reward(doc: Mapping[str, object], source: str) -> RewardConfig:
    """Build a :class:`RewardConfig` from a parsed TOML document with a ``[reward]`` table."""
    unknown_top = sorted(set(doc) - {"reward"})
    if unknown_top:
        raise ConfigError(
            f"{source}: unknown top-level key(s) {unknown_top}; expected only [reward]"
        )
    table = doc.get("reward")
    if not isinstance(table, Mapping):
        raise ConfigError(f"{source}: missing the [reward] table")
    unknown = sorted(set(table) - {"valid_play_s", "stickiness", "activeness"})
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {unknown} in [reward]; expected valid_play_s, "
            "[reward.stickiness], [reward.activeness]"
        )
    parts: dict[str, dict[str, float]] = {}
    for part in ("stickiness", "activeness"):
        sub = table.get(part, {})
        if not isinstance(sub, Mapping):
            raise ConfigError(f"{source}: [reward.{part}] must be a table of column = weight")
        parts[part] = {}
        for k, v in sub.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{source}: reward.{part}.{k}: expected a number, found {v!r}")
            parts[part][str(k)] = float(v)
    vps = table.get("valid_play_s", 10.0)
    if isinstance(vps, bool) or not isinstance(vps, (int, float)):
        raise ConfigError(f"{source}: reward.valid_play_s: expected a number, found {vps!r}")
    try:
        return RewardConfig(float(vps), parts["stickiness"], parts["activeness"])
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_reward(path: str | Path) -> RewardConfig:
    """Read a reward TOML file.

    Raises:
        ConfigError: The file is missing, is not TOML, or has unknown keys or non-numeric weights.
    """
    p = Path(path)
    return parse_reward(read_toml(p, "reward file"), str(p))


@dataclass(frozen=True)
class RewardParts:
    """Per-request reward parts.

    Attributes:
        stickiness: Shape (n_requests,).
        activeness: Shape (n_requests,).
    """

    stickiness: npt.NDArray[np.float64]
    activeness: npt.NDArray[np.float64]

    @property
    def total(self) -> npt.NDArray[np.float64]:
        """``stickiness + activeness``, shape (n_requests,)."""
        return self.stickiness + self.activeness


def item_reward(
    config: RewardConfig, columns: Mapping[str, npt.NDArray[np.float64]]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per-item stickiness and activeness.

    Args:
        config: The reward weights.
        columns: Feedback column -> values of shape (n_items,), for every column the reward reads.

    Returns:
        ``(stickiness, activeness)``, each of shape (n_items,).
    """
    n = len(next(iter(columns.values()))) if columns else 0
    out = []
    for table in (config.stickiness, config.activeness):
        acc = np.zeros(n, dtype=np.float64)
        for col, w in table.items():
            if col == VALID_PLAY:
                acc += w * (
                    np.asarray(columns["watch_time"], dtype=np.float64) >= config.valid_play_s
                )
            else:
                acc += w * np.asarray(columns[col], dtype=np.float64)
        out.append(acc)
    return out[0], out[1]


def request_reward(
    config: RewardConfig,
    columns: Mapping[str, npt.NDArray[np.float64]],
    request_index: npt.NDArray[np.intp],
    n_requests: int,
) -> RewardParts:
    """Sum item rewards per request.

    Args:
        config: The reward weights.
        columns: Feedback column -> per-row values, shape (n_rows,).
        request_index: Request number of each row, shape (n_rows,), values in ``[0, n_requests)``.
        n_requests: Number of requests.
    """
    stick, act = item_reward(config, columns)
    return RewardParts(
        np.bincount(request_index, weights=stick, minlength=n_requests).astype(np.float64),
        np.bincount(request_index, weights=act, minlength=n_requests).astype(np.float64),
    )
