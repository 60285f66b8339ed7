"""Logging policies: exact behavior_logp, bounds, the mixed assignment, resolution of arguments."""

from __future__ import annotations

import json

import numpy as np
import pytest

from batchrl_mtf.errors import PolicyError
from batchrl_mtf.resolve import resolve_sim_policy
from batchrl_mtf.sim import (
    FixedPolicy,
    GaussianPolicy,
    MixedPolicy,
    PolicyContext,
    World,
    load_spec,
    make_policy,
    truncnorm_logpdf,
)

stats = pytest.importorskip("scipy.stats")


@pytest.fixture(scope="module")
def world() -> World:
    return World(load_spec())


def _make(world: World, arg: str, sigma: float = 0.2, random_sigma: float = 0.6):  # type: ignore[no-untyped-def]
    return make_policy(
        arg,
        world.tasks,
        world.production,
        world.low,
        world.high,
        sigma,
        random_sigma,
    )


def _ctx(n: int, seed: int = 0) -> PolicyContext:
    return PolicyContext(
        np.arange(n, dtype=np.int64), np.zeros(n, dtype=np.int64), np.random.default_rng(seed)
    )


def _scipy_logp(a: np.ndarray, mu: np.ndarray, s: float, lo: float, hi: float) -> np.ndarray:
    return stats.truncnorm.logpdf(a, (lo - mu) / s, (hi - mu) / s, loc=mu, scale=s).sum(axis=1)


@pytest.mark.parametrize(
    ("arg", "sigma"), [("action-noise", 0.2), ("action-noise", 0.9), ("random", 0.6)]
)
def test_gaussian_logp_matches_scipy_truncnorm(world: World, arg: str, sigma: float) -> None:
    pol = _make(world, arg, sigma=sigma, random_sigma=sigma)
    w, logp = pol.act(np.zeros((4000, 3)), _ctx(4000))
    assert logp is not None
    assert (w >= 0.0).all()
    assert (w <= 2.0).all()
    mu = world.production if arg == "action-noise" else np.full(6, 1.0)
    np.testing.assert_allclose(logp, _scipy_logp(w, mu, sigma, 0.0, 2.0), rtol=1e-9)
    # the samples follow the truncated law (mean of the first weight)
    a, b = (0.0 - mu[0]) / sigma, (2.0 - mu[0]) / sigma
    expected = stats.truncnorm.mean(a, b, loc=mu[0], scale=sigma)
    assert abs(w[:, 0].mean() - expected) < 4 * w[:, 0].std() / np.sqrt(len(w))


def test_mixed_gives_half_the_users_each_component(world: World) -> None:
    pol = _make(world, "mixed", sigma=0.1, random_sigma=0.6)
    assert isinstance(pol, MixedPolicy)
    w, logp = pol.act(np.zeros((2000, 3)), _ctx(2000, seed=1))
    even = np.arange(2000) % 2 == 0
    # even users: production + small noise; odd users: wide around the centre
    assert np.abs(w[even] - world.production).max() < 0.8
    assert w[~even].std(axis=0).min() > 0.3
    np.testing.assert_allclose(
        logp[even], _scipy_logp(w[even], world.production, 0.1, 0, 2), rtol=1e-9
    )
    np.testing.assert_allclose(logp[~even], _scipy_logp(w[~even], np.ones(6), 0.6, 0, 2), rtol=1e-9)


def test_truncnorm_logpdf_outside_bounds_is_minus_inf() -> None:
    out = truncnorm_logpdf(
        np.array([[2.5, 1.0]]), np.ones(2), np.ones(2), np.zeros(2), 2 * np.ones(2)
    )
    assert out[0] == -np.inf


def test_sampling_is_reproducible(world: World) -> None:
    pol = _make(world, "random")
    a, _ = pol.act(np.zeros((10, 3)), _ctx(10, seed=4))
    b, _ = pol.act(np.zeros((10, 3)), _ctx(10, seed=4))
    np.testing.assert_array_equal(a, b)


def test_deterministic_arguments(world: World, tmp_path) -> None:  # type: ignore[no-untyped-def]
    prod = _make(world, "production")
    assert isinstance(prod, FixedPolicy)
    w, logp = prod.act(np.zeros((3, 5)), _ctx(3))
    assert logp is None
    np.testing.assert_array_equal(w, np.tile(world.production, (3, 1)))
    const = resolve_sim_policy(world, "constant:0,1,0,1,0,1")
    np.testing.assert_array_equal(const.act(np.zeros((2, 5)), _ctx(2))[0][0], [0, 1, 0, 1, 0, 1])
    with pytest.raises(PolicyError, match="expected 6 weights"):
        resolve_sim_policy(world, "constant:1,2")
    with pytest.raises(PolicyError, match="no such file or directory"):
        resolve_sim_policy(world, str(tmp_path / "nothing"))
    with pytest.raises(PolicyError, match="expected one of production"):
        _make(world, "constant:0,1,0,1,0,1")  # the simulator itself resolves only named policies
    with pytest.raises(PolicyError, match="expected a number > 0"):
        _make(world, "action-noise", sigma=0.0)
    assert isinstance(GaussianPolicy((1.0,), (0.1,), (0.0,), (2.0,)).name, str)
    assert json.dumps(prod.name) == '"production"'
