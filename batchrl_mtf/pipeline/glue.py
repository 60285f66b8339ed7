"""Small pieces the pipeline needs from other stages that their public APIs do not offer (yet).

* :class:`NamedPolicy`: a policy under another display name (``bcq`` instead of its folder).
* :class:`SegmentRecorder` and :func:`rollout`: a simulator rollout that also records the weights
  each policy used per hidden user segment (the paper's action plots) and the per-session
  returns (for paired differences), on top of ``batchrl_mtf.sim.rollout_summary``.
* :func:`paired_difference` and :func:`bootstrap_difference`: intervals of a difference of two
  policies measured on the same sessions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from batchrl_mtf.policy.base import Policy
from batchrl_mtf.sim import rollout_summary, run_sessions

__all__ = [
    "NamedPolicy",
    "RolloutResult",
    "SegmentRecorder",
    "bootstrap_difference",
    "npz_bytes",
    "paired_difference",
    "rollout",
]

FloatArray = npt.NDArray[np.float64]
SAMPLES_PER_SEGMENT = 2000
"""Weight vectors kept per (policy, segment) for the distribution plots."""


class NamedPolicy:
    """``policy`` shown as ``name`` (OPE reports and tables key policies by name).

    Args:
        policy: Any :class:`~batchrl_mtf.policy.base.Policy`.
        name: The display name.
    """

    def __init__(self, policy: Policy, name: str) -> None:
        self.policy = policy
        self._name = name
        self.table = getattr(policy, "table", None)  # OPE recognises key-less tables by this
        self.feature_names = tuple(getattr(policy, "feature_names", ()))

    @property
    def name(self) -> str:
        """The display name."""
        return self._name

    @property
    def tasks(self) -> tuple[str, ...]:
        """The wrapped policy's tasks."""
        return tuple(self.policy.tasks)

    def act(self, observations: FloatArray) -> FloatArray:
        """The wrapped policy's weights, shape (n, n_tasks)."""
        obs = np.asarray(observations, dtype=np.float64)
        out = np.asarray(self.policy.act(obs), dtype=np.float64)
        if out.shape[0] == 1 and obs.shape[0] != 1:  # a key-less table answers with one row
            out = np.repeat(out, obs.shape[0], axis=0)
        return out


