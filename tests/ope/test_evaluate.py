"""Off-policy estimators on hand-computable tiny cases, on-policy equality and input errors."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np
import pytest

from batchrl_mtf.core.fusion import Fusion
from batchrl_mtf.data.features import FeatureConfig, FeatureSpec
from batchrl_mtf.data.spec import DatasetSpec
from batchrl_mtf.data.transitions import Transitions
from batchrl_mtf.errors import ConfigError, FusionError, OPEInputError
from batchrl_mtf.ope import (
    CFQE,
    DR,
    FQE,
    PDIS,
    WDR,
    WPDIS,
    Estimate,
    OPEConfig,
    best_constant,
    best_constant_table,
    constant_candidates,
    evaluate_policies,
    make_estimator,
    prepare,
    quoted_ci,
    recommend,
    scott_bandwidth,
)
from batchrl_mtf.ope.base import fit_standard_error, widen_ci
from batchrl_mtf.ope.fqe import QValues, q_cache_key
from batchrl_mtf.ope.kernel import log_box_mass, log_kernel_ratio
from batchrl_mtf.policy.base import ConstantPolicy, LoggingPolicy

# h = 1/sqrt(2 pi): a 1-task Gaussian kernel is exactly 1 at distance 0 (the plain kernel, not
# renormalised to the box, so that the hand computations below read the ratios directly)
H_UNIT = 1.0 / math.sqrt(2.0 * math.pi)
NO_BOOT = OPEConfig(n_bootstrap=0, bandwidth=H_UNIT, kernel_boundary="none")


def make_data(
    sessions: Sequence[Sequence[tuple[float, float, float, float]]],
    gamma: float = 0.5,
    tasks: tuple[str, ...] = ("a",),
    low: float = 0.0,
    high: float = 1.0,
    timeout_last: bool = False,
    has_logp: bool = True,
) -> Transitions:
    """Transitions from sessions of (obs, action, reward, behavior_logp) steps (1 feature)."""
    rows = [(i, t, *step) for i, s in enumerate(sessions) for t, step in enumerate(s)]
    n = len(rows)
    k = len(tasks)
    step = np.array([r[1] for r in rows], dtype=np.int64)
    last = np.zeros(n, dtype=bool)
    if n:
        last[np.append(np.flatnonzero(step[1:] == 0), n - 1)] = True
    obs = np.array([[r[2]] for r in rows], dtype=np.float64).reshape(n, 1)
    spec = DatasetSpec(
        features=FeatureSpec(
            names=("x",),
            user_features=(),
            feedback=(),
            config=FeatureConfig(),
            mean=(float(obs.mean()) if n else 0.0,),
            std=(float(obs.std()) if n and obs.std() > 0 else 1.0,),
        ),
        tasks=tasks,
        action_low=(low,) * k,
        action_high=(high,) * k,
        gamma=gamma,
        has_behavior_logp=has_logp,
        dataset_hash="sha256:test",
        data_hash="sha256:test",
    )
    return Transitions(
        spec=spec,
        user_id=np.array([f"u{r[0]}" for r in rows], dtype=object),
        session_id=np.array([f"s{r[0]}" for r in rows], dtype=object),
        request_id=np.arange(n, dtype=np.int64),
        step=step,
        ts_ms=np.arange(n, dtype=np.int64) * 1000,
        observations=obs,
        actions=np.array([[r[3]] * k for r in rows], dtype=np.float64).reshape(n, k),
        rewards=np.array([r[4] for r in rows], dtype=np.float64),
        stickiness=np.zeros(n),
        activeness=np.zeros(n),
        terminals=last & (not timeout_last),
        timeouts=last & timeout_last,
        behavior_logp=np.array([r[5] for r in rows], dtype=np.float64),
        split=np.full(n, "test", dtype="<U5"),
    )


# Session A: rewards (1, 2), ratios (2, 0.5) -> w = (2, 1); session B: reward 3, ratio 0.5.
# The policy plays 0.5 = every logged action, so the kernel is 1 and rho = exp(-behavior_logp).
LN2 = math.log(2.0)
TINY = [
    [(0.0, 0.5, 1.0, -LN2), (1.0, 0.5, 2.0, LN2)],
    [(2.0, 0.5, 3.0, LN2)],
]
POLICY = ConstantPolicy((0.5,), ("a",), name="constant:0.5")
# hand-set model: Q(s_t, a_t) and V(s_t) per row (A0, A1, B0)
Q_LOGGED = np.array([1.5, 1.0, 2.0])
V_POLICY = np.array([2.5, 1.5, 2.5])


def with_model(data: Transitions, config: OPEConfig = NO_BOOT) -> object:
    pdata = prepare(data, POLICY, config.gamma)
    pdata.cache[q_cache_key(config, 0.0)] = QValues(Q_LOGGED, V_POLICY, 0.0)
    return pdata


@pytest.mark.parametrize(
    ("estimator", "expected"),
    [
        # A: 2*1 + 0.5*1*2 = 3; B: 0.5*3 = 1.5
        (PDIS, (3.0 + 1.5) / 2),
        # t0: (2*1 + 0.5*3)/2.5 = 1.4; t1: (1*2 + 0.5*0)/1.5 (B absorbing, weight 0.5)
        (WPDIS, 1.4 + 0.5 * 2.0 / 1.5),
        # A: 2*(1-1.5) + 2.5 + 0.5*(1*(2-1) + 2*1.5) = 3.5; B: 0.5*(3-2) + 2.5 = 3
        (DR, (3.5 + 3.0) / 2),
        # t0: (2*-0.5 + 0.5*1)/2.5 + (2.5+2.5)/2 ; t1: 0.5*[(1*1 + 0)/1.5 + (2*1.5 + 0)/2.5]
        (WDR, -0.2 + 2.5 + 0.5 * (1.0 / 1.5 + 3.0 / 2.5)),
    ],
)
def test_weighted_estimators_match_hand_computation(estimator: type, expected: float) -> None:
    est = estimator(NO_BOOT).estimate(with_model(make_data(TINY)))
    assert est.value == pytest.approx(expected, abs=1e-12)
    assert np.mean(est.per_session) == pytest.approx(expected, abs=1e-12)
    # trajectory weights (1, 0.5): Kish ESS = 1.5^2 / 1.25
    assert est.ess == pytest.approx(1.8)


def test_pdis_per_session_values_are_the_weighted_returns() -> None:
    est = PDIS(NO_BOOT).estimate(make_data(TINY), POLICY)
    np.testing.assert_allclose(est.per_session, [3.0, 1.5])


def test_kernel_ratio_matches_gaussian_formula() -> None:
    # 2 tasks, bounds [0, 2]: normalised distance (0.25, -0.5); density over raw weights / 2^2
    h = 0.3
    args = (
        np.array([[1.0, 0.0]]), np.array([[0.5, 1.0]]), np.array([-1.2]),
        np.array([0.0, 0.0]), np.array([2.0, 2.0]), h,
    )  # fmt: skip
    d2 = 0.25**2 + 0.5**2
    kernel = math.exp(-d2 / (2 * h * h)) / (2 * math.pi * h * h)
    plain = math.exp(log_kernel_ratio(*args, "none")[0])
    assert plain == pytest.approx(kernel / 4.0 / math.exp(-1.2), rel=1e-12)
    # renormalised (the default): divided by the kernel's mass inside the box, per task
    phi = NormalDist().cdf
    mass = (phi((1 - 0.25) / h) - phi(-0.25 / h)) * (phi((1 - 0.5) / h) - phi(-0.5 / h))
    assert math.exp(log_kernel_ratio(*args)[0]) == pytest.approx(plain / mass, rel=1e-9)


def test_kernel_boundary_mass() -> None:
    h = 0.05
    # inside, far from the edges: the whole mass; on an edge: half per task; clipped outside
    centres = np.array([[0.5, 0.5], [0.0, 0.5], [0.0, 1.0], [-3.0, 0.5], [1e-9, 0.4]])
    np.testing.assert_allclose(
        np.exp(log_box_mass(centres, h)), [1.0, 0.5, 0.25, 0.5, 0.5], rtol=1e-6
    )
    # a narrow kernel far inside stays exact (no cancellation), a wide one keeps its inner part
    assert log_box_mass(np.array([[0.5]]), 1e-4)[0] == 0.0
    phi = NormalDist().cdf
    assert math.exp(log_box_mass(np.array([[0.2]]), 2.0)[0]) == pytest.approx(
        phi(0.8 / 2.0) - phi(-0.2 / 2.0), rel=1e-12
    )


def test_renormalised_kernel_keeps_an_edge_policy_unbiased() -> None:
    """A policy on the box's lower edge, logs uniform on the box: the plain kernel's PDIS loses
    half the value per task and step; the renormalised one recovers the reward."""
    rng = np.random.default_rng(0)
    n, k = 20000, 2
    acts = rng.uniform(0.0, 1.0, size=(n, k))
    logp = np.zeros(n)  # uniform density 1 on [0, 1]^2
    edge = np.zeros((n, k))
    low, high = np.zeros(k), np.ones(k)
    for boundary, share in (("none", 0.25), ("renormalise", 1.0)):
        w = np.exp(log_kernel_ratio(acts, edge, logp, low, high, 0.05, boundary))
        assert float(w.mean()) == pytest.approx(share, rel=0.05)


def test_far_policy_gets_small_weights() -> None:
    data = make_data(TINY)
    far = ConstantPolicy((0.9,), ("a",), name="far")
    cfg = OPEConfig(n_bootstrap=0, bandwidth=0.1)  # distance 0.4 = 4 bandwidths
    near = PDIS(cfg).estimate(data, POLICY).value
    assert PDIS(cfg).estimate(data, far).value < 1e-3 * near


def test_scott_bandwidth_rule() -> None:
    rng = np.random.default_rng(0)
    acts = rng.uniform(0, 2, size=(1000, 3))
    u = acts / 2.0
    expected = math.sqrt(np.mean(u.var(axis=0))) * 1000 ** (-1 / 7)
    assert scott_bandwidth(acts, np.zeros(3), np.full(3, 2.0)) == pytest.approx(expected)


ONPOLICY = [
    [(0.1, 0.2, 1.0, -0.3), (0.4, 0.7, 2.0, 0.1), (0.2, 0.9, 0.5, -2.0)],
    [(1.0, 0.4, 3.0, 0.4)],
    [(0.3, 0.1, -1.0, 1.1), (0.6, 0.3, 4.0, -0.7)],
]


@pytest.mark.parametrize("estimator", [PDIS, WPDIS, DR, WDR])
def test_behavior_policy_gives_on_policy_average(estimator: type) -> None:
    gamma = 0.9
    data = make_data(ONPOLICY, gamma=gamma)
    expected = np.mean([sum(gamma**t * s[t][2] for t in range(len(s))) for s in ONPOLICY])
    cfg = OPEConfig(n_bootstrap=0, fqe_n_steps=5)
    est = estimator(cfg).estimate(data, LoggingPolicy(("a",)))
    assert est.value == pytest.approx(expected, abs=1e-9)
    assert est.ess == pytest.approx(3.0)


def _one_step_data(n: int, seed: int) -> Transitions:
    """1-step sessions: reward = 2 * action + obs, actions uniform on [0, 2]."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    a = rng.uniform(0, 2, size=n)
    return make_data([[(x[i], a[i], 2 * a[i] + x[i], 0.0)] for i in range(n)], high=2.0)


