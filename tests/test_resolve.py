"""`batchrl_mtf.resolve`: every policy argument form, and one clear error for each bad one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from batchrl_mtf import resolve
from batchrl_mtf.errors import PolicyError
from batchrl_mtf.policy import ConstantPolicy, LoggingPolicy, TablePolicy
from batchrl_mtf.resolve import resolve_ope_policy, resolve_policy, resolve_sim_policy
from batchrl_mtf.serving import Exploration, Fusion, TableKey, TableRow, WeightTable
from batchrl_mtf.sim import (
    FixedPolicy,
    GaussianPolicy,
    MixedPolicy,
    World,
    feature_names_of,
    load_spec,
)
from batchrl_mtf.sim.policies import TableSamplePolicy

TASKS = ("click", "like")
NAMES = ("u_activity", "session_depth")


def _table(
    tasks: tuple[str, ...] = TASKS,
    keys: tuple[TableKey, ...] = (),
    fusion: Fusion | None = None,
    exploration: Exploration | None = None,
) -> WeightTable:
    k = len(tasks)
    rows = (
        (TableRow(((None, 2.0),), (0.5,) * k, 5), TableRow(((2.0, None),), (1.5,) * k, 5))
        if keys
        else (TableRow((), (2.0,) * k, 10),)
    )
    return WeightTable(
        tasks=tasks,
        fusion=fusion or Fusion("logsum", (0.1,) * k),
        action_low=(0.0,) * k,
        action_high=(2.0,) * k,
        keys=keys,
        default=(1.0,) * k,
        rows=rows,
        exploration=exploration,
    )


@dataclass
class FakeTrained:
    """What ``load_policy`` returns, without d3rlpy."""

    name: str
    tasks: tuple[str, ...] = TASKS
    feature_names: tuple[str, ...] = NAMES


@pytest.fixture
def fake_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Policy directories ``ok``, ``tasks``, ``features`` (loaded by a fake) and ``empty``."""
    made = {
        "ok": FakeTrained("ok"),
        "tasks": FakeTrained("tasks", tasks=("click", "share")),
        "features": FakeTrained("features", feature_names=("u_activity",)),
    }
    for name in (*made, "empty"):
        (tmp_path / name).mkdir()
    for name in made:
        (tmp_path / name / "policy.json").write_text("{}")
    monkeypatch.setattr(resolve, "load_policy", lambda path: made[Path(path).name])
    return tmp_path


def test_constant_argument() -> None:
    p = resolve_policy("constant:1.5,0.2", TASKS, NAMES)
    assert isinstance(p, ConstantPolicy) and p.name == "constant:1.5,0.2"
    np.testing.assert_allclose(p.act(np.zeros((3, 2))), [[1.5, 0.2]] * 3)


