"""Validation of a learned world: the replay check.

The learned world is rolled out with the logged actions' policy: each replayed session starts at
a logged session's start state and plays that session's logged weights in order (the last one
again if the learned session outlasts the logged one). Its session lengths, per-request reward
and feedback rates are then compared with those of the same logged sessions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from batchrl_mtf.sim.engine import SessionBatch, UserPool
from batchrl_mtf.sim.world import World

__all__ = ["LoggedSessions", "format_replay", "replay_check", "session_stats"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class LoggedSessions:
    """The logged sessions in start-state order (session ``i`` starts at start state ``i``).

    Attributes:
        lengths: Requests per session, shape (n,).
        offsets: First request of each session in the per-request arrays, shape (n + 1,).
        actions: Logged weights per request, shape (n_requests, n_tasks).
        rewards: Reward per request, shape (n_requests,).
        feedback: Feedback summed over each request's items, world feedback order,
            shape (n_requests, F).
        impressions: Items shown per request, shape (n_requests,).
    """

    lengths: IntArray
    offsets: IntArray
    actions: FloatArray
    rewards: FloatArray
    feedback: FloatArray
    impressions: IntArray

    def __len__(self) -> int:
        return len(self.lengths)

    def request_rows(self, sessions: IntArray) -> IntArray:
        """Per-request rows of ``sessions`` (m,), in session order."""
        if len(sessions) == 0:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate(
            [np.arange(self.offsets[s], self.offsets[s + 1]) for s in sessions]
        ).astype(np.int64)


def session_stats(
    lengths: IntArray,
    rewards: FloatArray,
    feedback: FloatArray,
    impressions: IntArray,
    names: tuple[str, ...],
    max_len: int,
) -> dict[str, object]:
    """Summary of sessions: length distribution, reward per request and per session, feedback
    rate per impression of every column."""
    lengths = np.asarray(lengths, dtype=np.int64)
    hist = np.bincount(lengths, minlength=max_len + 1)[: max_len + 1].astype(np.float64)
    hist /= max(hist.sum(), 1.0)
    n_imp = float(np.sum(impressions))
    return {
        "sessions": len(lengths),
        "requests": int(lengths.sum()),
        "session_length_mean": float(lengths.mean()) if len(lengths) else float("nan"),
        "session_length_quantiles": {
            q: float(np.quantile(lengths, float(q))) if len(lengths) else float("nan")
            for q in ("0.1", "0.25", "0.5", "0.75", "0.9")
        },
        "session_length_hist": [float(x) for x in hist],
        "reward_per_request": float(np.mean(rewards)) if len(rewards) else float("nan"),
        "return_per_session": float(np.sum(rewards)) / max(len(lengths), 1),
        "feedback_rate": {
            c: float(feedback[:, j].sum()) / n_imp if n_imp else float("nan")
            for j, c in enumerate(names)
        },
    }


def _rel(a: float, b: float) -> float:
    """``|b - a| / |a|`` (``|b - a|`` when ``a`` is 0)."""
    return abs(b - a) / abs(a) if a != 0 else abs(b - a)


def replay_check(
    world: World, logged: LoggedSessions, n_sessions: int = 2000, seed: int = 0
) -> dict[str, object]:
    """Roll the learned world out with the logged actions and compare with the logs.

    Args:
        world: A learned world (``world.learned`` set) built from these logs.
        logged: The logged sessions, in start-state order.
        n_sessions: Sessions replayed (a seeded sample of the logged ones, at most all).
        seed: Seed of the sample and of the learned world's randomness.

    Returns:
        ``{"logged": stats, "learned": stats, "divergence": {...}, "sessions": n}`` where the
        divergences are the total-variation distance between the session-length distributions and
        relative errors ``|learned - logged| / |logged|`` of the means.
    """
    model = world.learned
    if model is None:
        raise ValueError("replay_check needs a learned world")
    rng = np.random.default_rng([seed, 5])
    n = min(n_sessions, len(logged))
    pick = np.sort(rng.choice(len(logged), size=n, replace=False)).astype(np.int64)
    users = model.users_at(pick)
    pool = UserPool(world, users, world.spec.features.hist_n)
    env_rng = np.random.default_rng([seed, 0])
    lengths: list[IntArray] = []
    rewards: list[FloatArray] = []
    fbs: list[FloatArray] = []
    imps: list[IntArray] = []
    for a in range(0, n, 4096):
        chunk = np.arange(a, min(a + 4096, n), dtype=np.int64)
        batch = SessionBatch(world, pool, chunk, env_rng)
        while batch.active.any():
            rows = np.flatnonzero(batch.active)
            sess = pick[chunk[rows]]
            d = np.minimum(batch.depth[rows], logged.lengths[sess] - 1)
            res = batch.step(logged.actions[logged.offsets[sess] + d], rows)
            rewards.append(res.reward)
            fbs.append(res.feedback.sum(axis=1))
            imps.append(np.full(len(rows), res.items.shape[1], dtype=np.int64))
        batch.finish()
        lengths.append(batch.depth.copy())
    max_len = world.spec.session.max_requests
    names = world.feedback
    req = logged.request_rows(pick)
    log_stats = session_stats(
        logged.lengths[pick],
        logged.rewards[req],
        logged.feedback[req],
        logged.impressions[req],
        names,
        max_len,
    )
    env_stats = session_stats(
        np.concatenate(lengths),
        np.concatenate(rewards),
        np.concatenate(fbs),
        np.concatenate(imps),
        names,
        max_len,
    )
    h0 = np.asarray(log_stats["session_length_hist"])
    h1 = np.asarray(env_stats["session_length_hist"])
    div: dict[str, float] = {
        "session_length_tv": float(0.5 * np.abs(h0 - h1).sum()),
        "session_length_mean_rel": _rel(
            float(log_stats["session_length_mean"]),  # type: ignore[arg-type]
            float(env_stats["session_length_mean"]),  # type: ignore[arg-type]
        ),
        "reward_per_request_rel": _rel(
            float(log_stats["reward_per_request"]),  # type: ignore[arg-type]
            float(env_stats["reward_per_request"]),  # type: ignore[arg-type]
        ),
        "return_per_session_rel": _rel(
            float(log_stats["return_per_session"]),  # type: ignore[arg-type]
            float(env_stats["return_per_session"]),  # type: ignore[arg-type]
        ),
    }
    lr: dict[str, float] = log_stats["feedback_rate"]  # type: ignore[assignment]
    er: dict[str, float] = env_stats["feedback_rate"]  # type: ignore[assignment]
    for c in names:
        div[f"feedback_rate_{c}_rel"] = _rel(lr[c], er[c])
    return {
        "sessions": n,
        "seed": seed,
        "logged": log_stats,
        "learned": env_stats,
        "divergence": div,
    }


def format_replay(report: dict[str, object]) -> str:
    """The replay check as a side-by-side text table."""
    log: dict[str, object] = report["logged"]  # type: ignore[assignment]
    env: dict[str, object] = report["learned"]  # type: ignore[assignment]
    div: dict[str, float] = report["divergence"]  # type: ignore[assignment]
    lines = [
        f"replay check ({report['sessions']} logged sessions replayed with their logged weights)",
        f"{'statistic':<30}{'logs':>12}{'learned env':>14}  divergence",
    ]

    def row(name: str, a: float, b: float, d: str) -> None:
        lines.append(f"{name:<30}{a:>12.4g}{b:>14.4g}  {d}")

    row(
        "session length (mean)",
        float(log["session_length_mean"]),  # type: ignore[arg-type]
        float(env["session_length_mean"]),  # type: ignore[arg-type]
        f"rel {div['session_length_mean_rel']:.3f}",
    )
    lq: dict[str, float] = log["session_length_quantiles"]  # type: ignore[assignment]
    eq: dict[str, float] = env["session_length_quantiles"]  # type: ignore[assignment]
    for q in ("0.1", "0.5", "0.9"):
        row(f"session length (q{q})", lq[q], eq[q], "")
    lines.append(
        f"{'session length (distribution)':<30}{'':>12}{'':>14}  TV {div['session_length_tv']:.3f}"
    )
    for key, label in (
        ("reward_per_request", "reward per request"),
        ("return_per_session", "return per session"),
    ):
        row(label, float(log[key]), float(env[key]), f"rel {div[key + '_rel']:.3f}")  # type: ignore[arg-type]
    lr: dict[str, float] = log["feedback_rate"]  # type: ignore[assignment]
    er: dict[str, float] = env["feedback_rate"]  # type: ignore[assignment]
    for c in lr:
        row(f"{c} per impression", lr[c], er[c], f"rel {div[f'feedback_rate_{c}_rel']:.3f}")
    return "\n".join(lines)