FAST_FQE = OPEConfig(n_bootstrap=0, fqe_n_steps=1500, fqe_learning_rate=1e-3, seed=0, fqe_n_fits=1)


def test_fqe_one_step_converges_to_known_value() -> None:
    data = _one_step_data(1000, 0)
    est = FQE(FAST_FQE).estimate(data, ConstantPolicy((1.5,), ("a",), name="c"))
    truth = 3.0 + float(data.observations.mean())
    assert est.value == pytest.approx(truth, abs=0.15)


def test_fqe_two_step_undiscounted_uses_terminals() -> None:
    # step 0: reward = action; step 1: reward 1, then terminal -> V(pi) = c + 1 with gamma = 1
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 2, size=(400, 2))
    sessions = [[(0.0, a[i, 0], a[i, 0], 0.0), (1.0, a[i, 1], 1.0, 0.0)] for i in range(400)]
    data = make_data(sessions, gamma=1.0, high=2.0)
    cfg = dataclasses.replace(FAST_FQE, fqe_n_steps=2000, gamma=1.0)
    est = FQE(cfg).estimate(data, ConstantPolicy((0.5,), ("a",), name="c"))
    assert est.value == pytest.approx(1.5, abs=0.15)


def test_cfqe_is_below_fqe_far_from_data() -> None:
    data = _one_step_data(600, 2)
    far = ConstantPolicy((2.0,), ("a",), name="edge")  # the edge of the bounds, few data
    cfg = dataclasses.replace(FAST_FQE, fqe_n_steps=800, cfqe_alpha=0.5)
    fqe = FQE(cfg).estimate(data, far).value
    cfqe = CFQE(cfg).estimate(data, far).value
    assert cfqe < fqe - 0.2