def test_table_argument(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    _table(keys=(TableKey("session_depth", (2.0,)),)).save(path)
    p = resolve_policy(str(path), TASKS, NAMES)
    assert isinstance(p, TablePolicy) and p.name == str(path)
    np.testing.assert_allclose(p.act(np.array([[0.0, 1.0], [0.0, 3.0]])), [[0.5, 0.5], [1.5, 1.5]])


def test_policy_directory_argument(fake_dirs: Path) -> None:
    p = resolve_policy(str(fake_dirs / "ok"), TASKS, NAMES)
    assert isinstance(p, FakeTrained) and p.name == "ok"


@pytest.mark.parametrize("arg", ["behavior", "logged"])
def test_logging_policy_arguments_for_ope(arg: str) -> None:
    p = resolve_ope_policy(arg, TASKS, NAMES)
    assert p == LoggingPolicy(TASKS, name=arg)
    with pytest.raises(PolicyError, match="found no such file or directory"):
        resolve_policy(arg, TASKS, NAMES)  # only OPE knows the logging policy


def test_ope_resolution_takes_every_other_form_too() -> None:
    p = resolve_ope_policy("constant:1,2", TASKS, NAMES)
    assert isinstance(p, ConstantPolicy) and p.weights == (1.0, 2.0)


@pytest.fixture(scope="module")
def world() -> World:
    return World(load_spec())


@pytest.mark.parametrize(
    ("arg", "kind"),
    [
        ("production", FixedPolicy),
        ("action-noise", GaussianPolicy),
        ("random", GaussianPolicy),
        ("mixed", MixedPolicy),
        ("constant:1,0.4,0.3,0.1,0.1,0.1", FixedPolicy),
    ],
)
def test_sim_arguments(world: World, arg: str, kind: type) -> None:
    assert isinstance(resolve_sim_policy(world, arg), kind)


def test_sim_noise_override(world: World) -> None:
    noisy = resolve_sim_policy(world, "action-noise", sigma=0.05)
    assert isinstance(noisy, GaussianPolicy) and noisy.sigma == (0.05,) * len(world.tasks)


def test_sim_policy_objects_and_tables(world: World, tmp_path: Path) -> None:
    k = len(world.tasks)
    const = ConstantPolicy((1.0,) * k, world.tasks, name="ones")
    fixed = resolve_sim_policy(world, const)
    assert isinstance(fixed, FixedPolicy) and fixed.policy is const
    fusion = Fusion(world.spec.fusion.formula, tuple(world.spec.fusion.beta))
    plain, explored = tmp_path / "plain.json", tmp_path / "explored.json"
    _table(world.tasks, fusion=fusion).save(plain)
    _table(world.tasks, fusion=fusion, exploration=Exploration("gaussian", (0.1,) * k)).save(
        explored
    )
    assert isinstance(resolve_sim_policy(world, str(plain)), FixedPolicy)
    sampled = resolve_sim_policy(world, str(explored))
    assert isinstance(sampled, TableSamplePolicy) and sampled.stochastic
    renamed = resolve_policy(str(explored), world.tasks, feature_names_of(world)).renamed("x")
    assert isinstance(resolve_sim_policy(world, renamed), TableSamplePolicy)  # still a table


@pytest.mark.parametrize(
    ("arg", "tasks", "names", "match"),
    [
        ("constant:1,2,3", TASKS, NAMES, r"expected 2 weights \(tasks click, like\), found 3"),
        ("constant:a,b", TASKS, NAMES, r"expected constant:<w_click>,\.\.\. with 2 numbers"),
        ("constant:1,nan", TASKS, NAMES, "expected finite weights"),
        ("missing_dir", TASKS, NAMES, "found no such file or directory"),
        ("TABLE", ("click", "share"), NAMES, r"table tasks \['click', 'like'\] differ"),
        ("KEYED", TASKS, ("u_activity",), r"table keys \['session_depth'\] are not state features"),
        ("empty", TASKS, NAMES, "directory has no policy.json"),
        ("tasks", TASKS, NAMES, r"policy tasks \['click', 'share'\] differ"),
        ("features", TASKS, NAMES, "feature spec mismatch: the policy was trained on features"),
    ],
)
def test_resolve_policy_errors(
    fake_dirs: Path, arg: str, tasks: tuple[str, ...], names: tuple[str, ...], match: str
) -> None:
    if arg == "TABLE":
        arg = str(fake_dirs / "t.json")
        _table().save(arg)
    elif arg == "KEYED":
        arg = str(fake_dirs / "k.json")
        _table(keys=(TableKey("session_depth", (2.0,)),)).save(arg)
    elif arg in ("empty", "tasks", "features"):
        arg = str(fake_dirs / arg)
    for resolver in (resolve_policy, resolve_ope_policy):
        with pytest.raises(PolicyError, match=match):
            resolver(arg, tasks, names)


@pytest.mark.parametrize(
    ("arg", "match"),
    [
        ("constant:1,2", "expected 6 weights"),
        ("nothing_here", "found no such file or directory"),
        (
            "OTHER_FUSION",
            r"f\.json: table fusion logsum, beta 0\.3 differs from the environment's",
        ),
    ],
)
def test_resolve_sim_policy_errors(world: World, tmp_path: Path, arg: str, match: str) -> None:
    if arg == "OTHER_FUSION":
        arg = str(tmp_path / "f.json")
        _table(world.tasks, fusion=Fusion("logsum", (0.3,) * len(world.tasks))).save(arg)
    with pytest.raises(PolicyError, match=match):
        resolve_sim_policy(world, arg)
    with pytest.raises(PolicyError, match="expected a number > 0"):
        resolve_sim_policy(world, "action-noise", sigma=0.0)
