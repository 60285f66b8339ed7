"""The batched (C)FQE engine: the same estimator as d3rlpy's FQE, budget, early stopping, flags."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from logs_factory import make_logs

from batchrl_mtf.cli import main as cli_main
from batchrl_mtf.cli.evaluate import FQE_ENGINES as CLI_ENGINES
from batchrl_mtf.data.build import build_dataset
from batchrl_mtf.data.features import FeatureConfig, FeatureSpec
from batchrl_mtf.data.reward import RewardConfig
from batchrl_mtf.data.spec import DatasetSpec
from batchrl_mtf.data.transitions import Transitions
from batchrl_mtf.errors import ConfigError
from batchrl_mtf.ope import (
    CFQE,
    FQE,
    OPEConfig,
    best_constant,
    evaluate_policies,
    prepare,
)
from batchrl_mtf.ope.config import FQE_ENGINES
from batchrl_mtf.ope.fqe import fit_q, fit_q_many
from batchrl_mtf.ope.fqe_batched import fqe_transitions
from batchrl_mtf.ope.fqe_schedule import step_budget, torch_thread_count
from batchrl_mtf.policy import ConstantPolicy, LoggingPolicy

TASKS = ("a", "b")


def _sessions(n_sessions: int, seed: int, length: int = 4) -> Transitions:
    """Sessions of ``length`` requests, 3 features, 2 tasks; reward = a . (1, 0.5) + x_0."""
    rng = np.random.default_rng(seed)
    n = n_sessions * length
    obs = rng.normal(size=(n, 3))
    act = rng.uniform(0.0, 2.0, size=(n, 2))
    rewards = act @ np.array([1.0, 0.5]) + obs[:, 0]
    step = np.tile(np.arange(length), n_sessions)
    last = step == length - 1
    spec = DatasetSpec(
        features=FeatureSpec(
            names=("x0", "x1", "x2"),
            user_features=(),
            feedback=(),
            config=FeatureConfig(),
            mean=tuple(float(v) for v in obs.mean(axis=0)),
            std=tuple(float(v) for v in obs.std(axis=0)),
        ),
        tasks=TASKS,
        action_low=(0.0, 0.0),
        action_high=(2.0, 2.0),
        gamma=1.0,
        has_behavior_logp=True,
        dataset_hash="sha256:test",
        data_hash="sha256:test",
    )
    sessions = np.repeat([f"s{i}" for i in range(n_sessions)], length).astype(object)
    return Transitions(
        spec=spec,
        user_id=sessions.copy(),
        session_id=sessions,
        request_id=np.arange(n, dtype=np.int64),
        step=step.astype(np.int64),
        ts_ms=np.arange(n, dtype=np.int64),
        observations=obs,
        actions=act,
        rewards=rewards,
        stickiness=np.zeros(n),
        activeness=np.zeros(n),
        terminals=last,
        timeouts=np.zeros(n, dtype=bool),
        behavior_logp=np.full(n, -math.log(4.0)),
        split=np.full(n, "test", dtype="<U5"),
    )


DATA = _sessions(150, 0)
NEAR = ConstantPolicy((1.0, 1.0), TASKS, name="near")
FAR = ConstantPolicy((2.0, 0.0), TASKS, name="far")
# no budget scaling, no early stop: both engines run exactly fqe_n_steps
EXACT = OPEConfig(
    gamma=1.0, n_bootstrap=0, fqe_n_steps=300, fqe_n_fits=3, fqe_budget_epochs=None,
    fqe_early_stop=False, torch_threads=1, cfqe_alpha=0.05,
)  # fmt: skip


def _fit_values(config: OPEConfig, policies: list[object], alpha: float) -> list[np.ndarray]:
    pdatas = [prepare(DATA, p, 1.0) for p in policies]  # type: ignore[arg-type]
    fit_q_many(pdatas, config, (0.0, alpha))
    return [
        np.array([np.mean(f.v_policy[pd.starts]) for f in fit_q(pd, config, alpha).members()])
        for pd in pdatas
    ]


@pytest.mark.parametrize("alpha", [0.0, 0.05])
def test_batched_engine_fits_the_same_estimator_as_d3rlpy(alpha: float) -> None:
    policies = [NEAR, FAR, LoggingPolicy(TASKS)]
    ref = _fit_values(dataclasses.replace(EXACT, fqe_engine="d3rlpy"), policies, alpha)
    new = _fit_values(EXACT, policies, alpha)
    for r, b in zip(ref, new, strict=True):
        spread = float(np.std(r, ddof=1))
        assert spread > 0  # the seeds give different fits
        # the ensembles agree within the between-fit spread ...
        assert abs(float(np.mean(b)) - float(np.mean(r))) < spread
        # ... and, same seeds, same initial weights, same mini-batches: fit by fit
        np.testing.assert_allclose(b, r, rtol=2e-3, atol=2e-3 * float(np.abs(r).max()))


def test_conservative_members_are_penalised_per_member() -> None:
    cfg = dataclasses.replace(EXACT, cfqe_alpha=2.0, fqe_n_fits=1)
    pd = prepare(DATA, FAR, 1.0)
    fit_q_many([pd], cfg, (0.0, cfg.cfqe_alpha))
    plain = float(np.mean(fit_q(pd, cfg, 0.0).v_policy[pd.starts]))
    conservative = float(np.mean(fit_q(pd, cfg, cfg.cfqe_alpha).v_policy[pd.starts]))
    assert conservative < plain - 0.5


def test_a_fit_does_not_depend_on_the_other_members() -> None:
    alone = _fit_values(EXACT, [FAR], 0.05)[0]
    together = _fit_values(EXACT, [NEAR, FAR], 0.05)[1]
    np.testing.assert_allclose(together, alone, rtol=1e-4)


def test_member_groups_train_in_threads_and_give_the_same_fits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    import batchrl_mtf.ope.fqe_batched as fb

    one = _fit_values(EXACT, [NEAR, FAR, LoggingPolicy(TASKS)], 0.05)
    seen: list[tuple[int, int, int]] = []
    real = fb._train

    def spy(members, *args):  # type: ignore[no-untyped-def]
        seen.append((threading.get_ident(), len(members), sum(m.alpha > 0 for m in members)))
        return real(members, *args)

    monkeypatch.setattr(fb, "_train", spy)
    for grouped in (True, False):
        cfg = dataclasses.replace(EXACT, torch_threads=2, fqe_member_groups=grouped)
        seen.clear()
        got = _fit_values(cfg, [NEAR, FAR, LoggingPolicy(TASKS)], 0.05)
        for a, b in zip(one, got, strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * float(np.abs(a).max()))
        ensembles = [s for s in seen if s[1] == 18]  # fit_q_many: 3 policies x 3 seeds x 2
        halves = [s for s in seen if s[1] == 9]
        if grouped:  # two ensembles of 9, in two threads, alike in plain and conservative fits
            assert not ensembles and len(halves) == 2
            assert halves[0][0] != halves[1][0]
            assert {h[2] for h in halves} == {4, 5}
        else:
            assert len(ensembles) == 1 and not halves


def test_member_groups_draw_initial_weights_before_the_threads_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    import batchrl_mtf.ope.fqe_batched as fb

    # d3rlpy's initialisation seeds torch's global generator: drawn in the worker threads, the
    # groups would race for it and the fits would change from run to run
    threads: list[bool] = []
    real = fb._flat_init

    def spy(*args):  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread() is threading.main_thread())
        return real(*args)

    monkeypatch.setattr(fb, "_flat_init", spy)
    cfg = dataclasses.replace(EXACT, torch_threads=2, fqe_member_groups=True, fqe_n_steps=50)
    runs = [_fit_values(cfg, [NEAR, FAR, LoggingPolicy(TASKS)], 0.05) for _ in range(2)]
    assert threads and all(threads)
    for a, b in zip(*runs, strict=True):
        assert a.tobytes() == b.tobytes()


def test_evaluate_batched_and_d3rlpy_agree_within_the_fit_spread() -> None:
    cfg = dataclasses.replace(EXACT, estimators=("fqe", "cfqe", "wpdis", "dr"), n_bootstrap=50)
    ref = evaluate_policies(DATA, [NEAR, FAR], dataclasses.replace(cfg, fqe_engine="d3rlpy"))
    new = evaluate_policies(DATA, [NEAR, FAR], cfg)
    for r, b in zip(ref.policies, new.policies, strict=True):
        assert b.estimates["wpdis"].value == r.estimates["wpdis"].value  # model-free: identical
        assert b.estimates["wpdis"].ci == r.estimates["wpdis"].ci
        for name in ("fqe", "cfqe", "dr"):
            se = r.estimates[name].fit_se
            assert se is not None and se > 0
            assert abs(b.estimates[name].value - r.estimates[name].value) < 3 * se
    assert new.ranking == ref.ranking


def test_early_stopping_stops_on_a_plateau_after_an_annealing_tail() -> None:
    cfg = dataclasses.replace(
        EXACT, fqe_n_steps=2000, fqe_n_fits=2, fqe_early_stop=True, fqe_plateau_window=50,
        fqe_plateau_tol=0.5, fqe_plateau_patience=1, fqe_tail_fraction=0.05,
    )  # fmt: skip
    pd = prepare(DATA, NEAR, 1.0)
    q = fit_q(pd, cfg, 0.0)
    steps = [f.steps for f in q.members()]
    # value propagation guard: fqe_propagations x horizon x target update interval
    min_steps = math.ceil(cfg.fqe_propagations * pd.horizon * cfg.fqe_target_update_interval)
    assert min_steps == 2 * 4 * cfg.fqe_target_update_interval
    assert all(min_steps <= s < 2000 for s in steps)
    assert all(s <= min_steps + cfg.fqe_plateau_window + 100 for s in steps)  # + tail of 100
    off = fit_q(prepare(DATA, NEAR, 1.0), dataclasses.replace(cfg, fqe_early_stop=False), 0.0)
    assert [f.steps for f in off.members()] == [2000, 2000]
    assert np.isfinite(q.v_policy).all()


@pytest.mark.parametrize(
    ("epochs", "n_steps", "min_steps", "m", "horizon", "expected"),
    [
        (None, 5000, 1000, 100, 1, 5000),  # no scaling: fqe_n_steps
        (50.0, 5000, 1000, 1_000_000, 1, 5000),  # large data: the cap
        (50.0, 5000, 1000, 12_800, 1, 2500),  # 50 passes of 256
        (50.0, 5000, 1000, 1000, 1, 1000),  # tiny data: the floor
        (50.0, 500, 1000, 1000, 1, 500),  # the cap wins over the floor
        (50.0, 5000, 1000, 1000, 15, 1500),  # propagation floor: 2 x 15 requests x 50 steps
        (50.0, 5000, 1000, 12_800, 30, 3000),  # ... above 50 passes
        (50.0, 2000, 1000, 12_800, 30, 2000),  # ... and below the cap
    ],
)
def test_step_budget_scales_with_the_dataset(
    epochs: float | None, n_steps: int, min_steps: int, m: int, horizon: int, expected: int
) -> None:
    cfg = OPEConfig(fqe_budget_epochs=epochs, fqe_n_steps=n_steps, fqe_min_steps=min_steps)
    assert step_budget(cfg, m, horizon) == expected


def test_batched_fit_reaches_the_known_value_with_the_defaults() -> None:
    # reward a.(1, 0.5) + x0 per step, 4 steps, gamma 1: V(near) = 4 * 1.5 + the sessions'
    # mean sum of x0 (iid, mean ~0)
    data = _sessions(1000, 1)
    cfg = OPEConfig(gamma=1.0, n_bootstrap=0, torch_threads=1)
    est = FQE(cfg).estimate(data, NEAR)
    x0 = data.observations[:, 0].reshape(-1, 4).sum(axis=1).mean()
    assert est.value == pytest.approx(6.0 + x0, abs=0.5)
    assert CFQE(cfg).estimate(data, FAR).value < FQE(cfg).estimate(data, FAR).value


def test_transitions_drop_timeouts_and_bootstrap_from_zero_after_terminals() -> None:
    data = dataclasses.replace(
        DATA, terminals=np.zeros(len(DATA), dtype=bool), timeouts=DATA.terminals.copy()
    )
    tr = fqe_transitions(prepare(data, NEAR, 1.0))
    assert len(tr.rows) == 150 * 3 and not tr.terminals.any()
    tr = fqe_transitions(prepare(DATA, LoggingPolicy(TASKS), 1.0))
    assert len(tr.rows) == 600 and tr.terminals.sum() == 150
    end = tr.terminals == 1
    assert (tr.next_obs[end] == 0).all()
    nxt = DATA.actions[tr.rows[~end] + 1].astype(np.float32)
    np.testing.assert_array_equal(tr.next_act[~end], nxt)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("fqe_engine", "jax", r"fqe_engine: expected one of batched, d3rlpy, found 'jax'"),
        ("fqe_n_critics", 2, r"fqe_n_critics: expected 1 with fqe_engine 'batched'"),
        ("fqe_budget_epochs", 0.0, r"fqe_budget_epochs: expected a number > 0 or None"),
        ("fqe_min_steps", 0, r"fqe_min_steps: expected >= 1, found 0"),
        ("fqe_propagations", -1.0, r"fqe_propagations: expected a number >= 0"),
        ("fqe_plateau_window", 0, r"fqe_plateau_window: expected >= 1, found 0"),
        ("fqe_plateau_tol", 1.0, r"fqe_plateau_tol: expected in \[0, 1\), found 1.0"),
        ("fqe_tail_fraction", 0.0, r"fqe_tail_fraction: expected in \(0, 1\], found 0.0"),
    ],
)
def test_engine_config_is_validated(field: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        OPEConfig(**{field: value})  # type: ignore[arg-type]


def test_d3rlpy_engine_keeps_critic_ensembles() -> None:
    assert OPEConfig(fqe_engine="d3rlpy", fqe_n_critics=2).fqe_n_critics == 2


def test_cli_fqe_engine_flag_reaches_the_report(tmp_path: Path) -> None:
    assert CLI_ENGINES == FQE_ENGINES
    src = tmp_path / "logs.parquet"
    make_logs(n_users=4, sessions_per_user=2, seed=1).to_parquet(src)
    ds = tmp_path / "ds"
    build_dataset([src], RewardConfig(stickiness={"watch_time": 0.02}), ds)
    out = tmp_path / "ope.json"
    args = ["evaluate", str(ds), "--policy", "constant:1,1,1", "--estimators", "fqe",
            "--fqe-steps", "30", "--fqe-fits", "1", "--n-bootstrap", "0", "--split", "all",
            "--out", str(out)]  # fmt: skip
    for engine in FQE_ENGINES:
        res = CliRunner().invoke(cli_main, [*args, "--fqe-engine", engine])
        assert res.exit_code == 0, res.output
        assert json.loads(out.read_text())["config"]["fqe_engine"] == engine
    res = CliRunner().invoke(cli_main, [*args, "--fqe-engine", "jax"])
    assert res.exit_code == 2 and "--fqe-engine" in res.output


def test_batched_fits_are_reproducible() -> None:
    cfg = dataclasses.replace(EXACT, fqe_n_steps=60, fqe_n_fits=2)
    a, b = (_fit_values(cfg, [NEAR, FAR], 0.05) for _ in range(2))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_best_constant_fits_every_candidate_in_one_ensemble() -> None:
    cfg = dataclasses.replace(EXACT, estimators=("fqe",), fqe_n_fits=1, fqe_n_steps=200)
    picks = [
        best_constant(DATA, "fqe", n_candidates=4, seed=3, config=c)
        for c in (cfg, dataclasses.replace(cfg, fqe_engine="d3rlpy"))
    ]
    assert picks[0].weights == picks[1].weights
    np.testing.assert_allclose(
        [v for _, v in picks[0].candidates], [v for _, v in picks[1].candidates], rtol=2e-3
    )


@pytest.mark.parametrize(
    ("threads", "n_fits", "expected"),
    [(3, 1, 3), (0, 1, 1), (0, 6, 1), (0, 12, 1), (0, 10_000, None)],
)
def test_torch_threads_follow_the_ensemble_size(
    threads: int, n_fits: int, expected: int | None
) -> None:
    cores = len(os.sched_getaffinity(0))
    want = cores if expected is None else min(expected, cores) if threads == 0 else expected
    assert torch_thread_count(OPEConfig(torch_threads=threads), n_fits) == want


def _reference_q(per: list[object], x: object) -> object:
    """d3rlpy's Q network (Linear -> ReLU -> LayerNorm with its affine, ..., Linear) for one
    member's parameters (the layout of ``fqe_batched._shapes``), written out with torch.nn."""
    import torch

    h = x
    for i in range((len(per) - 2) // 4):
        w, b, g, beta = per[4 * i : 4 * i + 4]  # type: ignore[misc]
        h = torch.relu(h @ w + b)  # type: ignore[operator]
        norm = torch.nn.LayerNorm(w.shape[1])  # type: ignore[attr-defined]
        with torch.no_grad():
            norm.weight.copy_(g[0])  # type: ignore[index]
            norm.bias.copy_(beta[0])  # type: ignore[index]
        h = norm(h)
    return (h @ per[-2] + per[-1]).squeeze(-1)  # type: ignore[operator]


def test_fused_forward_and_prediction_compute_d3rlpy_network() -> None:
    """The training forward (layer-norm affine folded into the next layer, first layer split
    into observation and action parts) and the final per-member prediction both compute
    d3rlpy's network, with layer-norm parameters away from their initial 1 and 0."""
    import torch

    from batchrl_mtf.ope import fqe_batched as fb

    d, k, n_members, rows = 3, 2, 4, 50
    sizes = [d + k, 8, 8, 1]
    gen = torch.Generator().manual_seed(0)
    params = fb._split(fb._flat_init(list(range(n_members)), sizes, k), fb._shapes(sizes))
    params = [p + 0.3 * torch.randn(p.shape, generator=gen) for p in params]
    obs = torch.randn(rows, d, generator=gen)
    act = torch.randn(rows, k, generator=gen)
    pis = torch.randn(2, rows, k, generator=gen)
    x = torch.cat([obs, act], dim=-1)
    with torch.no_grad():
        ref = torch.stack([_reference_q([p[j] for p in params], x) for j in range(n_members)])
        whole = fb._forward(params, x.expand(n_members, -1, -1).clone())
        split = fb._forward(
            params, obs.expand(n_members, -1, -1).clone(), act.expand(n_members, -1, -1).clone()
        )
    np.testing.assert_allclose(whole.numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(split.numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)
    inp = fb._Inputs(
        obs=obs, act=act, x_logged=x, pis=pis, next_obs=obs, next_act=pis,
        rewards=torch.zeros(rows), terms=torch.zeros(rows), rows=torch.arange(rows),
        behavior=np.array([True, False]),
    )  # fmt: skip
    pol_of = np.array([0, 1, 1, 0])
    q_logged, v_policy = fb._predict(params, inp, pol_of, inp.behavior[pol_of])
    np.testing.assert_allclose(q_logged, ref.numpy(), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        x_pi = torch.cat([obs, pis[1]], dim=-1)
        ref_pi = [_reference_q([p[j] for p in params], x_pi).numpy() for j in (1, 2)]
    np.testing.assert_allclose(v_policy[[1, 2]], np.stack(ref_pi), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(v_policy[[0, 3]], q_logged[[0, 3]])  # behaviour: Q(s, a_logged)