def test_behavior_fqe_is_close_to_on_policy_average() -> None:
    data = _one_step_data(800, 3)
    est = FQE(FAST_FQE).estimate(data, LoggingPolicy(("a",)))
    assert est.value == pytest.approx(float(data.rewards.mean()), abs=0.15)


def test_bootstrap_interval_resamples_sessions_and_ratio() -> None:
    cfg = OPEConfig(n_bootstrap=50, bandwidth=H_UNIT, seed=3, kernel_boundary="none")
    data = make_data(TINY * 3)
    est = WPDIS(cfg).estimate(data, POLICY)
    # the same resamples by hand: counts of sessions, ratio of weighted sums per step
    rng = np.random.default_rng(3)
    counts = rng.multinomial(6, np.full(6, 1 / 6), size=50)
    w = np.array([[2.0, 1.0], [0.5, 0.5]] * 3)
    r = np.array([[1.0, 2.0], [3.0, 0.0]] * 3)
    disc = np.array([1.0, 0.5])
    vals = ((counts @ (w * r)) / (counts @ w) * disc).sum(axis=1)
    lo, hi = np.percentile(vals, [2.5, 97.5])
    assert est.ci == pytest.approx((lo, hi))
    assert est.ci[0] <= est.value <= est.ci[1]


def test_constant_per_session_values_give_a_point_interval() -> None:
    data = make_data([[(0.0, 0.5, 2.0, 0.0)]] * 5)
    est = PDIS(OPEConfig(n_bootstrap=20, bandwidth=H_UNIT, kernel_boundary="none")).estimate(
        data, POLICY
    )
    assert est.ci == pytest.approx((2.0, 2.0))


