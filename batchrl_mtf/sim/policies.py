"""Logging and evaluation policies of the simulator, with their exact ``behavior_logp``.

Named logging policies (``simulate --policy NAME``):

- ``production``: the spec's production weights (deterministic; no ``behavior_logp``).
- ``action-noise``: production + Gaussian noise of standard deviation ``sigma`` per weight.
- ``random``: Gaussian around the centre of the weight bounds with ``exploration.random_sigma``
  (no prior knowledge, as in the paper).
- ``mixed``: the paper's mixed multi-exploration: users with an even ``user_id`` get
  ``action-noise``, users with an odd ``user_id`` get ``random`` (half the users each).

With ``exploration.tail_share > 0`` the ``action-noise`` draws (also ``mixed``'s production half)
are heavy-tailed: a share ``tail_share`` of requests draws with ``tail_sigma`` instead of ``sigma``
(:class:`TailedGaussianPolicy`; ``behavior_logp`` is the exact mixture density).

Every Gaussian is truncated to the bounds ``[fusion.low, fusion.high]`` by rejection (each weight
is redrawn until it lands inside), so the logged ``behavior_logp`` is the exact log-density of
the truncated Gaussian: ``sum_k [log phi(z_k) - log sigma_k - log(Phi(b_k) - Phi(a_k))]``.
For ``mixed`` it is the density of the component the user was assigned to (the assignment is a
fixed, known part of the logging policy, so per-user trajectory importance weights are exact).

Anything else is a :class:`batchrl_mtf.policy.Policy` (resolved from its argument by
:func:`batchrl_mtf.resolve.resolve_policy`: ``constant:...``, a weight table, a trained policy) and
is deterministic, unless it is a weight table with an exploration
block, which is sampled with its own exact log-density.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from batchrl_mtf.core.fusion import Fusion
from batchrl_mtf.errors import PolicyError
from batchrl_mtf.policy import ConstantPolicy, Policy, TablePolicy

__all__ = [
    "NAMED_POLICIES",
    "FixedPolicy",
    "GaussianPolicy",
    "MixedPolicy",
    "PolicyContext",
    "SegmentPolicy",
    "SimPolicy",
    "TableSamplePolicy",
    "TailedGaussianPolicy",
    "make_policy",
    "truncnorm_logpdf",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
NAMED_POLICIES = ("production", "action-noise", "random", "mixed")
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True)
class PolicyContext:
    """What the simulator tells a policy beyond the observation.

    Attributes:
        user_id: Logged user id of each state, shape (n,).
        segment: Hidden segment of each state's user, shape (n,) (only oracle policies use it).
        rng: Source of randomness for stochastic policies.
    """

    user_id: IntArray
    segment: IntArray
    rng: np.random.Generator


@runtime_checkable
class SimPolicy(Protocol):
    """A policy the simulator can run: a :class:`~batchrl_mtf.policy.Policy` plus sampling.

    Where a :class:`~batchrl_mtf.policy.Policy` maps states to weights, a simulator policy may
    also sample them (the logging policies ``action-noise``, ``random``, ``mixed``; a weight table
    with an exploration block) and then returns their exact log-density, the logs'
    ``behavior_logp``; it also sees the :class:`PolicyContext` (user ids, the hidden segment, the
    random source). A deterministic :class:`~batchrl_mtf.policy.Policy` runs as a
    :class:`FixedPolicy`; :func:`batchrl_mtf.resolve.resolve_sim_policy` makes either from an
    argument.
    """

    @property
    def name(self) -> str:
        """Display name."""
        ...

    @property
    def stochastic(self) -> bool:
        """Whether :meth:`act` samples (and returns a log-density)."""
        ...

    def act(
        self, observations: FloatArray, ctx: PolicyContext
    ) -> tuple[FloatArray, FloatArray | None]:
        """Weights of shape (n, n_tasks) and ``behavior_logp`` of shape (n,) (``None`` if deterministic)."""
        ...


def _phi_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def truncnorm_logpdf(
    a: FloatArray, mean: FloatArray, sigma: FloatArray, low: FloatArray, high: FloatArray
) -> FloatArray:
    """Log-density of independent Gaussians truncated to ``[low, high]``, summed over tasks.

    Args:
        a: Weights, shape (n, k).
        mean: Shape (k,) or (n, k).
        sigma: Shape (k,).
        low: Shape (k,).
        high: Shape (k,).

    Returns:
        Shape (n,); ``-inf`` where a weight is outside its bounds.
    """
    a = np.asarray(a, dtype=np.float64)
    mu = np.broadcast_to(np.asarray(mean, dtype=np.float64), a.shape)
    s = np.asarray(sigma, dtype=np.float64)
    z = (a - mu) / s
    flat_mu = mu.reshape(-1, a.shape[1])
    lo = np.asarray(low, dtype=np.float64)
    hi = np.asarray(high, dtype=np.float64)
    # the normaliser depends on the mean; compute it per distinct mean row
    uniq, inv = np.unique(flat_mu, axis=0, return_inverse=True)
    inv = np.asarray(inv).reshape(-1)
    norm = np.array(
        [
            [
                math.log(
                    max(_phi_cdf((hi[k] - m[k]) / s[k]) - _phi_cdf((lo[k] - m[k]) / s[k]), 1e-300)
                )
                for k in range(len(m))
            ]
            for m in uniq
        ]
    )
    mass = norm[inv]
    logp = (-0.5 * z * z - _LOG_SQRT_2PI - np.log(s) - mass).sum(axis=1)
    inside = ((a >= lo) & (a <= hi)).all(axis=1)
    return np.where(inside, logp, -np.inf)


@dataclass(frozen=True)
class GaussianPolicy:
    """Independent Gaussians around ``mean``, truncated to the bounds by rejection.

    Attributes:
        mean: Shape (k,).
        sigma: Shape (k,).
        low: Shape (k,).
        high: Shape (k,).
        name: Display name.
    """

    mean: tuple[float, ...]
    sigma: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    name: str = "gaussian"

    @property
    def stochastic(self) -> bool:
        """Always ``True``."""
        return True

    def sample(self, n: int, rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
        """``n`` weight vectors and their log-density."""
        mu = np.asarray(self.mean)
        s = np.asarray(self.sigma)
        lo, hi = np.asarray(self.low), np.asarray(self.high)
        w = mu + s * rng.standard_normal((n, len(mu)))
        bad = (w < lo) | (w > hi)
        while bad.any():
            cols = np.nonzero(bad)[1]
            w[bad] = mu[cols] + s[cols] * rng.standard_normal(len(cols))
            bad = (w < lo) | (w > hi)
        return w, truncnorm_logpdf(w, mu, s, lo, hi)

    def act(self, observations: FloatArray, ctx: PolicyContext) -> tuple[FloatArray, FloatArray]:
        """Sample one weight vector per state."""
        return self.sample(len(observations), ctx.rng)


@dataclass(frozen=True)
class TailedGaussianPolicy:
    """A heavy-tailed Gaussian: each request draws from ``tail`` with probability ``share``,
    else from ``base`` (both truncated to the bounds by rejection).

    ``behavior_logp = log((1 - share) f_base(w) + share f_tail(w))``, the exact mixture density.

    Attributes:
        base: The usual component.
        tail: The wide component (same mean, larger sigma).
        share: Probability of a tail draw, in (0, 1).
        name: Display name.
    """

    base: GaussianPolicy
    tail: GaussianPolicy
    share: float
    name: str = "tailed-gaussian"

    @property
    def mean(self) -> tuple[float, ...]:
        """The components' common mean."""
        return self.base.mean

    @property
    def stochastic(self) -> bool:
        """Always ``True``."""
        return True

    def sample(self, n: int, rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
        """``n`` weight vectors and their mixture log-density."""
        pick = rng.random(n) < self.share
        w = np.empty((n, len(self.base.mean)))
        for mask, comp in ((~pick, self.base), (pick, self.tail)):
            m = int(mask.sum())
            if m:
                w[mask] = comp.sample(m, rng)[0]
        lo, hi = np.asarray(self.base.low), np.asarray(self.base.high)
        lb = truncnorm_logpdf(w, np.asarray(self.base.mean), np.asarray(self.base.sigma), lo, hi)
        lt = truncnorm_logpdf(w, np.asarray(self.tail.mean), np.asarray(self.tail.sigma), lo, hi)
        logp = np.logaddexp(math.log1p(-self.share) + lb, math.log(self.share) + lt)
        return w, logp

    def act(self, observations: FloatArray, ctx: PolicyContext) -> tuple[FloatArray, FloatArray]:
        """Sample one weight vector per state."""
        return self.sample(len(observations), ctx.rng)


@dataclass(frozen=True)
class MixedPolicy:
    """The paper's mixed multi-exploration: even ``user_id`` -> ``even``, odd -> ``odd``."""

    even: GaussianPolicy | TailedGaussianPolicy
    odd: GaussianPolicy
    name: str = "mixed"

    @property
    def stochastic(self) -> bool:
        """Always ``True``."""
        return True

    def act(self, observations: FloatArray, ctx: PolicyContext) -> tuple[FloatArray, FloatArray]:
        """Sample from each user's component; ``behavior_logp`` under that component."""
        n = len(observations)
        odd = (ctx.user_id % 2) == 1
        w = np.empty((n, len(self.even.mean)))
        logp = np.empty(n)
        for mask, comp in ((~odd, self.even), (odd, self.odd)):
            m = int(mask.sum())
            if m:
                w[mask], logp[mask] = comp.sample(m, ctx.rng)
        return w, logp


@dataclass(frozen=True)
class FixedPolicy:
    """A :class:`batchrl_mtf.policy.Policy` (constant, table, trained) run by the simulator.

    It never samples: the weights are the policy's, ``behavior_logp`` is ``None``.

    Attributes:
        policy: The wrapped policy.
    """

    policy: Policy

    @property
    def name(self) -> str:
        """The wrapped policy's name."""
        return self.policy.name

    @property
    def stochastic(self) -> bool:
        """Always ``False``."""
        return False

    def act(self, observations: FloatArray, ctx: PolicyContext) -> tuple[FloatArray, None]:
        """The policy's weights."""
        return np.asarray(self.policy.act(observations), dtype=np.float64), None


@dataclass(frozen=True)
class TableSamplePolicy:
    """A weight table with an exploration block, sampled through :mod:`batchrl_mtf.serving`."""

    table: TablePolicy

    @property
    def name(self) -> str:
        """The table's name."""
        return self.table.name

    @property
    def stochastic(self) -> bool:
        """Always ``True``."""
        return True

    def act(self, observations: FloatArray, ctx: PolicyContext) -> tuple[FloatArray, FloatArray]:
        """Sample around each state's bucket weights (``WeightTable.sample``)."""
        w, logp = self.table.table.sample(  # type: ignore[attr-defined]
            np.asarray(observations), ctx.rng, self.table.feature_names
        )
        return np.asarray(w, dtype=np.float64), np.asarray(logp, dtype=np.float64)


@dataclass(frozen=True)
class SegmentPolicy:
    """An oracle that knows each user's hidden segment: constant weights per segment.

    Attributes:
        weights: Shape (n_segments, k).
        name: Display name.
    """

    weights: tuple[tuple[float, ...], ...]
    name: str = "per-segment"

    @property
    def stochastic(self) -> bool:
        """Always ``False``."""
        return False

    def act(self, observations: FloatArray, ctx: PolicyContext) -> tuple[FloatArray, None]:
        """The weights of each state's segment."""
        return np.asarray(self.weights, dtype=np.float64)[ctx.segment], None


def make_policy(
    arg: str | Policy,
    tasks: Sequence[str],
    production: Sequence[float],
    low: Sequence[float],
    high: Sequence[float],
    sigma: float,
    random_sigma: float,
    explore: bool = True,
    fusion: Fusion | None = None,
    tail_share: float = 0.0,
    tail_sigma: float = 1.0,
) -> SimPolicy:
    """Resolve a simulator policy argument.

    Args:
        arg: ``production``, ``action-noise``, ``random``, ``mixed``, or a resolved
            :class:`batchrl_mtf.policy.Policy` (see :func:`batchrl_mtf.resolve.resolve_policy`).
        tasks: Task names in action order.
        production: Production weights.
        low: Lower weight bounds.
        high: Upper weight bounds.
        sigma: Standard deviation of ``action-noise`` (and of the ``mixed`` production half).
        random_sigma: Standard deviation of ``random`` (and of the ``mixed`` random half).
        explore: Sample weight tables that carry an exploration block (``False``: their means).
        fusion: The environment's fusion (one offset per task); a weight table made for another
            fusion is refused.
        tail_share: Share of heavy-tailed ``action-noise`` draws (0: none).
        tail_sigma: Standard deviation of those draws.

    Raises:
        PolicyError: The argument is none of these.
    """
    k = len(tasks)
    lo, hi = tuple(float(x) for x in low), tuple(float(x) for x in high)
    prod = tuple(float(x) for x in production)
    if sigma <= 0 or random_sigma <= 0:
        raise PolicyError(f"--sigma: expected a number > 0, found {min(sigma, random_sigma)}")
    noise: GaussianPolicy | TailedGaussianPolicy = GaussianPolicy(
        prod, (sigma,) * k, lo, hi, name=f"action-noise:{sigma:g}"
    )
    if tail_share > 0:
        wide = GaussianPolicy(prod, (tail_sigma,) * k, lo, hi, name="tail")
        noise = TailedGaussianPolicy(
            noise,  # type: ignore[arg-type]
            wide,
            tail_share,
            name=f"action-noise:{sigma:g}+tail:{tail_share:g}x{tail_sigma:g}",
        )
    centre = tuple((a + b) / 2 for a, b in zip(lo, hi, strict=True))
    rand = GaussianPolicy(centre, (random_sigma,) * k, lo, hi, name="random")
    if arg == "production":
        return FixedPolicy(ConstantPolicy(prod, tuple(tasks), name="production"))
    if arg == "action-noise":
        return noise
    if arg == "random":
        return rand
    if arg == "mixed":
        return MixedPolicy(noise, rand)
    if isinstance(arg, str):
        raise PolicyError(
            f"--policy {arg}: expected one of {', '.join(NAMED_POLICIES)} or a resolved policy "
            "(batchrl_mtf.resolve.resolve_policy turns constant:..., tables and policy "
            "directories into one)"
        )
    policy = arg
    if isinstance(policy, TablePolicy) and fusion is not None:
        tf = policy.table.fusion  # type: ignore[attr-defined]
        if tf != fusion:
            raise PolicyError(
                f"{policy.name}: table fusion {tf.describe(tasks)} differs from the environment's "
                f"{fusion.describe(tasks)}"
            )
    if (
        explore
        and isinstance(policy, TablePolicy)
        and getattr(policy.table, "exploration", None) is not None
    ):
        return TableSamplePolicy(policy)
    return FixedPolicy(policy)


def world_policy(
    world: Any,
    arg: str | Policy,
    sigma: float | None = None,
    random_sigma: float | None = None,
) -> SimPolicy:
    """The simulator policy for ``arg`` in ``world``, with the world's exploration defaults.

    Args:
        world: A :class:`batchrl_mtf.sim.World`.
        arg: A named logging policy (``production``, ``action-noise``, ``random``, ``mixed``),
            or a :class:`Policy` object.
        sigma: Noise of ``action-noise``/``mixed``; ``None`` = the spec's.
        random_sigma: Noise of ``random``/``mixed``; ``None`` = the spec's.
    """
    ex = world.spec.exploration
    return make_policy(
        arg,
        world.tasks,
        world.production,
        world.low,
        world.high,
        ex.action_noise_sigma if sigma is None else sigma,
        ex.random_sigma if random_sigma is None else random_sigma,
        fusion=world.fusion,
        tail_share=ex.tail_share,
        tail_sigma=ex.tail_sigma,
    )