@dataclass
class SegmentRecorder:
    """A simulator policy that passes through ``inner`` and keeps the weights per hidden segment.

    Attributes:
        inner: The simulator policy (``batchrl_mtf.sim.SimPolicy``).
        n_segments: Number of segments of the world.
        n_tasks: Weights per action.
        seed: Seed of the reservoir sample of weight vectors.
    """

    inner: Any
    n_segments: int
    n_tasks: int
    seed: int = 0
    sums: FloatArray = field(init=False)
    counts: npt.NDArray[np.int64] = field(init=False)
    samples: list[list[FloatArray]] = field(init=False)
    _rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.sums = np.zeros((self.n_segments, self.n_tasks))
        self.counts = np.zeros(self.n_segments, dtype=np.int64)
        self.samples = [[] for _ in range(self.n_segments)]
        self._rng = np.random.default_rng(self.seed)

    @property
    def name(self) -> str:
        """The inner policy's name."""
        return str(self.inner.name)

    @property
    def stochastic(self) -> bool:
        """Whether the inner policy samples."""
        return bool(self.inner.stochastic)

    def act(self, observations: FloatArray, ctx: Any) -> tuple[FloatArray, FloatArray | None]:
        """The inner policy's weights (recorded per segment)."""
        w, logp = self.inner.act(observations, ctx)
        w = np.asarray(w, dtype=np.float64)
        if w.shape[0] == 1 and len(observations) != 1:
            w = np.repeat(w, len(observations), axis=0)
        seg = np.asarray(ctx.segment, dtype=np.int64)
        for g in range(self.n_segments):
            m = seg == g
            n = int(m.sum())
            if not n:
                continue
            self.sums[g] += w[m].sum(axis=0)
            self.counts[g] += n
            room = SAMPLES_PER_SEGMENT - sum(len(s) for s in self.samples[g])
            if room > 0:
                take = w[m]
                if len(take) > room:
                    take = take[np.sort(self._rng.choice(len(take), room, replace=False))]
                self.samples[g].append(take)
        return w, logp

    def means(self) -> FloatArray:
        """Mean weights per segment, shape (n_segments, n_tasks) (NaN for unseen segments)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sums / self.counts[:, None]

    def sample(self, g: int) -> FloatArray:
        """Up to :data:`SAMPLES_PER_SEGMENT` weight vectors used for segment ``g``."""
        if not self.samples[g]:
            return np.zeros((0, self.n_tasks))
        return np.concatenate(self.samples[g])[:SAMPLES_PER_SEGMENT]


@dataclass(frozen=True)
class RolloutResult:
    """A policy's true value and what it did.

    Attributes:
        summary: ``batchrl_mtf.sim.rollout_summary`` (return with 95% interval, parts, by segment)
            plus ``weights_by_segment`` (mean weight per task per hidden segment).
        returns: Per-session undiscounted returns, shape (n_sessions,).
        segment: Hidden segment per session, shape (n_sessions,).
        samples: Per segment name, recorded weight vectors, shape (m, n_tasks).
    """

    summary: dict[str, object]
    returns: FloatArray
    segment: npt.NDArray[np.int64]
    samples: dict[str, FloatArray]


def rollout(world: Any, policy: Any, sessions: int, seed: int) -> RolloutResult:
    """Run ``policy`` (a simulator policy) on ``sessions`` fresh sessions of ``world``.

    The same ``seed`` gives the same users to every policy, so per-session returns are paired.
    """

    rec = SegmentRecorder(policy, len(world.segment_names), len(world.tasks), seed)
    stats, _ = run_sessions(world, rec, sessions, seed)
    summary = rollout_summary(world, stats)
    means = rec.means()
    summary["weights_by_segment"] = {
        name: {f"w_{t}": float(means[g, j]) for j, t in enumerate(world.tasks)}
        for g, name in enumerate(world.segment_names)
        if rec.counts[g]
    }
    summary["requests_by_segment"] = {
        name: int(rec.counts[g]) for g, name in enumerate(world.segment_names)
    }
    return RolloutResult(
        summary=summary,
        returns=np.asarray(stats.returns, dtype=np.float64),
        segment=np.asarray(stats.segment, dtype=np.int64),
        samples={name: rec.sample(g) for g, name in enumerate(world.segment_names)},
    )


def paired_difference(
    a: Sequence[float] | FloatArray, b: Sequence[float] | FloatArray, level: float = 0.95
) -> tuple[float, float, float]:
    """Mean of ``a - b`` over paired sessions and its normal-approximation interval.

    Returns:
        ``(difference, low, high)``.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    m = float(d.mean()) if d.size else math.nan
    if d.size < 2:
        return m, math.nan, math.nan
    z = _z(level)
    h = z * float(d.std(ddof=1)) / math.sqrt(d.size)
    return m, m - h, m + h


def bootstrap_difference(
    a: FloatArray, b: FloatArray, n_bootstrap: int, level: float, seed: int
) -> tuple[float, float, float]:
    """Mean of ``a - b`` (per-session values of two estimates) with a percentile bootstrap.

    Sessions are resampled with replacement together for both policies (a paired interval). With
    ``n_bootstrap = 0`` the normal approximation is used.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if n_bootstrap <= 0 or d.size < 2:
        return paired_difference(a, b, level)
    rng = np.random.default_rng(seed)
    n = d.size
    means = np.empty(n_bootstrap)
    chunk = max(1, 2_000_000 // n)
    for lo in range(0, n_bootstrap, chunk):
        size = min(chunk, n_bootstrap - lo)
        idx = rng.integers(0, n, size=(size, n))
        means[lo : lo + size] = d[idx].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(d.mean()), float(low), float(high)


def npz_bytes(arrays: dict[str, npt.NDArray[Any]]) -> bytes:
    """``arrays`` as the bytes of a compressed ``.npz`` file (for atomic writes)."""
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def _z(level: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + level / 2.0)