class WrongShapePolicy:
    name = "wrong"
    tasks = ("a",)

    def act(self, observations: np.ndarray) -> np.ndarray:
        return np.zeros((len(observations), 2))


class NaNPolicy(WrongShapePolicy):
    name = "nan"

    def act(self, observations: np.ndarray) -> np.ndarray:
        return np.full((len(observations), 1), np.nan)


def _nan_logp() -> Transitions:
    d = make_data(TINY)
    logp = d.behavior_logp.copy()
    logp[1] = np.nan
    return dataclasses.replace(d, behavior_logp=logp)


@pytest.mark.parametrize(
    ("make", "policy", "estimator", "match"),
    [
        (_nan_logp, POLICY, "wpdis", r"expected a finite behavior_logp.*1 NaN/inf.*request_id 1"),
        (_nan_logp, POLICY, "dr", r"behavior_logp"),
        (lambda: make_data(TINY, has_logp=False), POLICY, "pdis", r"has no behavior_logp"),
        (lambda: make_data(TINY), WrongShapePolicy(), "pdis", r"expected actions of shape \(3, 1\).*found \(3, 2\)"),
        (lambda: make_data(TINY), NaNPolicy(), "fqe", r"expected finite actions"),
        (lambda: make_data([]), POLICY, "wpdis", r"expected at least one session"),
        (lambda: make_data(TINY), ConstantPolicy((0.5, 0.5), ("a", "b")), "pdis", r"tasks \['a', 'b'\] differ"),
    ],
)  # fmt: skip
def test_invalid_inputs_raise_clear_errors(
    make: object, policy: object, estimator: str, match: str
) -> None:
    with pytest.raises(OPEInputError, match=match):
        make_estimator(estimator, NO_BOOT).estimate(make(), policy)  # type: ignore[operator,arg-type]


def test_unknown_estimator_and_bad_config() -> None:
    with pytest.raises(OPEInputError, match=r"expected one of fqe, cfqe.*found 'ips'"):
        make_estimator("ips")
    with pytest.raises(ConfigError, match=r"estimators: expected names among"):
        OPEConfig(estimators=("fqe", "ips"))
    with pytest.raises(ConfigError, match=r"bandwidth: expected a number > 0"):
        OPEConfig(bandwidth=0.0)


