"""Statistics of the transitions and the accounting, merged over the parts of the logs.

Global statistics (feature mean/std, reward and action statistics, action ranges) are merged from
per-part :class:`Moments` (count, mean, variance, min, max; Chan et al.'s parallel update), in a
fixed order. One part gives numpy's ``mean``/``std`` exactly; several parts agree with it to
rounding (relative 1e-12 in practice; the engines' equivalence test allows 1e-9).
:class:`PartSummary` is everything the report and ``features.json`` need from a part.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from batchrl_mtf.data.clean import Accounting
from batchrl_mtf.data.transitions import Transitions
from batchrl_mtf.logs.validate import RULES, RawProblem

__all__ = ["MOMENT_NAMES", "Moments", "PartSummary", "merge_accounting"]

FloatArray = npt.NDArray[np.float64]
MOMENT_NAMES = ("obs", "actions", "reward", "stickiness", "activeness", "session_return")


@dataclass(frozen=True)
class Moments:
    """Count, mean, variance, minimum and maximum of each column of a batch of values.

    Attributes:
        n: Number of values per column.
        mean: Shape (d,).
        var: Population variance, shape (d,).
        min: Shape (d,) (``+inf`` when ``n == 0``).
        max: Shape (d,) (``-inf`` when ``n == 0``).
    """

    n: int
    mean: FloatArray
    var: FloatArray
    min: FloatArray
    max: FloatArray

    @classmethod
    def of(cls, values: FloatArray) -> Moments:
        """Moments of ``values``, shape (n,) or (n, d) (numpy's ``mean``/``var``, axis 0)."""
        v = np.asarray(values, dtype=np.float64)
        d = 1 if v.ndim == 1 else v.shape[1]
        if len(v) == 0:
            return cls.empty(d)
        if v.ndim == 1:  # 1-d reductions, exactly as ``values.mean()``/``values.std()``
            return cls(
                len(v),
                np.array([v.mean()]),
                np.array([v.var()]),
                np.array([v.min()]),
                np.array([v.max()]),
            )
        return cls(len(v), v.mean(axis=0), v.var(axis=0), v.min(axis=0), v.max(axis=0))

    @classmethod
    def empty(cls, d: int) -> Moments:
        """No values, ``d`` columns."""
        return cls(0, np.zeros(d), np.zeros(d), np.full(d, np.inf), np.full(d, -np.inf))

    def merge(self, other: Moments) -> Moments:
        """Moments of both batches together (Chan, Golub & LeVeque's pairwise update)."""
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.var * self.n + other.var * other.n + delta * delta * (self.n * other.n / n)
        return Moments(
            n, mean, m2 / n, np.minimum(self.min, other.min), np.maximum(self.max, other.max)
        )

    @property
    def std(self) -> FloatArray:
        """Population standard deviation, shape (d,)."""
        return np.sqrt(self.var)

    def stats(self, i: int = 0) -> dict[str, float]:
        """``mean``/``std``/``min``/``max`` of column ``i`` (all 0 when there are no values)."""
        if self.n == 0:
            return {"mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0}
        return {
            "mean": float(self.mean[i]),
            "std": float(self.std[i]),
            "min": float(self.min[i]),
            "max": float(self.max[i]),
        }

    def to_json(self) -> dict[str, object]:
        """JSON-ready form (floats round-trip exactly)."""
        return {
            "n": self.n,
            "mean": self.mean.tolist(),
            "var": self.var.tolist(),
            "min": self.min.tolist(),
            "max": self.max.tolist(),
        }

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> Moments:
        """Inverse of :meth:`to_json`."""

        def arr(k: str) -> FloatArray:
            return np.asarray(doc[k], dtype=np.float64)

        return cls(int(doc["n"]), arr("mean"), arr("var"), arr("min"), arr("max"))  # type: ignore[call-overload]


def merge_accounting(parts: Sequence[Accounting]) -> Accounting:
    """Sum of accountings of disjoint parts (every request and session lies in one part)."""

    def total(name: str) -> int:
        return sum(int(getattr(p, name)) for p in parts)

    def dropped(name: str) -> dict[str, int]:
        out = {r: sum(int(getattr(p, name).get(r, 0)) for p in parts) for r in RULES}
        return {k: v for k, v in out.items() if v}

    return Accounting(
        rows_read=total("rows_read"),
        rows_kept=total("rows_kept"),
        rows_dropped=dropped("rows_dropped"),
        requests_read=total("requests_read"),
        requests_kept=total("requests_kept"),
        requests_dropped=dropped("requests_dropped"),
        sessions_read=total("sessions_read"),
        sessions_kept=total("sessions_kept"),
        sessions_dropped=dropped("sessions_dropped"),
    )


@dataclass(frozen=True)
class PartSummary:
    """Everything the report and ``features.json`` need from one part (or from merged parts).

    Attributes:
        accounting: Rows, requests and sessions read, kept and dropped by reason.
        raw_problems: Rule findings before formatting.
        obs: Moments of the state vectors.
        actions: Moments of the logged weights (their min/max give the action bounds).
        reward: Moments of the per-request reward.
        stickiness: Moments of the per-request stickiness.
        activeness: Moments of the per-request activeness.
        session_return: Moments of the undiscounted session returns.
        terminal: Terminal steps.
        timeout: Timeout steps.
        max_length: Longest session, in requests.
    """

    accounting: Accounting
    raw_problems: tuple[RawProblem, ...]
    obs: Moments
    actions: Moments
    reward: Moments
    stickiness: Moments
    activeness: Moments
    session_return: Moments
    terminal: int = 0
    timeout: int = 0
    max_length: int = 0

    @property
    def requests(self) -> int:
        """Steps (kept requests) in the dataset."""
        return self.reward.n

    @property
    def sessions(self) -> int:
        """Episodes (kept sessions) in the dataset."""
        return self.session_return.n

    @classmethod
    def of(
        cls,
        accounting: Accounting,
        raw: Sequence[RawProblem],
        t: Transitions | None,
        n_features: int,
        n_tasks: int,
    ) -> PartSummary:
        """Summarise one part's transitions (``None`` when the part kept nothing)."""
        if t is None or len(t.step) == 0:
            e1 = Moments.empty(1)
            return cls(
                accounting,
                tuple(raw),
                Moments.empty(n_features),
                Moments.empty(n_tasks),
                e1,
                e1,
                e1,
                e1,
            )
        starts = t.episode_starts()
        reward = t.rewards
        lengths = np.diff(np.append(starts, len(reward)))
        return cls(
            accounting=accounting,
            raw_problems=tuple(raw),
            obs=Moments.of(t.observations),
            actions=Moments.of(t.actions),
            reward=Moments.of(reward),
            stickiness=Moments.of(t.stickiness),
            activeness=Moments.of(t.activeness),
            session_return=Moments.of(np.add.reduceat(reward, starts)),
            terminal=int(t.terminals.sum()),
            timeout=int(t.timeouts.sum()),
            max_length=int(lengths.max()),
        )

    @classmethod
    def merge(cls, parts: Sequence[PartSummary]) -> PartSummary:
        """Merge parts in the order given (give a fixed order for reproducible floats)."""
        first = parts[0]
        moments = {}
        for name in MOMENT_NAMES:
            m: Moments = getattr(first, name)
            for p in parts[1:]:
                m = m.merge(getattr(p, name))
            moments[name] = m
        return cls(
            accounting=merge_accounting([p.accounting for p in parts]),
            raw_problems=tuple(r for p in parts for r in p.raw_problems),
            terminal=sum(p.terminal for p in parts),
            timeout=sum(p.timeout for p in parts),
            max_length=max(p.max_length for p in parts),
            **moments,
        )

    def to_json(self) -> dict[str, object]:
        """JSON-ready form (for shipping a partition's summary to the driver)."""
        return {
            "accounting": self.accounting.to_dict(),
            "raw_problems": [r.to_json() for r in self.raw_problems],
            "moments": {k: getattr(self, k).to_json() for k in MOMENT_NAMES},
            "terminal": self.terminal,
            "timeout": self.timeout,
            "max_length": self.max_length,
        }

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> PartSummary:
        """Inverse of :meth:`to_json`."""
        acc = cast(dict[str, dict[str, Any]], doc["accounting"])
        moments = cast(dict[str, dict[str, object]], doc["moments"])

        def level(k: str) -> tuple[int, int, dict[str, int]]:
            d = acc[k]
            return int(d["read"]), int(d["kept"]), {str(a): int(b) for a, b in d["dropped"].items()}

        rr, rk, rd = level("rows")
        qr, qk, qd = level("requests")
        sr, sk, sd = level("sessions")
        return cls(
            accounting=Accounting(rr, rk, rd, qr, qk, qd, sr, sk, sd),
            raw_problems=tuple(RawProblem.from_json(r) for r in doc["raw_problems"]),  # type: ignore[attr-defined]
            terminal=int(doc["terminal"]),  # type: ignore[call-overload]
            timeout=int(doc["timeout"]),  # type: ignore[call-overload]
            max_length=int(doc["max_length"]),  # type: ignore[call-overload]
            **{k: Moments.from_json(v) for k, v in moments.items()},
        )
