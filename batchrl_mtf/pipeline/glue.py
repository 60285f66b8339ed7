"""Small pieces the pipeline needs from other stages that their public APIs do not offer (yet).

* :class:`NamedPolicy`: a policy under another display name (``bcq`` instead of its folder).
* :class:`SegmentRecorder` and :func:`rollout`: a simulator rollout that also records the weights
  each policy used per hidden user segment (the paper's action plots) and the per-session
  returns (for paired differences), on top of ``batchrl_mtf.sim.rollout_summary``.

The paired differences of two policies (``paired_difference``, ``bootstrap_difference``) live in
:mod:`batchrl_mtf.ope.paired`.
"""

from __future__ import annotations

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
    "npz_bytes",
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


def npz_bytes(arrays: dict[str, npt.NDArray[Any]]) -> bytes:
    """``arrays`` as the bytes of a compressed ``.npz`` file (for atomic writes)."""
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()