def _est(name: str, value: float, ess: float | None = None) -> Estimate:
    return Estimate(name, value, (value - 1, value + 1), ess, np.zeros(1), 100)


def test_recommend_rule_prefers_dr_and_guards_pure_is_by_ess() -> None:
    cfg = OPEConfig()
    assert cfg.recommend_order[:3] == ("dr", "wdr", "fqe")
    ests = {"fqe": _est("fqe", 1.0), "wdr": _est("wdr", 2.0, ess=10.0)}
    # doubly robust estimators are not guarded: a low ESS still recommends wdr over fqe
    rec = recommend(ests, 100, cfg)
    assert rec is not None
    assert (rec.estimator, rec.value) == ("wdr", 2.0)
    ests["dr"] = _est("dr", 3.0, ess=1.0)
    rec = recommend(ests, 100, cfg)
    assert rec is not None
    assert (rec.estimator, rec.value) == ("dr", 3.0)
    # pure importance sampling is guarded: ESS >= max(30, 5% of 1000 = 50)
    is_first = dataclasses.replace(cfg, recommend_order=("wpdis", "fqe"))
    ests = {"fqe": _est("fqe", 1.0), "wpdis": _est("wpdis", 2.0, ess=49.0)}
    rec = recommend(ests, 1000, is_first)
    assert rec is not None
    assert rec.estimator == "fqe"
    ests["wpdis"] = _est("wpdis", 2.0, ess=50.0)
    rec = recommend(ests, 1000, is_first)
    assert rec is not None
    assert rec.estimator == "wpdis"
    assert "ESS 50.0 >= 50.0" in rec.reason
    rec = recommend({"wpdis": _est("wpdis", 2.0, ess=1.0)}, 100, is_first)
    assert rec is not None
    assert rec.estimator == "wpdis"
    assert "ESS guard" in rec.reason


def test_evaluate_policies_ranks_by_recommended_value() -> None:
    data = make_data(TINY)
    cfg = OPEConfig(
        estimators=("pdis", "wpdis"), n_bootstrap=10, bandwidth=H_UNIT, kernel_boundary="none"
    )
    far = ConstantPolicy((0.9,), ("a",), name="far")
    res = evaluate_policies(data, [far, POLICY, LoggingPolicy(("a",))], cfg)
    assert res.ranking == ("behavior", "constant:0.5", "far")
    assert [p.name for p in res.policies] == ["far", "constant:0.5", "behavior"]
    with pytest.raises(OPEInputError, match="distinct names"):
        evaluate_policies(data, [POLICY, POLICY], cfg)


def test_best_constant_picks_the_best_candidate() -> None:
    # reward = action: the best candidate is the largest logged action
    rng = np.random.default_rng(0)
    a = rng.uniform(0.2, 1.8, size=200)
    data = make_data([[(0.0, a[i], a[i], -math.log(0.5))] for i in range(200)], high=2.0)
    cands = constant_candidates(data, 8, seed=1)
    assert cands.shape == (8, 1)
    assert cands[0, 0] == pytest.approx(a.mean())
    assert cands[1, 0] == pytest.approx(np.median(a))
    assert set(cands[2:, 0]) <= set(a)
    cfg = OPEConfig(estimators=("wpdis",), n_bootstrap=0, bandwidth=0.02)
    res = best_constant(data, "wpdis", n_candidates=8, seed=1, config=cfg)
    assert res.weights[0] == pytest.approx(cands[:, 0].max(), abs=1e-9)
    with pytest.raises(FusionError, match="the dataset records no fusion"):
        best_constant_table(res, data)  # a dataset written before datasets recorded a fusion
    recorded = dataclasses.replace(data, spec=dataclasses.replace(data.spec, fusion=Fusion("sum")))
    assert best_constant_table(res, recorded).fusion == Fusion("sum")  # type: ignore[attr-defined]
    table = best_constant_table(res, recorded, Fusion("logsum", (0.05,)))
    doc = table.to_dict()  # type: ignore[attr-defined]
    assert doc["fusion"] == {"formula": "logsum", "beta": {"a": 0.05}}
    assert doc["keys"] == []
    assert doc["rows"] == []
    assert doc["default"] == {"w_a": pytest.approx(res.weights[0])}
    assert doc["meta"]["ope"]["estimator"] == "wpdis"


