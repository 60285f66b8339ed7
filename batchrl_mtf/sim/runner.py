"""Running many sessions: log generation (``simulate``), true policy value (``rollout``) and online
search over constant weights (``search-constant``).

:func:`true_value` is the one place where a policy's true value is measured: the ``rollout``
command, ``train --env``, ``export --env``, the pipeline's truth and export stages and the online
search all call it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from batchrl_mtf.data.features import feature_names
from batchrl_mtf.errors import ConfigError, PolicyError
from batchrl_mtf.policy.base import ConstantPolicy, Policy
from batchrl_mtf.sim.engine import LogRecorder, SessionBatch, UserPool
from batchrl_mtf.sim.policies import PolicyContext, SimPolicy, world_policy
from batchrl_mtf.sim.spec import load_spec
from batchrl_mtf.sim.world import World

__all__ = [
    "SAMPLES_PER_SEGMENT",
    "SearchResult",
    "SegmentRecorder",
    "SessionStats",
    "TrueValue",
    "feature_names_of",
    "rollout_summary",
    "run_sessions",
    "search_constant",
    "true_value",
]

logger = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
MAX_BATCH = 4096
SAMPLES_PER_SEGMENT = 2000
"""Weight vectors kept per hidden segment by :class:`SegmentRecorder` (for distribution plots)."""


@dataclass(frozen=True)
class SessionStats:
    """Per-session outcomes of a run.

    Attributes:
        returns: Undiscounted session return, shape (n,).
        stickiness: Stickiness part of the return, shape (n,).
        activeness: Activeness part, shape (n,).
        length: Requests per session, shape (n,).
        watch_time: Watch time per session in seconds, shape (n,).
        interactions: Interactions (activeness columns' counts) per session, shape (n,).
        segment: Hidden segment of the session's user, shape (n,).
        truncated: Whether the session hit the request cap, shape (n,).
    """

    returns: FloatArray
    stickiness: FloatArray
    activeness: FloatArray
    length: IntArray
    watch_time: FloatArray
    interactions: FloatArray
    segment: IntArray
    truncated: npt.NDArray[np.bool_]


def feature_names_of(world: World) -> tuple[str, ...]:
    """Observation column names of ``world`` (the dataset's feature order for its logs)."""

    cfg = world.spec.features
    fb = cfg.feedback or world.feedback
    return feature_names(world.user_features, fb, cfg)


def run_sessions(
    world: World,
    policy: SimPolicy,
    n_sessions: int,
    seed: int,
    record: bool = False,
    segment: int | None = None,
    max_batch: int = MAX_BATCH,
) -> tuple[SessionStats, pd.DataFrame | None]:
    """Simulate ``n_sessions`` sessions under ``policy``.

    Users have ``users.sessions_per_user`` sessions each (the last user possibly fewer); round
    ``k`` plays every user's k-th session, in batches of at most ``max_batch`` sessions, so each
    user's history carries over to their next session. Users, world noise and policy noise come
    from separate streams of ``seed``, so two policies run with one seed meet the same users.

    Args:
        world: The world.
        policy: The policy to run.
        n_sessions: Number of sessions.
        seed: Seed of users, world noise and policy noise.
        record: Also return the impression logs (schema v1).
        segment: Only users of this segment index (``None``: segments by share).
        max_batch: Largest number of sessions stepped together.

    Returns:
        Per-session statistics (in (round, user) order) and the logs (or ``None``).
    """
    if n_sessions < 1:
        raise ConfigError(f"--sessions: expected an integer >= 1, found {n_sessions}")
    world.check_predictor()
    per_user = world.spec.users.sessions_per_user
    n_users = math.ceil(n_sessions / per_user)
    users = world.new_users(n_users, np.random.default_rng([seed, 2]), segment)
    env_rng = np.random.default_rng([seed, 0])
    pol_rng = np.random.default_rng([seed, 1])
    pool = UserPool(world, users, world.spec.features.hist_n)
    counts = np.full(n_users, per_user)
    counts[-1] = n_sessions - per_user * (n_users - 1)
    recorder = LogRecorder(world) if record else None
    act_cols = [
        world.feedback.index(c) for c in world.spec.reward.activeness if c in world.feedback
    ]
    out: dict[str, list[npt.NDArray[np.generic]]] = {k: [] for k in SessionStats.__annotations__}
    for k in range(per_user):
        round_users = np.flatnonzero(counts > k).astype(np.int64)
        for a in range(0, len(round_users), max_batch):
            chunk = round_users[a : a + max_batch]
            batch = SessionBatch(world, pool, chunk, env_rng)
            b = len(chunk)
            ret, stick, act = np.zeros(b), np.zeros(b), np.zeros(b)
            watch, inter = np.zeros(b), np.zeros(b)
            trunc = np.zeros(b, dtype=bool)
            while batch.active.any():
                rows = np.flatnonzero(batch.active)
                obs = batch.observe(rows)
                ctx = PolicyContext(batch.users[rows], batch.segment[rows], pol_rng)
                w, logp = policy.act(obs, ctx)
                ts = batch.ts[rows].copy()
                req = batch.request_ids(rows)
                res = batch.step(w, rows)
                if recorder is not None:
                    recorder.add(
                        batch.user_ids[rows],
                        batch.session_ids[rows],
                        req,
                        ts,
                        batch.user_features[rows],
                        w,
                        logp,
                        res,
                    )
                ret[rows] += res.reward
                stick[rows] += res.stickiness
                act[rows] += res.activeness
                fb = res.feedback.sum(axis=1)
                if world.watch_columns:
                    watch[rows] += fb[:, world.watch_columns].sum(axis=1)
                if act_cols:
                    inter[rows] += fb[:, act_cols].sum(axis=1)
                trunc[rows] |= res.truncated
            batch.finish()
            out["returns"].append(ret)
            out["stickiness"].append(stick)
            out["activeness"].append(act)
            out["length"].append(batch.depth.copy())
            out["watch_time"].append(watch)
            out["interactions"].append(inter)
            out["segment"].append(batch.segment.copy())
            out["truncated"].append(trunc)
    stats = SessionStats(**{k: np.concatenate(v) for k, v in out.items()})
    logs = recorder.frame() if recorder is not None else None
    return stats, logs


def _mean_ci(x: FloatArray) -> dict[str, object]:
    n = len(x)
    m = float(np.mean(x)) if n else float("nan")
    sd = float(np.std(x, ddof=1)) if n > 1 else 0.0
    h = 1.96 * sd / math.sqrt(n) if n else float("nan")
    return {"mean": m, "ci95": [m - h, m + h], "sd": sd}


def _ratio_ci(num: FloatArray, den: FloatArray) -> dict[str, object]:
    total = float(den.sum())
    r = float(num.sum()) / total if total else float("nan")
    n = len(num)
    e = num - r * den
    se = math.sqrt(float((e * e).sum()) * n / max(n - 1, 1)) / total if total else float("nan")
    return {"mean": r, "ci95": [r - 1.96 * se, r + 1.96 * se]}


def rollout_summary(world: World, stats: SessionStats) -> dict[str, object]:
    """Mean session return with a 95% interval, its parts, length and per-request rates."""
    length = stats.length.astype(np.float64)
    by_segment: dict[str, object] = {}
    for g, name in enumerate(world.segment_names):
        m = stats.segment == g
        if m.any():
            by_segment[name] = {"sessions": int(m.sum()), "return": _mean_ci(stats.returns[m])}
    return {
        "sessions": len(stats.returns),
        "return": _mean_ci(stats.returns),
        "stickiness": _mean_ci(stats.stickiness),
        "activeness": _mean_ci(stats.activeness),
        "session_length": _mean_ci(length),
        "truncated_share": float(stats.truncated.mean()),
        "watch_time_per_request": _ratio_ci(stats.watch_time, length),
        "interaction_rate_per_request": _ratio_ci(stats.interactions, length),
        "by_segment": by_segment,
    }


@dataclass(frozen=True)
class SearchResult:
    """Outcome of an online search over constant weights.

    Attributes:
        weights: The best weights found, one per task.
        value: Mean session return of ``weights`` on fresh sessions.
        ci95: 95% interval of ``value``.
        evaluations: Number of candidate evaluations made.
        history: Best mean return (on search sessions) after each iteration.
    """

    weights: tuple[float, ...]
    value: float
    ci95: tuple[float, float]
    evaluations: int
    history: tuple[float, ...]


def _value(world: World, w: FloatArray, n: int, seed: int, segment: int | None) -> float:
    pol = ConstantPolicy(tuple(float(x) for x in w), world.tasks, name="candidate")
    return true_value(world, pol, n, seed, segment=segment).mean


def search_constant(
    world: World,
    method: Literal["cem", "grid"] = "cem",
    sessions: int = 500,
    iterations: int = 6,
    population: int = 24,
    elite: int = 6,
    grid_points: int = 5,
    eval_sessions: int = 4000,
    seed: int = 0,
    segment: int | None = None,
) -> SearchResult:
    """Search constant fusion weights online (the paper's BO/ES-style baseline).

    ``cem``: the cross-entropy method; a Gaussian over weights (starting at production, standard
    deviation a quarter of the bounds' width) is refitted to the ``elite`` best of ``population``
    draws (clipped to the bounds) for ``iterations`` rounds. ``grid``: coordinate search, each task
    in turn over ``grid_points`` values between the bounds, the others held at the current best,
    for ``iterations`` passes (at most 2). Every candidate in one iteration is valued on the same
    ``sessions`` sessions (common random numbers); the winner is re-valued on ``eval_sessions``
    fresh sessions.

    Args:
        world: The world.
        method: ``"cem"`` or ``"grid"``.
        sessions: Sessions per candidate evaluation.
        iterations: CEM iterations (grid: passes).
        population: CEM candidates per iteration.
        elite: CEM elite size.
        grid_points: Grid values per task.
        eval_sessions: Sessions of the final evaluation.
        seed: Seed of the search.
        segment: Only users of this segment (the per-segment optimum).
    """
    if method not in ("cem", "grid"):
        raise ConfigError(f"--method: expected 'cem' or 'grid', found {method!r}")
    if not (1 <= elite <= population):
        raise ConfigError(f"elite: expected 1 <= elite <= population, found {elite}, {population}")
    rng = np.random.default_rng([seed, 7])
    lo, hi = world.low, world.high
    best_w = world.production.copy()
    best_v = -math.inf
    history: list[float] = []
    n_eval = 0
    if method == "cem":
        mu = world.production.copy()
        sd = (hi - lo) / 4.0
        for it in range(iterations):
            cands = np.clip(mu + sd * rng.standard_normal((population, len(mu))), lo, hi)
            cands[0] = mu if it else world.production
            vals = np.array(
                [_value(world, c, sessions, seed * 1000 + it + 1, segment) for c in cands]
            )
            n_eval += population
            top = np.argsort(-vals)[:elite]
            mu = cands[top].mean(axis=0)
            sd = np.maximum(cands[top].std(axis=0), 0.02 * (hi - lo))
            if vals[top[0]] > best_v or it == iterations - 1:
                best_w, best_v = cands[top[0]], float(vals[top[0]])
            history.append(float(vals[top[0]]))
            logger.info(
                "cem iteration %d: best %.4f at %s", it, vals[top[0]], np.round(cands[top[0]], 3)
            )
        # the final mean is usually better than any single noisy winner: compare on fresh sessions
        fresh = seed * 1000 + 999
        v_mu = _value(world, mu, sessions * 2, fresh, segment)
        v_best = _value(world, best_w, sessions * 2, fresh, segment)
        n_eval += 2
        if v_mu >= v_best:
            best_w = mu
    else:
        grid = np.linspace(lo, hi, grid_points)
        cur = world.production.copy()
        for it in range(min(iterations, 2)):
            s = seed * 1000 + it + 1
            cur_v = _value(world, cur, sessions, s, segment)
            n_eval += 1
            for k in range(len(cur)):
                for g in grid[:, k]:
                    cand = cur.copy()
                    cand[k] = g
                    v = _value(world, cand, sessions, s, segment)
                    n_eval += 1
                    if v > cur_v:
                        cur, cur_v = cand, v
            history.append(cur_v)
        best_w = cur
    pol = ConstantPolicy(tuple(float(x) for x in best_w), world.tasks, name="best")
    best = true_value(world, pol, eval_sessions, seed + 10_007, segment=segment)
    return SearchResult(
        weights=tuple(float(x) for x in best_w),
        value=best.mean,
        ci95=best.ci95,
        evaluations=n_eval,
        history=tuple(history),
    )


@dataclass
class SegmentRecorder:
    """A simulator policy that passes through ``inner`` and keeps the weights per hidden segment.

    Attributes:
        inner: The simulator policy.
        n_segments: Number of segments of the world.
        n_tasks: Weights per action.
        seed: Seed of the reservoir sample of weight vectors (not the policy's random source).
    """

    inner: SimPolicy
    n_segments: int
    n_tasks: int
    seed: int = 0
    sums: FloatArray = field(init=False)
    counts: IntArray = field(init=False)
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

    def act(
        self, observations: FloatArray, ctx: PolicyContext
    ) -> tuple[FloatArray, FloatArray | None]:
        """The inner policy's weights, shape (n, n_tasks) (recorded per segment)."""
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
class TrueValue:
    """A policy's true value in a simulated world, and what it did there.

    Attributes:
        policy: The policy's name.
        sessions: Fresh sessions simulated.
        seed: Their seed (the same seed gives the same users to every policy).
        stats: Per-session outcomes.
        summary: :func:`rollout_summary` of ``stats`` (the ``rollout`` command's JSON figures).
        weights_by_segment: Per hidden segment seen, mean weight per task (``w_<task>``).
        requests_by_segment: Requests per hidden segment.
        samples: Per segment name, up to :data:`SAMPLES_PER_SEGMENT` weight vectors used, shape
            (m, n_tasks).
    """

    policy: str
    sessions: int
    seed: int
    stats: SessionStats = field(repr=False)
    summary: dict[str, object] = field(repr=False)
    weights_by_segment: dict[str, dict[str, float]] = field(repr=False)
    requests_by_segment: dict[str, int] = field(repr=False)
    samples: dict[str, FloatArray] = field(repr=False)

    @property
    def mean(self) -> float:
        """Mean undiscounted session return."""
        return float(self.summary["return"]["mean"])  # type: ignore[index]

    @property
    def ci95(self) -> tuple[float, float]:
        """Normal-approximation 95% interval of :attr:`mean`."""
        low, high = self.summary["return"]["ci95"]  # type: ignore[index]
        return float(low), float(high)

    @property
    def returns(self) -> FloatArray:
        """Per-session undiscounted returns, shape (sessions,), in (round, user) order."""
        return np.asarray(self.stats.returns, dtype=np.float64)


def true_value(
    world: World | str | None,
    policy: Policy | SimPolicy,
    sessions: int = 4000,
    seed: int = 0,
    segment: int | None = None,
) -> TrueValue:
    """The true value of a policy: its mean undiscounted return over fresh simulated sessions.

    Args:
        world: The world, or its platform spec (a TOML path or a shipped name; ``None`` = the
            default world).
        policy: A :class:`batchrl_mtf.policy.Policy` (constant, weight table, trained network;
            observations in the world's feature order), run as the world runs it
            (:func:`batchrl_mtf.sim.policies.world_policy`: a table made for another fusion is
            refused, a table's exploration block is sampled), or a simulator policy
            (:class:`~batchrl_mtf.sim.policies.SimPolicy`, e.g. a named logging policy).
        sessions: Sessions to simulate.
        seed: Seed of the simulated users and noise (same seed = same users for every policy).
        segment: Only users of this segment index (``None``: segments by share).

    Raises:
        PolicyError: The policy's tasks differ from the world's, or its table's fusion does.
    """
    w = world if isinstance(world, World) else World(load_spec(world))
    if isinstance(policy, SimPolicy):
        sim_policy: SimPolicy = policy
    else:
        if tuple(policy.tasks) != tuple(w.tasks):
            raise PolicyError(
                f"{policy.name}: policy tasks {list(policy.tasks)} differ from the world's "
                f"{list(w.tasks)} ({w.spec.source})"
            )
        sim_policy = world_policy(w, policy)
    rec = SegmentRecorder(sim_policy, len(w.segment_names), len(w.tasks), seed)
    stats, _ = run_sessions(w, rec, sessions, seed, segment=segment)
    means = rec.means()
    return TrueValue(
        policy=sim_policy.name,
        sessions=sessions,
        seed=seed,
        stats=stats,
        summary=rollout_summary(w, stats),
        weights_by_segment={
            name: {f"w_{t}": float(means[g, j]) for j, t in enumerate(w.tasks)}
            for g, name in enumerate(w.segment_names)
            if rec.counts[g]
        },
        requests_by_segment={name: int(rec.counts[g]) for g, name in enumerate(w.segment_names)},
        samples={name: rec.sample(g) for g, name in enumerate(w.segment_names)},
    )
