"""The world zoo: 24 seeded worlds in two halves, every axis, every spec usable everywhere,
the spec extensions it needs (xMTF satisfaction protocol, heavy-tailed logging) and the
``zoo list`` / ``zoo make`` commands."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomli_w
from click.testing import CliRunner
from gymnasium.utils.env_checker import check_env

from batchrl_mtf.cli import main
from batchrl_mtf.errors import ConfigError
from batchrl_mtf.resolve import resolve_sim_policy
from batchrl_mtf.sim import World, load_spec, parse_spec, run_sessions, world_policy
from batchrl_mtf.sim.engine import SessionBatch, UserPool
from batchrl_mtf.sim.env import FusionEnv
from batchrl_mtf.sim.policies import GaussianPolicy, PolicyContext, TailedGaussianPolicy
from batchrl_mtf.sim.zoo import (
    BLOCKS,
    HALF_SIZE,
    N_WORLDS,
    ZOO_SEED,
    generate_world,
    get_world,
    zoo_worlds,
)

ROOT = Path(__file__).resolve().parents[2]
WORLDS = zoo_worlds()
NAMES = [w.name for w in WORLDS]


def _invoke(args: list[str]):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, args)


def test_at_least_24_worlds_split_by_seed_into_two_halves() -> None:
    assert len(WORLDS) == N_WORLDS >= 24
    assert len(set(NAMES)) == len(NAMES)
    for w in WORLDS:
        assert w.seed == ZOO_SEED + w.index
        # blocks of 12 seeds: t, h, n and f (held out until looked at) tune, g is held out
        block = "thnfg"[(w.seed - ZOO_SEED) // HALF_SIZE]
        assert w.name[0] == block and w.half == ("heldout" if block == "g" else "tuning")
    assert [b for b, _ in BLOCKS] == ["t", "h", "n", "f", "g"]
    assert sum(w.half == "tuning" for w in WORLDS) == 48
    assert sum(w.half == "heldout" for w in WORLDS) == 12


def test_generator_is_deterministic_per_seed_and_shipped_specs_match() -> None:
    for i in range(N_WORLDS):
        a, b = generate_world(i), generate_world(i)
        assert a.to_toml() == b.to_toml()
        assert (ROOT / "envs" / "zoo" / f"{a.name}.toml").read_text() == a.to_toml()
    texts = {generate_world(i).to_toml().split("\n", 2)[2] for i in range(N_WORLDS)}
    assert len(texts) == N_WORLDS  # every seed gives another world


def test_every_axis_of_variation_is_covered() -> None:
    ax = [w.axes for w in WORLDS]
    assert min(a["tasks"] for a in ax) == 3 and max(a["tasks"] for a in ax) == 8
    assert min(a["segments"] for a in ax) == 2 and max(a["segments"] for a in ax) == 5
    assert all(a["irrelevant_features"] >= 1 and a["informative_features"] >= 2 for a in ax)
    assert {a["formula"] for a in ax} == {"logsum", "sum"}
    assert len({a["beta"] for a in ax}) >= 3
    assert {a["production_gap"] for a in ax} == {"near", "far", "optimal"}
    assert len({a["clickbait"] for a in ax}) >= 3
    assert any(a["heavy_tail"] for a in ax)
    assert {w.logging for w in WORLDS} == {"action-noise", "mixed", "random"}
    assert min(w.sessions for w in WORLDS) == 2000 and max(w.sessions for w in WORLDS) == 30000
    drivers = {tuple(sorted(a["satisfaction_drivers"])) for a in ax}
    assert len(drivers) >= 5
    for block in "thnfg":
        kinds = [w.kind for w in WORLDS if w.name[0] == block]
        assert kinds.count("production-optimal") == 1 and kinds.count("xmtf-kuairand") == 1


def test_hidden_segments_have_noisy_visible_hints_and_irrelevant_features() -> None:
    for w in WORLDS:
        spec = w.spec()
        hinted = set().union(*(s.hints for s in spec.segments))
        irrelevant = set(spec.users.features) - hinted
        assert len(irrelevant) == w.axes["irrelevant_features"] >= 1
        assert spec.users.hint_noise > 0


@pytest.mark.parametrize("name", NAMES)
def test_every_world_runs_in_simulate_rollout_search_constant_and_the_gym_env(
    name: str, tmp_path: Path
) -> None:
    spec = tmp_path / f"{name}.toml"
    assert _invoke(["zoo", "make", name, "--out", str(spec)]).exit_code == 0
    w = get_world(name)
    logs = tmp_path / "logs.parquet"
    res = _invoke(
        [
            "simulate",
            "--env",
            str(spec),
            "--sessions",
            "12",
            "--policy",
            w.logging,
            "--seed",
            "1",
            "--out",
            str(logs),
        ]
    )
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(logs)
    assert df["session_id"].nunique() == 12 and "behavior_logp" in df
    assert np.isfinite(df["behavior_logp"]).all()
    res = _invoke(["rollout", "--env", str(spec), "--policy", "production", "--sessions", "8"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["sessions"] == 8
    res = _invoke(
        [
            "search-constant",
            "--env",
            str(spec),
            "--sessions",
            "4",
            "--iterations",
            "1",
            "--population",
            "2",
            "--elite",
            "1",
            "--eval-sessions",
            "4",
        ]
    )
    assert res.exit_code == 0, res.output
    assert "best: constant:" in res.output
    env = FusionEnv(spec)
    check_env(env, skip_render_check=True)
    assert env.action_space.shape == (w.axes["tasks"],)


def test_xmtf_world_follows_the_kuairand_protocol() -> None:
    zw = next(w for w in WORLDS if w.kind == "xmtf-kuairand")
    spec = zw.spec()
    assert spec.session.max_requests == 97 and spec.world.slate_size == 1
    assert dict(spec.reward.stickiness) == {"watch_time": 1 / 400} and not spec.reward.activeness
    world = World(spec)
    rng = np.random.default_rng(3)
    users = world.new_users(64, rng)
    batch = SessionBatch(world, UserPool(world, users, 500), np.arange(64), rng)
    seen_leave = False
    while batch.active.any():
        rows = np.flatnonzero(batch.active)
        s_before = batch.satisfaction[rows].copy()
        res = batch.step(np.tile(world.production, (len(rows), 1)), rows)
        watch = res.feedback[:, :, world.feedback.index("watch_time")].sum(axis=1)
        np.testing.assert_allclose(res.reward, watch / 400)  # r = play_time / 400
        s_after = batch.satisfaction[rows]
        np.testing.assert_allclose(s_after, 0.95 * s_before + 0.05 * res.reward)
        np.testing.assert_array_equal(res.terminated, s_after < 0.1)  # leave when s < 0.1
        seen_leave |= bool(res.terminated.any())
    assert seen_leave
    assert batch.depth.max() <= 97


def test_production_optimal_world_beats_other_constants() -> None:
    zw = next(w for w in WORLDS if w.kind == "production-optimal" and w.half == "tuning")
    world = World(zw.spec())
    prod = run_sessions(world, world_policy(world, "production"), 400, 5)[0].returns.mean()
    rng = np.random.default_rng(0)
    for _ in range(3):
        w = rng.uniform(0, 2, len(world.tasks))
        arg = "constant:" + ",".join(f"{x:.3f}" for x in w)
        other = run_sessions(world, resolve_sim_policy(world, arg), 400, 5)[0].returns.mean()
        assert prod > other


def test_tailed_logging_density_is_exact_and_has_extreme_actions() -> None:
    lo, hi = (0.0, 0.0), (3.0, 3.0)
    base = GaussianPolicy((1.0, 0.5), (0.1, 0.1), lo, hi)
    tail = GaussianPolicy((1.0, 0.5), (1.5, 1.5), lo, hi)
    pol = TailedGaussianPolicy(base, tail, 0.05)
    obs = np.zeros((200_000, 1))
    w, logp = pol.act(
        obs, PolicyContext(np.zeros(len(obs), np.int64), np.zeros(1), np.random.default_rng(1))
    )  # type: ignore[arg-type]
    assert ((w >= 0) & (w <= 3)).all()
    # E_p[1 / p(w)] = volume of the box (9) when p is the exact density
    assert np.mean(np.exp(-logp)) == pytest.approx(9.0, rel=0.05)
    extreme = (np.abs(w - np.array([1.0, 0.5])) > 0.5).any(axis=1).mean()
    assert 0.02 < extreme < 0.06  # only the tail draws go beyond 5 base sigmas


def test_tail_share_in_the_spec_makes_action_noise_heavy_tailed() -> None:
    zw = next(w for w in WORLDS if w.axes["heavy_tail"])
    world = World(zw.spec())
    pol = world_policy(world, "action-noise")
    assert "tail" in pol.name
    plain = world_policy(World(parse_spec(_without_tail(zw.doc), "plain")), "action-noise")
    assert "tail" not in plain.name


def _without_tail(doc: dict) -> dict:  # type: ignore[type-arg]
    out = json.loads(json.dumps(doc))
    out["exploration"].pop("tail_share", None)
    out["exploration"].pop("tail_sigma", None)
    return out


@pytest.mark.parametrize(
    ("table", "key", "value", "needle"),
    [
        ("session", "leave_below", math.nan, "session.leave_below"),
        ("session", "leave_below", math.inf, "session.leave_below"),
        ("session", "sat_reward", math.inf, "session.sat_reward"),
        ("exploration", "tail_share", 1.0, "exploration.tail_share"),
        ("exploration", "tail_share", -0.1, "exploration.tail_share"),
        ("exploration", "tail_sigma", 0.0, "exploration.tail_sigma"),
    ],
)
def test_bad_extension_values_name_the_key(
    table: str, key: str, value: float, needle: str, tmp_path: Path
) -> None:
    doc = json.loads(json.dumps(get_world("t01").doc))
    doc.setdefault(table, {})[key] = value
    path = tmp_path / "bad.toml"
    path.write_text(tomli_w.dumps(doc))
    with pytest.raises(ConfigError, match=needle):
        load_spec(path)


def test_old_specs_load_with_the_extension_defaults() -> None:
    spec = load_spec("short_video")
    assert spec.session.sat_reward == 0.0 and spec.session.leave_below == -math.inf
    assert spec.exploration.tail_share == 0.0


def test_zoo_list_json_shape() -> None:
    res = _invoke(["zoo", "list", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert isinstance(doc, list) and len(doc) == N_WORLDS
    assert [d["name"] for d in doc] == NAMES
    for d in doc:
        assert d["half"] in ("tuning", "heldout")
        assert {"seed", "kind", "sessions", "logging", "tasks", "segments"} <= set(d)
    text = _invoke(["zoo", "list"]).output.splitlines()
    assert len(text) == N_WORLDS + 1 and text[1].split()[:2] == ["t01", "tuning"]


def test_zoo_make_writes_the_world_spec(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "h03.toml"
    res = _invoke(["zoo", "make", "h03", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "tuning" in res.output and "--sessions" in res.output
    assert out.read_text() == get_world("h03").to_toml()
    spec = load_spec(out)
    assert spec.world.name == "zoo-h03"
    assert spec.fusion.production == get_world("h03").spec().fusion.production
    again = _invoke(["zoo", "make", "h03", "--out", str(out)])  # its own file: replaced
    assert again.exit_code == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["zoo", "make", "h13", "--out", "{tmp}/x.toml"], "zoo world: expected one of"),
        (["zoo", "make", "nope", "--out", "{tmp}/x.toml"], "found 'nope'"),
        (["zoo", "make", "t01", "--out", "{tmp}/mine.toml"], "not replacing"),
        (["zoo", "make", "t01", "--out", "{tmp}"], "found a directory"),
    ],
)
def test_zoo_make_bad_input_is_one_line_and_exit_2(
    args: list[str], needle: str, tmp_path: Path
) -> None:
    mine = tmp_path / "mine.toml"
    mine.write_text("# someone else's spec\n")
    res = _invoke([a.format(tmp=tmp_path) for a in args])
    assert res.exit_code == 2
    assert needle in res.output
    assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
    assert not (tmp_path / "x.toml").exists()
    assert mine.read_text() == "# someone else's spec\n"