def test_fit_standard_error_and_interval_widening() -> None:
    assert fit_standard_error(None) is None
    assert fit_standard_error(np.array([3.0])) is None
    # std(ddof=1) of (1, 2, 3) is 1 -> standard error of the mean 1/sqrt(3)
    assert fit_standard_error(np.array([1.0, 2.0, 3.0])) == pytest.approx(1 / math.sqrt(3))
    z = 1.959963984540054
    low, high = widen_ci(10.0, (8.0, 13.0), 1.0, 0.95)
    assert low == pytest.approx(10.0 - math.sqrt(2.0**2 + z**2))
    assert high == pytest.approx(10.0 + math.sqrt(3.0**2 + z**2))


def test_dr_ensemble_uses_the_mean_model_and_its_spread() -> None:
    # model 1 = (Q_LOGGED, V_POLICY): DR = 3.25 (hand case above); model 2 = V + 1:
    # A: 2*(1-1.5) + 3.5 + 0.5*(1*(2-1) + 2*2.5) = 5.5; B: 0.5*(3-2) + 3.5 = 4 -> 4.75
    cfg = dataclasses.replace(NO_BOOT, fqe_n_fits=2, n_bootstrap=20)
    pdata = prepare(make_data(TINY), POLICY, cfg.gamma)
    m1 = QValues(Q_LOGGED, V_POLICY, 0.0)
    m2 = QValues(Q_LOGGED, V_POLICY + 1.0, 0.0)
    mean = QValues(Q_LOGGED, V_POLICY + 0.5, 0.0, fits=(m1, m2))
    pdata.cache[q_cache_key(cfg, 0.0)] = mean
    est = DR(cfg).estimate(pdata)
    assert est.value == pytest.approx(4.0, abs=1e-12)
    np.testing.assert_allclose(DR(cfg).fit_values(pdata), [3.25, 4.75])
    assert est.fit_se == pytest.approx(0.75)  # |4.75 - 3.25| / 2
    assert est.to_dict()["fit_se"] == pytest.approx(0.75)
    # the interval is the bootstrap interval widened by 1.96 * 0.75 in quadrature
    plain = DR(dataclasses.replace(cfg, fqe_n_fits=1))
    pdata.cache[q_cache_key(plain.config, 0.0)] = QValues(Q_LOGGED, V_POLICY + 0.5, 0.0)
    boot = plain.estimate(pdata)
    assert boot.fit_se is None
    assert boot.value == pytest.approx(est.value)
    assert est.ci == pytest.approx(widen_ci(boot.value, boot.ci, 0.75, 0.95))  # type: ignore[arg-type]
    assert est.ci[1] - est.ci[0] > boot.ci[1] - boot.ci[0] + 2.0  # type: ignore[index]


def test_fqe_ensemble_is_the_mean_of_seeded_fits() -> None:
    data = _one_step_data(300, 4)
    pol = ConstantPolicy((1.5,), ("a",), name="c")
    base = dataclasses.replace(FAST_FQE, fqe_n_steps=200, n_bootstrap=20)
    singles = [FQE(dataclasses.replace(base, seed=s)).estimate(data, pol) for s in (0, 1)]
    assert singles[0].fit_se is None
    ens = FQE(dataclasses.replace(base, fqe_n_fits=2)).estimate(data, pol)
    v = [s.value for s in singles]
    assert v[0] != pytest.approx(v[1], abs=1e-9)  # the seeds give different fits
    assert ens.value == pytest.approx(np.mean(v), abs=1e-6)
    assert ens.fit_se == pytest.approx(abs(v[0] - v[1]) / 2, abs=1e-6)
    assert ens.ci is not None
    assert ens.ci[0] <= ens.value - 1.95 * ens.fit_se
    assert ens.ci[1] >= ens.value + 1.95 * ens.fit_se


def test_fqe_lr_schedule_changes_the_fit_and_the_cache_key() -> None:
    data = _one_step_data(300, 5)
    pol = ConstantPolicy((1.5,), ("a",), name="c")
    cos = dataclasses.replace(FAST_FQE, fqe_n_steps=300, fqe_lr_schedule="cosine")
    const = dataclasses.replace(cos, fqe_lr_schedule="constant")
    assert q_cache_key(cos, 0.0) != q_cache_key(const, 0.0)
    assert q_cache_key(cos, 0.0) != q_cache_key(dataclasses.replace(cos, fqe_n_fits=2), 0.0)
    a = FQE(cos).estimate(data, pol).value
    b = FQE(const).estimate(data, pol).value
    assert a != pytest.approx(b, abs=1e-6)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("fqe_lr_schedule", "linear", r"fqe_lr_schedule: expected one of constant, cosine"),
        ("fqe_n_fits", 0, r"fqe_n_fits: expected >= 1, found 0"),
        ("kernel_boundary", "reflect", r"kernel_boundary: expected one of renormalise, none"),
    ],
)
def test_ensemble_config_is_validated(field: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        OPEConfig(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("dr_half_width", "wdr_half_width", "ratio", "expected"),
    [
        (1.0, 1.0, 3.0, "dr"),  # as wide as fqe's interval: quoted
        (3.0, 1.0, 3.0, "dr"),  # exactly 3x: still quoted
        (3.5, 1.0, 3.0, "wdr"),  # dr blown up: the next in order
        (40.0, 40.0, 3.0, "fqe"),  # both blown up: the model
        (40.0, 40.0, None, "dr"),  # guard switched off
    ],
)
def test_recommend_rule_skips_doubly_robust_values_with_blown_up_intervals(
    dr_half_width: float, wdr_half_width: float, ratio: float | None, expected: str
) -> None:
    cfg = OPEConfig(dr_max_ci_ratio=ratio)
    ests = {
        "fqe": _est("fqe", 1.0),  # interval width 2
        "dr": Estimate("dr", 9.0, (9 - dr_half_width, 9 + dr_half_width), 2.0, np.zeros(1), 100),
        "wdr": Estimate(
            "wdr", 8.0, (8 - wdr_half_width, 8 + wdr_half_width), 2.0, np.zeros(1), 100
        ),
    }
    rec = recommend(ests, 100, cfg)
    assert rec is not None
    assert rec.estimator == expected
    if expected in ("dr", "wdr") and ratio is not None:
        assert "as wide as fqe's" in rec.reason


def test_dr_max_ci_ratio_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=r"dr_max_ci_ratio: expected a number > 0 or None"):
        OPEConfig(dr_max_ci_ratio=0.0)


@pytest.mark.parametrize("model_error", [0.0, 0.1, 0.25])
def test_recommended_interval_adds_the_relative_model_error(model_error: float) -> None:
    cfg = OPEConfig(model_error=model_error)
    # own interval [7, 10] around 8: half-widths 1 (below) and 2 (above)
    ests = {"fqe": Estimate("fqe", 8.0, (7.0, 10.0), None, np.zeros(1), 100)}
    rec = recommend(ests, 100, cfg)
    assert rec is not None and rec.ci is not None
    extra = 1.959963984540054 * model_error * 8.0
    assert rec.ci[0] == pytest.approx(8.0 - math.hypot(1.0, extra))
    assert rec.ci[1] == pytest.approx(8.0 + math.hypot(2.0, extra))
    assert rec.lower == rec.ci[0]
    assert rec.sampling_ci == (7.0, 10.0)
    doc = rec.to_dict()
    assert doc["sampling_ci"] == [7.0, 10.0] and doc["model_error"] == model_error
    assert doc["ci"] == [rec.ci[0], rec.ci[1]]
    # the estimate's own interval is left as it was
    assert quoted_ci(ests["fqe"], OPEConfig(model_error=0.0)) == (7.0, 10.0)
    # a negative value widens by its magnitude
    neg = Estimate("fqe", -8.0, (-9.0, -6.0), None, np.zeros(1), 100)
    low, high = quoted_ci(neg, cfg) or (math.nan, math.nan)
    assert low == pytest.approx(-8.0 - math.hypot(1.0, extra))
    assert high == pytest.approx(-8.0 + math.hypot(2.0, extra))


def test_recommended_without_interval_stays_without_one() -> None:
    ests = {"fqe": Estimate("fqe", 8.0, None, None, np.zeros(1), 100)}
    rec = recommend(ests, 100, OPEConfig(model_error=0.2))
    assert rec is not None
    assert rec.ci is None and rec.lower is None and rec.to_dict()["sampling_ci"] is None


@pytest.mark.parametrize("bad", [-0.1, math.inf, math.nan])
def test_model_error_must_be_a_finite_share(bad: float) -> None:
    with pytest.raises(ConfigError, match=r"model_error: expected a number >= 0"):
        OPEConfig(model_error=bad)
